r"""Plan -> ONNX: the whole network for a fixed ``T`` (``*.onnx``) and one time step (``*.step.onnx``).

Both files compute exactly what :mod:`targets.reference` computes, spike for spike, on ONNX
Runtime's CPU provider (``tests/test_onnx_export.py`` checks it on the registry's models):

- ``*.onnx``: input ``spikes`` float32 ``(T, batch, *input_shape)``; outputs ``counts`` float32
  ``(batch, classes)`` (output spike counts over the ``T`` steps) and ``spikes/<lif>`` float32
  ``(batch,)`` (each LIF layer's spikes per sample; counts are exact below :math:`2^{24}`).
- ``*.step.onnx``: inputs ``x_t`` ``(batch, *input_shape)`` and ``v/<lif>`` ``(batch, *shape)``;
  outputs ``out_t`` ``(batch, classes)``, ``v_next/<lif>`` and ``spikes/<lif>`` (this step's
  counts). Everything at its interface is float32 in both precisions (the integer membrane of the
  fixed precision stays within :math:`\pm(2^{23}-1)`, which float32 holds exactly).
- An LI readout (non-spiking; ``Plan.scores``): the whole-T file's output is ``scores`` float64
  ``(batch, classes)`` instead of ``counts``: each step's output (the LI membranes, float32; integers
  in fixed precision) added to a float64 total in step order, as the reference adds them. The step
  file's ``out_t`` is the step's membrane; LI layers carry their state as ``v/<li>``/``v_next/<li>``
  like LIF layers and have no ``spikes/<li>`` output (they never spike). An LI inside a graph
  passes its membrane on; synapses reading it accumulate in float64 (no grid proves float32 exact).

**Float precision.** Synaptic weights with ``quant`` metadata are stored as QDQ: an int8 (int16
above 8 bits) initializer, a float32 power-of-two scale and a zero point of 0 feed
``DequantizeLinear`` (``axis=0`` for per-channel scales), whose output feeds ``Conv``/``Gemm``
with a float32 bias. The reference accumulates each synapse in float64 and rounds once; float32
accumulation (any order, FMA or not) gives the same bits only when every partial sum is exact in
float32. That is proved per layer from the weights and a bound on the layer's input (spikes are 0
or 1; sums, sum pools and power-of-two average pools of them stay on a known integer grid): see
:func:`_grid`. A layer where it cannot be proved, such as the first layer (its input may be analog,
e.g. the ``direct`` encoder) or any layer of a graph without ``quant`` metadata, is computed in
float64 and rounded once, as the reference does. The LIF update stays float32, one operation per
ONNX node (``beta*v``, ``gain*I``, two adds), so no multiply-add is fused where the reference
rounds twice.

**Fixed precision** (:mod:`core.fixed`) runs on float64 tensors that hold exact integers (the
largest, the decay product, stays below :math:`2^{35}`, far inside float64's :math:`2^{53}`; ONNX's
``Conv`` takes no integer types, and ``ConvInteger`` would need the input counts cast to uint8,
which wraps silently above 255): ``shift`` is a multiply by
:math:`2^e`, followed by ``Floor`` when ``e < 0`` (an arithmetic right shift rounds toward minus
infinity); the decay is ``Sign(p) * Floor(Abs(p) / 4096)`` with ``p = v * (4096 - dv)`` (exact,
since 4096 is a power of two); the membrane is clipped to :math:`\pm(2^{23}-1)` and spikes when
``v > vth * 64``. ONNX Runtime's CPU provider has no float64 ``Conv`` (nor ``AveragePool``), so a
float64 convolution (``Conv1d`` or ``Conv2d``, dilated or grouped) is written as one strided
``Slice`` view of the padded input per kernel tap, stacked and contracted with the weights by one
``Einsum`` (split per group); pools are sums of the same views. A partial ``Flatten`` is a ``Reshape``. ``Einsum``,
``Gemm`` and every elementwise op used here are implemented for float64.

Every ONNX node is named ``<NIR node>/<what>@t<step>`` (no ``@`` in the step file) so that an
ONNX Runtime error names the graph node at fault.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from core import fixed
from core.errors import ModelError
from core.fileio import atomic_path
from targets.plan import METADATA_KEY, SYNAPSE_KINDS, Node, Plan, power_of_two

OPSET = 21  # DequantizeLinear on int16 weights (bits > 8) needs opset 21
IR_VERSION = 10  # the IR version that goes with opset 21
FORMAT = "snn-deploy.onnx/1"
BATCH = "batch"  # the symbolic batch dimension
F32, F64 = TensorProto.FLOAT, TensorProto.DOUBLE
EXACT_BITS = 24  # float32 holds every integer below 2**24 exactly


# ---------------------------------------------------------------------------------------------
# Graph building


class _Graph:
    """Collects nodes and initializers; node names double as their (single) output names."""

    def __init__(self, interface: list[str]) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._interface = set(interface)  # graph input and output names: no internal tensor takes them
        self._used: set[str] = set(interface)
        self._consts: dict[tuple, str] = {}

    def _fresh(self, name: str) -> str:
        base, k = name, 1
        while name in self._used:
            name, k = f"{base}#{k}", k + 1
        self._used.add(name)
        return name

    def init(self, name: str, array: np.ndarray) -> str:
        name = self._fresh(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def const(self, array: Any, dtype: Any) -> str:
        """A small shared constant (slice bounds, axes, scalars), made once per value."""
        a = np.asarray(array, dtype=dtype)
        key = (a.dtype.str, a.shape, a.tobytes())
        if key not in self._consts:
            self._consts[key] = self.init(f"const/{len(self._consts)}", a)
        return self._consts[key]

    def op(self, op_type: str, inputs: list[str], name: str, *, out: str | None = None, **attrs: Any) -> str:
        """Add a node named ``name`` (made unique); ``out`` names a graph output it produces."""
        if out is not None:
            if out not in self._interface:
                raise ModelError(f"internal error: {out!r} is not a declared graph output")
            self._interface.discard(out)  # produced once
        else:
            out = self._fresh(name)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _at(name: str, what: str, tag: str) -> str:
    return f"{name}/{what}@{tag}" if tag else f"{name}/{what}"


def _compact(arr: np.ndarray, dtype: Any) -> np.ndarray:
    """A per-neuron parameter as a scalar when all neurons share it (it broadcasts the same)."""
    arr = np.asarray(arr, dtype=dtype)
    return arr.reshape(-1)[:1].reshape(()) if arr.size and (arr == arr.reshape(-1)[0]).all() else arr


# ---------------------------------------------------------------------------------------------
# Which float synapses are exact in float32


@dataclass(frozen=True)
class _Grid:
    """Every value is an integer multiple of ``2**-exp`` with magnitude at most ``bound * 2**-exp``."""

    bound: int
    exp: int


def _grid(n: Node, src: _Grid | None) -> _Grid | None:
    """The grid of ``n``'s output given the grid of its input (``None``: arbitrary float values)."""
    if n.kind == "lif":
        return _Grid(1, 0)  # spikes are 0 or 1
    if src is None or n.kind in (*SYNAPSE_KINDS, "li"):  # (an LI membrane gains a bit per step)
        return None
    if n.kind == "flatten":
        return src
    k = n.params["kernel"][0] * n.params["kernel"][1]
    if n.kind == "sumpool":
        return _Grid(src.bound * k, src.exp)
    # average pool: a sum divided by k, exact only when k is a power of two
    return _Grid(src.bound * k, src.exp + int(math.log2(k))) if k & (k - 1) == 0 else None


