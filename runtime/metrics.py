"""Activity metrics from a run's per-layer rasters.

Synaptic operations follow NeuroBench's *effective accumulates*: every non-zero input element of
a synaptic layer (a spike, or a spike count after pooling or a residual sum) triggers one
accumulate per outgoing connection, so ``ops = sum_t sum_i [x_t,i != 0] * fanout_i``. Activation
sparsity is the fraction of (neuron, step) pairs without a spike, over all LIF layers.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from targets.plan import Node, Plan


def fanout(n: Node) -> np.ndarray:
    """Outgoing connections of each input element of a synaptic node (batch-free input shape)."""
    if n.kind == "affine":
        return np.full(n.in_shape, n.out_shape[0], dtype=np.int64)
    o, c, kh, kw = n.params["weight"].shape
    ones_out = torch.ones((1, o, *n.out_shape[1:]), dtype=torch.float64)
    full = F.conv_transpose2d(ones_out, torch.ones((o, c, kh, kw), dtype=torch.float64), stride=n.params["stride"])
    ph, pw = n.params["padding"]
    full = full[:, :, ph : ph + n.in_shape[1], pw : pw + n.in_shape[2]]
    out = np.zeros(n.in_shape, dtype=np.int64)
    out[:, : full.shape[2], : full.shape[3]] = np.rint(full[0].numpy()).astype(np.int64)
    return out


def synaptic_operations(plan: Plan, spikes: np.ndarray, rasters: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Effective accumulates per synaptic layer and sample, ``{layer: (B,) int64}``."""
    T, B = spikes.shape[:2]
    values: dict[str, np.ndarray] = {"input": spikes}
    ops: dict[str, np.ndarray] = {}
    for n in plan.nodes:
        x = values[n.sources[0]]
        for s in n.sources[1:]:
            x = x + values[s]
        if n.kind in ("conv", "affine"):
            nz = (x.reshape(T, B, *n.in_shape) != 0).astype(np.int64)
            ops[n.name] = (nz * fanout(n)).reshape(T, B, -1).sum(axis=(0, 2))
            values[n.name] = np.zeros((T, B, *n.out_shape), dtype=np.int8)  # only the LIF after it matters
        elif n.kind == "lif":
            values[n.name] = rasters[n.name]
        elif n.kind in ("sumpool", "avgpool"):
            k, st, pd = n.params["kernel"], n.params["stride"], n.params["padding"]
            t = torch.from_numpy(np.ascontiguousarray(x.reshape(T * B, *n.in_shape), dtype=np.float64))
            y = F.avg_pool2d(t, k, st, pd, divisor_override=1).numpy()
            values[n.name] = y.reshape(T, B, *n.out_shape)
        elif n.kind == "flatten":
            values[n.name] = x.reshape(T, B, -1)
    return ops


def activation_sparsity(plan: Plan, layer_counts: dict[str, np.ndarray], steps: int) -> float:
    neurons = sum(int(np.prod(plan.node(k).out_shape)) for k in layer_counts)
    total = sum(int(v.sum()) for v in layer_counts.values())
    samples = len(next(iter(layer_counts.values())))
    return 1.0 - total / max(neurons * steps * samples, 1)
