"""The reference: plain numpy, one time step at a time, obviously correct and slow.

It defines the semantics every target is tested against. Per step ``t`` every node is evaluated
in plan order from its sources' outputs at the same step:

- float: synapses (Affine/Linear, Conv1d, Conv2d, with NIR's dilation and groups) in float32
  (``float64`` accumulation rounded once, which equals float32 accumulation whenever the weights
  sit on a power-of-two grid, as converted graphs do);
  LIF ``v = beta*v + gain*I + leak``, ``s = v > v_threshold``, ``v = v_reset`` where ``s`` (a
  dialect's ``subtract_next`` reset keeps ``v`` and subtracts ``v_threshold`` at the next step instead);
  LI (non-spiking) ``v = beta*v + gain*I + leak``, its output is ``v`` (float32, the same
  operations in the same order: a target that follows them gets the same bits).
- fixed: integers throughout, exactly :mod:`core.fixed`; an LI layer is the integer LIF without
  the spike: ``v = clip(trunc(v (4096 - dv) / 4096) + (a << 6) + b)``, its output ``v``; a CubaLIF's
  current (its ``.syn`` node) is :func:`core.fixed.current_step`, its output ``u``, which its LIF
  adds to the membrane unshifted.

The graph output is the sum of the output nodes' values at each step. Summed over the T steps it
is the per-class spike count (LIF outputs; any other non-LI output is truncated to an integer per
step), or, when the output reads an LI layer, the per-class *score*: float precision adds each
step's float32 output to a float64 total in step order (every target does the same, so equal
membranes give equal scores), fixed precision adds integers.

Returns the output counts or scores, per-layer spike counts (LIF layers only: an LI never spikes)
and, on request, the per-layer rasters and LI membrane traces. Also records, per LIF and LI layer,
the largest synaptic input and membrane magnitude (fixed: in integer units) so that conversion can
check that nothing saturates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core import fixed
from core.errors import ModelError
from targets.plan import Node, Plan, check_spikes


@dataclass
class RunResult:
    # (B, classes) output spike counts (int64); when the output reads an LI layer (``Plan.scores``), the
    # per-class scores: the output summed over T, float64 in float precision, int64 in fixed
    counts: np.ndarray
    layer_counts: dict[str, np.ndarray]  # LIF name -> (B,) spikes per sample (LI layers never spike: absent)
    rasters: dict[str, np.ndarray] | None = None  # LIF name -> (T, B, ...) uint8
    stats: dict[str, dict[str, float]] = field(default_factory=dict)
    margins: dict[str, np.ndarray] | None = None  # LIF name -> (T, B, ...) v - threshold before reset (float)
    traces: dict[str, np.ndarray] | None = None  # LI name -> (T, B, ...) membrane (float32; int64 fixed), on record


def join_results(parts: list[RunResult], stats: bool = False) -> RunResult:
    """Batch results joined along the sample axis (axis 1 of the time-first rasters); ``stats``:
    their per-node statistics summed too (totals over the samples, as eventsim's work counts)."""

    def cat(field: str, axis: int):
        first = getattr(parts[0], field)
        return (
            None
            if first is None
            else {k: np.concatenate([getattr(p, field)[k] for p in parts], axis=axis) for k in first}
        )

    summed = {}
    if stats:
        summed = {
            node: {k: float(sum(p.stats[node][k] for p in parts)) for k in v} for node, v in parts[0].stats.items()
        }
    return RunResult(np.concatenate([p.counts for p in parts]), cat("layer_counts", 0), cat("rasters", 1), summed,
                     margins=cat("margins", 1), traces=cat("traces", 1))  # fmt: skip


def output_step(plan: Plan, values: dict[str, np.ndarray], B: int) -> np.ndarray:
    """The graph output at one step, ``(B, classes)``: the output nodes' values summed in order."""
    out = values[plan.outputs[0]]
    for s in plan.outputs[1:]:
        out = out + values[s]
    return np.asarray(out).reshape(B, -1)


def add_output(plan: Plan, total: np.ndarray | None, out: np.ndarray) -> np.ndarray:
    """``total`` plus one step's output: scores add float32 outputs to a float64 total (integers in
    fixed precision), spike counts add integers (a non-spike value is truncated toward zero)."""
    if plan.scores and plan.precision == "float":
        step = np.asarray(out).astype(np.float64)  # float32 outputs, exactly (a float64 one, e.g. Lava's, unrounded)
    else:
        step = np.asarray(out).astype(np.int64)
    return step.copy() if total is None else total + step


def output_total(plan: Plan, per_step: dict[str, np.ndarray]) -> np.ndarray:
    """Counts or scores ``(B, classes)`` from the output nodes' values per step (``(T, B, ...)``
    rasters or traces, by node name), summed exactly as :func:`run` sums them."""
    first = per_step[plan.outputs[0]]
    T, B = first.shape[:2]
    total = None
    for t in range(T):
        vals = {}
        for o in plan.outputs:
            r = per_step[o][t]
            if plan.node(o).kind == "lif":  # spikes as the reference passes them on
                r = r.astype(np.int64 if plan.precision == "fixed" else np.float32)
            vals[o] = r
        total = add_output(plan, total, output_step(plan, vals, B))
    return total


def rest_state(n: Node, B: int, dtype) -> np.ndarray:
    """A LIF/LI layer's state before the first step: 0, or a dialect's rest value (Norse: ``v_leak``)."""
    v = np.zeros((B, *n.out_shape), dtype=dtype)
    if "v0" in n.params and dtype != np.int64:
        v[:] = n.params["v0"]
    return v


def membrane(p: dict, v, x, form: str | None = None):
    """A float LIF/LI membrane after this step's input, before any spike decision, in the plan's
    rule and its order of float32 operations: NIR's ``beta v + gain x + leak``, or Norse's
    ``v + a ((x + v_leak) - v)`` (LIFBox), ``v + a ((v_leak - v) + x)`` (LIBox, LIFCell's
    membrane), ``v + x`` (LIFCell's current jump; :func:`run` keeps the decayed current), Rockpool's
    current ``(v + x) b``. ``p`` holds numpy arrays (or torch tensors: the torch target's twin);
    ``form`` defaults to ``p["form"]``."""
    form = p.get("form") if form is None else form
    if form == "norse_box":
        return v + p["a"] * ((x + p["v_leak"]) - v)
    if form == "norse_cell":
        return v + p["a"] * ((p["v_leak"] - v) + x)
    if form == "norse_jump":
        return v + x
    if form == "rockpool_syn":
        return (v + x) * p["b"]
    return p["beta"] * v + p["gain"] * x + p["leak"]


MAX_SPIKES = 255  # several spikes per step: rasters hold counts up to this (uint8)


def multi_spikes(p: dict, v):
    """Spikes per neuron in one step (float32 counts), as the library computes them: Rockpool's
    ``(v >= t) floor(v / t)`` (at most 2**16), Sinabs' ``(v > 0) trunc(v / t)`` (a floor there: the
    threshold is positive). More than :data:`MAX_SPIKES` is an error, never a wrap. ``p`` and ``v``
    are numpy arrays, or torch tensors (the torch target's twin: the same operations)."""
    th = p["v_threshold"]
    whole = (v / th) // 1
    if p["spike"] == "floor_ge":
        n = (v >= th) * whole.clip(max=2**16)
    else:
        n = (v > 0) * whole
    if float(n.max()) > MAX_SPIKES:
        raise ModelError(f"a neuron emits {int(n.max())} spikes in one step; at most {MAX_SPIKES} are counted")
    return n


class DelayLine:
    """A delay node's memory: what its sources summed at the last ``max(steps)`` steps (zero before
    the first step), each element emitted ``steps`` of its own steps later."""

    def __init__(self, n: Node, B: int, dtype) -> None:
        self.node, self.steps = n, n.params["steps"].reshape(-1)
        self.depth = int(self.steps.max())
        self.buf = np.zeros((self.depth, B, self.steps.size), dtype=dtype)
        self.uniform = bool((self.steps == self.depth).all())

    def emit(self, t: int) -> np.ndarray:
        B = self.buf.shape[1]
        if self.uniform:
            y = self.buf[(t - self.depth) % self.depth]
        else:
            y = self.buf[(t - self.steps) % self.depth, :, np.arange(self.steps.size)].T
        return y.reshape(B, *self.node.out_shape).copy()

    def store(self, t: int, values: dict[str, np.ndarray]) -> None:
        x = values[self.node.sources[0]]
        for s in self.node.sources[1:]:
            x = x + values[s]
        self.buf[t % self.depth] = np.asarray(x).reshape(self.buf.shape[1], -1)


def conv2d(
    x: np.ndarray,
    w: np.ndarray,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> np.ndarray:
    """``(B, C, H, W) * (O, C / groups, kh, kw) -> (B, O, oh, ow)`` by explicit windows (no bias): output
    channel ``o`` of group ``g = o // (O / groups)`` correlates input channels ``g C/groups .. (g+1) C/groups``
    with its kernel, whose taps lie ``dilation`` apart."""
    ph, pw = padding
    (dh, dw), (kh, kw) = dilation, w.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)  # the dilated kernel's extent; every dilation-th tap is used
    win = np.lib.stride_tricks.sliding_window_view(xp, span, axis=(2, 3))[:, :, :: stride[0], :: stride[1], ::dh, ::dw]
    ci, co = w.shape[1], w.shape[0] // groups
    return np.concatenate(
        [np.einsum("bchwij,ocij->bohw", win[:, g * ci : (g + 1) * ci], w[g * co : (g + 1) * co], optimize=True)
         for g in range(groups)],
        axis=1,
    )  # fmt: skip


def conv1d(x: np.ndarray, w: np.ndarray, stride: tuple[int], padding: tuple[int], dilation=(1,), groups: int = 1):
    """``(B, C, L) * (O, C / groups, k) -> (B, O, ol)``: :func:`conv2d` on rows of height 1."""
    y = conv2d(x[:, :, None, :], w[:, :, None, :], (1, stride[0]), (0, padding[0]), (1, dilation[0]), groups)
    return y[:, :, 0, :]


def pool2d(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]) -> np.ndarray:
    ph, pw = padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = np.lib.stride_tricks.sliding_window_view(xp, kernel, axis=(2, 3))[:, :, :: stride[0], :: stride[1]]
    return win.sum(axis=(-1, -2))


