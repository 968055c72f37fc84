"""A NIR graph (ours or another tool's) as an execution plan that every target runs.

Loading checks the graph and resolves everything a target needs: node order from the edges
(never from dict order: ``nir.read`` sorts names), the nodes summed into each node's input
(residual ADDs are several edges into one node), batch-free shapes propagated from the input,
LIF parameters as per-neuron ``beta``/``gain``, and, for fixed precision, the integer weights,
exponents, biases, thresholds and decays recovered exactly from the graph's ``snn_deploy``
metadata. Every unsupported node is named in one error.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nir
import numpy as np

from core.errors import DataError, ModelError

METADATA_KEY = "snn_deploy"
SUPPORTED = ("Input", "Output", "Conv2d", "Affine", "Linear", "LIF", "SumPool2d", "AvgPool2d", "Flatten")
DEFAULT_FOREIGN_DT = 1e-3  # s; the dt assumed for graphs that do not state one (Norse's default)


@dataclass
class Node:
    name: str
    kind: str  # conv, affine, lif, sumpool, avgpool, flatten
    sources: list[str]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] | None = None  # integer parameters (fixed precision)


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
        return [n.name for n in self.nodes if n.kind == "lif"]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)


def _order(nodes: dict[str, nir.NIRNode], edges: list[tuple[str, str]], source: str) -> list[str]:
    """Kahn's algorithm; among ready nodes the one listed first in the edge list goes first."""
    for a, b in edges:
        for n in (a, b):
            if n not in nodes:
                raise ModelError(f"{source}: edge ({a} -> {b}) names a node '{n}' that the graph does not have")
    rank = {}
    for a, b in edges:
        rank.setdefault(a, len(rank))
        rank.setdefault(b, len(rank))
    indeg = {n: 0 for n in nodes}
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        indeg[b] += 1
        succ[a].append(b)
    ready = deque(sorted((n for n, d in indeg.items() if d == 0), key=lambda n: rank.get(n, 1 << 30)))
    order = []
    while ready:
        n = ready.popleft()
        order.append(n)
        for m in sorted(succ[n], key=lambda m: rank[m]):
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
    if len(order) != len(nodes):
        stuck = sorted(set(nodes) - set(order))
        raise ModelError(f"{source}: the graph has a cycle through {', '.join(stuck)}; only feed-forward graphs run")
    return order


def _pair(v) -> tuple[int, int]:
    a = np.atleast_1d(np.asarray(v)).astype(int).tolist()
    return (a[0], a[0]) if len(a) == 1 else (a[0], a[1])


def _lif_params(node: nir.LIF, shape: tuple[int, ...], dt: float, name: str) -> dict[str, Any]:
    def full(x):
        arr = np.asarray(x, dtype=np.float64)
        try:
            return np.broadcast_to(arr, shape).copy()
        except ValueError:
            raise ModelError(
                f"node {name}: LIF parameter of shape {arr.shape} does not fit the layer shape {shape}"
            ) from None

    tau, r, v_leak, v_th = full(node.tau), full(node.r), full(node.v_leak), full(node.v_threshold)
    v_reset = full(node.v_reset) if node.v_reset is not None else np.zeros(shape)
    for key, arr in (("tau", tau), ("r", r), ("v_threshold", v_th)):
        if not np.isfinite(arr).all():
            raise ModelError(f"node {name}: LIF {key} holds NaN or infinite values")
    if (tau < dt).any():
        raise ModelError(
            f"node {name}: LIF tau {tau.min():g} s is shorter than dt {dt:g} s (Euler step unstable); note that "
            "Norse 1.1.0's to_nir writes dt/tau_mem_inv as tau (targets.norse_target.norse_export writes it right)"
        )
    alpha = dt / tau
    gain = alpha * r
    # Our own graphs state r = tau/dt exactly: the input enters with gain 1, bit for bit.
    gain = np.where(np.abs(gain - 1.0) < 1e-6, 1.0, gain)
    return {"beta": (1.0 - alpha).astype(np.float32), "gain": gain.astype(np.float32),
            "leak": (alpha * v_leak).astype(np.float32), "v_threshold": v_th.astype(np.float32),
            "v_reset": v_reset.astype(np.float32)}  # fmt: skip