def _sum_grid(grids: list[_Grid | None]) -> _Grid | None:
    if any(g is None for g in grids):
        return None
    exp = max(g.exp for g in grids)
    return _Grid(sum(g.bound << (exp - g.exp) for g in grids), exp)


def _exact_in_float32(q: np.ndarray, scale: np.ndarray, bias: np.ndarray, grid: _Grid | None) -> bool:
    """With power-of-two scales and the bias on the weights' grid, every partial sum of
    ``sum(q * scale * x) + bias`` is a multiple of ``scale * 2**-exp``; below ``2**24`` such units in
    magnitude (per output channel) float32 holds it exactly, whatever the order of the adds."""
    scale = scale.reshape(-1).astype(np.float64)
    bias_units = bias.astype(np.float64) / scale
    if grid is None or not power_of_two(scale).all() or not np.array_equal(bias_units, np.rint(bias_units)):
        return False
    per_out = np.abs(q.reshape(q.shape[0], -1)).sum(axis=1) * grid.bound + np.abs(bias_units) * 2**grid.exp
    return bool((per_out < 2**EXACT_BITS).all())


# ---------------------------------------------------------------------------------------------
# Lowering one time step


@dataclass
class _Step:
    tag: str
    state: dict[str, str] | None  # LIF/LI name -> membrane tensor of the previous step (None: zeros)
    keep_state: bool
    new_state: dict[str, str] = field(default_factory=dict)
    counts: dict[str, str] = field(default_factory=dict)  # LIF name -> (B,) float32