def _accumulate(n: Node, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """A synapse's weighted sum, without the bias, in the dtype of ``x`` and ``w``."""
    if n.kind == "affine":
        return x @ w.T
    conv = conv2d if n.kind == "conv" else conv1d
    p = n.params
    return conv(x, w, p["stride"], p["padding"], p["dilation"], p["groups"])


def _synapse(n: Node, x: np.ndarray, integer: bool) -> np.ndarray:
    if integer:
        return fixed.shift(_accumulate(n, x, n.fixed["weight"]), n.fixed["weight_exp"])
    acc = _accumulate(n, x.astype(np.float64), n.params["weight"].astype(np.float64))
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
    vdt = np.int64 if integer else np.float32
    state = {n.name: rest_state(n, B, vdt) for n in plan.nodes if n.kind in ("lif", "li")}
    lifs = plan.lif_names
    counts = {name: np.zeros(B, dtype=np.int64) for name in lifs}
    rasters = {name: np.zeros((T, B, *by_name[name].out_shape), dtype=np.uint8) for name in lifs} if record else None
    traces = {name: np.zeros((T, B, *by_name[name].out_shape), dtype=vdt) for name in plan.li_names} if record else None
    stats = {name: {"max_abs_input": 0.0, "max_abs_v": 0.0} for name in state}
    margin = {name: np.zeros((T, B, *by_name[name].out_shape), dtype=np.float64) for name in lifs} if margins else None
    out_counts = None
    delays = {n.name: DelayLine(n, B, vdt) for n in plan.nodes if n.kind == "delay"}
    for t in range(T):
        values: dict[str, np.ndarray] = {"input": spikes[t].astype(np.int64 if integer else np.float32)}
        for n in plan.nodes:
            if n.kind == "delay":
                values[n.name] = delays[n.name].emit(t)
                continue
            x = values[n.sources[0]]
            for s in n.sources[1:]:
                x = x + values[s]
            if n.kind in ("conv", "conv1d", "affine"):
                y = _synapse(n, x, integer)
            elif n.kind == "lif":
                stats[n.name]["max_abs_input"] = max(stats[n.name]["max_abs_input"], float(np.abs(x).max(initial=0)))
                if integer:
                    bias = n.fixed["bias"].reshape((-1,) + (1,) * (len(n.out_shape) - 1))
                    s_out, state[n.name] = fixed.lif_fixed_step(state[n.name], x, n.fixed["dv"], n.fixed["vth"], bias,
                                                                n.fixed["current"])  # fmt: skip
                    if margins:  # integer runs have no ties to trace; keep the array shape
                        margin[n.name][t] = np.where(s_out, 1.0, -1.0)
                    stats[n.name]["max_abs_v"] = max(
                        stats[n.name]["max_abs_v"], float(np.abs(state[n.name]).max(initial=0))
                    )
                else:
                    p = n.params
                    v = membrane(p, state[n.name], x)
                    nxt = p.get("reset") == "subtract_next"  # the state is the unreset membrane of the last step
                    if nxt:
                        v = np.where(state[n.name] > p["v_threshold"], v - p["v_threshold"], v)
                    if margins:
                        margin[n.name][t] = v.astype(np.float64) - p["v_threshold"]
                    stats[n.name]["max_abs_v"] = max(stats[n.name]["max_abs_v"], float(np.abs(v).max(initial=0)))
                    if "spike" in p:  # several spikes per step, each subtracting the threshold
                        s_out = multi_spikes(p, v)
                        state[n.name] = (v - s_out * p["v_threshold"]).astype(np.float32)
                    else:
                        s_out = v > p["v_threshold"]
                        state[n.name] = (v if nxt else np.where(s_out, p["v_reset"], v)).astype(np.float32)
                y = s_out.astype(np.int64 if integer else np.float32)
                counts[n.name] += s_out.reshape(B, -1).sum(axis=1).astype(np.int64)
                if record:
                    rasters[n.name][t] = s_out
            elif n.kind == "li":
                st = stats[n.name]
                st["max_abs_input"] = max(st["max_abs_input"], float(np.abs(x).max(initial=0)))
                if integer and "du" in n.fixed:  # a CubaLIF's current
                    v = fixed.current_step(state[n.name], x, n.fixed["du"])
                elif integer:
                    bias = n.fixed["bias"].reshape((-1,) + (1,) * (len(n.out_shape) - 1))
                    v = fixed.membrane_step(state[n.name], x, n.fixed["dv"], bias, n.fixed["current"])
                else:
                    p = n.params
                    v = membrane(p, state[n.name], x).astype(np.float32)
                st["max_abs_v"] = max(st["max_abs_v"], float(np.abs(v).max(initial=0)))
                y = v
                # Norse's synaptic current: the output is the current with this step's jump, the state the
                # current decayed after it
                state[n.name] = (
                    (v + n.params["b"] * v).astype(np.float32)
                    if not integer and n.params.get("form") == "norse_jump"
                    else v
                )
                if record:
                    traces[n.name][t] = v
            elif n.kind in ("sumpool", "avgpool"):
                y = pool2d(x, n.params["kernel"], n.params["stride"], n.params["padding"])
                if n.kind == "avgpool":
                    y = (y / np.float32(n.params["kernel"][0] * n.params["kernel"][1])).astype(np.float32)
            elif n.kind == "flatten":  # (a partial Flatten keeps the dims around the ones it joins)
                y = x.reshape(B, *n.out_shape)
            values[n.name] = y
        for line in delays.values():
            line.store(t, values)
        out_counts = add_output(plan, out_counts, output_step(plan, values, B))
    return RunResult(out_counts, counts, rasters, stats, margin, traces)
