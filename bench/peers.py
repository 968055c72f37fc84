"""eventsim against the other SNN libraries, each running the same graph on the same inputs.

For each workload (the N-MNIST CSNN on real recordings, binned as trained and in 1 ms steps; the
digits student), the float graph is written for each library by :func:`convert.peers.graph_for`
and loaded with that library's own NIR import; then eventsim, the torch target and every library
run the same input spikes at batch 1 on one thread, in this process. Two timings, both reported
(they differ by cache eviction: eventsim loses most when interleaved):

- *interleaved*: sample by sample, every runner in turn (one sample each), median over ``--repeats``;
- *back to back*: each runner over all samples in a row, median over ``--repeats``.

Beside each time: the fraction of samples whose output counts equal our reference's, so that a
fast wrong answer shows. Libraries that are not importable here are skipped with the reason
(SpikingJelly, Sinabs and Rockpool pin packages that conflict with the project's torch; their
agreement is measured in scratch environments: ``tests/data/for_peers/``).

    python -m bench.peers
    python -m bench.peers --samples 16 --repeats 3

Writes ``peers.json`` and ``peers.md`` under ``--out`` (the load average is recorded beside them).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from bench import machine
from bench.eventsim import NMNIST, workloads
from convert.build import build_nir
from convert.peers import graph_for
from core.fileio import write_json_atomic, write_text_atomic
from targets import eventsim, torch_target
from targets import reference as ref
from targets.plan import load_plan

LIBRARIES = ("snntorch", "norse", "spikingjelly", "sinabs", "rockpool")
OUT_OF_ENV = {
    "spikingjelly": "SpikingJelly 2.0.0 pins torchaudio/tensorboard versions that conflict with the project's torch",
    "sinabs": "Sinabs 3.1.3 pins nir <= 1.0.4 (and --for refuses it: its neurons differ)",
    "rockpool": "Rockpool 3.1.0 imports no Conv2d (and --for refuses it)",
}


def _peer(library: str, graph, dt: float, folder: Path):
    """``(x_t, state) -> (y_t, state)`` module of ``library``'s own import of our file, or the reason it is skipped."""
    import nir

    if library in OUT_OF_ENV:
        return None, OUT_OF_ENV[library]
    try:
        path = folder / f"graph.{library}.nir"
        nir.write(path, graph_for(graph, library, dt=dt))
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            if library == "snntorch":
                from snntorch.import_nir import import_from_nir
                from snntorch.utils import reset

                net = import_from_nir(nir.read(path, type_check=False))
                return lambda x, state, net=net: (reset(net) if state is None else None, net(x, state))[1], None
            import norse.torch as norse

            return norse.from_nir(nir.read(path, type_check=False), dt=dt), None
    except ImportError as e:
        return None, f"not installed here ({e.name})"


def _stepped(net, x: np.ndarray) -> np.ndarray:
    """A library's module over ``x`` (T, 1, ...): output counts (1, classes). (snnTorch's modules keep
    their membranes between calls: its own ``utils.reset`` clears them before each sample.)"""
    state, total = None, 0
    with torch.no_grad():
        for t in range(x.shape[0]):
            y, state = net(torch.from_numpy(x[t]), state)
            total = total + y.numpy()
    return np.asarray(total, dtype=np.int64).reshape(x.shape[1], -1)


def measure(w: dict, args, folder: Path) -> dict:
    x = w["x"]
    graph, _ = build_nir(w["model"], w["shape"], precision="float", steps=x.shape[0])
    plan = load_plan(graph)
    dt = float(plan.meta["dt"])
    runners = {"eventsim": lambda xs: eventsim.run(plan, xs).counts,
               "torch target": lambda xs: torch_target.run(plan, xs, device="cpu").counts}  # fmt: skip
    skipped = {}
    for lib in LIBRARIES:
        net, why = _peer(lib, graph, dt, folder)
        if net is None:
            skipped[lib] = why
        else:
            runners[lib] = lambda xs, net=net: _stepped(net, xs)
    n = x.shape[1]
    samples = [np.ascontiguousarray(x[:, i : i + 1]) for i in range(n)]
    want = ref.run(plan, x).counts
    agree = {}
    for name, run in runners.items():  # (also the warm-up: compilation, first calls)
        got = np.concatenate([run(s) for s in samples])
        agree[name] = float((got == want).all(axis=1).mean())
    inter: dict[str, list[float]] = {k: [] for k in runners}
    b2b: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(args.repeats):
        per = dict.fromkeys(runners, 0.0)
        for s in samples:
            for name, run in runners.items():
                t0 = time.perf_counter()
                run(s)
                per[name] += time.perf_counter() - t0
        for name in runners:
            inter[name].append(per[name] / n)
            t0 = time.perf_counter()
            for s in samples:
                runners[name](s)
            b2b[name].append((time.perf_counter() - t0) / n)
    es_i, es_b = statistics.median(inter["eventsim"]), statistics.median(b2b["eventsim"])
    rows = {name: {"interleaved_ms": 1e3 * statistics.median(inter[name]), "back_to_back_ms": 1e3 * statistics.median(b2b[name]),
                   "ratio_interleaved": statistics.median(inter[name]) / es_i,
                   "ratio_back_to_back": statistics.median(b2b[name]) / es_b,
                   "identical_output_counts": agree[name]} for name in runners}  # fmt: skip
    return {"workload": w["name"], "weights": w["weights"], "samples": n, "steps": int(x.shape[0]), "runners": rows,
            "skipped": skipped}  # fmt: skip


def table(results: list[dict]) -> str:
    lines = ["| workload | runner | ms/sample interleaved | x eventsim | ms/sample back to back | x eventsim | identical counts "
             "| load avg before |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        load = r.get("load_average_before")
        for name, v in r["runners"].items():
            lines.append(f"| {r['workload']} | {name} | {v['interleaved_ms']:.2f} | {v['ratio_interleaved']:.1f}x | "
                         f"{v['back_to_back_ms']:.2f} | {v['ratio_back_to_back']:.1f}x | "
                         f"{100 * v['identical_output_counts']:.0f}% | {'-' if load is None else f'{load:.2f}'} |")  # fmt: skip
    skipped = {k: v for r in results for k, v in r["skipped"].items()}
    lines += [""] + [f"- {k}: skipped, {v}" for k, v in skipped.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--nmnist", default="runs/nmnist_student/student.pt")
    ap.add_argument("--digits", default="runs/demo/student.pt")
    ap.add_argument("--event-digits", default="runs/demo/nmnist/student.pt")
    ap.add_argument("--out", default="runs/bench/peers")
    args = ap.parse_args(argv)
    if args.samples < 1 or args.repeats < 1:
        print("error: --samples and --repeats must be at least 1", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    out = Path(args.out)
    (out / "graphs").mkdir(parents=True, exist_ok=True)
    if not NMNIST.is_dir():
        print(f"note: {NMNIST} not found: only the digits workloads run", file=sys.stderr)
    results = []
    for w in workloads(args):
        if w["key"] == "nmnist_1ms_nobias":
            continue
        load = os.getloadavg()[0]
        r = measure(w, args, out / "graphs") | {"load_average_before": load}
        results.append(r)
        print(table([r]), flush=True)
    cpu = machine.describe()
    write_json_atomic(out / "peers.json", {"results": results, "threads": 1, "batch": 1, "machine": cpu})
    write_text_atomic(out / "peers.md", f"Machine: {machine.line(cpu)}\n\n" + table(results))
    print(f"results: {out / 'peers.json'}, {out / 'peers.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