def _shape_of(kind: str, node: nir.NIRNode, in_shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    if kind == "conv":
        w = np.asarray(node.weight)
        if len(in_shape) != 3 or in_shape[0] != w.shape[1]:
            raise ModelError(f"node {name}: Conv2d expects {w.shape[1]} input channels, gets input of shape {in_shape}")
        (kh, kw), (sh, sw), (ph, pw) = w.shape[2:], _pair(node.stride), _pair(node.padding)
        return (w.shape[0], (in_shape[1] + 2 * ph - kh) // sh + 1, (in_shape[2] + 2 * pw - kw) // sw + 1)
    if kind == "affine":
        w = np.asarray(node.weight)
        if int(np.prod(in_shape)) != w.shape[1] or len(in_shape) != 1:
            raise ModelError(
                f"node {name}: {type(node).__name__} expects a vector of {w.shape[1]}, gets shape {in_shape}"
            )
        return (w.shape[0],)
    if kind in ("sumpool", "avgpool"):
        (kh, kw), (sh, sw), (ph, pw) = _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)
        return (in_shape[0], (in_shape[1] + 2 * ph - kh) // sh + 1, (in_shape[2] + 2 * pw - kw) // sw + 1)
    if kind == "flatten":
        start = node.start_dim
        if start not in (0, -len(in_shape)) or node.end_dim not in (-1, len(in_shape) - 1):
            raise ModelError(f"node {name}: only a full Flatten (batch-free start_dim=0, end_dim=-1) is supported")
        return (int(np.prod(in_shape)),)
    return in_shape


KINDS = {nir.Conv2d: "conv", nir.Affine: "affine", nir.Linear: "affine", nir.LIF: "lif",
         nir.SumPool2d: "sumpool", nir.AvgPool2d: "avgpool", nir.Flatten: "flatten"}  # fmt: skip


def load_plan(graph: str | Path | nir.NIRGraph, *, dt: float | None = None) -> Plan:
    """Read a ``.nir`` file (or take a graph) and build its plan; errors name the node at fault."""
    source = str(graph) if not isinstance(graph, nir.NIRGraph) else "<graph>"
    if not isinstance(graph, nir.NIRGraph):
        path = Path(graph)
        if not path.is_file():
            raise DataError(f"graph file {path} does not exist")
        try:
            graph = nir.read(path, type_check=False)
        except Exception as e:  # noqa: BLE001 - h5py and nir raise many types for a bad file
            raise DataError(f"{path} is not a readable NIR graph ({type(e).__name__}: {e})") from None
    raw_meta = (graph.metadata or {}).get(METADATA_KEY)
    meta: dict[str, Any] = {}
    if raw_meta is not None:
        try:
            meta = json.loads(raw_meta)
        except (TypeError, json.JSONDecodeError) as e:
            raise ModelError(f"{source}: the '{METADATA_KEY}' metadata is not valid JSON: {e}") from None
    dt = float(dt if dt is not None else meta.get("dt", DEFAULT_FOREIGN_DT))

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
    in_shape = tuple(int(x) for x in np.asarray(next(iter(graph.nodes[inputs[0]].input_type.values()))).reshape(-1))
    order = _order(graph.nodes, list(graph.edges), source)
    if not meta and in_shape and in_shape[0] == 1:
        # Foreign exporters (Norse 1.1.0's to_nir) write the sample's batch dimension of 1 into
        # the input type; drop it where the first consumer clearly wants a batch-free shape.
        first = [graph.nodes[b] for a, b in graph.edges if a == inputs[0]]
        if (len(in_shape) == 2 and all(isinstance(n, (nir.Affine, nir.Linear)) for n in first)) or (
            len(in_shape) == 4 and all(isinstance(n, (nir.Conv2d, nir.SumPool2d, nir.AvgPool2d)) for n in first)
        ):
            in_shape = in_shape[1:]
    sources: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for a, b in graph.edges:
        sources[b].append(a)
    shapes: dict[str, tuple[int, ...]] = {inputs[0]: in_shape}
    layer_meta = meta.get("layers", {})
    plan_nodes: list[Node] = []
    for name in order:
        node = graph.nodes[name]
        if isinstance(node, (nir.Input, nir.Output)):
            continue
        srcs = sources[name]
        if not srcs:
            raise ModelError(f"{source}: node {name} has no incoming edge")
        src_shapes = {shapes[s] for s in srcs}
        if len(src_shapes) != 1:
            raise ModelError(f"{source}: node {name} sums inputs of different shapes {sorted(src_shapes)}")
        in_s = src_shapes.pop()
        kind = KINDS[type(node)]
        out_s = _shape_of(kind, node, in_s, name)
        shapes[name] = out_s
        params: dict[str, Any] = {}
        if kind in ("conv", "affine"):
            w = np.asarray(node.weight, dtype=np.float32)
            b = np.asarray(getattr(node, "bias", np.zeros(w.shape[0])), dtype=np.float32).reshape(-1)
            if not np.isfinite(w).all() or not np.isfinite(b).all():
                raise ModelError(f"node {name}: weights or bias hold NaN or infinite values")
            params = {"weight": w, "bias": b}
            if kind == "conv":
                params |= {"stride": _pair(node.stride), "padding": _pair(node.padding)}
                if _pair(node.dilation) != (1, 1) or node.groups != 1:
                    raise ModelError(f"node {name}: Conv2d with dilation or groups is not supported")
        elif kind == "lif":
            params = _lif_params(node, out_s, dt, name)
        elif kind in ("sumpool", "avgpool"):
            params = {"kernel": _pair(node.kernel_size), "stride": _pair(node.stride), "padding": _pair(node.padding)}
        plan_nodes.append(Node(name, kind, srcs, in_s, out_s, params))
    out_sources = sources[outputs[0]]
    plan = Plan(plan_nodes, in_shape, out_sources, meta | {"dt": dt}, source)
    if plan.precision == "fixed":
        _attach_fixed(plan, layer_meta)
    return plan


def _attach_fixed(plan: Plan, layer_meta: dict[str, Any]) -> None:
    """Recover the integer network from the graph: mantissas are ``weight / weight_scale``, exactly."""
    for n in plan.nodes:
        fx = layer_meta.get(n.name, {}).get("fixed")
        if n.kind in ("conv", "affine"):
            if fx is None:
                raise ModelError(f"{plan.source}: fixed-precision graph lacks the integer parameters of {n.name}")
            m = n.params["weight"].astype(np.float64) / fx["weight_scale"]
            mi = np.rint(m)
            if np.abs(m - mi).max() > 0 or np.abs(mi).max() > 127:
                raise ModelError(f"{plan.source}: weights of {n.name} are not 8-bit mantissas times the stated scale")
            n.fixed = {"weight": (2 * mi).astype(np.int64), "weight_exp": int(fx["weight_exp"]),
                       "bias": np.asarray(fx["bias_mant"], dtype=np.int64) << int(fx["bias_exp"])}  # fmt: skip
        elif n.kind == "lif":
            if fx is None:
                raise ModelError(f"{plan.source}: fixed-precision graph lacks the threshold and decay of {n.name}")
            n.fixed = {"vth": int(fx["vth"]), "dv": int(fx["dv"])}
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
