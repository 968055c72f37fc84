"""``python -m runtime.warm``: compile, once at set-up, the code a first run would otherwise compile.

The ``eventsim`` target's kernels are numba functions, compiled on their first call and cached
(``cache=True``) beside their source, in ``targets/eventsim/__pycache__`` (``NUMBA_CACHE_DIR``
moves it). Numba compiles one machine-code version per combination of argument types, and the
types follow the graph (float or fixed precision, a spike or an LI readout) and the input (the
accumulator widens for large spike counts). This runs the simulator on tiny generated graphs in
every such combination, as a batch (``runtime.run``, ``runtime.verify``) and as a stream at batch 1
(``runtime.stream``), so that the first real run loads machine code (a fraction of a second)
instead of compiling it (10 s and more on a small CPU). ``make setup`` runs it after installing;
run again, it only loads what is cached. Prints how many versions it compiled and loaded.

Numba checks a cached version against its source file's time stamp and size, and its CPU: an
edited ``kernels.py`` or another machine compiles again (``make setup`` then warms again).

Then, from the argument types of every kernel call the warm-up made, it builds the kernels'
extension module compiled ahead of time (:mod:`targets.eventsim.aot`; about 2 minutes on 2 cores,
skipped when the one in place is fresh and holds them all), with which a run or stream process never
imports numba: its first window comes about 1 s sooner on a small CPU.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.config import parse_config

PRECISIONS = ("float", "fixed")
READOUTS = ("spikes", "li")
# binary spikes (the narrow accumulators), then spike counts large enough for the wide ones
INPUT_VALUES = (1.0, float(2**20))
OTHER_INPUTS = (np.float64, np.bool_)  # input dtypes a user's arrays come in (float32 above; uint8 reads as bool)


def tiny_graphs(folder: Path) -> list[Path]:
    """A small event CSNN (sum pooling, convolution, affine, LIF; an LI readout too) in both precisions."""
    import torch

    from convert.build import build_nir
    from convert.nirgraph import write_graph
    from train.models import build_model

    paths = []
    x = (np.random.default_rng(0).random((4, 2, 2, 8, 8)) < 0.2).astype(np.float32)
    for readout in READOUTS:
        torch.manual_seed(0)
        model = build_model("dvs_csnn", input_size=8, input_pool=2, channels=(2,), num_classes=3, readout=readout)
        for precision in PRECISIONS:
            graph, _ = build_nir(model.eval(), (2, 8, 8), precision=precision, steps=4, calibration=x)
            paths.append(folder / f"{readout}.{precision}.nir")
            write_graph(paths[-1], graph)
    return paths


def kernels() -> dict[str, Any]:
    """eventsim's numba functions by name (every one the kernels module defines)."""
    from numba.core.registry import CPUDispatcher

    from targets.eventsim import kernels as module

    return {name: f for name, f in vars(module).items() if isinstance(f, CPUDispatcher)}


def kernel_stats() -> tuple[int, int]:
    """``(compiled, loaded)``: machine-code versions of eventsim's numba functions compiled and loaded
    from the cache in this process so far."""
    found = kernels().values()
    return sum(sum(f.stats.cache_misses.values()) for f in found), sum(sum(f.stats.cache_hits.values()) for f in found)


def kernel_signatures() -> set[str]:
    """Every version of eventsim's numba functions this process holds, as ``name(argument types)``."""
    return {f"{name}{sig}" for name, f in kernels().items() for sig in f.signatures}


