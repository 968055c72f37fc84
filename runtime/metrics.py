"""Activity metrics from a run's per-layer rasters, and what a run's predictions hide.

Synaptic operations follow NeuroBench's *effective accumulates*: every non-zero input element of
a synaptic layer (a spike, or a spike count after pooling or a residual sum, or an LI membrane)
triggers one accumulate per outgoing connection, so ``ops = sum_t sum_i [x_t,i != 0] * fanout_i``.
Activation sparsity is the fraction of (neuron, step) pairs without a spike, over all LIF layers
(an LI layer never spikes and is not counted).

Predictions are the ``argmax`` of the class scores (spike counts, or an LI readout's summed
membrane); a tied maximum goes to the lowest class index among the tied classes, deterministically.
:func:`prediction_stats` says how often that rule decided, how many samples had no output spike at
all (spike readouts: every class 0, so class 0 "wins"), and which classes never fire or never win.
"""

from __future__ import annotations

import numpy as np

from core.errors import ConfigError
from targets.plan import SYNAPSE_KINDS, Node, Plan
from targets.reference import pool2d

TIE_RULE = "argmax: a tied maximum goes to the lowest class index among the tied classes"


def fanout(n: Node) -> np.ndarray:
    """Outgoing connections of each input element of a synaptic node (batch-free input shape): for a
    convolution, the output positions and channels (of its group) whose window covers it, with stride,
    padding, dilation and groups (a 1-D convolution counted as a 2-D one of height 1)."""
    if n.kind == "affine":
        return np.full(n.in_shape, n.out_shape[0], dtype=np.int64)
    w = n.params["weight"]
    one_d = n.kind == "conv1d"
    o, _, *kernel = w.shape
    kernel = [1, *kernel] if one_d else kernel
    in_shape = (n.in_shape[0], 1, n.in_shape[1]) if one_d else n.in_shape
    out_hw = (1, n.out_shape[1]) if one_d else n.out_shape[1:]

    def pair(v) -> tuple[int, int]:
        v = tuple(v)
        return (1, *v) if one_d else v

    stride, padding = pair(n.params["stride"]), (0, *n.params["padding"]) if one_d else tuple(n.params["padding"])
    dilation, groups = pair(n.params.get("dilation", (1,) * len(n.params["stride"]))), n.params.get("groups", 1)
    # each output position reads kernel taps at ``position * stride + tap * dilation`` of the padded input:
    # count the reads per padded position (a transposed convolution of ones), for every output channel of the group
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_hw
    full = np.zeros(((ho - 1) * sh + (kh - 1) * dh + 1, (wo - 1) * sw + (kw - 1) * dw + 1), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            full[i * dh : i * dh + (ho - 1) * sh + 1 : sh, j * dw : j * dw + (wo - 1) * sw + 1 : sw] += 1
    (ph, pw), (h, wd) = padding, in_shape[1:]
    full = full[ph : ph + h, pw : pw + wd] * (o // groups)
    out = np.zeros(in_shape, dtype=np.int64)
    out[:, : full.shape[0], : full.shape[1]] = full
    return out.reshape(n.in_shape)


def synaptic_operations(
    plan: Plan, spikes: np.ndarray, rasters: dict[str, np.ndarray], traces: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Effective accumulates per synaptic layer and sample, ``{layer: (B,) int64}``; ``traces`` are
    the LI membranes (needed where a synaptic layer reads an LI layer)."""
    T, B = spikes.shape[:2]
    # Known in advance (a loop's delay may read one of them before its turn): a spiking layer's values
    # are its raster; a synaptic layer's output only feeds the neuron after it, so it counts as zeros.
    values: dict[str, np.ndarray] = {"input": spikes}
    for n in plan.nodes:
        if n.kind == "lif":
            values[n.name] = rasters[n.name]
        elif n.kind in SYNAPSE_KINDS:
            values[n.name] = np.zeros((T, B, *n.out_shape), dtype=np.int8)
    ops: dict[str, np.ndarray] = {}
    for n in plan.nodes:
        missing = [s for s in n.sources if s not in values]
        if missing:
            raise ConfigError(f"synaptic operations: node {n.name} reads {', '.join(missing)} through a loop before "
                              "their values are known; they cannot be counted from rasters")  # fmt: skip
        x = values[n.sources[0]]
        for s in n.sources[1:]:
            x = x + values[s]
        if n.kind in SYNAPSE_KINDS:
            nz = (x.reshape(T, B, *n.in_shape) != 0).astype(np.int64)
            ops[n.name] = (nz * fanout(n)).reshape(T, B, -1).sum(axis=(0, 2))
        elif n.kind == "li":
            if traces is None or n.name not in traces:
                readers = [m.name for m in plan.nodes if n.name in m.sources]
                if readers:
                    raise ConfigError(
                        f"synaptic operations of {', '.join(readers)} need the membrane trace of LI {n.name}"
                    )
                values[n.name] = np.zeros((T, B, *n.out_shape), dtype=np.int8)
            else:
                values[n.name] = traces[n.name]
        elif n.kind in ("sumpool", "avgpool"):
            k, st, pd = n.params["kernel"], n.params["stride"], n.params["padding"]
            y = pool2d(x.reshape(T * B, *n.in_shape).astype(np.float64), k, st, pd)
            values[n.name] = y.reshape(T, B, *n.out_shape)
        elif n.kind == "flatten":
            values[n.name] = x.reshape(T, B, *n.out_shape)
        elif n.kind == "delay":  # each element's value from its own number of steps before
            steps = np.broadcast_to(n.params["steps"], n.out_shape)
            y = np.zeros((T, B, *n.out_shape), dtype=x.dtype)
            for d in np.unique(steps):
                mask = steps == d
                y[d:][:, :, mask] = x[: T - d][:, :, mask] if d < T else 0
            values[n.name] = y
    return ops


def activation_sparsity(plan: Plan, layer_counts: dict[str, np.ndarray], steps: int) -> float | None:
    """None for a graph without a spiking layer (nothing to be sparse)."""
    if not layer_counts:
        return None
    neurons = sum(int(np.prod(plan.node(k).out_shape)) for k in layer_counts)
    total = sum(int(v.sum()) for v in layer_counts.values())
    samples = len(next(iter(layer_counts.values())))
    return 1.0 - total / max(neurons * steps * samples, 1)


def prediction_stats(counts: np.ndarray, *, spike_readout: bool) -> dict:
    """Ties and dead outputs of ``(B, classes)`` class scores (module docstring): samples whose
    maximum is tied (decided by the tie rule), samples without any output spike (spike readouts),
    classes whose readout never fires (spike readouts) and classes that never win."""
    counts = np.asarray(counts)
    n, classes = counts.shape
    top = counts.max(axis=1, keepdims=True) if n else np.zeros((0, 1))
    tied = (counts == top).sum(axis=1) > 1
    pred = counts.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    stats = {
        "tie_rule": TIE_RULE,
        "tied_samples": int(tied.sum()),
        "tied_sample_indices": np.flatnonzero(tied)[:20].tolist(),
        "never_winning_classes": [c for c in range(classes) if not (pred == c).any()],
    }
    if spike_readout:
        stats["silent_samples"] = int((counts == 0).all(axis=1).sum())
        stats["never_firing_classes"] = [c for c in range(classes) if not (counts[:, c] > 0).any()]
    return stats


def prediction_warning(stats: dict, samples: int) -> str | None:
    """One line naming every dead class (never fires, never wins) and the ties, or None."""
    parts = []
    if stats.get("never_firing_classes"):
        parts.append(f"class(es) {', '.join(map(str, stats['never_firing_classes']))} never fire (spike readout)")
    if stats["never_winning_classes"]:
        parts.append(f"class(es) {', '.join(map(str, stats['never_winning_classes']))} never win")
    if not parts:
        return None
    ties = f"; {stats['tied_samples']} tied maxima went to the lowest class index" if stats["tied_samples"] else ""
    silent = f", {stats['silent_samples']} samples had no output spike" if stats.get("silent_samples") else ""
    return f"warning: on the {samples} evaluated samples {' and '.join(parts)}{ties}{silent}"
