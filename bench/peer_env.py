"""A peer library timed beside eventsim in the library's own environment.

SpikingJelly pins packages that conflict with the project's torch, so ``bench.peers`` cannot import
it beside the other runners. Instead it writes our graph, the library's rewrite of it
(:func:`convert.peers.graph_for`) and the input samples, and runs this module with the interpreter
of a scratch environment that holds the library (made as ``tests/data/foreign/README.md`` says,
with numpy, numba, nir and h5py beside it: eventsim's path imports no torch). Eventsim is timed
again here, beside the library, in one process and the same way as ``bench.peers`` times its own
runners (:func:`time_runners`), so that the ratio is measured within one run:

    ENV/bin/python -m bench.peer_env --library spikingjelly --graph G.nir \\
        --peer-graph G.spikingjelly.nir --inputs x.npy --dt 1e-3 --repeats 3 --out result.json

writes ``result.json``: per runner the seconds per sample (interleaved and back to back, one figure
per repeat) and the output counts of every sample (the caller compares them with the reference's),
with the library's version and the load average before timing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench import at_least

LIBRARIES = ("snntorch", "norse", "spikingjelly")  # libraries whose own import runs our rewritten graphs


def load_peer(library: str, path: Path, dt: float) -> Callable[[np.ndarray], np.ndarray]:
    """``x (T, 1, ...) -> output counts (1, classes)`` by ``library``'s own import of ``path`` (a file
    :func:`convert.peers.graph_for` wrote for it; ``dt``: our graph's step, which Norse's import takes).
    A library whose modules keep their membranes between calls is reset by its own call before each
    sample (snnTorch's ``utils.reset``, SpikingJelly's ``functional.reset_net``). Raises ImportError
    where the library is not installed."""
    import nir
    import torch

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if library == "snntorch":
            from snntorch.import_nir import import_from_nir
            from snntorch.utils import reset

            net = import_from_nir(nir.read(path, type_check=False))
            start = lambda: reset(net)  # noqa: E731
        elif library == "spikingjelly":
            from spikingjelly.activation_based import functional
            from spikingjelly.activation_based.nir_exchange import import_from_nir

            from convert.peers import PEER_DT  # (the dt its import is called with, which the rewrite assumes)

            net = import_from_nir(str(path), dt=PEER_DT["spikingjelly"])
            start = lambda: functional.reset_net(net)  # noqa: E731
        elif library == "norse":
            import norse.torch as norse

            net = norse.from_nir(nir.read(path, type_check=False), dt=dt)
            start = lambda: None  # noqa: E731 (its state is passed, not kept)
        else:
            raise ValueError(f"unknown library {library!r}; known: {', '.join(LIBRARIES)}")

    def run(x: np.ndarray) -> np.ndarray:
        start()
        state, total = None, 0
        with torch.no_grad():
            for t in range(x.shape[0]):
                y, state = net(torch.from_numpy(x[t]), state)
                total = total + y.numpy()
        return np.asarray(total, dtype=np.int64).reshape(x.shape[1], -1)

    return run


def time_runners(runners: dict[str, Callable], samples: list[np.ndarray], repeats: int) -> tuple[dict, dict]:
    """Each runner's seconds per sample, one figure per repeat: ``(interleaved, back to back)``.
    Interleaved runs every runner on one sample in turn (each finds the caches as the others left
    them); back to back runs each runner over all samples in a row."""
    inter: dict[str, list[float]] = {k: [] for k in runners}
    b2b: dict[str, list[float]] = {k: [] for k in runners}
    n = len(samples)
    for _ in range(repeats):
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
    return inter, b2b


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.peer_env", description=__doc__.split("\n\n")[0])
    ap.add_argument("--library", required=True, choices=LIBRARIES)
    ap.add_argument("--graph", required=True, help="our float graph (.nir)")
    ap.add_argument("--peer-graph", required=True, help="the same graph written for the library (convert.peers)")
    ap.add_argument("--inputs", required=True, help="input spikes (T, B, ...) as .npy")
    ap.add_argument("--dt", type=float, required=True, help="our graph's time step (s)")
    ap.add_argument("--repeats", type=at_least(1), default=3)
    ap.add_argument("--out", required=True, help="the JSON file to write")
    args = ap.parse_args(argv)
    import torch

    from core.fileio import write_json_atomic
    from targets import eventsim
    from targets.plan import load_plan

    torch.set_num_threads(1)
    plan = load_plan(args.graph)
    x = np.load(args.inputs)
    samples = [np.ascontiguousarray(x[:, i : i + 1]) for i in range(x.shape[1])]
    runners = {"eventsim": lambda xs: eventsim.run(plan, xs).counts,
               args.library: load_peer(args.library, Path(args.peer_graph), args.dt)}  # fmt: skip
    counts = {
        name: np.concatenate([run(s) for s in samples]).tolist() for name, run in runners.items()
    }  # (warm-up too)
    load = os.getloadavg()[0]
    inter, b2b = time_runners(runners, samples, args.repeats)
    result = {
        "library": args.library,
        "versions": {m: importlib.metadata.version(m) for m in (args.library, "torch", "numpy", "numba", "nir")},
        "python": sys.version.split()[0],
        "load_average_before": load,
        "runners": {k: {"interleaved_s": inter[k], "back_to_back_s": b2b[k], "counts": counts[k]} for k in runners},
    }
    write_json_atomic(Path(args.out), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
