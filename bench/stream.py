"""Streaming speed and memory: real-time factor and events per second for every real recording in
``../shared/eventdata`` on the ``eventsim`` and ``torch`` targets (one core each), and peak memory
while streaming generated event files of growing size (up to several GB): flat memory means the
reader, the binning and the model hold one chunk and one window at a time, whatever the file size.

The model is the event student of ``make demo`` (``runs/demo/nmnist/model.fixed.nir``) when present,
else an untrained event CSNN of the same shape (the report says which); both take 2x34x34 input.

    python -m bench.stream
    python -m bench.stream --sizes-gb 0.1 0.5 2
    python -m bench.stream --only evt2 --model runs/demo/nmnist/model.fixed.nir

Goal: at least 10x real time on one core for the DVS128/DAVIS recordings with ``eventsim``.

EVT 2.0 (``--only evt2`` runs this part alone) and EVT 3.0 (``--only evt3``, the Gen4.1 recording,
:mod:`inputs.formats.evt3`; the same tables): the Gen3 recording's events per second, stage by
stage, on the generic path (the expelliarmus reader with its checks, ``SensorMap``, then
``SensorMap.frames``) and on :mod:`inputs.formats.evt2`'s numba decoder and fused pass (decode,
map and bin in one loop), each the median of ``--repeats`` runs interleaved in this process, with
the ratio to the generic path; then the recording streamed end to end (``runtime.stream.stream``
in this process, ``--fused`` true and false alternately), real-time factor and ratio. Goal: at
least 20 M events/s per core for decode + map + bin, at least 1x real time end to end. Every
figure carries the 1-minute load average (``os.getloadavg``) measured beside it: on a busy machine
the ratios hold better than the absolute figures.

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

from bench import startup
from core.fileio import save_figure, write_json_atomic, write_text_atomic
from inputs.events import EVENT_DTYPE
from inputs.formats.arrays import NpyEventWriter
from inputs.formats.readers import DEFAULT_CHUNK_EVENTS

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
    demo = startup.DEMO_MODEL
    if demo.is_file():
        return demo, f"trained event student ({demo.relative_to(ROOT)}, fixed precision)"
    from convert.to_onnx import export_step_onnx
    from targets.plan import load_plan

    path = untrained_event_model(out, 12)
    export_step_onnx(load_plan(path), path.with_suffix(".step.onnx"))
    return path, f"untrained event CSNN (no {demo.relative_to(ROOT)}: run make demo for the trained one)"


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


EVT_GOAL_EVENTS_PER_S = 20e6
EVT_FILES = {"evt2": "evt2/gen3_sample.raw", "evt3": "evt3/gen41_sample.raw"}  # format: the recording timed
EVT_NAMES = {"evt2": "EVT 2.0", "evt3": "EVT 3.0"}


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _timed(fn, repeats: int, setup=None) -> list[tuple[float, float]]:
    """``(seconds, load average)`` of each of ``repeats`` calls of ``fn(setup())`` (setup not timed)."""
    times = []
    for _ in range(repeats):
        arg = setup() if setup else None
        t0 = time.perf_counter()
        fn(arg) if setup else fn()
        times.append((time.perf_counter() - t0, _load()))
    return times


def _median(times: list[tuple[float, float]]) -> tuple[float, float]:
    """The median run's ``(seconds, load average)``."""
    return sorted(times)[len(times) // 2]


def evt_bench(model: Path, repeats: int, fmt: str = "evt2") -> dict:
    """Events per second of each stage for a Prophesee format (``evt2``: the Gen3 recording; ``evt3``:
    the Gen4.1 one), generic path against the numba decoder and the fused pass, and the real-time
    factor of streaming the recording end to end both ways."""
    import importlib

    from inputs.events import Binning
    from inputs.formats.evt2 import iter_windows
    from inputs.formats.readers import open_events
    from runtime.stream import SensorMap, StreamConfig, parse_config, stream
    from targets.plan import load_plan

    evt = importlib.import_module(f"inputs.formats.{fmt}")
    path = EVENTDATA / EVT_FILES[fmt]
    plan = load_plan(model)
    bin_us, steps = int(TIMING[1]), int(TIMING[3])
    window_us = bin_us * steps
    reader = open_events(path)
    mapper = SensorMap.default(reader.sensor_size, plan.input_shape, None, None, "auto")
    h, w = plan.input_shape[1:]
    f = getattr(evt, f"open_{fmt}")(path)
    chunks = list(reader.chunks())
    n = sum(len(c) for c in chunks)
    mapped = [mapper(c)[0] for c in chunks]

    def generic_bin(parts: list[np.ndarray]) -> list[np.ndarray]:
        """What runtime.stream does per window: join the window's mapped events, then bin them."""
        ev = np.concatenate(parts)
        start = int(ev["t"][0]) - int(ev["t"][0]) % window_us
        frames = []
        while start <= ev["t"][-1]:
            sel = ev[(ev["t"] >= start) & (ev["t"] < start + window_us)]
            frames.append(mapper.frames(sel, Binning(steps, window_us, h, w, binary=True, t0_us=start)))
            start += window_us
        return frames

    def generic_all() -> None:
        generic_bin([mapper(c)[0] for c in open_events(path).chunks()])

    def binner():
        return evt.WindowBinner(reader.sensor_size, mapper.x0, mapper.y0, mapper.factor, mapper.width, mapper.height,
                                 mapper.channels, mapper.polarity, steps, window_us, True)  # fmt: skip

    stages = {  # name: (path, function)
        "decode (expelliarmus reader)": ("generic", lambda: list(open_events(path).chunks())),
        "map (SensorMap)": ("generic", lambda: [mapper(c) for c in chunks]),
        "bin (join + SensorMap.frames)": ("generic", lambda: generic_bin(mapped)),
        "decode + map + bin (generic)": ("generic", generic_all),
        "decode (numba)": (fmt, lambda: getattr(evt, f"read_{fmt}")(path)),
        "decode + map + bin (fused)": (fmt, lambda: list(iter_windows(f, binner(), DEFAULT_CHUNK_EVENTS))),
    }
    for _, fn in stages.values():  # load (or compile) everything once
        fn()
    times: dict[str, list] = {name: [] for name in stages}
    for _ in range(repeats):  # interleaved: a change of load hits every stage alike
        for name, (_, fn) in stages.items():
            times[name] += _timed(fn, 1)
    base = _median(times["decode + map + bin (generic)"])[0]
    rows = []
    for name, (kind, _) in stages.items():
        seconds, load = _median(times[name])
        rows.append({"stage": name, "path": kind, "seconds": seconds, "events_per_s": n / seconds,
                     "vs_generic_total": base / seconds, "load_avg_1min": load})  # fmt: skip

    def one(fused: bool) -> dict:
        argv = [
            str(path),
            "--model",
            str(model),
            "--target",
            "eventsim",
            "--progress",
            "false",
            "--fused",
            str(fused).lower(),
        ]
        return stream(parse_config(StreamConfig, argv, "bench", "bench"))["summary"]

    one(True), one(False)  # the target's kernels and the decoder loaded once
    ends: dict[bool, list] = {True: [], False: []}
    for _ in range(repeats):
        for fused in (True, False):
            ends[fused].append((one(fused), _load()))
    end_to_end = {}
    for fused, runs in ends.items():
        runs.sort(key=lambda r: r[0]["wall_s"])
        s, load = runs[len(runs) // 2]
        end_to_end["fused" if fused else "generic"] = {"wall_s": s["wall_s"], "recording_s": s["recording_s"],
            "real_time_factor": s["real_time_factor"], "events_per_s": s["events_per_s"], "windows": s["windows"],
            "load_avg_1min": load}  # fmt: skip
    end_to_end["ratio"] = end_to_end["fused"]["real_time_factor"] / end_to_end["generic"]["real_time_factor"]
    return {"format": fmt, "file": EVT_FILES[fmt], "events": n, "model": str(model), "bin_us": bin_us, "window_steps": steps,
            "repeats": repeats, "goal_events_per_s": EVT_GOAL_EVENTS_PER_S, "stages": rows,
            "end_to_end": end_to_end, "cpus": os.cpu_count()}  # fmt: skip


def evt2_table(r: dict) -> str:
    lines = [f"{EVT_NAMES[r.get('format', 'evt2')]}: {r['file']} ({r['events']:,} events), median of {r['repeats']} interleaved runs; "
             f"goal {r['goal_events_per_s'] / 1e6:.0f} M events/s for decode + map + bin, 1x real time end to end", "",
             "| stage | path | ms | M events/s | x generic decode + map + bin | load avg (1 min) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for s in r["stages"]:
        lines.append(f"| {s['stage']} | {s['path']} | {1e3 * s['seconds']:.2f} | {s['events_per_s'] / 1e6:.1f} | "
                     f"{s['vs_generic_total']:.1f}x | {s['load_avg_1min']:.2f} |")  # fmt: skip
    e = r["end_to_end"]
    lines += [
        "",
        f"| end to end ({r['model']}, eventsim) | wall ms | real-time factor | load avg (1 min) |",
        "|---|---|---|---|",
    ]
    for kind in ("generic", "fused"):
        lines.append(f"| {kind} | {1e3 * e[kind]['wall_s']:.2f} | {e[kind]['real_time_factor']:.2f}x | "
                     f"{e[kind]['load_avg_1min']:.2f} |")  # fmt: skip
    lines.append(f"| fused / generic | | {e['ratio']:.1f}x | |")
    return "\n".join(lines) + "\n"


def run(args) -> dict:
    from tqdm import tqdm

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, weights = (Path(args.model), f"--model {args.model}") if args.model else model_path(out)
    if args.only in EVT_FILES:
        fmt = args.only
        if not (EVENTDATA / EVT_FILES[fmt]).is_file():
            raise SystemExit(f"{EVENTDATA / EVT_FILES[fmt]} not found: the {EVT_NAMES[fmt]} benchmark needs it")
        results = {"model": str(model), "weights": weights, fmt: evt_bench(model, args.repeats, fmt)}
        write_json_atomic(out / f"stream_{fmt}.json", results)
        return results
    results: dict = {"model": str(model), "weights": weights, "goal_rtf": GOAL_RTF, "recordings": [], "sizes": []}
    for fmt, name in EVT_FILES.items():
        if (EVENTDATA / name).is_file():
            results[fmt] = evt_bench(model, args.repeats, fmt)
            write_json_atomic(out / "stream.json", results)
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
    p.add_argument("--model", default=None, help="the 2x34x34 event graph to stream (default: see the docstring)")
    p.add_argument("--only", choices=["all", *EVT_FILES], default="all",
                   help="evt2 / evt3: the EVT 2.0 / 3.0 stages and end to end only")  # fmt: skip
    p.add_argument(
        "--repeats", type=int, default=7, help="EVT 2.0 / 3.0: interleaved runs per figure (the median is kept)"
    )
    args = p.parse_args(argv)
    results = run(args)
    out = Path(args.out)
    if args.only in EVT_FILES:
        md = evt2_table(results[args.only])
        write_text_atomic(out / f"stream_{args.only}.md", md)
        print(md)
        print(f"written: {out / f'stream_{args.only}.json'}, {out / f'stream_{args.only}.md'}")
        return 0
    md = table(results) + "".join("\n" + evt2_table(results[fmt]) for fmt in EVT_FILES if fmt in results)
    write_text_atomic(out / "stream.md", md)
    plot(results, out / "stream.png")
    print(md)
    print(f"model: {results['weights']}")
    print(f"written: {out / 'stream.json'}, {out / 'stream.md'}, {out / 'stream.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
