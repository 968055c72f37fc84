"""Benchmarks and experiments, one module each (``python -m bench.NAME``); each writes its numbers to
files under ``--out`` (default: under ``runs/``), which the documentation's results page quotes; the
figures it shows are kept in ``bench/results/``.

- ``bench.nmnist_student``: the deployable N-MNIST student, trained, converted and verified end to end.
- ``bench.bkd_ablation``: distillation modes on real N-MNIST in the low-data regime, paired folds.
- ``bench.step_time``: training step time of each distillation mode.
- ``bench.quantisation``: accuracy of float, 8/6/4-bit and fixed-precision graphs, with and without QAT.
- ``bench.emulator_calibration``: the event-camera emulator against real N-MNIST recordings.
- ``bench.eventsim``: the event-driven simulator against the torch CPU target and Lava.
- ``bench.lava``: Lava's CPU simulation as a baseline.
- ``bench.stream``: streaming speed and memory on every real recording.
- ``bench.fuzz``: every file reader and model file fed mutated inputs for a time budget (counts per case).
- ``bench.scale``: verification and multi-file streaming over local worker processes and Ray, against one process.
- ``bench.peers``: eventsim against snnTorch, Norse and SpikingJelly (each on our graph through its own import),
  batch 1; SpikingJelly in its own environment, where ``bench.peer_env`` times eventsim again beside it.
- ``bench.startup``: ``runtime.stream`` start-up (imports, graph, first window) in fresh processes, cold and warm.

``bench.machine`` is not a benchmark: it names the CPU (model, vector extension, caches, the CPU numba
compiles for) that ``bench.eventsim``, ``bench.ceiling`` and ``bench.peers`` write beside their figures.
"""

import argparse


def at_least(minimum: int | float):
    """An argparse ``type``: a number no smaller than ``minimum`` (an integer when ``minimum`` is one),
    so that ``--samples 0`` or ``--seconds nan`` is argparse's one line, not a traceback later."""
    kind = type(minimum)

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if not value >= minimum:  # (NaN too)
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value

    return parse
