"""Scaling out: ``runtime.verify --targets all`` and multi-file ``runtime.stream`` on 1 worker, on
``--workers`` local workers, and as tasks of a local Ray instance, measured in one run.

Each configuration runs as its own command (``python -m runtime.verify ...``), so a figure includes
everything a user waits for: worker start, plan loading, numba's cache, Lava's worker processes.
Per target the wall time comes from the report, the command's wall time and the CPU seconds of
its whole process tree (``RUSAGE_CHILDREN``) from here; ``cores busy`` = CPU seconds / wall. A
one-process run that already keeps every core busy cannot gain from more workers (measured for
the one-process run only: local workers are children of the forkserver, not of the command). The load average is printed beside every figure:
this machine is shared, and a busy neighbour slows the parallel runs most.

Every parallel report is checked equal to the one-process report (wall times aside) and every
recording's JSON lines equal to the one-process lines (latencies aside).

    python -m bench.scale                                   # 100 recordings, 200 files, 2 workers
    python -m bench.scale --samples 40 --files 40 --no-ray
    python -m bench.scale --targets eventsim --samples 1000 --files 0 --out runs/bench/scale_eventsim

Goal (the issue): >= 1.8x on 2 cores for Lava and eventsim. Writes ``scale.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import at_least
from core.fileio import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
EVENTDATA = ROOT.parent / "shared" / "eventdata" / "nmnist" / "train"
TIMING = ("wall_s", "samples_per_s")


def measured(argv: list[str]) -> dict[str, Any]:
    """Run ``python -m argv``: its wall time, the CPU seconds of its process tree, the load before it."""
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:2])} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # local workers are children of the forkserver, Ray's of Ray: only a 1-process run's tree is all counted
    one = "--workers" in argv and argv[argv.index("--workers") + 1] == "1"
    return {"wall_s": wall, "cpu_s": cpu if one else None, "cores_busy": cpu / wall if one else None,
            "load_1min_before": load}  # fmt: skip


def _report_less_timing(rep: dict) -> dict:
    rep = {k: v for k, v in rep.items() if k not in ("workers", "cluster", "plots")}
    rep["targets"] = {t: {k: v for k, v in e.items() if k not in TIMING} for t, e in rep["targets"].items()}
    return rep


def _lines_less_latency(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k != "latency_ms"} for x in path.read_text().splitlines()]


def bench_verify(graph: str, samples: int, workers: int, ray: bool, tmp: Path, targets: str = "all") -> dict[str, Any]:
    batch = -(-samples // workers)  # the same batches in every configuration: one per worker
    common = ["runtime.verify", graph, "--targets", targets, "--data", "nmnist", "--data-root", str(EVENTDATA),
              "--split", "all", "--samples", str(samples), "--batch-size", str(batch), "--progress", "false"]  # fmt: skip
    configs = {"1 process": ["--workers", "1"], f"{workers} workers": ["--workers", str(workers)]}
    if ray:
        configs["ray"] = ["--workers", str(workers), "--cluster", "ray"]
    runs, reports = {}, {}
    for name, extra in configs.items():
        out = tmp / f"verify-{name.replace(' ', '_')}"
        print(f"verify, {name} (load {os.getloadavg()[0]:.2f}) ...", file=sys.stderr, flush=True)
        runs[name] = measured([*common, *extra, "--out", str(out)])
        reports[name] = json.loads((out / "report.json").read_text())
        runs[name]["per_target_wall_s"] = {t: e["wall_s"] for t, e in reports[name]["targets"].items()}
        runs[name]["workers"] = reports[name]["workers"]
    base = _report_less_timing(reports["1 process"])
    identical = {name: _report_less_timing(r) == base for name, r in reports.items()}
    targets = list(reports["1 process"]["targets"])
    one = runs["1 process"]
    speedup = {name: {t: one["per_target_wall_s"][t] / r["per_target_wall_s"][t] for t in targets}
               | {"command": one["wall_s"] / r["wall_s"]} for name, r in runs.items() if name != "1 process"}  # fmt: skip
    return {"targets": targets, "samples": samples, "batch_size": batch, "runs": runs, "speedup": speedup, "identical": identical,
            "skipped": reports["1 process"]["skipped"]}  # fmt: skip


def bench_stream(model: str, files: int, workers: int, ray: bool, tmp: Path) -> dict[str, Any]:
    folder = tmp / "recordings"
    folder.mkdir()
    names = sorted(EVENTDATA.glob("*.bin"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)[:files]
    for p in names:
        (folder / p.name).symlink_to(p)
    common = ["runtime.stream", str(folder), "--model", model, "--target", "eventsim", "--sensor-size", "34x34",
              "--progress", "false"]  # fmt: skip
    configs = {"1 process": ["--workers", "1"], f"{workers} workers": ["--workers", str(workers)]}
    if ray:
        configs["ray"] = ["--workers", str(workers), "--cluster", "ray"]
    runs, outs = {}, {}
    for name, extra in configs.items():
        outs[name] = tmp / f"stream-{name.replace(' ', '_')}"
        print(f"stream {len(names)} files, {name} (load {os.getloadavg()[0]:.2f}) ...", file=sys.stderr, flush=True)
        runs[name] = measured([*common, *extra, "--out", str(outs[name])])
        summary = json.loads((outs[name] / "summary.json").read_text())
        runs[name] |= {"workers": summary["workers"], "inner_wall_s": summary["wall_s"]}
    identical = {
        name: all(_lines_less_latency(o / f"{p.name}.jsonl") == _lines_less_latency(outs["1 process"] / f"{p.name}.jsonl")
                  for p in names)
        for name, o in outs.items()
    }  # fmt: skip
    one = runs["1 process"]["wall_s"]
    speedup = {name: one / r["wall_s"] for name, r in runs.items() if name != "1 process"}
    return {"files": len(names), "runs": runs, "speedup": speedup, "identical": identical}


def _busy(r: dict) -> str:
    return "-" if r["cores_busy"] is None else f"{r['cores_busy']:.2f}"


def table(res: dict[str, Any]) -> str:
    v, s = res["verify"], res["stream"]
    lines = [f"runtime.verify --targets {v['targets']}, {v['samples']} N-MNIST recordings, batch size {v['batch_size']}:", "",
             "| run | load before | command wall s | cores busy | " + " | ".join(v["runs"]["1 process"]["per_target_wall_s"]) + " |",
             "|---" * (4 + len(v["runs"]["1 process"]["per_target_wall_s"])) + "|"]  # fmt: skip
    for name, r in v["runs"].items():
        lines.append(f"| {name} ({r['workers']}) | {r['load_1min_before']:.2f} | {r['wall_s']:.1f} | {_busy(r)} | "
                     + " | ".join(f"{w:.2f} s" for w in r["per_target_wall_s"].values()) + " |")  # fmt: skip
    for name, sp in v["speedup"].items():
        lines.append(f"| speed-up, {name} | | {sp['command']:.2f}x | | "
                     + " | ".join(f"{sp[t]:.2f}x" for t in v["runs"]["1 process"]["per_target_wall_s"]) + " |")  # fmt: skip
    lines += ["", f"identical reports: {v['identical']}; skipped: {v['skipped'] or 'none'}"]
    if s is None:
        return "\n".join(lines)
    lines += ["", f"runtime.stream over {s['files']} N-MNIST files (eventsim):", "",
              "| run | load before | command wall s | cores busy | speed-up |", "|---|---|---|---|---|"]  # fmt: skip
    for name, r in s["runs"].items():
        sp = s["speedup"].get(name)
        lines.append(f"| {name} ({r['workers']}) | {r['load_1min_before']:.2f} | {r['wall_s']:.2f} | {_busy(r)} | "
                     f"{f'{sp:.2f}x' if sp else '-'} |")  # fmt: skip
    lines += ["", f"identical JSON lines: {s['identical']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    ap.add_argument("--graph", default="runs/nmnist_qat/model.fixed.nir", help="graph verified (default: %(default)s)")
    ap.add_argument("--stream-model", default="runs/nmnist_qat/model.nir", help="graph streamed (default: %(default)s)")
    ap.add_argument("--samples", type=at_least(1), default=100, help="recordings verified (default: %(default)s)")
    ap.add_argument("--targets", default="all", help="targets verified (default: %(default)s)")
    ap.add_argument(
        "--files", type=at_least(0), default=200, help="files streamed; 0: no streaming run (default: %(default)s)"
    )
    ap.add_argument("--workers", type=at_least(1), default=2, help="parallel workers (default: %(default)s)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray runs")
    ap.add_argument("--out", default="runs/bench/scale", help="results folder (default: %(default)s)")
    args = ap.parse_args(argv)
    for p in (args.graph, args.stream_model):
        if not (ROOT / p).is_file():
            print(
                f"error: {p} does not exist (make nmnist-qat writes it; or pass --graph/--stream-model)",
                file=sys.stderr,
            )
            return 2
    if not EVENTDATA.is_dir():
        print(f"error: N-MNIST recordings not found at {EVENTDATA}", file=sys.stderr)
        return 2
    ray = not args.no_ray and importlib.util.find_spec("ray") is not None
    with tempfile.TemporaryDirectory(prefix="snn-scale-") as tmp:
        res = {"cores": len(os.sched_getaffinity(0)), "workers": args.workers, "ray": ray,
               "verify": bench_verify(args.graph, args.samples, args.workers, ray, Path(tmp), args.targets),
               "stream": bench_stream(args.stream_model, args.files, args.workers, ray, Path(tmp)) if args.files else None}  # fmt: skip
    if not ray:
        res["ray_note"] = "not measured: " + (
            "--no-ray" if args.no_ray else "Ray is not installed (pip install '.[ray]')"
        )
    out = ROOT / args.out / "scale.json"
    write_json_atomic(out, res)
    print(table(res))
    print(f"results: {out}")
    same = all(res["verify"]["identical"].values()) and (
        res["stream"] is None or all(res["stream"]["identical"].values())
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
