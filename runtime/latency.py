"""Per-layer latency: running a target that delivers spikes late and aligning it to the reference.

Lava's Dense and Conv processes deliver a spike one step after it was sent, so a LIF layer ``d``
synaptic layers deep shows model step ``t`` at step ``t + d * latency``. :func:`run_aligned` feeds
such a target ``T + depth * latency`` steps (the input padded with zero steps, so the deepest layer
sees its last model step) and shifts every layer back by its own delay; the result is then in
model steps, comparable raster for raster with the reference. ``runtime.run``, ``runtime.verify``
and the tests all run latency targets through here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import ConfigError
from targets.plan import Plan
from targets.reference import RunResult, output_total

if TYPE_CHECKING:
    from targets import TargetInfo


def layer_depths(plan: Plan) -> dict[str, int]:
    """Synaptic layers between the input and each LIF (and LI) layer (the longest path)."""
    return plan.depths()


def extra_steps(plan: Plan, latency: int) -> int:
    """Zero steps a target with this per-layer ``latency`` needs after the input: ``latency * depth``."""
    return latency * max(layer_depths(plan).values(), default=0)


def align_latency(plan: Plan, got: RunResult, latency: int, steps: int) -> RunResult:
    """Undo a target's per-layer delay: a LIF (or LI) layer ``d`` synaptic layers deep runs ``d * latency``
    steps late, so its step ``t`` is compared with the reference's step ``t - d * latency``. The
    target ran ``T + depth * latency`` steps; counts (or an LI readout's scores) are recomputed over
    the aligned window, summed as the reference sums them."""
    if got.rasters is None or (plan.li_names and got.traces is None):
        raise ConfigError(
            "a target with a per-layer latency must return rasters (and LI traces) so that its steps can be aligned"
        )
    depths = layer_depths(plan)
    rasters = {k: r[depths[k] * latency : depths[k] * latency + steps] for k, r in got.rasters.items()}
    traces = {k: r[depths[k] * latency : depths[k] * latency + steps] for k, r in (got.traces or {}).items()}
    layer_counts = {k: r.reshape(steps, r.shape[1], -1).sum(axis=(0, 2)).astype(np.int64) for k, r in rasters.items()}
    counts = output_total(plan, rasters | traces)
    return RunResult(counts, layer_counts, rasters, traces=traces if plan.li_names else None)


def run_aligned(info: TargetInfo, plan: Plan, spikes: np.ndarray, *, record: bool = False, **options: Any) -> RunResult:
    """``spikes (T, B, ...)`` through the target ``info``, in model steps: a target without latency
    runs as it is; one with latency runs ``T + latency * depth`` steps (zero input after ``T``) and
    is aligned back to ``T``. ``options`` go to the target's ``run`` (e.g. ``device``)."""
    runner = info.runner()
    if not info.latency:
        return runner(plan, spikes, record=record, **options)
    pad = np.zeros((extra_steps(plan, info.latency), *spikes.shape[1:]), spikes.dtype)
    got = align_latency(plan, runner(plan, np.concatenate([spikes, pad]), record=True, **options), info.latency,
                        spikes.shape[0])  # fmt: skip
    return got if record else RunResult(got.counts, got.layer_counts, None)