def warm_eventsim() -> dict[str, Any]:
    """Run every graph of :func:`tiny_graphs` on eventsim, batched and streamed, with every input of
    ``INPUT_VALUES``, on numba's JIT; returns the versions compiled and loaded, the seconds it took
    and the arguments of every kernel call (for :func:`build_aot`)."""
    from targets import eventsim
    from targets.eventsim import aot
    from targets.plan import load_plan

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="snn-warm-") as tmp, aot.recording() as calls:
        for path in tiny_graphs(Path(tmp)):
            plan = load_plan(path)
            spikes = (np.random.default_rng(1).random((plan.steps, 2, *plan.input_shape)) < 0.2).astype(np.float32)
            for value in INPUT_VALUES:
                eventsim.run(plan, spikes * np.float32(value), record=True)
                eventsim.stream(plan).feed(spikes[:, 0] * np.float32(value))
            for dtype in OTHER_INPUTS:
                eventsim.run(plan, spikes.astype(dtype))
    compiled, loaded = kernel_stats()
    return {"compiled": compiled, "loaded": loaded, "seconds": time.perf_counter() - t0, "calls": calls}


def build_aot(calls: dict[str, list[tuple]]) -> str:
    """Build eventsim's ahead-of-time module for the argument types of ``calls`` unless the one in
    place is fresh and holds them all (:mod:`targets.eventsim.aot`); returns what was done."""
    from targets.eventsim import aot

    if aot.fresh(calls):
        return f"up to date ({aot.folder() / aot.MANIFEST})"
    print("compiling eventsim's kernels ahead of time (a process that runs them then never imports numba: "
          "about 2 minutes on 2 cores) ...", flush=True)  # fmt: skip
    try:
        manifest = aot.build(calls)
    except Exception as e:  # (a speed-up only: without it numba's JIT runs them, as before; say why)
        return f"not built ({type(e).__name__}: {e}); numba's JIT will run them"
    return f"{len(manifest['versions'])} versions built in {manifest['seconds']:.0f} s ({aot.folder() / manifest['module']})"


def warm_evt2() -> float:
    """Load or compile the EVT 2.0 decoder and fused pass (``runtime.stream``'s path for Prophesee
    Gen3/Gen4 files, :mod:`inputs.formats.evt2`); returns the seconds it took."""
    from inputs.events import EVENT_DTYPE
    from inputs.formats import evt2

    t0 = time.perf_counter()
    evt2.WindowBinner((8, 8), 0, 0, 1, 8, 8, 2, "split", 4, 1000, False).warm()
    ev = np.empty(0, EVENT_DTYPE)
    evt2.decode_words(np.zeros(0, np.uint32), np.int64(0), 8, 8, ev["t"], ev["x"], ev["y"], ev["p"])
    return time.perf_counter() - t0


def warm_evt3() -> float:
    """Load or compile the EVT 3.0 decoder and fused pass (``runtime.stream``'s path for Prophesee
    Gen4.1 / IMX636 files, :mod:`inputs.formats.evt3`); returns the seconds it took."""
    from inputs.events import EVENT_DTYPE
    from inputs.formats import evt3

    t0 = time.perf_counter()
    evt3.WindowBinner((8, 8), 0, 0, 1, 8, 8, 2, "split", 4, 1000, False).warm()
    ev = np.empty(0, EVENT_DTYPE)
    words = np.zeros(0, np.uint16)
    evt3.count_events(words)
    evt3.decode_words(words, evt3.new_state(), 8, 8, ev["t"], ev["x"], ev["y"], ev["p"])
    return time.perf_counter() - t0


@dataclass
class WarmConfig:
    """No options: what it compiles follows from the targets."""


def main(argv: list[str] | None = None) -> int:
    parse_config(WarmConfig, argv, "python -m runtime.warm", __doc__)
    done = warm_eventsim()
    print(f"eventsim's numba kernels: {done['compiled']} version(s) compiled, {done['loaded']} loaded from the cache "
          f"in {done['seconds']:.1f} s")  # fmt: skip
    print(f"eventsim's kernels compiled ahead of time: {build_aot(done['calls'])}")
    print(f"EVT 2.0 decoder and fused pass: ready in {warm_evt2():.1f} s")
    print(f"EVT 3.0 decoder and fused pass: ready in {warm_evt3():.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
