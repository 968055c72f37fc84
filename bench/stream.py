"""Streaming speed and memory: real-time factor and events per second for every real recording in
``../shared/eventdata`` on the ``eventsim`` and ``torch`` targets (one core each), and peak memory
while streaming generated event files of growing size (up to several GB): flat memory means the
reader, the binning and the model hold one chunk and one window at a time, whatever the file size.

The model is the event student of ``make demo`` (``runs/demo/event/model.fixed.nir``) when present,
else an untrained event CSNN of the same shape (the report says which); both take 2x34x34 input.

    python -m bench.stream
    python -m bench.stream --sizes-gb 0.1 0.5 2

Goal: at least 10x real time on one core for the DVS128/DAVIS recordings with ``eventsim``.
Writes ``stream.json``, ``stream.md`` and ``stream.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from core.fileio import save_figure, write_json_atomic, write_text_atomic
from inputs.events import EVENT_DTYPE
from inputs.formats.arrays import NpyEventWriter

ROOT = Path(__file__).resolve().parents[1]
EVENTDATA = ROOT.parent / "shared" / "eventdata"
RECORDINGS = {  # file: extra flags (sensor size where the file states none)
    "aedat2/dvs128_walking.aedat": [],
    "aedat2/davis240c_translating_boxes.aedat": [],
    "dvs128_bs2/clip_1450ms.bin": ["--sensor-size", "128x128"],
    "aedat4/dvxplorer_sample.aedat4": [],
    "evt2/gen3_sample.raw": [],
    "evt3/gen41_sample.raw": [],
    "dat/ncars_sample.dat": ["--sensor-size", "120x100"],
    "nmnist/single_sample.bin": ["--sensor-size", "34x34"],
}
GOAL_RTF = 10.0


def untrained_event_model(out: Path, steps: int) -> Path:
    """A seeded, untrained event CSNN (2x34x34 input, readout scaled so that it spikes) as a fixed
    graph of ``steps`` steps in ``out``: what the streaming benchmarks run without a trained model."""
    import torch

    from convert.build import build_nir
    from convert.nirgraph import write_graph
    from train.models import build_model

    torch.manual_seed(0)
    model = build_model("dvs_csnn", input_size=34, input_pool=2, channels=(16, 32), num_classes=10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(8)
    x = (np.random.default_rng(0).random((steps, 8, 2, 34, 34)) < 0.05).astype(np.float32)
    graph, _ = build_nir(model.eval(), (2, 34, 34), precision="fixed", steps=steps, calibration=x)
    path = out / "untrained_event_model.nir"
    write_graph(path, graph)
    return path


def model_path(out: Path) -> tuple[Path, str]:
    demo = ROOT / "runs" / "demo" / "event" / "model.fixed.nir"
    if demo.is_file():
        return demo, f"trained event student ({demo.relative_to(ROOT)}, fixed precision)"
    from convert.to_onnx import export_step_onnx
    from targets.plan import load_plan

    path = untrained_event_model(out, 12)
    export_step_onnx(load_plan(path), path.with_suffix(".step.onnx"))
    return path, "untrained event CSNN (no runs/demo/event/model.fixed.nir: run make demo for the trained one)"


TIMING = ["--bin-us", "25000", "--window-steps", "12"]  # 300 ms windows of 12 steps (the emulated digits' binning)


def stream_once(file: Path, model: Path, target: str, extra: list[str], out: Path) -> dict:
    """One ``runtime.stream`` run in a child process (its own peak memory); returns its summary."""
    lines = out / "windows.jsonl"
    cmd = [sys.executable, "-c", CHILD, str(file), "--model", str(model), "--target", target,
           "--out", str(lines), "--progress", "false", *TIMING, *extra]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    summary = json.loads((out / "windows.jsonl.summary.json").read_text())
    summary["process_s"] = time.perf_counter() - t0
    summary["peak_rss_mib"] = int(proc.stderr.strip().splitlines()[-1].split("=")[1]) / 1024
    return summary


# runtime.stream's main, then the process's own peak resident memory (KiB) as the last stderr line
CHILD = (
    "import resource, sys; from runtime.stream import main; code = main(sys.argv[1:]); "
    "print('peak_rss_kib=%d' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(code)"
)


def big_file(path: Path, gigabytes: float, rate_hz: float = 2e6, seed: int = 0) -> int:
    """A DVS128-like recording of ``gigabytes`` (random events at ``rate_hz``), written chunk by chunk."""
    rng = np.random.default_rng(seed)
    n_total = int(gigabytes * 2**30 / EVENT_DTYPE.itemsize)
    chunk = 1 << 22
    t = 0
    with NpyEventWriter(path) as w:
        for start in range(0, n_total, chunk):
            n = min(chunk, n_total - start)
            ev = np.empty(n, EVENT_DTYPE)
            ev["t"] = t + np.cumsum(rng.exponential(1e6 / rate_hz, n)).astype(np.int64)
            t = int(ev["t"][-1])
            ev["x"], ev["y"] = rng.integers(0, 128, n), rng.integers(0, 128, n)
            ev["p"] = rng.integers(0, 2, n)
            w.write(ev)
    return n_total


def run(args) -> dict:
    from tqdm import tqdm

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, weights = model_path(out)
    results: dict = {"model": str(model), "weights": weights, "goal_rtf": GOAL_RTF, "recordings": [], "sizes": []}
    jobs = [(f, t) for f in RECORDINGS for t in args.targets] if EVENTDATA.is_dir() else []
    if not jobs:
        print(f"note: {EVENTDATA} not found; real recordings skipped", file=sys.stderr)
    for f, target in tqdm(jobs, desc="recordings", unit="run", file=sys.stderr):
        s = stream_once(EVENTDATA / f, model, target, RECORDINGS[f], out)
        results["recordings"].append({"file": f, "target": target, **{k: s[k] for k in (
            "events_read", "events_used", "windows", "recording_s", "wall_s", "events_per_s", "real_time_factor",
            "latency_ms", "startup_s", "peak_rss_mib")}})  # fmt: skip
        write_json_atomic(out / "stream.json", results)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for gb in tqdm(args.sizes_gb, desc="file sizes", unit="file", file=sys.stderr):
            path = Path(tmp) / f"big_{gb}.npy"
            n = big_file(path, gb)
            s = stream_once(path, model, "eventsim", ["--sensor-size", "128x128"], out)
            results["sizes"].append({"gigabytes": gb, "bytes": path.stat().st_size, "events": n,
                                     "peak_rss_mib": s["peak_rss_mib"], "events_per_s": s["events_per_s"],
                                     "real_time_factor": s["real_time_factor"], "wall_s": s["wall_s"]})  # fmt: skip
            path.unlink()
            write_json_atomic(out / "stream.json", results)
    return results


def table(results: dict) -> str:
    lines = ["| recording | target | events | recording s | wall s | events/s | real-time factor | latency p50 / max ms |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results["recordings"]:
        lines.append(f"| {r['file']} | {r['target']} | {r['events_read']:,} | {r['recording_s']:.3f} | {r['wall_s']:.3f} | "
                     f"{r['events_per_s']:,.0f} | {r['real_time_factor']:.1f}x | "
                     f"{r['latency_ms']['p50']:.2f} / {r['latency_ms']['max']:.2f} |")  # fmt: skip
    if results["sizes"]:
        lines += ["", "| generated file | events | peak RSS MiB | events/s |", "|---|---|---|---|"]
        for s in results["sizes"]:
            lines.append(
                f"| {s['bytes'] / 2**30:.2f} GiB | {s['events']:,} | {s['peak_rss_mib']:.0f} | {s['events_per_s']:,.0f} |"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    recs = results["recordings"]
    names = sorted({r["file"] for r in recs}, key=list(RECORDINGS).index)
    for j, target in enumerate(sorted({r["target"] for r in recs})):
        vals = [
            next((r["real_time_factor"] for r in recs if r["file"] == n and r["target"] == target), 0) for n in names
        ]
        a.bar(np.arange(len(names)) + 0.4 * j, vals, 0.4, label=target)
    a.axhline(GOAL_RTF, color="k", ls="--", lw=1, label="goal (10x)")
    a.set_xticks(np.arange(len(names)) + 0.2, [n.split("/")[-1] for n in names], rotation=30, ha="right", fontsize=7)
    a.set(ylabel="real-time factor (recording / processing time)", yscale="log", title="real recordings, one core")
    a.legend(fontsize=7), a.grid(axis="y", alpha=0.3)
    if results["sizes"]:
        gb = [s["bytes"] / 2**30 for s in results["sizes"]]
        b.plot(gb, [s["peak_rss_mib"] for s in results["sizes"]], "o-")
        b.set(xlabel="event file size (GiB)", ylabel="peak RSS of the streaming process (MiB)",
              title="memory against file size (eventsim)", ylim=(0, None))  # fmt: skip
        b.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("--targets", nargs="+", default=["eventsim", "torch"])
    p.add_argument("--sizes-gb", nargs="*", type=float, default=[0.1, 0.5, 2.0])
    p.add_argument("--tmp", default=None, help="folder for the generated files (default: the system's)")
    p.add_argument("--out", default="runs/bench/stream")
    args = p.parse_args(argv)
    results = run(args)
    out = Path(args.out)
    md = table(results)
    write_text_atomic(out / "stream.md", md)
    plot(results, out / "stream.png")
    print(md)
    print(f"model: {results['weights']}")
    print(f"written: {out / 'stream.json'}, {out / 'stream.md'}, {out / 'stream.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