class _Lowering:
    """The per-node constants (made once, shared by every step) and the ops of one step."""

    def __init__(self, plan: Plan, g: _Graph) -> None:
        self.plan, self.g = plan, g
        self.fixed = plan.precision == "fixed"
        self.by_name = {n.name: n for n in plan.nodes}
        self.layer_meta = plan.meta.get("layers", {}) if isinstance(plan.meta.get("layers"), dict) else {}
        self.float64_layers: list[str] = []  # float synapses computed in float64 (reported in metadata)
        self.p: dict[str, dict[str, Any]] = {}
        grids: dict[str, _Grid | None] = {"input": None}  # the network input may be analog
        unknown = sorted({f"{n.name} ({n.kind})" for n in plan.nodes if n.kind not in _EMIT and n.kind != "delay"})
        if unknown:
            raise ModelError(f"no ONNX lowering for node(s) {', '.join(unknown)}; supported kinds: {', '.join(_EMIT)}")
        for n in plan.nodes:
            if n.kind == "delay":  # values from earlier steps: nothing is promised about them
                grids[n.name] = None
                continue
            src = _sum_grid([grids[s] for s in n.sources])
            grids[n.name] = _grid(n, src)
            if n.kind in SYNAPSE_KINDS:
                self.p[n.name] = self._prepare_fixed_synapse(n) if self.fixed else self._prepare_float_synapse(n, src)
            elif n.kind in ("lif", "li"):
                self.p[n.name] = self._prepare_lif(n)

    # -- constants ------------------------------------------------------------------------------

    def _quant(self, n: Node) -> tuple[np.ndarray, np.ndarray, int | None, int] | None:
        """``(q, scale, axis, bits)`` from the graph's ``quant`` metadata, checked against the weights."""
        quant = self.layer_meta.get(n.name, {}).get("quant")
        if not quant:
            return None
        w = n.params["weight"].astype(np.float64)
        try:
            bits, axis = int(quant["bits"]), quant.get("axis")
            scale = np.asarray(quant["scale"], dtype=np.float64).reshape(-1)
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"node {n.name}: malformed quant metadata ({e}); expected bits, axis, scale") from None
        if not 2 <= bits <= 16:
            raise ModelError(f"node {n.name}: quant metadata states {bits} bits; QDQ export supports 2..16")
        if axis == 0 and scale.size == w.shape[0]:
            s = scale.reshape((-1,) + (1,) * (w.ndim - 1))
        elif axis is None and scale.size == 1:
            s = scale.reshape(())
        else:
            raise ModelError(
                f"node {n.name}: quant metadata has {scale.size} scale(s) with axis {axis!r} "
                f"for a weight of shape {w.shape}; expected {w.shape[0]} with axis 0, or 1 with axis None"
            )
        q = np.rint(w / s)
        qmax = 2 ** (bits - 1) - 1
        same = (q.astype(np.float32) * s.astype(np.float32)) == n.params["weight"]
        if not (np.float32(scale) == scale).all() or not same.all() or np.abs(q).max(initial=0) > qmax:
            raise ModelError(
                f"node {n.name}: weights are not {bits}-bit integers times the scales in the graph's quant "
                "metadata; the graph is inconsistent"
            )
        return q, scale.astype(np.float32).reshape(s.shape), axis, bits

    def _prepare_float_synapse(self, n: Node, grid: _Grid | None) -> dict[str, Any]:
        g, p = self.g, {}
        bias = n.params["bias"].astype(np.float32)
        qd = self._quant(n)
        if qd is None:
            w = g.init(f"{n.name}/weight", n.params["weight"].astype(np.float32))
            exact32 = False
        else:
            q, scale, axis, bits = qd
            qi = g.init(f"{n.name}/weight_quantised", q.astype(np.int8 if bits <= 8 else np.int16))
            sc_arr = scale.reshape(-1) if axis == 0 else scale.reshape(())
            sc = g.init(f"{n.name}/weight_scale", sc_arr)
            zp = g.init(f"{n.name}/weight_zero_point", np.zeros(sc_arr.shape, np.int8 if bits <= 8 else np.int16))
            attrs = {"axis": 0} if axis == 0 else {}
            w = g.op("DequantizeLinear", [qi, sc, zp], f"{n.name}/weight", **attrs)
            exact32 = _exact_in_float32(q, scale, bias, grid)
        p["exact32"] = exact32
        if exact32:
            p["weight"], p["bias"] = w, g.init(f"{n.name}/bias", bias)
            return p
        # float64 accumulation, rounded once to float32, then the float32 bias: the reference's rule
        self.float64_layers.append(n.name)
        p["weight64"] = self._weight64(n, w)
        p["bias"] = g.init(f"{n.name}/bias", bias.reshape((-1,) + (1,) * (len(n.out_shape) - 1)))
        return p

    def _prepare_fixed_synapse(self, n: Node) -> dict[str, Any]:
        if n.fixed is None:
            raise ModelError(f"node {n.name}: fixed-precision graph lacks its integer weights")
        w = self.g.init(f"{n.name}/weight", n.fixed["weight"].astype(np.int16))  # 2 * 8-bit mantissa, as Lava
        return {"weight64": self._weight64(n, w), "exp": int(n.fixed["weight_exp"])}

    def _weight64(self, n: Node, w: str) -> str:
        """The weights in float64: ``(O, C/groups, taps)`` for a convolution's Einsum (``(groups, O/groups,
        C/groups, taps)`` when it has groups), ``(O, K)`` for Gemm."""
        w64 = self.g.op("Cast", [w], f"{n.name}/weight_f64", to=F64)
        if n.kind in ("conv", "conv1d"):
            o, c, *kernel = n.params["weight"].shape
            groups, taps = n.params["groups"], int(np.prod(kernel))
            shape = [o, c, taps] if groups == 1 else [groups, o // groups, c, taps]
            w64 = self.g.op("Reshape", [w64, self.g.const(shape, np.int64)], f"{n.name}/weight_f64_ock")
        return w64

    def _prepare_lif(self, n: Node) -> dict[str, Any]:
        g = self.g
        if self.fixed:  # (targets.plan checked the integer parameters: the membrane's bias, or a current's du)
            f = n.fixed
            if "du" in f:  # a CubaLIF's current: decay constant du + 1, no bias, Lava's wrap-around
                return {"decay": g.const(fixed.DECAY_UNITY - (f["du"] + 1), np.float64), "vth": None, "bias": None,
                        "current": True, "shift": True}  # fmt: skip
            bias = f["bias"].astype(np.float64).reshape((-1,) + (1,) * (len(n.out_shape) - 1))
            return {
                "decay": g.const(fixed.DECAY_UNITY - f["dv"], np.float64),
                "vth": g.const(f["vth"] << fixed.VTH_SHIFT, np.float64) if n.kind == "lif" else None,
                "bias": g.init(f"{n.name}/bias", bias) if bias.any() else None,
                "current": False,
                "shift": not f["current"],  # (behind a current, its input is already u)
            }
        p = n.params
        gain, leak = _compact(p["gain"], np.float32), _compact(p["leak"], np.float32)
        out = {} if "form" in p else {
            "beta": g.init(f"{n.name}/beta", _compact(p["beta"], np.float32)),
            "gain": None if gain.shape == () and gain == 1 else g.init(f"{n.name}/gain", gain),
            "leak": None if leak.shape == () and leak == 0 else g.init(f"{n.name}/leak", leak),
        }  # fmt: skip
        for key in ("a", "v_leak", "b", "v0"):  # a dialect's arithmetic (targets.reference.membrane)
            if key in p:
                out[key] = g.init(f"{n.name}/{key}", np.asarray(p[key], np.float32))
        if n.kind == "lif" and p.get("reset") == "subtract_next" and np.any(p["v_threshold"] < 0):
            raise ModelError(f"node {n.name}: a delayed subtractive reset with a negative threshold (a neuron that "
                             "spikes at rest from the first step) is not exported")  # fmt: skip
        if n.kind == "lif":
            out["v_threshold"] = g.init(f"{n.name}/v_threshold", _compact(p["v_threshold"], np.float32))
            if "spike" not in p and p.get("reset") != "subtract_next":  # (those rules never reset to a value)
                out["v_reset"] = g.init(f"{n.name}/v_reset", _compact(p["v_reset"], np.float32))
        return out

    # -- one step -------------------------------------------------------------------------------

    def step(self, x: str, st: _Step) -> str:
        """Lower one time step from input ``x`` (float32); returns the ``(B, classes)`` output: float32,
        except an LI readout's in fixed precision (float64 integers, which the scores add exactly)."""
        g = self.g
        if self.fixed:
            x = g.op("Cast", [x], _at("input", "f64", st.tag), to=F64)
        values = {"input": x}
        for n in self.plan.nodes:
            if n.kind == "delay":  # first in the plan: what it stored at earlier steps
                values[n.name] = self._delay_emit(n, values["input"], st)
                continue
            x = values[n.sources[0]]
            for i, s in enumerate(n.sources[1:], start=1):
                x = g.op("Add", [x, values[s]], _at(n.name, f"add{i}", st.tag))
            values[n.name] = _EMIT[n.kind](self, n, x, st)
        for n in self.plan.nodes:
            if n.kind == "delay" and st.keep_state:
                self._delay_store(n, values, st)
        out = values[self.plan.outputs[0]]
        for i, s in enumerate(self.plan.outputs[1:], start=1):
            out = g.op("Add", [out, values[s]], _at("output", f"add{i}", st.tag))
        if self.plan.scores:
            pass  # the LI membranes (plus any spikes) as they are: the reference adds them unrounded
        elif any(self.by_name.get(s) is None or self.by_name[s].kind != "lif" for s in self.plan.outputs):
            # the reference counts ``out.astype(int64)``: truncation toward zero
            out = g.op("Cast", [out], _at("output", "int64", st.tag), to=TensorProto.INT64)
            out = g.op("Cast", [out], _at("output", "f32", st.tag), to=F32)
        elif self.fixed:
            out = g.op("Cast", [out], _at("output", "f32", st.tag), to=F32)
        if len(self._out_shape()) > 1:
            out = g.op("Flatten", [out], _at("output", "flatten", st.tag), axis=1)
        return out

    def _out_shape(self) -> tuple[int, ...]:
        first = self.plan.outputs[0]
        return self.plan.input_shape if first == "input" else self.by_name[first].out_shape

    @property
    def classes(self) -> int:
        return int(np.prod(self._out_shape()))

    def _synapse(self, n: Node, x: str, st: _Step) -> str:
        g, p, tag = self.g, self.p[n.name], st.tag
        if not self.fixed and p["exact32"]:
            if n.kind == "affine":
                return g.op("Gemm", [x, p["weight"], p["bias"]], _at(n.name, "gemm", tag), transB=1)
            q = n.params
            return g.op("Conv", [x, p["weight"], p["bias"]], _at(n.name, "conv", tag),
                        kernel_shape=list(q["weight"].shape[2:]), strides=list(q["stride"]),
                        pads=[*q["padding"], *q["padding"]], dilations=list(q["dilation"]), group=q["groups"])  # fmt: skip
        if not self.fixed:
            x = g.op("Cast", [x], _at(n.name, "input_f64", tag), to=F64)
        if n.kind == "affine":
            acc = g.op("Gemm", [x, p["weight64"]], _at(n.name, "gemm_f64", tag), transB=1)
        else:
            acc = self._conv64(n, x, p["weight64"], tag)
        if self.fixed:
            e = p["exp"]
            y = g.op("Mul", [acc, g.const(2.0**e, np.float64)], _at(n.name, "shift", tag))
            return g.op("Floor", [y], _at(n.name, "shift_floor", tag)) if e < 0 else y
        y = g.op("Cast", [acc], _at(n.name, "round_f32", tag), to=F32)
        return g.op("Add", [y, p["bias"]], _at(n.name, "bias", tag))

    def _conv64(self, n: Node, x: str, w64: str, tag: str) -> str:
        """A float64 convolution (ONNX Runtime's CPU provider has no float64 ``Conv``): the kernel's taps
        as strided views stacked into ``(B, C, taps, *out)``, contracted with the weights by one
        ``Einsum``; with groups, channels and weights split as ``(B, groups, C/groups, taps, *out)`` and
        ``(groups, O/groups, C/groups, taps)``."""
        g = self.g
        out = list(n.out_shape[1:])
        sp = "hw"[-len(out) :]  # the spatial letters of the Einsum: "hw" (Conv2d), "w" (Conv1d)
        views = self._windows(n, x, tuple(n.params["weight"].shape[2:]), tag)
        axis = g.const([2], np.int64)
        cols = [g.op("Unsqueeze", [v, axis], _at(n.name, f"col{i}", tag)) for i, v in enumerate(views)]
        stack = cols[0] if len(cols) == 1 else g.op("Concat", cols, _at(n.name, "im2col", tag), axis=2)
        groups = n.params["groups"]
        if groups == 1:
            return g.op("Einsum", [stack, w64], _at(n.name, "conv_f64", tag), equation=f"bck{sp},ock->bo{sp}")
        c_in, taps = n.in_shape[0], len(views)
        split = g.const([0, groups, c_in // groups, taps, *out], np.int64)  # (0: the batch, as it is)
        stack = g.op("Reshape", [stack, split], _at(n.name, "by_group", tag))
        acc = g.op("Einsum", [stack, w64], _at(n.name, "conv_f64", tag), equation=f"bgck{sp},gock->bgo{sp}")
        return g.op("Reshape", [acc, g.const([0, *n.out_shape], np.int64)], _at(n.name, "channels", tag))

    def _windows(self, n: Node, x: str, kernel: tuple[int, ...], tag: str) -> list[str]:
        """One strided view of the padded input per kernel tap, ``x_pad[:, :, i*dh::sh, j*dw::sw]`` of shape
        ``(B, C, oh, ow)`` (``(B, C, ow)`` for a 1-D convolution; taps ``dilation`` apart), taps in the
        weights' row-major order."""
        g = self.g
        nd = len(kernel)
        pad, stride = n.params["padding"], n.params["stride"]
        dil = n.params.get("dilation", (1,) * nd)
        out = n.out_shape[1:]
        if any(pad):
            x = g.op("Pad", [x, g.const([0, 0, *pad, 0, 0, *pad], np.int64)], _at(n.name, "pad", tag))
        axes, steps = g.const(list(range(2, 2 + nd)), np.int64), g.const(list(stride), np.int64)
        views = []
        for tap in np.ndindex(*kernel):
            start = [i * d for i, d in zip(tap, dil)]
            end = [a + s * (o - 1) + 1 for a, s, o in zip(start, stride, out)]
            bounds = [g.const(start, np.int64), g.const(end, np.int64)]
            views.append(g.op("Slice", [x, *bounds, axes, steps], _at(n.name, f"window{'_'.join(map(str, tap))}", tag)))
        return views

    def _pool(self, n: Node, x: str, st: _Step) -> str:
        # a chain of adds of the window views: exact on spike counts in either dtype (ONNX Runtime's
        # AveragePool would multiply by 1/k, where the reference divides the sum by k)
        g = self.g
        views = self._windows(n, x, n.params["kernel"], st.tag)
        y = views[0]
        for i, v in enumerate(views[1:], start=1):
            y = g.op("Add", [y, v], _at(n.name, f"sum{i}", st.tag))
        if n.kind == "avgpool":
            k = n.params["kernel"][0] * n.params["kernel"][1]
            y = g.op("Div", [y, g.const(k, np.float32)], _at(n.name, "mean", st.tag))
        return y

    def _flatten(self, n: Node, x: str, st: _Step) -> str:
        if len(n.out_shape) == 1:
            return self.g.op("Flatten", [x], _at(n.name, "flatten", st.tag), axis=1)
        # a partial Flatten (NIR's batch-free dims): the batch, then the node's shape
        return self.g.op("Reshape", [x, self.g.const([0, *n.out_shape], np.int64)], _at(n.name, "flatten", st.tag))

    def _membrane(self, n: Node, x: str, st: _Step) -> str:
        """A LIF's or LI's membrane after this step's input, before any spike decision."""
        g, p, tag = self.g, self.p[n.name], st.tag
        v_prev = st.state.get(n.name) if st.state is not None else None
        if self.fixed:
            v = g.op("Mul", [x, g.const(2.0**fixed.ACT_SHIFT, np.float64)], _at(n.name, "u", tag)) if p["shift"] else x
            if v_prev is not None:  # decay(0) is 0: the first step has no decay term
                prod = g.op("Mul", [v_prev, p["decay"]], _at(n.name, "decay_product", tag))
                mag = g.op("Abs", [prod], _at(n.name, "decay_abs", tag))
                mag = g.op("Mul", [mag, g.const(2.0**-fixed.DECAY_SHIFT, np.float64)], _at(n.name, "decay_shift", tag))
                mag = g.op("Floor", [mag], _at(n.name, "decay_floor", tag))
                sign = g.op("Sign", [prod], _at(n.name, "decay_sign", tag))
                decayed = g.op("Mul", [sign, mag], _at(n.name, "decay", tag))
                v = g.op("Add", [decayed, v], _at(n.name, "v_plus_u", tag))
            if p["current"]:  # Lava's wrap-around: above 2**23 lose 2**24, at or below -2**23 gain it
                wrap = g.const(2.0 * fixed.U_WRAP, np.float64)
                hi = g.op("Greater", [v, g.const(fixed.U_WRAP, np.float64)], _at(n.name, "u_above", tag))
                lo = g.op("LessOrEqual", [v, g.const(-fixed.U_WRAP, np.float64)], _at(n.name, "u_below", tag))
                shift = g.op("Sub", [g.op("Cast", [lo], _at(n.name, "u_below_f64", tag), to=F64),
                                     g.op("Cast", [hi], _at(n.name, "u_above_f64", tag), to=F64)], _at(n.name, "u_turns", tag))  # fmt: skip
                return g.op("Add", [v, g.op("Mul", [shift, wrap], _at(n.name, "u_wrap", tag))], _at(n.name, "v", tag))
            if p["bias"] is not None:
                v = g.op("Add", [v, p["bias"]], _at(n.name, "v_plus_bias", tag))
            lim = [g.const(-fixed.V_MAX, np.float64), g.const(fixed.V_MAX, np.float64)]
            return g.op("Clip", [v, *lim], _at(n.name, "v", tag))
        form = n.params.get("form")
        if v_prev is None and "v0" in p:  # a dialect's rest state (Norse: v_leak)
            v_prev = p["v0"]
        if form is not None:  # a dialect's order of float32 operations (targets.reference.membrane)
            if v_prev is None:
                v_prev = g.const(0.0, np.float32)
            if form == "norse_jump":
                return g.op("Add", [v_prev, x], _at(n.name, "jump", tag))
            if form == "rockpool_syn":
                joined = g.op("Add", [v_prev, x], _at(n.name, "joined", tag))
                return g.op("Mul", [joined, p["b"]], _at(n.name, "decayed", tag))
            if form == "norse_box":
                d = g.op("Add", [x, p["v_leak"]], _at(n.name, "i_plus_leak", tag))
                d = g.op("Sub", [d, v_prev], _at(n.name, "minus_v", tag))
            else:
                d = g.op("Sub", [p["v_leak"], v_prev], _at(n.name, "leak_minus_v", tag))
                d = g.op("Add", [d, x], _at(n.name, "plus_i", tag))
            d = g.op("Mul", [p["a"], d], _at(n.name, "dv", tag))
            return g.op("Add", [v_prev, d], _at(n.name, "v", tag))
        # v = beta*v + gain*I + leak, one rounding per op as the reference (no fused multiply-add)
        v = x if p["gain"] is None else g.op("Mul", [p["gain"], x], _at(n.name, "gain_i", tag))
        if v_prev is not None:  # beta * 0 is 0: the first step starts from gain * I
            decayed = g.op("Mul", [p["beta"], v_prev], _at(n.name, "beta_v", tag))
            v = g.op("Add", [decayed, v], _at(n.name, "v_plus_i", tag))
        if p["leak"] is not None:
            v = g.op("Add", [v, p["leak"]], _at(n.name, "v_plus_leak", tag))
        return v

    def _delay_buffer(self, n: Node, x_in: str, st: _Step) -> str:
        """The delay's memory ``(B, M, N)``, oldest first (zeros before the first step)."""
        g, tag = self.g, st.tag
        buf = st.state.get(n.name) if st.state is not None else None
        if buf is not None:
            return buf
        batch = g.op("Shape", [x_in], _at(n.name, "batch", tag), start=0, end=1)
        dims = g.const([int(n.params["steps"].max()), int(np.prod(n.out_shape))], np.int64)
        shape = g.op("Concat", [batch, dims], _at(n.name, "zeros_shape", tag), axis=0)
        zero = helper.make_tensor("value", F64 if self.fixed else F32, [1], [0.0])
        return g.op("ConstantOfShape", [shape], _at(n.name, "zeros", tag), value=zero)

    def _delay_emit(self, n: Node, x_in: str, st: _Step) -> str:
        """Per element, its sources' sum ``steps`` steps ago: a one-hot row of the memory (``x * 1``
        plus zeros: exact), or the oldest row when every element waits the longest."""
        g, tag = self.g, st.tag
        buf = self._delay_buffer(n, x_in, st)
        steps = n.params["steps"].reshape(-1)
        depth = int(steps.max())
        if (steps == depth).all():
            y = g.op("Gather", [buf, g.const(0, np.int64)], _at(n.name, "oldest", tag), axis=1)
        else:
            onehot = np.zeros((1, depth, steps.size), np.float64 if self.fixed else np.float32)
            onehot[0, depth - steps, np.arange(steps.size)] = 1
            key = f"{n.name}/select"
            if key not in self.p:
                self.p[key] = {"onehot": g.init(key, onehot)}
            picked = g.op("Mul", [buf, self.p[key]["onehot"]], _at(n.name, "pick", tag))
            y = g.op("ReduceSum", [picked, g.const([1], np.int64)], _at(n.name, "row", tag), keepdims=0)
        shape = g.const([-1, *n.out_shape], np.int64)
        return g.op("Reshape", [y, shape], _at(n.name, "out", tag))

    def _delay_store(self, n: Node, values: dict[str, str], st: _Step) -> None:
        g, tag = self.g, st.tag
        x = values[n.sources[0]]
        for i, s in enumerate(n.sources[1:], start=1):
            x = g.op("Add", [x, values[s]], _at(n.name, f"in_add{i}", tag))
        x = g.op("Reshape", [x, g.const([-1, 1, int(np.prod(n.out_shape))], np.int64)], _at(n.name, "in_row", tag))
        buf = self._delay_buffer(n, values["input"], st)
        depth = int(n.params["steps"].max())
        if depth > 1:
            rest = g.op("Slice", [buf, g.const([1], np.int64), g.const([depth], np.int64), g.const([1], np.int64)],
                        _at(n.name, "older", tag))  # fmt: skip
            x = g.op("Concat", [rest, x], _at(n.name, "memory", tag), axis=1)
        st.new_state[n.name] = x

    def _li(self, n: Node, x: str, st: _Step) -> str:
        """The non-spiking LI: its membrane is its state and its output."""
        v = self._membrane(n, x, st)
        if st.keep_state and n.params.get("form") == "norse_jump":  # the current decays after the step
            decay = self.g.op("Mul", [self.p[n.name]["b"], v], _at(n.name, "decay", st.tag))
            st.new_state[n.name] = self.g.op("Add", [v, decay], _at(n.name, "i_next", st.tag))
        elif st.keep_state:
            st.new_state[n.name] = v
        return v

    def _lif(self, n: Node, x: str, st: _Step) -> str:
        g, p, tag = self.g, self.p[n.name], st.tag
        v = self._membrane(n, x, st)
        if self.fixed:
            spiking = g.op("Greater", [v, p["vth"]], _at(n.name, "spiking", tag))
            reset, dtype = g.const(0.0, np.float64), F64
        else:
            v_prev = st.state.get(n.name) if st.state is not None else None
            if n.params.get("reset") == "subtract_next" and v_prev is not None:  # the state: the unreset membrane
                was = g.op("Greater", [v_prev, p["v_threshold"]], _at(n.name, "was_above", tag))
                less = g.op("Sub", [v, p["v_threshold"]], _at(n.name, "minus_threshold", tag))
                v = g.op("Where", [was, less, v], _at(n.name, "v_subtracted", tag))
            if "spike" in n.params:  # several spikes per step, each subtracting the threshold
                return self._multi_spikes(n, v, st)
            spiking = g.op("Greater", [v, p["v_threshold"]], _at(n.name, "spiking", tag))
            reset, dtype = p.get("v_reset"), F32
        if st.keep_state and n.params.get("reset") == "subtract_next":
            st.new_state[n.name] = v
        elif st.keep_state:
            st.new_state[n.name] = g.op("Where", [spiking, reset, v], _at(n.name, "v_next", tag))
        y = g.op("Cast", [spiking], _at(n.name, "spikes", tag), to=dtype)
        axes = g.const(list(range(1, len(n.out_shape) + 1)), np.int64)
        count = g.op("ReduceSum", [y, axes], _at(n.name, "count", tag), keepdims=0)
        if dtype != F32:
            count = g.op("Cast", [count], _at(n.name, "count_f32", tag), to=F32)
        st.counts[n.name] = count
        return y


def _multi_spikes(self: _Lowering, n: Node, v: str, st: _Step) -> str:
    """Spikes per neuron in one step as float32 counts (targets.reference.multi_spikes); the state keeps
    the membrane less a threshold per spike. Sinabs' ``trunc`` is ``floor`` where it applies (v > 0)."""
    g, p, tag = self.g, self.p[n.name], st.tag
    q = g.op("Div", [v, p["v_threshold"]], _at(n.name, "v_over_threshold", tag))
    q = g.op("Floor", [q], _at(n.name, "whole", tag))
    if n.params["spike"] == "floor_ge":
        q = g.op("Min", [q, g.const(2.0**16, np.float32)], _at(n.name, "at_most", tag))
        cond = g.op("GreaterOrEqual", [v, p["v_threshold"]], _at(n.name, "at_threshold", tag))
    else:
        cond = g.op("Greater", [v, g.const(0.0, np.float32)], _at(n.name, "positive", tag))
    y = g.op("Where", [cond, q, g.const(0.0, np.float32)], _at(n.name, "spikes", tag))
    if st.keep_state:
        lost = g.op("Mul", [y, p["v_threshold"]], _at(n.name, "subtracted", tag))
        st.new_state[n.name] = g.op("Sub", [v, lost], _at(n.name, "v_next", tag))
    axes = g.const(list(range(1, len(n.out_shape) + 1)), np.int64)
    st.counts[n.name] = g.op("ReduceSum", [y, axes], _at(n.name, "count", tag), keepdims=0)
    return y


_Lowering._multi_spikes = _multi_spikes

_EMIT = {"conv": _Lowering._synapse, "conv1d": _Lowering._synapse, "affine": _Lowering._synapse, "lif": _Lowering._lif, "li": _Lowering._li,
         "sumpool": _Lowering._pool, "avgpool": _Lowering._pool, "flatten": _Lowering._flatten}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Files


def _value(name: str, shape: tuple) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, F32, list(shape))


def _model(
    plan: Plan, g: _Graph, low: _Lowering, inputs: list, outputs: list, kind: str, steps: int | None
) -> onnx.ModelProto:
    graph = helper.make_graph(g.nodes, f"snn_deploy_{kind}", inputs, outputs, initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="snn-deploy")
    model.ir_version = IR_VERSION
    model.doc_string = f"{kind} of {plan.source}: {plan.precision} precision, T={steps}" if steps else kind
    meta = {"format": FORMAT, "kind": kind, "precision": plan.precision, "T": steps, "dt": plan.meta.get("dt"),
            "input_shape": list(plan.input_shape), "classes": low.classes, "lif": plan.lif_names,
            "li": plan.li_names, "output": "scores" if plan.scores else "counts",
            "float64_layers": low.float64_layers, "source": plan.source}  # fmt: skip
    helper.set_model_props(model, {METADATA_KEY: json.dumps(meta)})
    return model


def _save(model: onnx.ModelProto, path: str | Path) -> None:
    """Check (full, with strict shape inference) and write atomically; a bad file never lands."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ModelError(f"the ONNX graph for {path} fails onnx.checker: {e}") from None
    with atomic_path(path) as tmp:
        onnx.save(model, tmp)


def export_onnx(plan: Plan, path: str | Path, *, steps: int | None = None) -> None:
    """Write the whole network for ``steps`` time steps (default: the graph's ``T``) to ``path``.

    The ``T`` steps are unrolled rather than written as an ONNX ``Loop``: ``T`` is small and fixed
    per file, the initializers (weights, DequantizeLinear) are shared by every step so the file does
    not grow with ``T``, the graph has no control flow for ONNX Runtime's optimiser or other
    runtimes (TensorRT, OpenVINO) to trip over, and each step is literally the step file's graph.
    """
    steps = plan.steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ModelError(
            f"export_onnx needs a positive number of steps, got {steps!r} (the graph states T={plan.steps!r})"
        )
    steps = int(steps)
    total_name = "scores" if plan.scores else "counts"
    g = _Graph(["spikes", total_name, *(f"spikes/{name}" for name in plan.lif_names)])
    low = _Lowering(plan, g)
    total: str | None = None
    totals: dict[str, str] = {}
    state: dict[str, str] | None = None
    for t in range(steps):
        st = _Step(f"t{t}", state, keep_state=t < steps - 1)
        x = g.op("Gather", ["spikes", g.const(t, np.int64)], _at("input", "step", st.tag), axis=0)
        out = low.step(x, st)
        if plan.scores and not low.fixed:  # float32 output, float64 total: the reference's sum
            out = g.op("Cast", [out], _at("output", "f64", st.tag), to=F64)
        total = out if total is None else g.op("Add", [total, out], _at("output", "count", st.tag))
        for name, c in st.counts.items():
            totals[name] = c if name not in totals else g.op("Add", [totals[name], c], _at(name, "total", st.tag))
        state = st.new_state
    g.op("Identity", [total], total_name, out=total_name)
    outputs = [helper.make_tensor_value_info(total_name, F64 if plan.scores else F32, [BATCH, low.classes])]
    for name in plan.lif_names:
        g.op("Identity", [totals[name]], f"spikes/{name}", out=f"spikes/{name}")
        outputs.append(_value(f"spikes/{name}", (BATCH,)))
    inputs = [_value("spikes", (steps, BATCH, *plan.input_shape))]
    _save(_model(plan, g, low, inputs, outputs, "network", steps), path)


def state_names(plan: Plan) -> list[str]:
    """The state the step file carries (``v/<name>``): LIF and LI membranes and delay memories, in plan order."""
    return [n.name for n in plan.nodes if n.kind in ("lif", "li", "delay")]


def rest_states(plan: Plan, batch: int) -> dict[str, np.ndarray]:
    """The step file's state inputs before the first step (``v/<name>``): zeros, or a dialect's rest value."""
    out = {}
    for name in state_names(plan):
        n = plan.node(name)
        v = np.zeros((batch, *state_shape(plan, name)), np.float32)
        if "v0" in n.params and plan.precision == "float":
            v[:] = n.params["v0"]
        out[f"v/{name}"] = v
    return out


def state_shape(plan: Plan, name: str) -> tuple[int, ...]:
    """A state's shape without the batch: a membrane's is its layer's; a delay's memory ``(M, N)``."""
    n = plan.node(name)
    if n.kind == "delay":
        return (int(n.params["steps"].max()), int(np.prod(n.out_shape)))
    return n.out_shape


def export_step_onnx(plan: Plan, path: str | Path) -> None:
    """Write one time step ``(x_t, v/<lif>...) -> (out_t, v_next/<lif>..., spikes/<lif>...)`` to ``path``.

    Running it ``T`` times from zero states gives exactly :func:`export_onnx`'s counts (an LI
    readout's scores: the float32 ``out_t`` added to a float64 total step by step).
    """
    lifs, held = plan.lif_names, state_names(plan)
    g = _Graph(["x_t", "out_t", *(f"{k}/{name}" for k in ("v", "v_next") for name in held),
                *(f"spikes/{name}" for name in lifs)])  # fmt: skip
    low = _Lowering(plan, g)
    shapes = {name: state_shape(plan, name) for name in held}
    state = {}
    for name in held:
        v = f"v/{name}"
        state[name] = g.op("Cast", [v], f"{name}/v_f64", to=F64) if low.fixed else v
    st = _Step("", state, keep_state=True)
    out = low.step("x_t", st)
    if low.fixed and plan.scores:  # |v| <= 2**23 - 1: exact in float32
        out = g.op("Cast", [out], "output/f32", to=F32)
    g.op("Identity", [out], "out_t", out="out_t")
    outputs = [_value("out_t", (BATCH, low.classes))]
    for name in held:
        v_next = st.new_state[name]
        if low.fixed:  # |v| <= 2**23 - 1: exact in float32
            v_next = g.op("Cast", [v_next], f"{name}/v_next_f32", to=F32)
        g.op("Identity", [v_next], f"v_next/{name}", out=f"v_next/{name}")
        outputs.append(_value(f"v_next/{name}", (BATCH, *shapes[name])))
    for name in plan.lif_names:
        g.op("Identity", [st.counts[name]], f"spikes/{name}", out=f"spikes/{name}")
        outputs.append(_value(f"spikes/{name}", (BATCH,)))
    inputs = [_value("x_t", (BATCH, *plan.input_shape))]
    inputs += [_value(f"v/{name}", (BATCH, *shapes[name])) for name in held]
    _save(_model(plan, g, low, inputs, outputs, "step", plan.steps), path)
