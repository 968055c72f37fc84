"""A NIR graph (ours or another tool's) as an execution plan that every target runs.

Loading checks the graph and resolves everything a target needs: node order from the edges
(never from dict order: ``nir.read`` sorts names), the nodes summed into each node's input
(residual ADDs are several edges into one node), batch-free shapes propagated from the input,
LIF and LI parameters as per-neuron ``beta``/``gain``, and, for fixed precision, the integer weights,
exponents, biases, thresholds and decays recovered exactly from the graph's ``snn_deploy``
metadata. Every unsupported node is named in one error.

``LI`` (NIR's leaky integrator, ``tau dv/dt = (v_leak - v) + r I``) is a neuron without threshold
or reset whose output is its membrane (kind ``li``): ``v = beta v + gain I + leak`` per step. It may
sit anywhere in a foreign graph; in ours it is the analog readout, and a graph whose output reads
an LI node reports per-class *scores* (the output summed over the T steps) instead of spike counts.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nir
import numpy as np

from core import MAX_STEPS
from core import fixed as fx_limits
from core.errors import ConfigError, DataError, ModelError, SnnDeployError
from core.fileio import torch_save_head, uninterrupted

METADATA_KEY = "snn_deploy"
SUPPORTED = ("Input", "Output", "Conv1d", "Conv2d", "Affine", "Linear", "Scale", "IF", "LIF", "CubaLIF", "LI", "CubaLI", "I",
             "Threshold", "SumPool2d", "AvgPool2d", "Flatten", "Delay")  # fmt: skip
DEFAULT_FOREIGN_DT = 1e-3  # s; the dt assumed for graphs that do not state one (Norse's default)

# How a producing library simulates the graphs it writes (tests/data/foreign/README.md has the
# evidence): the dt its exporter assumed, and what its neurons do that NIR's equations do not say.
DIALECTS: dict[str, dict[str, Any]] = {
    "nir": {"dt": DEFAULT_FOREIGN_DT, "about": "NIR's equations, forward Euler: spike where v > threshold, reset to v_reset"},
    "snntorch": {"dt": 1e-4, "reset": "subtract_next", "flatten": "batched",
                 "about": "snnTorch 1.0 (Leaky/Synaptic defaults): dt 1e-4 s; the threshold is subtracted at the step "
                          "after a spike, undecayed"},
    "snntorch-zero": {"dt": 1e-4, "flatten": "batched",
                      "about": "snnTorch 1.0 with reset_mechanism='zero' (what its import_from_nir builds): dt 1e-4 s, "
                               "reset to 0"},
    "spikingjelly": {"dt": 1e-4, "compare": ">=", "about": "SpikingJelly 2.0: dt 1e-4 s, spike where v >= threshold"},
    "norse": {"dt": 1e-3, "norse": True,
              "about": "Norse 1.1: dt 1e-3 s; its exporter writes dt * tau as tau; r and w_in are ignored; LIF "
                       "v += dt/tau ((I + v_leak) - v), LI and CubaLIF v += dt/tau ((v_leak - v) + I); CubaLIF's "
                       "current jumps by the input, feeds the membrane, then decays; IF v += I; at rest v = v_leak"},
    "norse-import": {"dt": 1e-3, "norse": True, "norse_tau": "as written", "flatten": "batched",
                     "about": "Norse 1.1's from_nir (what it computes for a graph it reads, not one it wrote): tau as "
                              "written, r ignored, its LIFBox arithmetic, Flatten dims on batched tensors"},
    "rockpool": {"dt": 1e-3, "rockpool": True,
                 "about": "Rockpool 3.1: dt 1e-3 s, exponential decays exp(-dt/tau), r ignored; CubaLIF: the input "
                          "joins the current, current and membrane decay, the membrane adds the current; "
                          "floor(v / threshold) spikes where v >= threshold, each subtracting the threshold"},
    "sinabs": {"dt": 1e-3, "sinabs": True,
               "about": "Sinabs 3.1: tau in steps, decay exp(-1/tau), LIF input scaled by 1 - exp(-1/tau), IF v += I; "
                        "trunc(v / threshold) spikes where v > 0, each subtracting the threshold"},
}  # fmt: skip
NOT_REPRODUCED: dict[str, str] = {}  # producers whose simulation is known and not reproduced yet


def dialect_of(name: str | None) -> tuple[str, dict[str, Any]]:
    """The dialect ``name`` (default ``nir``) and its settings; one this project does not reproduce
    yet is refused with what it would take."""
    name = name or "nir"
    if name in NOT_REPRODUCED:
        raise ModelError(f"dialect {name!r} is not reproduced yet: {NOT_REPRODUCED[name]}")
    if name not in DIALECTS:
        raise ModelError(
            f"unknown dialect {name!r}; known: {', '.join(DIALECTS)}"
            + (f" (not yet: {', '.join(NOT_REPRODUCED)})" if NOT_REPRODUCED else "")
        )
    return name, DIALECTS[name]


@dataclass
class Node:
    name: str
    kind: str  # conv (Conv2d), conv1d, affine, lif, li, sumpool, avgpool, flatten, delay
    sources: list[str]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] | None = None  # integer parameters (fixed precision)
    origin: str = ""  # the NIR node type it comes from (a CubaLIF is two nodes: ``<name>.syn`` and ``<name>``)


@dataclass
class Plan:
    nodes: list[Node]
    input_shape: tuple[int, ...]
    outputs: list[str]  # nodes summed into the graph output
    meta: dict[str, Any]
    source: str
    # What targets prepare once per plan (weights on a device, a foreign reader's module), reused
    # by every batch a run feeds the same plan.
    prepared: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def precision(self) -> str:
        return self.meta.get("precision", "float")

    @property
    def steps(self) -> int | None:
        return self.meta.get("T")

    @property
    def lif_names(self) -> list[str]:
        """The spiking layers (per-layer spike counts and rasters are theirs)."""
        return [n.name for n in self.nodes if n.kind == "lif"]

    @property
    def li_names(self) -> list[str]:
        """The non-spiking leaky-integrator layers (their membrane traces are their output)."""
        return [n.name for n in self.nodes if n.kind == "li"]

    @property
    def rules(self) -> set[str]:
        """The neuron rules beyond NIR's forward Euler with reset to ``v_reset`` that the plan's LIF/LI
        layers follow (a producer's dialect, :data:`DIALECTS`): ``subtract_next`` (snnTorch's reset),
        ``norse_box``, ``norse_cell``, ``norse_jump`` (Norse's arithmetic), ``v0`` (a rest state other
        than 0). Every target computes the plain rule; :attr:`TargetInfo.rules` lists the others."""
        out = set()
        for n in self.nodes:
            if n.kind in ("lif", "li"):
                out |= {n.params[k] for k in ("reset", "form", "spike") if k in n.params}
                out |= {"v0"} if "v0" in n.params else set()
        return out

    def require_rules(self, allowed: tuple[str, ...], target: str) -> None:
        """Refuse a plan whose neuron rules ``target`` does not compute (never a silent wrong answer)."""
        other = sorted(self.rules - set(allowed))
        if other:
            raise ModelError(f"the {target} target does not compute the {', '.join(other)} rule of this graph's "
                             f"{self.meta.get('dialect')} dialect; reference, torch and onnx do")  # fmt: skip

    @property
    def conv_features(self) -> dict[str, list[str]]:
        """The convolutions that dilate their kernel or split their channels into groups, by feature
        (``dilation``, ``groups``): not every target computes them (:attr:`TargetInfo.conv_features`)."""
        out: dict[str, list[str]] = {}
        for n in self.nodes:
            if n.kind in ("conv", "conv1d"):
                if any(d != 1 for d in n.params["dilation"]):
                    out.setdefault("dilation", []).append(n.name)
                if n.params["groups"] != 1:
                    out.setdefault("groups", []).append(n.name)
        return out

    @property
    def delay_names(self) -> list[str]:
        """Delays (NIR ``Delay`` nodes and the one-step delay on each loop's closing edge): they come
        first in the plan, emit what their sources summed ``steps`` steps ago, and store their
        sources' sum at the end of each step."""
        return [n.name for n in self.nodes if n.kind == "delay"]

    @property
    def scores(self) -> bool:
        """Whether the output reads an LI layer: then a run reports per-class scores (the output summed
        over T: float64 in float precision, int64 in fixed) instead of output spike counts."""
        return any(s != "input" and self.node(s).kind == "li" for s in self.outputs)

    @property
    def output_kind(self) -> str:
        """What a run's per-class output is: ``"scores"`` (an LI readout), ``"spike counts"`` (LIF
        layers) or ``"values"`` (anything else, each step's truncated to an integer, summed over T: a graph
        ending in a synapse or a pool; :mod:`targets.reference`)."""
        if self.scores:
            return "scores"
        spiking = all(s != "input" and self.node(s).kind == "lif" for s in self.outputs)
        return "spike counts" if spiking else "values"

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def depths(self) -> dict[str, int]:
        """Synaptic layers between the input and each LIF/LI layer (the longest path)."""
        depth: dict[str, int] = {"input": 0}
        for n in self.nodes:  # a delay emits what it stored at earlier steps: no synaptic layer before it
            depth[n.name] = 0 if n.kind == "delay" else max(depth[s] for s in n.sources) + (n.kind in SYNAPSE_KINDS)
        return {n.name: depth[n.name] for n in self.nodes if n.kind in ("lif", "li")}


def _order(
    nodes: dict[str, nir.NIRNode], edges: list[tuple[str, str]], source: str
) -> tuple[list[str], list[tuple[str, str]]]:
    """The evaluation order and the edges that close loops. A depth-first walk from the Input (edges
    in the order listed) finds the *back edges*: an edge into a node still on the walk's path closes a
    loop, and carries the value computed at step ``t`` to step ``t + 1``. Kahn's algorithm on the
    other edges gives the order; among ready nodes the one listed first in the edge list goes first."""
    edges = [(a, b) for a, b in edges]
    for a, b in edges:
        for n in (a, b):
            if n not in nodes:
                raise ModelError(f"{source}: edge ({a} -> {b}) names a node '{n}' that the graph does not have")
    seen: set[tuple[str, str]] = set()
    for e in edges:
        if e in seen:
            raise ModelError(f"{source}: edge ({e[0]} -> {e[1]}) is listed twice; a graph lists each edge once "
                             "(whether its input counts once or twice is not defined)")  # fmt: skip
        seen.add(e)
    rank = {}
    for a, b in edges:
        rank.setdefault(a, len(rank))
        rank.setdefault(b, len(rank))
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        succ[a].append(b)
    back: list[tuple[str, str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    starts = [n for n, v in nodes.items() if isinstance(v, nir.Input)] + sorted(
        nodes, key=lambda n: rank.get(n, 1 << 30)
    )
    for root in starts:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(succ[root]))]
        while stack:
            n, it = stack[-1]
            m = next(it, None)
            if m is None:
                state[n] = 2
                stack.pop()
            elif state.get(m) == 1:
                back.append((n, m))
            elif m not in state:
                state[m] = 1
                stack.append((m, iter(succ[m])))
    forward = [e for e in edges if e not in back]
    indeg = {n: 0 for n in nodes}
    fsucc: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in forward:
        indeg[b] += 1
        fsucc[a].append(b)
    ready = deque(sorted((n for n, d in indeg.items() if d == 0), key=lambda n: rank.get(n, 1 << 30)))
    order = []
    while ready:
        n = ready.popleft()
        order.append(n)
        for m in sorted(fsucc[n], key=lambda m: rank[m]):
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
    return order, back


def _pair(v) -> tuple[int, int]:
    a = np.atleast_1d(np.asarray(v)).astype(int).tolist()
    return (a[0], a[0]) if len(a) == 1 else (a[0], a[1])


def _neuron_params(
    node: nir.NIRNode, shape: tuple[int, ...], dt: float, name: str, rules: dict[str, Any] | None = None
) -> list[tuple[str, str, dict]]:
    """A neuron node as plan pieces ``(suffix, kind, params)``, each ``v = beta v + gain I + leak``
    per neuron in float32 (a ``lif`` piece also spikes where ``v > v_threshold`` and resets to
    ``v_reset``). Forward Euler with step ``dt`` on NIR's equations, the input held over the step:

    - ``LIF`` / ``LI``: ``tau dv/dt = (v_leak - v) + r I``: ``beta = 1 - dt/tau``, ``gain = r dt/tau``,
      ``leak = v_leak dt/tau``;
    - ``IF`` / ``I``: ``dv/dt = r I``: ``beta = 1``, ``gain = r dt``, no leak;
    - ``CubaLIF`` / ``CubaLI``: the synaptic current ``tau_syn dI/dt = -I + w_in S`` (piece ``.syn``,
      non-spiking: ``beta = 1 - dt/tau_syn``, ``gain = w_in dt/tau_syn``) feeds the membrane in the
      same step (the membrane integrates the current just updated), as in Norse, snnTorch
      ``Synaptic`` and Lava's LIF (``u`` before ``v``);
    - ``Threshold``: ``v = I`` (``beta = 0``, ``gain = 1``), a spike where ``I > threshold``, no state;
    - ``Scale``: ``v = scale I`` (``beta = 0``), non-spiking, no state.

    A dialect's ``compare: ">="`` becomes the float32 threshold one step down (``v >= t`` is exactly
    ``v > nextafter(t, -inf)`` for float32 ``v``); its ``reset: "subtract_next"`` is kept as the LIF's
    ``reset`` (the membrane is kept unreset and ``threshold`` is subtracted at the next step where it
    was above it: snnTorch's delayed subtraction).
    """
    rules = rules or {}
    kind = type(node).__name__

    def full(key, x=None):
        arr = np.asarray(getattr(node, key) if x is None else x, dtype=np.float64)
        try:
            arr = np.broadcast_to(arr, shape).copy()
        except ValueError:
            raise ModelError(
                f"node {name}: {kind} parameter {key} of shape {arr.shape} does not fit the layer shape {shape}"
            ) from None
        if not np.isfinite(arr).all():
            raise ModelError(f"node {name}: {kind} {key} holds NaN or infinite values")
        if key.startswith("tau") and (arr <= 0).any():
            raise ModelError(f"node {name}: {kind} {key} must be positive (a time constant), holds {arr.min():g} s")
        return arr

    def alpha(key):
        tau = full(key)
        if (tau < dt).any():
            raise ModelError(
                f"node {name}: {kind} {key} {tau.min():g} s is shorter than dt {dt:g} s (Euler step unstable): name "
                "the library that wrote the graph (--dialect snntorch, spikingjelly: dt 1e-4 s; norse: its exporter "
                "writes dt * tau as tau) or the dt it simulates with (--dt)"
            )
        return dt / tau

    def piece(beta, gain, leak=0.0, *, spikes=False):
        gain = np.broadcast_to(np.asarray(gain, dtype=np.float64), shape)
        # Our own graphs state r = tau/dt exactly: the input enters with gain 1, bit for bit.
        gain = np.where(np.abs(gain - 1.0) < 1e-6, 1.0, gain)
        p = {"beta": np.broadcast_to(np.asarray(beta), shape).astype(np.float32), "gain": gain.astype(np.float32),
             "leak": np.broadcast_to(np.asarray(leak), shape).astype(np.float32)}  # fmt: skip
        if spikes:
            v_th = (full("threshold") if kind == "Threshold" else full("v_threshold")).astype(np.float32)
            v_reset = np.zeros(shape) if kind == "Threshold" or node.v_reset is None else full("v_reset")
            if rules.get("compare") == ">=":
                v_th = np.nextafter(v_th, np.float32(-np.inf), dtype=np.float32)
                p["compare"] = ">="  # (recorded: Lava's float64 model does not take the float32 step down)
            p |= {"v_threshold": v_th, "v_reset": v_reset.astype(np.float32)}
            if rules.get("reset") == "subtract_next" and kind in ("LIF", "CubaLIF"):
                p["reset"] = "subtract_next"
        return p

    spiking = kind in ("LIF", "IF", "CubaLIF", "Threshold")
    if rules.get("norse") and kind in ("LIF", "LI", "IF", "CubaLIF"):
        return _norse_pieces(node, name, kind, full, dt, piece, spiking, rules.get("norse_tau") == "as written")
    if (rules.get("rockpool") or rules.get("sinabs")) and kind in ("LIF", "LI", "IF", "CubaLIF"):
        return _exp_pieces(
            node, name, kind, full, dt, piece, spiking, "rockpool" if rules.get("rockpool") else "sinabs"
        )
    pieces = []
    if kind in ("CubaLIF", "CubaLI"):
        a = alpha("tau_syn")
        pieces.append((".syn", "li", piece(1.0 - a, a * full("w_in"))))
    if kind in ("LIF", "LI"):
        a = alpha("tau")
        pieces.append(
            ("", "lif" if spiking else "li", piece(1.0 - a, a * full("r"), a * full("v_leak"), spikes=spiking))
        )
    elif kind in ("CubaLIF", "CubaLI"):
        a = alpha("tau_mem")
        pieces.append(
            ("", "lif" if spiking else "li", piece(1.0 - a, a * full("r"), a * full("v_leak"), spikes=spiking))
        )
    elif kind in ("IF", "I"):
        pieces.append(("", "lif" if spiking else "li", piece(1.0, dt * full("r"), spikes=spiking)))
    elif kind == "Threshold":
        pieces.append(("", "lif", piece(0.0, 1.0, spikes=True)))
    elif kind == "Scale":
        pieces.append(("", "li", piece(0.0, full("scale"))))
    return pieces


def _window(name: str, what: str, in_shape: tuple[int, ...], kernel, stride, padding, dilation=None) -> tuple[int, ...]:
    """Output extent per spatial dimension of a window (a convolution or pool) over ``in_shape`` ``(C,
    *spatial)``; a dilated kernel spans ``dilation (k - 1) + 1``. Absurd parameters are errors."""
    dilation = (1,) * len(kernel) if dilation is None else dilation
    if min(kernel) < 1 or min(stride) < 1 or min(padding) < 0 or min(dilation) < 1:
        raise ModelError(f"node {name}: {what} needs kernel, stride and dilation >= 1 and padding >= 0, got kernel "
                         f"{tuple(kernel)}, stride {tuple(stride)}, padding {tuple(padding)}, dilation {tuple(dilation)}")  # fmt: skip
    out = tuple((i + 2 * p - d * (k - 1) - 1) // s + 1
                for i, k, s, p, d in zip(in_shape[1:], kernel, stride, padding, dilation))  # fmt: skip
    if min(out) < 1:
        raise ModelError(f"node {name}: {what} window {tuple(kernel)} (dilation {tuple(dilation)}) does not fit its "
                         f"input of shape {in_shape}")  # fmt: skip
    return out


def _ints(v, n: int, name: str, what: str) -> tuple[int, ...]:
    """An int or a sequence of ``n`` ints (NIR writes either) as ``n`` ints."""
    a = np.atleast_1d(np.asarray(v)).reshape(-1)
    if a.size not in (1, n) or a.dtype.kind not in "iuf" or not np.array_equal(a, np.rint(a)):
        raise ModelError(f"node {name}: {what} must be an integer or {n} integers, got {v!r}")
    return tuple(int(x) for x in np.broadcast_to(a.astype(np.int64), (n,)))


def _conv_geometry(node, name: str, in_shape: tuple[int, ...]) -> dict[str, Any]:
    """A ``Conv1d``'s or ``Conv2d``'s stride, padding, dilation and groups as the plan holds them (one int
    per spatial dimension; ``groups`` an int), checked against the weight and the input shape.

    NIR 1.0.8's padding is an int, one int per dimension, or ``"valid"`` (none) or ``"same"`` (PyTorch's:
    stride 1, ``dilation (k - 1)`` zeros in all, the odd one after the data). ``"same"`` is taken where
    it pads evenly; uneven ``"same"`` and ``"same"`` with a stride are refused by name."""
    kind = type(node).__name__
    nd = 1 if isinstance(node, nir.Conv1d) else 2
    w = np.asarray(node.weight)
    if w.ndim != nd + 2 or len(in_shape) != nd + 1:
        raise ModelError(f"node {name}: {kind} weight of shape {w.shape} does not take input of shape {in_shape}")
    stride, dilation = _ints(node.stride, nd, name, "stride"), _ints(node.dilation, nd, name, "dilation")
    groups = np.asarray(node.groups).reshape(-1)
    if groups.size != 1 or groups.dtype.kind not in "iu" or int(groups[0]) < 1:
        raise ModelError(f"node {name}: {kind} groups must be a positive integer, got {node.groups!r}")
    groups = int(groups[0])
    if in_shape[0] != w.shape[1] * groups or w.shape[0] % groups:
        raise ModelError(f"node {name}: {kind} with {groups} group(s) and weight of shape {w.shape} needs "
                         f"{w.shape[1] * groups} input channels and output channels divisible by {groups}; "
                         f"its input has shape {in_shape}")  # fmt: skip
    padding = node.padding.decode() if isinstance(node.padding, bytes) else node.padding
    kernel = w.shape[2:]
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0,) * nd
        elif padding == "same":
            total = [d * (k - 1) for d, k in zip(dilation, kernel)]
            if any(s != 1 for s in stride):
                raise ModelError(f"node {name}: {kind} padding 'same' with stride {stride} is not supported (PyTorch, "
                                 "whose meaning NIR takes, allows 'same' at stride 1 only)")  # fmt: skip
            if any(t % 2 for t in total):
                raise ModelError(f"node {name}: {kind} padding 'same' with kernel {tuple(kernel)} and dilation "
                                 f"{dilation} pads unevenly (one more zero after the data); give the padding as "
                                 "integers, or a kernel whose dilated extent is odd")  # fmt: skip
            padding = tuple(t // 2 for t in total)
        else:
            raise ModelError(f"node {name}: {kind} padding must be integers, 'same' or 'valid', got {padding!r}")
    else:
        padding = _ints(padding, nd, name, "padding")
    return {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}


def _shape_of(kind: str, node: nir.NIRNode, in_shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    if kind in ("conv", "conv1d"):
        g = _conv_geometry(node, name, in_shape)
        w = np.asarray(node.weight)
        window = _window(name, type(node).__name__, in_shape, w.shape[2:], g["stride"], g["padding"], g["dilation"])
        return (w.shape[0], *window)
    if kind == "affine":
        w = np.asarray(node.weight)
        if w.ndim != 2:
            raise ModelError(f"node {name}: {type(node).__name__} weight must be a matrix (outputs, inputs), got shape "
                             f"{w.shape}")  # fmt: skip
        if int(np.prod(in_shape)) != w.shape[1] or len(in_shape) != 1:
            raise ModelError(
                f"node {name}: {type(node).__name__} expects a vector of {w.shape[1]}, gets shape {in_shape}"
            )
        return (w.shape[0],)
    if kind in ("sumpool", "avgpool"):
        if len(in_shape) != 3:
            raise ModelError(
                f"node {name}: {type(node).__name__} takes (channels, rows, columns), gets shape {in_shape}"
            )
        window = _window(name, type(node).__name__, in_shape, _pair(node.kernel_size), _pair(node.stride),
                         _pair(node.padding))  # fmt: skip
        return (in_shape[0], *window)
    if kind == "flatten":
        return flatten_shape(in_shape, node.start_dim, node.end_dim, name)
    return in_shape


def flatten_shape(in_shape: tuple[int, ...], start_dim, end_dim, name: str = "?") -> tuple[int, ...]:
    """NIR's ``Flatten`` on a batch-free shape: dims ``start_dim..end_dim`` (inclusive; negative ones
    count from the end; dim 0 is the sample's first) become one."""
    nd = len(in_shape)
    start, end = int(start_dim), int(end_dim)
    if not (-nd <= start < nd and -nd <= end < nd) or start % nd > end % nd:
        raise ModelError(f"node {name}: Flatten dims {start_dim}..{end_dim} do not fit its input of shape {in_shape} "
                         "(NIR's dims are batch-free: dim 0 is the sample's first)")  # fmt: skip
    start, end = start % nd, end % nd
    return (*in_shape[:start], math.prod(in_shape[start : end + 1]), *in_shape[end + 1 :])


def _norse_pieces(node, name: str, kind: str, full, dt: float, piece, spiking: bool, tau_as_written: bool = False):
    """Norse 1.1's own arithmetic (float32, its order of operations) for the nodes its exporter writes.
    The exporter writes ``tau = dt / tau_inv``: ``tau_inv`` is recovered as ``dt / tau`` in float32
    (its import instead reads ``tau_inv = 1 / tau``: ``tau_as_written``), and a step's factor as
    ``dt * tau_inv`` in float32, as Norse multiplies them."""
    f32 = np.float32
    if tau_as_written and kind == "CubaLIF":
        raise ModelError(f"node {name}: Norse's from_nir builds another synapse for CubaLIF (a leaky LIBox, not "
                         "LIFCell's current)")  # fmt: skip

    def factor(key, sign=1.0):
        tau = full(key).astype(f32)
        inv = ((f32(1.0) / tau) if tau_as_written else (f32(dt) / tau)).astype(f32)
        return (f32(sign * dt) * inv).astype(f32)

    v_leak = full("v_leak").astype(f32) if kind != "IF" else np.zeros(full("r").shape, f32)
    if kind == "IF":  # v += I: dt and r unused
        p = piece(1.0, 1.0, spikes=True)
        if np.any(p["v_reset"] != 0):
            p["v0"] = p["v_reset"].copy()  # an IAF cell starts at v_reset
        return [("", "lif", p)]
    a = factor("tau_mem" if kind == "CubaLIF" else "tau")
    p = piece(1.0 - a.astype(np.float64), a, a.astype(np.float64) * v_leak, spikes=spiking)  # (the same, NIR's way)
    p |= {"form": "norse_box" if kind == "LIF" else "norse_cell", "a": a, "v_leak": v_leak}
    if np.any(v_leak != 0):
        p["v0"] = v_leak.copy()
    if kind != "CubaLIF":
        return [("", "lif" if spiking else "li", p)]
    b = factor("tau_syn", -1.0)
    syn = piece(1.0 + b.astype(np.float64), 1.0) | {"form": "norse_jump", "b": b}
    return [(".syn", "li", syn), ("", "lif", p)]


def _exp_pieces(
    node, name: str, kind: str, full, dt: float, piece, spiking: bool, lib: str
) -> list[tuple[str, str, dict]]:
    """Rockpool's and Sinabs' neurons: exact exponential decays (float32, as they compute them), several
    spikes per step, each subtracting the threshold (``spike``: ``floor_ge``, Rockpool's
    ``(v >= t) floor(v / t)``; ``trunc_gt0``, Sinabs' ``(v > 0) trunc(v / t)``)."""
    f32 = np.float32

    def decay(key):  # exp(-dt/tau) (Rockpool) or exp(-1/tau), tau in steps (Sinabs), in float32
        tau = full(key).astype(f32)
        q = (f32(-dt) / tau) if lib == "rockpool" else (f32(-1.0) / tau)
        return np.exp(q.astype(np.float64)).astype(f32)

    rule = {"spike": "floor_ge" if lib == "rockpool" else "trunc_gt0"}
    if spiking and np.any(full("v_threshold") <= 0):
        raise ModelError(f"node {name}: {kind} threshold <= 0: {lib} subtracts multiples of a positive threshold")
    if kind == "IF":
        return [("", "lif", piece(1.0, 1.0, spikes=True) | rule)]
    if kind == "CubaLIF" and lib == "sinabs":
        raise ModelError(f"node {name}: Sinabs writes no CubaLIF (its exporter drops tau_syn)")
    a = decay("tau_mem" if kind == "CubaLIF" else "tau")
    if kind == "LI" and lib == "rockpool":  # ExpSyn: (i + I) * exp(-dt/tau)
        return [("", "li", piece(a.astype(np.float64), 1.0) | {"form": "rockpool_syn", "b": a})]
    p = piece(a.astype(np.float64), 1.0, spikes=spiking)
    if lib == "sinabs" and kind == "LIF":  # norm_input: the input scaled by 1 - exp(-1/tau), in float32
        p["gain"] = (f32(1.0) - a).astype(f32)
    if spiking:
        p |= rule
    if kind != "CubaLIF":
        return [("", "lif" if spiking else "li", p)]
    b = decay("tau_syn")
    return [(".syn", "li", piece(b.astype(np.float64), 1.0) | {"form": "rockpool_syn", "b": b}), ("", "lif", p)]


def _delay_steps(node: nir.Delay, shape: tuple[int, ...], dt: float, name: str) -> np.ndarray:
    """NIR's ``Delay`` (seconds per element) as whole steps of ``dt``, at least one."""
    d = np.asarray(node.delay, dtype=np.float64)
    try:
        d = np.broadcast_to(d, shape)
    except ValueError:
        raise ModelError(f"node {name}: Delay of shape {d.shape} does not fit the layer shape {shape}") from None
    steps = np.rint(d / dt)
    if not np.isfinite(d).all() or np.abs(steps * dt - d).max(initial=0) > 1e-6 * dt or steps.min(initial=1) < 1:
        raise ModelError(f"node {name}: a Delay must be a whole number (>= 1) of steps of dt = {dt:g} s; it holds "
                         f"{d.min():g} .. {d.max():g} s")  # fmt: skip
    return steps.astype(np.int64)


KINDS = {nir.Conv1d: "conv1d", nir.Conv2d: "conv", nir.Affine: "affine", nir.Linear: "affine", nir.SumPool2d: "sumpool",
         nir.AvgPool2d: "avgpool", nir.Flatten: "flatten"}  # fmt: skip
SYNAPSE_KINDS = ("conv", "conv1d", "affine")  # the plan kinds with weights
NEURONS = (nir.LIF, nir.LI, nir.IF, nir.I, nir.CubaLIF, nir.CubaLI, nir.Threshold, nir.Scale)


def inline_subgraphs(graph: nir.NIRGraph, source: str) -> nir.NIRGraph:
    """``graph`` with every nested ``NIRGraph`` node replaced by its nodes, named ``<subgraph>.<node>``
    (recursively); an edge into a subgraph (``sub`` or ``sub.<its Input>``) reaches what the inner
    Input feeds, an edge out of it (``sub`` or ``sub.<its Output>``) leaves from what feeds the inner
    Output. The inner Input and Output nodes are identities and disappear."""

    def flat(g: nir.NIRGraph, prefix: str) -> tuple[dict[str, nir.NIRNode], list[tuple[str, str]]]:
        nodes: dict[str, nir.NIRNode] = {}
        edges: list[tuple[str, str]] = []
        ports_in: dict[str, str] = {}  # subgraph name -> its inner Input (flat name)
        ports_out: dict[str, str] = {}
        for name, node in g.nodes.items():
            full = prefix + name
            if isinstance(node, nir.NIRGraph):
                sub_nodes, sub_edges = flat(node, full + ".")
                ins = [n for n, v in node.nodes.items() if isinstance(v, nir.Input)]
                outs = [n for n, v in node.nodes.items() if isinstance(v, nir.Output)]
                if len(ins) != 1 or len(outs) != 1:
                    raise ModelError(f"{source}: subgraph {full} needs exactly one Input and one Output node, has "
                                     f"{len(ins)} and {len(outs)}")  # fmt: skip
                nodes |= sub_nodes
                edges += sub_edges
                ports_in[full], ports_out[full] = f"{full}.{ins[0]}", f"{full}.{outs[0]}"
            else:
                nodes[full] = node
        for a, b in g.edges:
            a, b = prefix + a, prefix + b
            edges.append((ports_out.get(a, a), ports_in.get(b, b)))
        return nodes, edges

    nodes, edges = flat(graph, "")
    inner = [n for n, v in nodes.items() if isinstance(v, (nir.Input, nir.Output)) and "." in n]
    for n in inner:  # an inner port: its sources feed its consumers directly
        preds = [a for a, b in edges if b == n]
        succs = [b for a, b in edges if a == n]
        edges = [(a, b) for a, b in edges if n not in (a, b)] + [(a, b) for a in preds for b in succs]
        del nodes[n]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=dict(graph.metadata or {}), type_check=False)


def load_plan(
    graph: str | Path | nir.NIRGraph, *, dt: float | None = None, dialect: str | None = None, steps: int | None = None
) -> Plan:
    """Read a ``.nir`` file (or take a graph) and build its plan; errors name the node at fault.
    ``dialect`` (:data:`DIALECTS`) runs the graph as the library that wrote it simulates it; ``dt``
    (s) and ``steps`` per sample override what the graph (or the dialect) states: a graph another
    library wrote states neither."""
    for flag, value in (("dt", dt), ("steps", steps)):
        if value is not None and (isinstance(value, bool) or not value > 0 or not np.isfinite(value)):
            raise ConfigError(f"--{flag} must be positive, got {value!r}")
    if steps is not None and (int(steps) != steps or steps > MAX_STEPS):
        raise ConfigError(f"--steps must be a whole number up to {MAX_STEPS:,}, got {steps!r}")
    plan = _load_plan(graph, dt, dialect)
    if steps is not None:
        plan.meta["T"] = int(steps)
    return plan


def read_graph_file(path: Path) -> nir.NIRGraph:
    """``nir.read`` in a forked child with a deadline: on a damaged file the HDF5 library can loop
    forever (a corrupt string heap) or crash, and neither may take the command down with it.
    (``os.fork`` itself, not multiprocessing: this must work in daemon worker processes too.)"""
    import pickle
    import select
    import signal

    deadline = READ_SECONDS + path.stat().st_size / READ_BYTES_PER_SECOND
    r, w = os.pipe()
    # Ctrl-C during the fork was raised inside its handlers, printed as "Exception ignored" and lost: held
    # back until the fork is done (the child never leaves the block: it ends in os._exit)
    pid = 0
    try:
        with uninterrupted():
            pid = os.fork()
            if pid == 0:
                _read_in_child(path, r, w)
    except KeyboardInterrupt:  # (held back until the fork was done: the child is stopped, not left behind)
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(r)
        os.close(w)
        raise
    os.close(w)
    chunks, end = [], time.monotonic() + deadline
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                raise DataError(f"{path} is not a readable NIR graph: the HDF5 library did not finish reading it in "
                                f"{deadline:.0f} s (a damaged file)")  # fmt: skip
            chunk = os.read(r, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    if not chunks:
        raise DataError(f"{path} is not a readable NIR graph: the HDF5 library crashed reading it "
                        f"(wait status {status})")  # fmt: skip
    kind, value = pickle.loads(b"".join(chunks))  # (our own child's bytes)
    if kind == "error":
        raise DataError(f"{path} is not a readable NIR graph ({value}){_other_file_hint(path)}")
    return value


def _read_in_child(path: Path, r: int, w: int) -> None:
    """:func:`read_graph_file`'s child: read the graph, send it (or the error) back, leave without cleanup."""
    import pickle

    try:
        os.close(r)
        try:
            result: tuple[str, Any] = ("graph", nir.read(path, type_check=False))
        except Exception as e:  # noqa: BLE001 - h5py and nir raise many types for a bad file
            result = ("error", _node_problem(path) or f"{type(e).__name__}: {e}")
        try:
            payload = pickle.dumps(result)
        except Exception as e:  # noqa: BLE001 - a graph that cannot be pickled back
            payload = pickle.dumps(("error", f"{type(e).__name__}: {e}"))
        with os.fdopen(w, "wb") as f:
            f.write(payload)
    finally:
        os._exit(0)


def _other_file_hint(path: Path) -> str:
    """What a file that is not a graph seems to be, and the command that takes it ("" when unknown)."""
    from inputs.formats.readers import sniff_format  # (only when a graph file fails to read)

    with open(path, "rb") as f:
        if torch_save_head(f.read(4)):
            return f"; it is a PyTorch checkpoint: python -m convert.to_nir {path} writes its graph"
    if path.suffix.lower() == ".onnx":
        return "; it is an ONNX file: the targets run the .nir graph that convert.to_nir wrote beside it"
    try:
        fmt, _ = sniff_format(path)
    except SnnDeployError:
        return ""
    if fmt in ("npy", "npz"):
        return "; it is a NumPy file: name a .nir graph first and this file with --data (a spike array or events)"
    if fmt and fmt != "hdf5":  # (an HDF5 file may be a damaged graph as well as an event recording)
        return f"; it is an event recording ({fmt}): python -m runtime.stream {path} --model GRAPH runs a graph on it"
    return ""


def _node_problem(path: Path) -> str | None:
    """Which node of a graph file that ``nir.read`` refused has no type, one NIR does not know, or lacks
    a field its type needs, if any (nir says only ``KeyError: 'type'``, ``KeyError: 'shape'`` or an
    empty ``AssertionError``, naming no node)."""
    import h5py
    from nir.serialization import hdf2dict

    known = set(getattr(nir.ir, "__all_ir", ()))  # the type names nir.read maps to nodes

    def walk(nodes: dict, prefix: str) -> str | None:
        for name, node in nodes.items():
            if not isinstance(node, dict):
                continue
            if "type" not in node:
                return f"node {prefix}{name} has no type"
            kind = str(node["type"])
            if known and kind not in known:
                return f"node {prefix}{name} has the type {kind!r}, which NIR does not define"
            if kind == "NIRGraph":
                found = walk(node.get("nodes", {}), f"{prefix}{name}.")
            else:
                try:
                    nir.dict2NIRNode(dict(node))
                    found = None
                except KeyError as e:
                    found = f"node {prefix}{name} ({kind}) lacks its field {e}"
                except TypeError as e:  # a dataclass built without a field it needs
                    missing = re.search(r"missing \d+ required positional arguments?: (.*)", str(e))
                    found = f"node {prefix}{name} ({kind}) lacks its field {missing[1] if missing else e}"
                except Exception:  # noqa: BLE001 - a node nir builds but the graph refuses: nir's own message
                    found = None
            if found:
                return found
        return None

    try:
        with h5py.File(path, "r") as f:
            data = hdf2dict(f["node"]) if "node" in f else {}
        return walk(data.get("nodes", {}), "") if isinstance(data.get("nodes"), dict) else None
    except Exception:  # noqa: BLE001 - only a better message is at stake
        return None


READ_SECONDS = 5.0  # reading a graph file may take this long, plus a second per READ_BYTES_PER_SECOND
READ_BYTES_PER_SECOND = 20e6


def _load_plan(graph: str | Path | nir.NIRGraph, dt: float | None, dialect: str | None) -> Plan:
    source = str(graph) if not isinstance(graph, nir.NIRGraph) else "<graph>"
    if not isinstance(graph, nir.NIRGraph):
        path = Path(graph)
        if not path.is_file():
            raise DataError(f"graph file {path} {'is a folder' if path.is_dir() else 'does not exist'}")
        graph = read_graph_file(path)
    try:
        return _build_plan(graph, source, dt, dialect)
    except SnnDeployError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged graph the checks below did not foresee: still one line
        raise ModelError(f"{source}: the graph cannot be read as a network ({type(e).__name__}: {e})") from None


MAX_NODE_ELEMENTS = 1 << 26  # values per sample in one node (a 4096 x 4096 x 4 tensor)


def _graph_meta(graph: nir.NIRGraph, source: str) -> dict[str, Any]:
    """This project's metadata of a graph (empty for a graph another tool wrote), checked."""
    raw_meta = (graph.metadata or {}).get(METADATA_KEY) if isinstance(graph.metadata, dict) else None
    if raw_meta is None:
        return {}
    try:
        meta = json.loads(raw_meta)
    except (TypeError, ValueError) as e:
        raise ModelError(f"{source}: the '{METADATA_KEY}' metadata is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{source}: the '{METADATA_KEY}' metadata must be a JSON object, got {type(meta).__name__}")
    if "dt" in meta and not _positive_number(meta["dt"]):
        raise ModelError(f"{source}: metadata dt must be a positive number of seconds, got {meta['dt']!r}")
    if "T" in meta and meta["T"] is not None:
        T = meta["T"]
        if not (isinstance(T, int) and not isinstance(T, bool) and 1 <= T <= MAX_STEPS):
            raise ModelError(f"{source}: metadata T must be a whole number of steps from 1 to {MAX_STEPS:,}, got {T!r}")
    for key in ("layers", "dataset", "source"):
        if key in meta and meta[key] is not None and not isinstance(meta[key], dict):
            raise ModelError(f"{source}: metadata {key!r} must be a JSON object, got {type(meta[key]).__name__}")
    return meta


def _positive_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _build_plan(graph: nir.NIRGraph, source: str, dt: float | None, dialect: str | None) -> Plan:
    meta = _graph_meta(graph, source)
    # our graphs are written in NIR's semantics (or, for a peer library, in its dialect): another dialect ran
    # a float graph in semantics it was not written in, and was ignored in fixed precision
    written = meta.get("dialect") or "nir"
    asked, (dialect, rules) = dialect, dialect_of(dialect or meta.get("dialect"))
    if meta and asked is not None and dialect != written:
        raise ConfigError(f"{source} was written by snn-deploy to be run in the {written} dialect: --dialect "
                          f"{asked} would run it as that library computes, not as it was written; leave "
                          "--dialect out (it is for graphs other libraries wrote)")  # fmt: skip
    if meta.get("precision") == "fixed" and dt is not None and dt != meta.get("dt"):  # (it was ignored)
        raise ConfigError(f"{source} is a fixed-precision graph: its decays are integers set at conversion for dt "
                          f"{meta.get('dt')} s, so --dt {dt} would not change them (a float graph's decays follow --dt)")  # fmt: skip
    dt = float(dt if dt is not None else meta.get("dt", rules["dt"]))

    if any(isinstance(node, nir.NIRGraph) for node in graph.nodes.values()):
        graph = inline_subgraphs(graph, source)
    unsupported = [
        f"{n} ({type(node).__name__})" for n, node in graph.nodes.items() if type(node).__name__ not in SUPPORTED
    ]
    if unsupported:
        raise ModelError(
            f"{source}: unsupported node(s): {', '.join(sorted(unsupported))}; supported node types: {', '.join(SUPPORTED)}"
        )
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(
            f"{source}: a graph needs exactly one Input and one Output node, has {len(inputs)} and {len(outputs)}"
        )
    for a, b in graph.edges:
        if b == inputs[0] or a == outputs[0]:
            raise ModelError(f"{source}: edge ({a} -> {b}) {'leads into the Input' if b == inputs[0] else 'leaves the Output'}"
                             " node; the Input only feeds the graph and the Output only reads it")  # fmt: skip
    in_shape = tuple(int(x) for x in np.asarray(next(iter(graph.nodes[inputs[0]].input_type.values()))).reshape(-1))
    if not in_shape or min(in_shape) < 1 or math.prod(in_shape) > MAX_NODE_ELEMENTS:
        raise ModelError(f"{source}: input shape {in_shape} must have dimensions >= 1 and at most "
                         f"{MAX_NODE_ELEMENTS:,} values per sample")  # fmt: skip
    order, back = _order(graph.nodes, list(graph.edges), source)
    if not meta and in_shape and in_shape[0] == 1:
        # Foreign exporters (Norse 1.1.0's to_nir) write the sample's batch dimension of 1 into
        # the input type; drop it where the first consumer clearly wants a batch-free shape.
        first = [graph.nodes[b] for a, b in graph.edges if a == inputs[0]]
        if (
            (len(in_shape) == 2 and all(isinstance(n, (nir.Affine, nir.Linear)) for n in first))
            or (len(in_shape) == 4 and all(isinstance(n, (nir.Conv2d, nir.SumPool2d, nir.AvgPool2d)) for n in first))
            or (len(in_shape) == 3 and all(isinstance(n, nir.Conv1d) for n in first))
        ):
            in_shape = in_shape[1:]
    # targets know the graph input as "input", whatever a foreign graph calls its Input node
    if inputs[0] != "input" and "input" in graph.nodes:
        raise ModelError(f"{source}: node 'input' is not the graph's Input node ({inputs[0]} is); rename one of them")
    sources: dict[str, list[str]] = {n: [] for n in graph.nodes}
    recurrent: dict[str, str] = {}  # the one-step delay on an edge that closes a loop -> that edge's source
    for a, b in graph.edges:
        src = "input" if a == inputs[0] else a
        if (a, b) in back:
            d = f"{src}->{b}"
            if d in graph.nodes:
                raise ModelError(f"{source}: the loop edge {a} -> {b} needs the name {d}, which a node has; rename it")
            recurrent[d] = src
            src = d
        sources[b].append(src)
    shapes: dict[str, tuple[int, ...]] = {"input": in_shape}
    layer_meta = meta.get("layers", {})
    plan_nodes: list[Node] = []
    delays: list[Node] = []  # evaluated first: they only emit what they stored at earlier steps
    for name in order:
        node = graph.nodes[name]
        if isinstance(node, (nir.Input, nir.Output)):
            continue
        srcs = sources[name]
        if not srcs:
            raise ModelError(f"{source}: node {name} has no incoming edge")
        src_shapes = {shapes[s] for s in srcs if s in shapes}  # a loop's delay takes its shape from its source later
        if not src_shapes:
            raise ModelError(f"{source}: node {name} is fed only through loops; its shape cannot be inferred")
        if len(src_shapes) != 1:
            raise ModelError(f"{source}: node {name} sums inputs of different shapes {sorted(src_shapes)}")
        in_s = src_shapes.pop()
        if isinstance(node, nir.Delay):
            shapes[name] = in_s
            delays.append(
                Node(name, "delay", srcs, in_s, in_s, {"steps": _delay_steps(node, in_s, dt, name)}, origin="Delay")
            )
            continue
        if isinstance(node, NEURONS):
            shapes[name] = in_s
            for suffix, kind, params in _neuron_params(node, in_s, dt, name, rules):
                if suffix and name + suffix in graph.nodes:
                    raise ModelError(f"{source}: {type(node).__name__} {name} needs the name {name + suffix} for its "
                                     "synaptic current, which another node has; rename that node")  # fmt: skip
                plan_nodes.append(Node(name + suffix, kind, srcs, in_s, in_s, params, origin=type(node).__name__))
                srcs = [name + suffix]
            continue
        kind = KINDS[type(node)]
        if kind == "flatten" and rules.get("flatten") == "batched" and node.start_dim >= 1:
            # snnTorch's import maps Flatten's dims onto batched tensors: start_dim 1 is the whole sample
            node = nir.Flatten(input_type=node.input_type, start_dim=node.start_dim - 1,
                               end_dim=node.end_dim - 1 if node.end_dim >= 1 else node.end_dim)  # fmt: skip
        out_s = _shape_of(kind, node, in_s, name)
        if math.prod(out_s) > MAX_NODE_ELEMENTS:
            raise ModelError(f"{source}: node {name} would hold {math.prod(out_s):,} values per sample (shape {out_s}); "
                             f"at most {MAX_NODE_ELEMENTS:,} are supported")  # fmt: skip
        shapes[name] = out_s
        params: dict[str, Any] = {}
        if kind in SYNAPSE_KINDS:
            w = np.asarray(node.weight, dtype=np.float32)
            b = np.asarray(getattr(node, "bias", np.zeros(w.shape[0])), dtype=np.float32).reshape(-1)
            if not np.isfinite(w).all() or not np.isfinite(b).all():
                raise ModelError(f"node {name}: weights or bias hold NaN or infinite values")
            if b.size == 1 and w.shape[0] > 1:  # one bias for every output
                b = np.full(w.shape[0], b[0], np.float32)
            if b.size != w.shape[0]:
                raise ModelError(f"node {name}: {type(node).__name__} has {b.size} biases for {w.shape[0]} outputs")
            params = {"weight": w, "bias": b}
            if kind in ("conv", "conv1d"):
                params |= _conv_geometry(node, name, in_s)
        elif kind in ("sumpool", "avgpool"):
            params = {"kernel": _pair(node.kernel_size), "stride": _pair(node.stride), "padding": _pair(node.padding)}
        plan_nodes.append(Node(name, kind, srcs, in_s, out_s, params, origin=type(node).__name__))
    for d, src in recurrent.items():
        shape = shapes[src]
        readers = [n for n in plan_nodes if d in n.sources]
        for n in readers:
            if n.in_shape != shape:
                raise ModelError(f"{source}: node {n.name} sums inputs of different shapes: {n.in_shape} and {shape} "
                                 f"from {src} (through the loop)")  # fmt: skip
        delays.append(Node(d, "delay", [src], shape, shape, {"steps": np.ones(shape, np.int64)}, origin="loop"))
    out_sources = sources[outputs[0]]
    if not out_sources:
        raise ModelError(f"{source}: the Output node {outputs[0]} has no incoming edge")
    declared = np.asarray(next(iter(graph.nodes[outputs[0]].output_type.values()), [])).reshape(-1)
    out_shape = shapes[out_sources[0]]
    if declared.size and int(np.prod(declared)) != math.prod(out_shape):
        raise ModelError(f"{source}: the Output node {outputs[0]} declares shape {tuple(declared.tolist())}, but "
                         f"{out_sources[0]} gives {out_shape}")  # fmt: skip
    plan = Plan(delays + plan_nodes, in_shape, out_sources, meta | {"dt": dt, "dialect": dialect}, source)
    if plan.precision == "fixed":
        _attach_fixed(plan, layer_meta)
    return plan


WEIGHT_EXP_RANGE = (-8, 7)  # Loihi 2's weight exponents


def _fixed_int(plan: Plan, node: str, fx: dict[str, Any], key: str, lo: int, hi: int) -> int:
    """One integer parameter of a fixed-precision layer, within the range Loihi 2 holds it in."""
    v = fx.get(key)
    if not (isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi):
        raise ModelError(f"{plan.source}: fixed-precision {key} of {node} must be an integer in {lo}..{hi}, got {v!r}")
    return v


def _bias_ints(plan: Plan, name: str, fx: dict[str, Any], size: int) -> np.ndarray:
    """``bias_mant << bias_exp`` of a layer's integer parameters, checked (``size`` mantissas)."""
    bias_exp = _fixed_int(plan, name, fx, "bias_exp", 0, fx_limits.BIAS_EXP_MAX)
    mant = fx.get("bias_mant")
    if not (isinstance(mant, list) and len(mant) == size
            and all(isinstance(b, int) and not isinstance(b, bool) and abs(b) <= fx_limits.BIAS_MANT_MAX
                    for b in mant)):  # fmt: skip
        raise ModelError(
            f"{plan.source}: bias_mant of {name} must be {size} integers within ±{fx_limits.BIAS_MANT_MAX}"
        )
    return np.asarray(mant, dtype=np.int64) << bias_exp


def _attach_fixed(plan: Plan, layer_meta: dict[str, Any]) -> None:
    """Recover the integer network from the graph: mantissas are ``weight / weight_scale``, exactly.

    Every LIF/LI layer gets its membrane bias as ``fixed["bias"]`` (per channel): its synapses' (one
    that reaches it through a delay, a loop's or a ``Delay`` node's, must add none: Loihi adds a bias
    from the first step, where the delay delivers nothing yet), or, behind a current (``CubaLIF`` /
    ``CubaLI``: the ``.syn`` node, ``fixed = {"du": ...}``), the neuron's own (Loihi adds biases to the
    membrane only); ``fixed["current"]`` says that its input is that current
    (:func:`core.fixed.lif_fixed_step`)."""
    by_name = {n.name: n for n in plan.nodes}
    readers: dict[str, list[str]] = {}
    for n in plan.nodes:
        for s in n.sources:
            readers.setdefault(s, []).append(n.name)

    def one_synapse(n: Node, what: str) -> Node:
        syn = by_name.get(n.sources[0])
        if len(n.sources) != 1 or syn is None or syn.kind not in SYNAPSE_KINDS:
            raise ModelError(f"{plan.source}: fixed-precision {what} {n.name} must be fed by exactly one Conv2d or "
                             f"Linear (its bias enters the membrane), not by {n.sources}")  # fmt: skip
        return syn

    def synapses(n: Node, what: str) -> tuple[list[Node], list[Node]]:
        """``(direct, delayed)``: the Conv2d/Linear layers feeding ``n``, directly or through a delay (a
        loop's one-step delay, Loihi's recurrent connection, or a ``Delay`` node: the synapse feeds that
        delay alone, the delay ``n``). A delayed synapse adds no bias: Loihi adds a neuron's bias from
        the first step, where the delay delivers nothing yet."""
        direct, delayed = [], []
        for s in n.sources:
            m = by_name.get(s)
            syn = by_name.get(m.sources[0]) if m is not None and m.kind == "delay" else None
            if (
                syn is not None
                and syn.kind in SYNAPSE_KINDS
                and readers.get(syn.name) == [s]
                and readers.get(s) == [n.name]
            ):
                delayed.append(syn)
            elif m is not None and m.kind in SYNAPSE_KINDS:
                direct.append(m)
            else:
                raise ModelError(f"{plan.source}: fixed-precision {what} {n.name} must be fed by Conv2d or Linear layers "
                                 f"(directly, or through a delay or a loop's one-step delay), not by {s}")  # fmt: skip
        biased = [m.name for m in delayed if m.fixed["bias"].any()]
        if biased:
            raise ModelError(f"{plan.source}: {', '.join(biased)} adds a bias to {n.name} through a delay (a loop's or a "
                             "Delay node's); Loihi adds a neuron's bias from the first step, where the delay delivers "
                             "nothing yet (state it in the bias of a direct synapse)")  # fmt: skip
        if len({len(m.fixed["bias"]) for m in direct + delayed}) != 1:
            raise ModelError(f"{plan.source}: {', '.join(m.name for m in direct + delayed)} add biases of different "
                             f"shapes to {n.name}")  # fmt: skip
        return direct, delayed

    for n in sorted(plan.nodes, key=lambda n: n.kind not in SYNAPSE_KINDS):  # synapses first: a loop's comes late
        is_current = n.kind == "li" and n.origin in ("CubaLIF", "CubaLI") and n.name.endswith(".syn")
        owner = n.name[: -len(".syn")] if is_current else n.name  # a current's parameters are its neuron's
        fx = layer_meta.get(owner, {}).get("fixed")
        if fx is not None and not isinstance(fx, dict):
            raise ModelError(f"{plan.source}: the fixed-precision parameters of {owner} must be a JSON object")
        if n.kind in SYNAPSE_KINDS:
            if fx is None:
                raise ModelError(f"{plan.source}: fixed-precision graph lacks the integer parameters of {n.name}")
            if not _positive_number(fx.get("weight_scale")):
                raise ModelError(f"{plan.source}: weight_scale of {n.name} must be a positive number")
            m = n.params["weight"].astype(np.float64) / fx["weight_scale"]
            mi = np.rint(m)
            if np.abs(m - mi).max() > 0 or np.abs(mi).max() > fx_limits.MANT_MAX:
                raise ModelError(f"{plan.source}: weights of {n.name} are not 8-bit mantissas times the stated scale")
            weight_exp = _fixed_int(plan, n.name, fx, "weight_exp", *WEIGHT_EXP_RANGE)
            n.fixed = {"weight": (2 * mi).astype(np.int64), "weight_exp": weight_exp,
                       "bias": _bias_ints(plan, n.name, fx, n.out_shape[0])}  # fmt: skip
        elif is_current:
            if fx is None or "du" not in fx:
                raise ModelError(f"{plan.source}: fixed-precision graph lacks the current decay du of {owner} "
                                 f"({n.origin})")  # fmt: skip
            direct, _ = synapses(n, f"{n.origin} current of")
            for syn in direct:
                if readers.get(syn.name) != [n.name]:
                    raise ModelError(f"{plan.source}: {syn.name} feeds {n.origin} {owner}'s current and "
                                     f"{', '.join(r for r in readers[syn.name] if r != n.name)}; Loihi's synapse "
                                     "feeds one neuron's current")  # fmt: skip
                if syn.fixed["bias"].any():
                    raise ModelError(f"{plan.source}: {syn.name} adds a bias to {n.origin} {owner}'s current; Loihi "
                                     f"adds biases to the membrane only (state it as {owner}'s bias_mant)")  # fmt: skip
            n.fixed = {"du": _fixed_int(plan, owner, fx, "du", 0, fx_limits.DU_FULL)}
        elif n.kind in ("lif", "li"):
            what = "LIF layer" if n.kind == "lif" else "LI layer"
            if fx is None:
                raise ModelError(f"{plan.source}: fixed-precision graph lacks the "
                                 f"{'threshold and decay' if n.kind == 'lif' else 'decay'} of {what} {n.name}")  # fmt: skip
            src = by_name.get(n.sources[0])
            current = src is not None and src.fixed is not None and "du" in src.fixed
            if current:
                bias = _bias_ints(plan, n.name, fx, n.out_shape[0])
            elif n.kind == "li":
                bias = one_synapse(n, what).fixed["bias"]
            else:  # its direct synapses' biases (one synapse: the membrane's bias is the synapse's, one array)
                direct, delayed = synapses(n, what)
                zero = np.zeros_like((direct + delayed)[0].fixed["bias"])
                bias = direct[0].fixed["bias"] if len(direct) == 1 else sum((m.fixed["bias"] for m in direct), zero)
            n.fixed = {"dv": _fixed_int(plan, n.name, fx, "dv", 0, fx_limits.DECAY_UNITY), "bias": bias,
                       "current": current}  # fmt: skip
            if n.kind == "lif":
                n.fixed["vth"] = _fixed_int(plan, n.name, fx, "vth", 0, fx_limits.VTH_MAX)
            elif readers.get(n.name):
                raise ModelError(f"{plan.source}: fixed-precision LI layer {n.name} feeds {', '.join(readers[n.name])}; "
                                 "an LI layer is a readout (Loihi reads its membrane, it sends no messages) and must "
                                 "only feed the output")  # fmt: skip
        elif n.kind == "avgpool":
            raise ModelError(f"{plan.source}: a fixed-precision graph cannot hold an average pool ({n.name})")


NON_FINITE_SPIKES = "input spikes hold NaN or infinite values"
FRACTIONAL_SPIKES = "fixed precision takes integer spike counts as input; got fractional values"


def check_spikes(plan: Plan, spikes, *, values: bool = True) -> np.ndarray:
    """``spikes`` as an array shaped ``(T, B, *input_shape)`` with finite values (integer counts in
    fixed precision): the one input check every target makes. ``values=False`` checks the shape
    only, for a target that checks the values as it reads them (with these messages)."""
    spikes = np.asarray(spikes)
    if spikes.dtype.kind not in "biuf":
        raise DataError(f"input spikes must be numbers (bool, integer or float), got dtype {spikes.dtype}")
    if spikes.ndim != len(plan.input_shape) + 2 or tuple(spikes.shape[2:]) != plan.input_shape:
        raise DataError(
            f"input spikes must be shaped (T, B, {', '.join(map(str, plan.input_shape))}), got {tuple(spikes.shape)}"
        )
    if spikes.shape[0] < 1:
        raise DataError("input spikes have no time steps (T = 0)")
    if not values:
        return spikes
    if not np.isfinite(spikes).all():
        raise DataError(NON_FINITE_SPIKES)
    if plan.precision == "fixed" and not np.array_equal(spikes, np.rint(spikes)):
        raise DataError(FRACTIONAL_SPIKES)
    return spikes


# ---------------------------------------------------------------------------------------------
# When float LI membranes are provably exact (float precision)

EXACT32 = 2**24  # float32 holds every integer below 2**24 exactly
UNBOUNDED_STEPS = 1 << 30  # "any number of steps" (beta = 0: no bit is added per step)
MAX_PROVED_STEPS = 4096


@dataclass(frozen=True)
class _Grid:
    """Every value of neuron ``i`` is an integer multiple of ``2**-exp[i]`` within ``[lo[i], hi[i]]``
    such quanta (integers held exactly in float64; ``lo <= 0 <= hi`` is not assumed)."""

    exp: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def power_of_two(x) -> np.ndarray:
    """Per element, whether ``x`` is a power of two (or minus one): scaling by it is exact in float."""
    return np.abs(np.frexp(np.asarray(x, dtype=np.float64))[0]) == 0.5


def _quanta_exp(x: np.ndarray) -> np.ndarray:
    """Per element, the smallest ``e`` with ``x * 2**e`` an integer (0 for zeros)."""
    x = np.asarray(x, dtype=np.float64)
    mant, ex = np.frexp(x)
    whole = np.abs(mant * 2.0**53).astype(np.int64)  # x == whole * 2**(ex - 53)
    low = np.where(whole != 0, whole & -whole, 1)
    return np.where(whole != 0, 53 - ex - np.log2(low).astype(np.int64), -(1 << 20))


def _float_grids(plan: Plan, input_max: float | None) -> dict[str, _Grid | None]:
    """Per node, the grid its float values provably stay on while the reference computes them
    exactly (every float32 operation without rounding); None where that is not provable. The input
    is integer counts up to ``input_max`` (None: analog input, no grid)."""
    # a delay emits what its source computed earlier (zero before): its source's grid, with 0 in
    # range; found by passes until nothing changes (a loop through a LIF settles at once: spikes are 0/1)
    delayed: dict[str, _Grid | None] = dict.fromkeys(plan.delay_names)
    for _ in range(len(delayed) + 2):
        grids = _grids_pass(plan, input_max, delayed)
        again = {d: _with_zero(grids[plan.node(d).sources[0]]) for d in delayed}
        if all(_same_grid(again[d], delayed[d]) for d in delayed):
            return grids
        delayed = again
    return _grids_pass(plan, input_max, dict.fromkeys(plan.delay_names))


def _with_zero(g: _Grid | None) -> _Grid | None:
    return None if g is None else _Grid(g.exp, np.minimum(g.lo, 0), np.maximum(g.hi, 0))


def _same_grid(a: _Grid | None, b: _Grid | None) -> bool:
    if a is None or b is None:
        return a is b
    return all(np.array_equal(x, y) for x, y in ((a.exp, b.exp), (a.lo, b.lo), (a.hi, b.hi)))


def _grids_pass(plan: Plan, input_max: float | None, delayed: dict[str, _Grid | None]) -> dict[str, _Grid | None]:
    n_in = int(np.prod(plan.input_shape))
    grids: dict[str, _Grid | None] = {
        "input": None
        if input_max is None
        else _Grid(np.zeros(n_in, np.int64), np.zeros(n_in), np.full(n_in, float(np.ceil(input_max))))
    }
    for n in plan.nodes:
        if n.kind == "delay":  # its values come from earlier steps: its source's grid, as far as known
            grids[n.name] = delayed[n.name]
            continue
        parts = [grids[s] for s in n.sources]
        g = None if any(p is None for p in parts) else _sum_grids(parts)
        if n.kind == "lif":
            size = int(np.prod(n.out_shape))
            grids[n.name] = _Grid(np.zeros(size, np.int64), np.zeros(size), np.ones(size))  # spikes are 0 or 1
        elif g is None or n.kind == "li":  # an LI's membrane gains bits every step: nothing is promised below it
            grids[n.name] = None
        elif n.kind == "flatten":
            grids[n.name] = g
        elif n.kind in ("sumpool", "avgpool"):
            grids[n.name] = _pool_grid(n, g)
        else:
            grids[n.name] = _synapse_grid(n, g)
    return grids


def _sum_grids(parts: list[_Grid]) -> _Grid | None:
    if len(parts) == 1:
        return parts[0]
    exp = np.max([p.exp for p in parts], axis=0)
    lo = sum(p.lo * 2.0 ** (exp - p.exp) for p in parts)
    hi = sum(p.hi * 2.0 ** (exp - p.exp) for p in parts)
    if max(np.abs(lo).max(initial=0), np.abs(hi).max(initial=0)) >= EXACT32:
        return None
    return _Grid(exp, lo, hi)


def _pool_grid(n: Node, g: _Grid) -> _Grid | None:
    c = n.in_shape[0]
    k = n.params["kernel"][0] * n.params["kernel"][1]
    per_c = lambda a, f: f(a.reshape(c, -1), axis=1)  # noqa: E731 - per channel: max over pixels
    exp = per_c(g.exp, np.max)
    scale = 2.0 ** (exp[:, None] - g.exp.reshape(c, -1))
    lo = np.minimum((g.lo.reshape(c, -1) * scale).min(axis=1), 0) * k  # padding adds zeros
    hi = np.maximum((g.hi.reshape(c, -1) * scale).max(axis=1), 0) * k
    if n.kind == "avgpool":
        if k & (k - 1):
            return None  # 1/k is not a power of two
        exp = exp + int(np.log2(k))
    if max(np.abs(lo).max(initial=0), np.abs(hi).max(initial=0)) >= EXACT32:
        return None
    size = int(np.prod(n.out_shape[1:]))
    return _Grid(np.repeat(exp, size), np.repeat(lo, size), np.repeat(hi, size))


def _synapse_grid(n: Node, g: _Grid) -> _Grid | None:
    w = n.params["weight"].astype(np.float64)
    rows = w.reshape(w.shape[0], -1)
    ew = _quanta_exp(rows).max(axis=1)  # per output row: the coarsest grid holding all its weights
    q = rows * 2.0 ** ew[:, None]
    if n.kind in ("conv", "conv1d"):  # bounds per input channel, padding zeros included
        c, groups = n.in_shape[0], n.params["groups"]
        e_in = int(g.exp.max())
        lo_c = np.minimum((g.lo * 2.0 ** (e_in - g.exp)).reshape(c, -1).min(axis=1), 0)
        hi_c = np.maximum((g.hi * 2.0 ** (e_in - g.exp)).reshape(c, -1).max(axis=1), 0)
        # output row o reads the input channels of its group, each through the kernel's taps
        group = np.arange(w.shape[0]) // (w.shape[0] // groups)
        taps = int(np.prod(w.shape[2:]))
        lo_in = np.repeat(lo_c.reshape(groups, -1), taps, axis=1)[group]
        hi_in = np.repeat(hi_c.reshape(groups, -1), taps, axis=1)[group]
    else:
        e_in = int(g.exp.max())
        lo_in, hi_in = g.lo * 2.0 ** (e_in - g.exp), g.hi * 2.0 ** (e_in - g.exp)
    acc_hi = np.maximum(q * lo_in, q * hi_in).sum(axis=1)
    acc_lo = np.minimum(q * lo_in, q * hi_in).sum(axis=1)
    exp = e_in + ew
    b = n.params["bias"].astype(np.float64) * 2.0**exp
    if not np.array_equal(b, np.rint(b)):
        return None  # the bias is off the weights' grid
    lo, hi = acc_lo + b, acc_hi + b
    # every partial sum, in any order, is bounded by the sum of the terms' magnitudes
    partial = (np.abs(q) * np.maximum(np.abs(lo_in), np.abs(hi_in))).sum(axis=1)
    bound = np.maximum(partial, np.maximum(np.abs(lo), np.abs(hi)))
    if (bound >= EXACT32).any() or (np.abs(b) >= EXACT32).any():
        return None  # float32 would round the sum or the bias add
    size = int(np.prod(n.out_shape[1:])) if n.kind in ("conv", "conv1d") else 1
    return _Grid(np.repeat(exp, size), np.repeat(lo, size), np.repeat(hi, size))


def float32_exact_synapses(plan: Plan, input_max: float | None) -> set[str]:
    """The float synapses whose float32 sum (any order, bias included) is provably exact for integer
    inputs up to ``input_max`` (None: analog input): a target may accumulate those in float32; the
    others must accumulate in float64 and round once, as the reference does."""
    grids = _float_grids(plan, input_max)
    return {n.name for n in plan.nodes if n.kind in SYNAPSE_KINDS and grids[n.name] is not None}


def lower_convolutions(plan: Plan) -> Plan:
    """``plan`` with every convolution a plain 2-D one, which is all eventsim's kernel scatters and
    Lava's ``Conv`` computes: a ``Conv1d`` over ``(C, L)`` is a ``Conv2d`` over ``(C, 1, L)`` (every
    2-D shape becomes ``(C, 1, L)``, the same flat order), and a dilated or grouped kernel is written
    out in full, zeros between its taps and across the groups. Adding a zero weight leaves every sum
    as it was, so the results are exact; the work per input event grows with ``groups``. Returns
    ``plan`` itself when there is nothing to lower."""
    if not any(n.kind == "conv1d" or (n.kind == "conv" and (n.params["groups"] != 1 or n.params["dilation"] != (1, 1)))
               for n in plan.nodes):  # fmt: skip
        return plan

    def flat3(shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0], 1, shape[1]) if len(shape) == 2 else shape

    nodes = []
    for n in plan.nodes:
        params = n.params
        if n.kind in ("conv", "conv1d"):
            if n.kind == "conv":
                w, stride, padding, dilation = params["weight"], params["stride"], params["padding"], params["dilation"]
            else:  # one row: kernel (1, k), stride (1, s), no padding across rows
                w, stride = params["weight"][:, :, None, :], (1, *params["stride"])
                padding, dilation = (0, *params["padding"]), (1, *params["dilation"])
            g = params["groups"]
            params = params | {"weight": _written_out(w, dilation, g), "stride": tuple(stride),
                               "padding": tuple(padding), "dilation": (1, 1), "groups": 1}  # fmt: skip
            if n.fixed is not None:  # the integer mantissas, written out alike
                wi = n.fixed["weight"] if n.kind == "conv" else n.fixed["weight"][:, :, None, :]
                n = replace(n, fixed=n.fixed | {"weight": _written_out(wi, dilation, g)})
        elif len(n.out_shape) == 2:  # per-neuron parameters (a LIF's, an LI's) in the new shape
            params = {k: v.reshape(flat3(n.out_shape)) if isinstance(v, np.ndarray) and v.shape == n.out_shape else v
                      for k, v in params.items()}  # fmt: skip
        nodes.append(replace(n, kind="conv" if n.kind == "conv1d" else n.kind, params=params,
                             in_shape=flat3(n.in_shape), out_shape=flat3(n.out_shape)))  # fmt: skip
    return replace(plan, nodes=nodes, input_shape=flat3(plan.input_shape), prepared={})


def _written_out(w: np.ndarray, dilation: tuple[int, int], groups: int) -> np.ndarray:
    """A dilated or grouped 2-D kernel ``(O, C / groups, kh, kw)`` as a plain one ``(O, C, ...)``: zeros
    between its taps and across the groups (output channel ``o`` reads its group's channels only)."""
    out_c, per_group, kh, kw = w.shape
    dh, dw = dilation
    full = np.zeros((out_c, per_group * groups, dh * (kh - 1) + 1, dw * (kw - 1) + 1), dtype=w.dtype)
    for o in range(out_c):
        c0 = (o // (out_c // groups)) * per_group
        full[o, c0 : c0 + per_group, ::dh, ::dw] = w[o]
    return full


def li_exact_steps(plan: Plan, input_max: float | None = 1.0) -> dict[str, int]:
    """Per LI layer, for how many steps from rest its float membrane is provably exact: every float32
    operation of ``v = beta v + gain I + leak`` exact, so that any correct arithmetic (float32, float64:
    Lava's ``floating_pt``) gives the same bits. 0: not provable at all. ``input_max``: the graph
    input is integer counts up to it (None: analog).

    Why it holds: the layer's input sits on a grid of ``2**-e`` with known bounds (integer spike
    counts times weights on a power-of-two grid, bias on the same grid, every partial sum below
    2**24 quanta); with ``gain`` a power of two and ``beta = m 2**-k`` (``m`` odd), ``v[t]`` is a
    multiple of ``2**-(e + k t)``; it is exact while its bound stays below ``2**24`` such quanta.
    """
    if plan.precision != "float":
        return {}
    grids = _float_grids(plan, input_max)
    out: dict[str, int] = {}
    for n in plan.nodes:
        if n.kind != "li":
            continue
        if "form" in n.params:  # a dialect's arithmetic: nothing is proven for it
            out[n.name] = 0
            continue
        parts = [grids[s] for s in n.sources]
        g = None if any(p is None for p in parts) else _sum_grids(parts)
        out[n.name] = 0 if g is None else _li_steps(n, g)
    return out


def _li_steps(n: Node, g: _Grid) -> int:
    """Steps for which ``v = beta v + gain I + leak`` stays exact in float32, per the bounds of ``g``."""
    p = n.params
    beta, gain, leak = (np.asarray(p[k], dtype=np.float64).reshape(-1) for k in ("beta", "gain", "leak"))
    if not power_of_two(gain[gain != 0]).all():
        return 0  # gain not a power of two: gain * I rounds
    e_u = np.maximum(g.exp + np.where(gain != 0, _quanta_exp(gain), 0), _quanta_exp(leak))  # quanta of u
    xs = np.stack([g.lo, g.hi]) * 2.0 ** (e_u - g.exp) * gain  # gain * I in quanta of 2**-e_u
    x_lo, x_hi = xs.min(axis=0), xs.max(axis=0)
    u_lo, u_hi = x_lo + leak * 2.0**e_u, x_hi + leak * 2.0**e_u
    x_mag = np.maximum(np.abs(x_lo), np.abs(x_hi))
    kb = np.maximum(_quanta_exp(beta), 0)  # beta = m 2**-kb, m odd: v[t] is a multiple of 2**-(e_u + kb t)
    v_lo, v_hi = np.zeros_like(u_lo), np.zeros_like(u_hi)
    for t in range(MAX_PROVED_STEPS):
        scale = 2.0 ** np.minimum(kb * t, 1000)
        v_mag = np.maximum(np.abs(v_lo), np.abs(v_hi))
        inter = (beta * v_mag + x_mag) * scale  # bounds beta v and beta v + gain I
        v_lo, v_hi = beta * v_lo + u_lo, beta * v_hi + u_hi
        new = np.maximum(np.abs(v_lo), np.abs(v_hi)) * scale
        if (np.maximum(inter, new) >= EXACT32).any():
            return t
        if t > 0 and not kb.any():  # beta 0 (or an integer): no bit is added per step, the bound is final
            return UNBOUNDED_STEPS
    return MAX_PROVED_STEPS
