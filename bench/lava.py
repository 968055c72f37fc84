"""Lava's CPU simulation as a baseline: steps per second and time per sample, both precisions.

Workloads: the N-MNIST CSNN (``nmnist_csnn``; untrained weights, readout scaled so that every layer
spikes, fed with real N-MNIST recordings from ``../shared/eventdata`` when present, else random
spikes) and the digits model (the demo's trained graphs ``runs/demo/model{,.fixed}.nir`` when
``make demo`` has run, else an untrained ``digits_csnn``). Each graph runs
once with ``--samples`` samples through the ``lava`` target, and

- time per sample = Lava's own stepping time per step (the worker's clock from the first step's
  output to the last: worker start, process-graph build and Lava compile excluded) x (T + depth),
  steps per second its inverse per step,
- fixed cost per call (worker start, process-graph build, Lava compile, stop) = the call's wall time
  - samples x time per sample.

(The difference of a 1-sample and an N-sample call, used before, drowned in the ~2 s start-up's
noise once Lava took 0.02-0.1 s per sample: it gave negative times.)

The ``torch`` target on the CPU runs the same samples, one at a time, in the same run as the baseline
(best of 3 rounds; ratio = Lava time per sample / torch time per sample). Writes ``runs/bench/lava.json`` and prints a table.

    python -m bench.lava --samples 16
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import at_least
from core.fileio import write_json_atomic
from runtime.latency import extra_steps
from targets import get_target, lava_target, torch_target
from targets.plan import Plan, load_plan

ROOT = Path(__file__).resolve().parents[1]
EVENTDATA = ROOT.parent / "shared" / "eventdata" / "nmnist" / "train"


def nmnist_graphs(tmp: Path, samples: int) -> tuple[dict[str, Path], np.ndarray, str]:
    import torch

    from convert.build import build_nir
    from convert.nirgraph import write_graph
    from inputs.graph_data import load_inputs
    from train.models import build_model

    torch.manual_seed(0)
    model = build_model("nmnist_csnn").eval()
    with torch.no_grad():
        model.head[2].weight.mul_(8)
    if EVENTDATA.is_dir():
        plan0 = load_plan(build_nir(model, (2, 34, 34), steps=8)[0])
        plan0.meta["T"] = 8
        spikes, _, _ = load_inputs(plan0, "nmnist", root=str(EVENTDATA), samples=samples)
        what = f"real N-MNIST ({EVENTDATA}), untrained weights"
    else:
        spikes = (np.random.default_rng(0).random((8, samples, 2, 34, 34)) < 0.05).astype(np.float32)
        what = "random spikes (no ../shared/eventdata), untrained weights"
    paths = {}
    for precision in ("float", "fixed"):
        graph, _ = build_nir(model, (2, 34, 34), precision=precision, steps=8, calibration=spikes)
        paths[precision] = tmp / f"nmnist.{precision}.nir"
        write_graph(paths[precision], graph)
    return paths, spikes, what


def digits_graphs(tmp: Path, samples: int) -> tuple[dict[str, Path], np.ndarray, str]:
    from inputs.graph_data import load_inputs

    demo = {"float": ROOT / "runs/demo/model.nir", "fixed": ROOT / "runs/demo/model.fixed.nir"}
    if all(p.is_file() for p in demo.values()):
        spikes, _, _ = load_inputs(load_plan(demo["fixed"]), samples=samples)
        return demo, spikes, "trained demo model (runs/demo), digits test samples"
    import torch

    from convert.build import build_nir
    from convert.nirgraph import write_graph
    from train.models import build_model

    torch.manual_seed(0)
    model = build_model("digits_csnn").eval()
    spikes = (np.random.default_rng(0).random((8, samples, 1, 8, 8)) < 0.3).astype(np.float32)
    paths = {}
    for precision in ("float", "fixed"):
        graph, _ = build_nir(model, (1, 8, 8), precision=precision, steps=8, calibration=spikes)
        paths[precision] = tmp / f"digits.{precision}.nir"
        write_graph(paths[precision], graph)
    return paths, spikes, "untrained digits_csnn (no runs/demo), random spikes"


def seconds_per_sample(plan: Plan, sim: dict, steps: int) -> float:
    """Lava's own stepping time (a run's ``stats["lava"]``) per sample of ``steps`` input steps, with
    the zero steps its per-layer latency adds."""
    return sim["seconds"] / sim["steps"] * (steps + extra_steps(plan, get_target("lava").latency))


def measure(plan: Plan, spikes: np.ndarray) -> dict:
    depth = extra_steps(plan, get_target("lava").latency)
    x = np.concatenate([spikes, np.zeros((depth, *spikes.shape[1:]), spikes.dtype)])
    steps, n = x.shape[0], x.shape[1]
    load = os.getloadavg()[0]
    # torch first: Lava's worker processes take a moment to exit after a run, which would slow it
    torch_target.run(plan, x[:, :1], device="cpu")  # warm-up
    rounds = []
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(n):  # batch 1, as Lava runs
            torch_target.run(plan, x[:, i : i + 1], device="cpu")
        rounds.append((time.perf_counter() - t0) / n)
    torch_per_sample = min(rounds)
    t0 = time.perf_counter()
    sim = lava_target.run(plan, x).stats["lava"]
    wall = time.perf_counter() - t0
    per_sample = seconds_per_sample(plan, sim, spikes.shape[0])
    return {"samples": n, "steps_per_sample": steps, "depth": depth, "wall_s": wall, "s_per_sample": per_sample,
            "steps_per_s": sim["steps"] / sim["seconds"], "fixed_cost_per_call_s": wall - n * per_sample,
            "torch_cpu_s_per_sample": torch_per_sample, "lava_over_torch": per_sample / torch_per_sample,
            "load_1min_before": load}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.lava", description=__doc__.strip().splitlines()[0])
    ap.add_argument("--samples", type=at_least(1), default=16, help="samples per workload (default: %(default)s)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "lava.json"), help="JSON output")
    args = ap.parse_args(argv)
    reason = lava_target.unavailable_reason()
    if reason:
        print(f"lava target unavailable: {reason}", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for workload, make in (("nmnist_csnn", nmnist_graphs), ("digits", digits_graphs)):
            paths, spikes, what = make(Path(tmp), args.samples)
            for precision, path in paths.items():
                plan = load_plan(path)
                x = spikes if precision == "float" else np.rint(spikes)
                rec = {"workload": workload, "precision": precision, "data": what} | measure(plan, x)
                results.append(rec)
                print(f"{workload:<12} {precision:<6} {rec['steps_per_s']:8.1f} steps/s {rec['s_per_sample']:8.3f} s/sample",
                      file=sys.stderr)  # fmt: skip
    write_json_atomic(args.out, {"machine": "this machine's CPU", "results": results})
    print(
        "| workload | precision | Lava steps/s | Lava s/sample | fixed cost/call (s) | torch CPU s/sample | Lava / torch "
        "| load avg before |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['workload']} | {r['precision']} | {r['steps_per_s']:.1f} | {r['s_per_sample']:.3f} | "
              f"{r['fixed_cost_per_call_s']:.2f} | {r['torch_cpu_s_per_sample'] * 1e3:.2f} ms | {r['lava_over_torch']:.0f}x | {r['load_1min_before']:.2f} |")  # fmt: skip
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
