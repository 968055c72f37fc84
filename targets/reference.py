"""The reference: plain numpy, one time step at a time, obviously correct and slow.

It defines the semantics every target is tested against. Per step ``t`` every node is evaluated
in plan order from its sources' outputs at the same step:

- float: synapses in float32 (``float64`` accumulation rounded once, which equals float32
  accumulation whenever the weights sit on a power-of-two grid, as converted graphs do);
  LIF ``v = beta*v + gain*I + leak``, ``s = v > v_threshold``, ``v = v_reset`` where ``s``.
- fixed: integers throughout, exactly :mod:`core.fixed`.

Returns output spike counts, per-layer spike counts and, on request, the per-layer rasters.
Also records, per LIF layer, the largest synaptic input and membrane magnitude (fixed: in integer
units) so that conversion can check that nothing saturates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core import fixed
from targets.plan import Node, Plan, check_spikes


@dataclass
class RunResult:
    counts: np.ndarray  # (B, classes) output spike counts
    layer_counts: dict[str, np.ndarray]  # LIF name -> (B,) spikes per sample
    rasters: dict[str, np.ndarray] | None = None  # LIF name -> (T, B, ...) uint8
    stats: dict[str, dict[str, float]] = field(default_factory=dict)
    margins: dict[str, np.ndarray] | None = None  # LIF name -> (T, B, ...) v - threshold before reset (float)


def conv2d(x: np.ndarray, w: np.ndarray, stride: tuple[int, int], padding: tuple[int, int]) -> np.ndarray:
    """``(B, C, H, W) * (O, C, kh, kw) -> (B, O, oh, ow)`` by explicit windows (no bias)."""
    ph, pw = padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = np.lib.stride_tricks.sliding_window_view(xp, w.shape[2:], axis=(2, 3))[:, :, :: stride[0], :: stride[1]]
    return np.einsum("bchwij,ocij->bohw", win, w, optimize=True)


def pool2d(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]) -> np.ndarray:
    ph, pw = padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = np.lib.stride_tricks.sliding_window_view(xp, kernel, axis=(2, 3))[:, :, :: stride[0], :: stride[1]]
    return win.sum(axis=(-1, -2))


def _synapse(n: Node, x: np.ndarray, integer: bool) -> np.ndarray:
    if integer:
        w = n.fixed["weight"]
        acc = conv2d(x, w, n.params["stride"], n.params["padding"]) if n.kind == "conv" else x @ w.T
        return fixed.shift(acc, n.fixed["weight_exp"])
    w = n.params["weight"].astype(np.float64)
    acc = (
        conv2d(x.astype(np.float64), w, n.params["stride"], n.params["padding"])
        if n.kind == "conv"
        else x.astype(np.float64) @ w.T
    )
    b = n.params["bias"].reshape((-1,) + (1,) * (len(n.out_shape) - 1))
    return acc.astype(np.float32) + b


def run(plan: Plan, spikes: np.ndarray, *, record: bool = False, margins: bool = False) -> RunResult:
    """Run ``spikes`` shaped ``(T, B, *input_shape)`` through the plan in its precision.

    ``margins`` also keeps every membrane's distance to its threshold before the spike decision,
    which verification uses to trace a float disagreement to a threshold tie."""
    spikes = check_spikes(plan, spikes)
    integer = plan.precision == "fixed"
    T, B = spikes.shape[:2]
    by_name = {n.name: n for n in plan.nodes}
    state = {
        n.name: np.zeros((B, *n.out_shape), dtype=np.int64 if integer else np.float32)
        for n in plan.nodes
        if n.kind == "lif"
    }
    counts = {name: np.zeros(B, dtype=np.int64) for name in state}
    rasters = {name: np.zeros((T, B, *by_name[name].out_shape), dtype=np.uint8) for name in state} if record else None
    stats = {name: {"max_abs_input": 0.0, "max_abs_v": 0.0} for name in state}
    margin = {name: np.zeros((T, B, *by_name[name].out_shape), dtype=np.float64) for name in state} if margins else None
    out_counts = None
    for t in range(T):
        values: dict[str, np.ndarray] = {"input": spikes[t].astype(np.int64 if integer else np.float32)}
        for n in plan.nodes:
            x = values[n.sources[0]]
            for s in n.sources[1:]:
                x = x + values[s]
            if n.kind in ("conv", "affine"):
                y = _synapse(n, x, integer)
            elif n.kind == "lif":
                syn = by_name.get(n.sources[0])
                stats[n.name]["max_abs_input"] = max(stats[n.name]["max_abs_input"], float(np.abs(x).max(initial=0)))
                if integer:
                    bias = syn.fixed["bias"].reshape((-1,) + (1,) * (len(n.out_shape) - 1))
                    s_out, state[n.name] = fixed.lif_fixed_step(state[n.name], x, n.fixed["dv"], n.fixed["vth"], bias)
                    if margins:  # integer runs have no ties to trace; keep the array shape
                        margin[n.name][t] = np.where(s_out, 1.0, -1.0)
                    stats[n.name]["max_abs_v"] = max(
                        stats[n.name]["max_abs_v"], float(np.abs(state[n.name]).max(initial=0))
                    )
                else:
                    p = n.params
                    v = p["beta"] * state[n.name] + p["gain"] * x + p["leak"]
                    s_out = v > p["v_threshold"]
                    if margins:
                        margin[n.name][t] = v.astype(np.float64) - p["v_threshold"]
                    stats[n.name]["max_abs_v"] = max(stats[n.name]["max_abs_v"], float(np.abs(v).max(initial=0)))
                    state[n.name] = np.where(s_out, p["v_reset"], v).astype(np.float32)
                y = s_out.astype(np.int64 if integer else np.float32)
                counts[n.name] += s_out.reshape(B, -1).sum(axis=1)
                if record:
                    rasters[n.name][t] = s_out
            elif n.kind in ("sumpool", "avgpool"):
                y = pool2d(x, n.params["kernel"], n.params["stride"], n.params["padding"])
                if n.kind == "avgpool":
                    y = (y / np.float32(n.params["kernel"][0] * n.params["kernel"][1])).astype(np.float32)
            elif n.kind == "flatten":
                y = x.reshape(B, -1)
            values[n.name] = y
        out = values[plan.outputs[0]]
        for s in plan.outputs[1:]:
            out = out + values[s]
        out_counts = out.astype(np.int64) if out_counts is None else out_counts + out.astype(np.int64)
    return RunResult(out_counts.reshape(B, -1), counts, rasters, stats, margin)
