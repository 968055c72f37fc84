"""The ``norse`` target, and our NIR files in other tools (Norse, nirtorch) and theirs in ours.

The target (:func:`run`) is Norse reading the ``.nir`` file, float precision only: an independent
implementation that keeps our files honest.

Two independent readers run a ``.nir`` file step by step on the same input spikes as
:mod:`targets.reference`, so that their spike counts and rasters can be compared exactly:

- :func:`run_norse`: the modules Norse 1.1.0's importer makes for each node
  (``norse.torch.from_nir``'s node mapping), wired by ``nirtorch.nir_to_torch``;
- :func:`run_nirtorch`: ``nirtorch.nir_to_torch`` with the smallest correct node map
  (:func:`nirtorch_node_map`).

And the other way round: :func:`norse_export` writes a Norse module as a NIR graph that our
``load_plan`` reads, and :func:`run_norse_module` gives Norse's own output to compare with.

Quirks of the pinned versions, each handled here (``docs/interop.md`` has the evidence):

- Norse's ``from_nir`` ignores the graph's ``dt`` (it takes ``dt=0.001``): we pass the ``dt``
  that the graph's ``snn_deploy`` metadata states. It ignores ``r`` (a warning only): its LIF is
  ``v += dt/tau * (v_leak - v + I)``, unit resistance; we multiply each LIF's input by ``r``.
  It ignores ``v_reset`` (always 0, which is ours; we refuse other resets) and starts ``v`` at
  ``v_leak`` (0 in our graphs). It silently drops nodes it cannot map
  (``AvgPool2d``: the node's input passes through): we refuse such graphs.
- ``from_nir`` wires the modules with nirtorch's deprecated ``GraphExecutor``, whose depth-first
  order runs a node with two inputs (a residual ADD) before one of them and so feeds that input
  one step late; ``nirtorch.nir_to_torch`` orders them correctly and is what we use.
- NIR shapes carry no batch dimension (our ``Flatten`` has ``start_dim=0``); Norse maps it to
  ``torch.nn.Flatten(0, -1)``, which would flatten a batch too, so the Norse run feeds one sample
  at a time without a batch dimension, exactly the shapes the graph states.
- nirtorch 2.6's default ``Affine`` map assigns the bias to ``weight.bias`` and so keeps the
  ``Linear``'s random initial bias; its ``SumPool2d`` map ignores padding; it has no LIF map.
  :func:`nirtorch_node_map` supplies these three and a batch-aware ``Flatten``.
- Norse's ``to_nir`` writes ``tau = dt / tau_mem_inv`` (``dt`` times the true time constant),
  torch tensors (0-d ones that ``nir.write`` cannot store), and the sample's batch dimension into
  the graph's input type; :func:`norse_export` repairs each of these.
"""

from __future__ import annotations

import json
import keyword
import warnings
from dataclasses import dataclass
from pathlib import Path

import nir
import numpy as np
import torch
from torch import nn

from core.errors import DataError, ModelError
from targets.plan import DEFAULT_FOREIGN_DT, METADATA_KEY

# Node types Norse 1.1.0's importer maps (``_import_norse_module``); it returns None for others.
NORSE_NODES = ("Input", "Output", "Affine", "Conv2d", "Flatten", "Linear", "IF", "CubaLIF", "LIF", "SumPool2d")
# Node types our nirtorch node map (plus nirtorch's defaults we keep) runs.
NIRTORCH_NODES = ("Input", "Output", "Affine", "Linear", "Conv2d", "Flatten", "SumPool2d", "AvgPool2d", "LIF")


def _norse():
    """``norse.torch``, imported without the ``FutureWarning`` that the pinned PyTorch gives when
    Norse 1.1.0 decorates its functions with ``torch.jit.script`` at import: printed by every process
    that imports Norse (twice in a two-worker ``verify``), it says nothing about the user's graph."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        import norse.torch as norse
    return norse


@dataclass
class InteropResult:
    counts: np.ndarray  # (B, classes) output spike counts
    layer_counts: dict[str, np.ndarray]  # LIF node name (as in the graph) -> (B,) spikes per sample
    rasters: dict[str, np.ndarray] | None = None  # LIF node name -> (T, B, ...) uint8


# ---------------------------------------------------------------------------------------------
# graphs


def read_graph(graph: str | Path | nir.NIRGraph) -> nir.NIRGraph:
    if isinstance(graph, nir.NIRGraph):
        return graph
    path = Path(graph)
    if not path.is_file():
        raise DataError(f"graph file {path} does not exist")
    return nir.read(path, type_check=False)


def graph_dt(graph: nir.NIRGraph) -> float:
    """The ``dt`` the graph states in our metadata, else the foreign default (1 ms, as Norse)."""
    raw = (graph.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return DEFAULT_FOREIGN_DT
    return float(json.loads(raw).get("dt", DEFAULT_FOREIGN_DT))


def _lif_names(graph: nir.NIRGraph) -> list[str]:
    return [name for name, node in graph.nodes.items() if isinstance(node, (nir.LIF, nir.IF))]


# What the norse target leaves to the others, and why (Norse maps CubaLIF, but adds v_leak to the
# synaptic current too and rounds its Euler step differently from NIR's beta*v + gain*I).
NORSE_TARGET_REFUSES = {"CubaLIF": "Norse 1.1.0 integrates the synaptic current as I + dt/tau_syn*((v_leak - I) + "
                                   "w_in S), adding v_leak to the current, not only to the membrane"}  # fmt: skip


def refusal(plan, spikes) -> str | None:
    """Why the norse target would not match the reference on ``plan``'s graph, or None."""
    if plan.precision != "float":
        return "Norse runs float precision only"
    src = Path(plan.source)
    if src.suffix != ".nir" or not src.is_file():
        return "the norse target reads a .nir file; this plan was not loaded from one"
    if plan.meta.get("dialect", "nir") == "norse":
        return ("Norse 1.1.0's from_nir reads tau as 1/tau_inv where its to_nir wrote dt/tau_inv, and builds another "
                "synapse for CubaLIF: it does not run its own export as it computed it (the reference, torch and onnx "
                "targets do)")  # fmt: skip
    if plan.meta.get("dialect", "nir") != "nir":
        return f"the norse target runs NIR's own semantics; this graph runs in the {plan.meta['dialect']} dialect"
    graph = read_graph(src)
    bad = sorted(f"{n} ({type(v).__name__})" for n, v in graph.nodes.items() if type(v).__name__ not in NORSE_NODES)
    if bad:
        return f"Norse 1.1.0 cannot map node(s) {', '.join(bad)}; its importer maps {', '.join(NORSE_NODES)}"
    kinds = {type(v).__name__ for v in graph.nodes.values()}
    named = [f"{k}: {why}" for k, why in NORSE_TARGET_REFUSES.items() if k in kinds]
    uneven = conv_groups_torch_refuses(graph)
    if uneven:
        named.append(f"Conv2d {', '.join(uneven)}: {GROUPS_WHY.format(library='Norse 1.1.0')}")
    return "; ".join(named) or None


GROUPS_WHY = ("{library}'s import builds torch.nn.Conv2d(in_channels=weight.shape[1], groups=groups), which torch "
              "refuses unless the channels per group (weight.shape[1]) divide by groups")  # fmt: skip


def conv_groups_torch_refuses(graph: nir.NIRGraph) -> list[str]:
    """The grouped Conv2d nodes that Norse's and snnTorch's imports cannot build: both pass the weight's
    channels per group as ``in_channels`` (where the layer has ``groups`` times as many), which torch
    accepts only when they divide by ``groups`` (and then computes correctly: the weight is replaced)."""
    out = []
    for name, v in graph.nodes.items():
        if isinstance(v, nir.Conv2d):
            groups = int(np.asarray(v.groups).reshape(-1)[0])
            if groups != 1 and np.asarray(v.weight).shape[1] % groups:
                out.append(f"{name} ({groups} groups of {np.asarray(v.weight).shape[1]} channels)")
    return sorted(out)


def _check_nodes(graph: nir.NIRGraph, supported: tuple[str, ...], reader: str) -> None:
    bad = sorted(f"{n} ({type(v).__name__})" for n, v in graph.nodes.items() if type(v).__name__ not in supported)
    if bad:
        raise ModelError(f"{reader} cannot run node(s) {', '.join(bad)}; it runs: {', '.join(supported)}")


def _sanitize(name: str) -> str:
    # nirtorch.utils.sanitize_name (GraphExecutor) and nir_interpreter._sanitize_name both
    # replace dots; the latter also prefixes Python keywords.
    name = name.replace(".", "_")
    return "nir_node_" + name if keyword.iskeyword(name) else name


class _Recorder:
    """Forward hooks on the modules of LIF nodes: their spikes, step by step."""

    def __init__(self, root: nn.Module, names: dict[str, str]) -> None:
        self.names = names  # graph name -> module attribute name
        self.current: dict[str, torch.Tensor] = {}
        self.handles = []
        for graph_name, attr in names.items():
            module = getattr(root, attr)
            self.handles.append(module.register_forward_hook(self._hook(graph_name)))

    def _hook(self, name: str):
        def hook(_module, _inputs, output):
            self.current[name] = output[0].detach()

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _run_batched(module: nn.Module, spikes: np.ndarray, names: dict[str, str], record: bool) -> InteropResult:
    """Step a ``(x_t, state) -> (y_t, state)`` module over ``spikes`` ``(T, B, ...)``, the whole
    batch at once, recording the LIF modules ``names`` (graph name -> module attribute)."""
    rec = _Recorder(module, names)
    spikes = np.asarray(spikes, dtype=np.float32)
    T, B = spikes.shape[:2]
    steps, total, state = [], 0, None
    try:
        with torch.no_grad():
            for t in range(T):
                y, state = module(torch.from_numpy(spikes[t]), state)
                total = total + y.numpy().astype(np.int64)
                steps.append({n: rec.current[n].numpy() for n in names})
    finally:
        rec.close()
    return _collect(T, B, list(names), steps, np.asarray(total), record)


def _collect(T: int, B: int, lifs: list[str], steps: list[dict[str, np.ndarray]], outs: np.ndarray, record: bool):
    """``steps[t][name]`` (B, ...) spikes -> counts and optional rasters."""
    rasters = {n: np.stack([steps[t][n] for t in range(T)]).astype(np.uint8) for n in lifs}
    layer_counts = {n: rasters[n].reshape(T, B, -1).sum(axis=(0, 2)).astype(np.int64) for n in lifs}
    return InteropResult(outs.reshape(B, -1), layer_counts, rasters if record else None)


# ---------------------------------------------------------------------------------------------
# Norse reads our files


class _InputGain(nn.Module):
    """``r * I`` into a Norse LIF: Norse 1.1.0 ignores NIR's resistance ``r``."""

    def __init__(self, r: np.ndarray, cell: nn.Module) -> None:
        super().__init__()
        self.register_buffer("r", torch.as_tensor(np.asarray(r, dtype=np.float32)))
        self.cell = cell

    def forward(self, x: torch.Tensor, state=None):
        return self.cell(self.r * x, state)


def norse_module(
    graph: str | Path | nir.NIRGraph, *, dt: float | None = None, honour_r: bool = True, legacy: bool = False
) -> nn.Module:
    """Norse 1.1.0's modules for ``graph``, batch-free, one call per time step: ``(x_t, state) -> (y_t, state)``.

    Every node becomes the module Norse's own importer makes for it (``_import_norse_module``),
    with the graph's ``dt`` (Norse would assume 1 ms). With ``honour_r`` the input of each LIF is
    multiplied by its ``r``, which Norse ignores. The modules are wired by
    ``nirtorch.nir_to_torch``, which orders nodes topologically; ``legacy=True`` wires them as
    ``norse.torch.from_nir`` does, with nirtorch's deprecated ``GraphExecutor``, whose depth-first
    order runs a node with two inputs before one of them and so feeds it that input one step late
    (``legacy=True, honour_r=False`` is exactly ``norse.torch.from_nir(graph, dt=dt)``). Graphs
    with nodes Norse would silently drop, or with a non-zero ``v_reset`` it would ignore, are refused.
    """
    import nirtorch

    norse = _norse()
    from norse.torch.utils.import_nir import _import_norse_module

    graph = read_graph(graph)
    _check_nodes(graph, NORSE_NODES, "Norse 1.1.0")
    resets = sorted(
        n for n, v in graph.nodes.items() if isinstance(v, (nir.LIF, nir.IF)) and np.any(np.asarray(v.v_reset) != 0)
    )
    if resets:
        raise ModelError(
            f"Norse 1.1.0 resets every LIF and IF to 0 and ignores v_reset; node(s) {', '.join(resets)} reset elsewhere"
        )
    dt = graph_dt(graph) if dt is None else float(dt)

    def node_map(node: nir.NIRNode) -> nn.Module:
        module = _import_norse_module(node, ignore_warnings=True, dt=dt)
        if honour_r and isinstance(node, nir.LIF) and not np.all(np.asarray(node.r) == 1):
            module = _InputGain(node.r, module)
        elif honour_r and isinstance(node, nir.IF):  # Norse's IF jumps by its input: v += I, no r, no dt
            module = _InputGain(np.asarray(node.r, dtype=np.float64) * dt, module)
        return module

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the GraphExecutor loader, which Norse uses
        if legacy:
            from nirtorch.from_nir import load as graph_executor_from_nir

            if honour_r:
                return graph_executor_from_nir(graph, node_map)
            return norse.from_nir(graph, ignore_warnings=True, dt=dt)
        types = [getattr(nir, name) for name in NORSE_NODES if name not in ("Input", "Output")]
        return nirtorch.nir_to_torch(graph, dict.fromkeys(types, node_map))


def run_norse(
    graph: str | Path | nir.NIRGraph,
    spikes: np.ndarray,
    *,
    dt: float | None = None,
    honour_r: bool = True,
    legacy: bool = False,
    record: bool = False,
    module: nn.Module | None = None,
) -> InteropResult:
    """Run ``spikes`` ``(T, B, *input_shape)`` through Norse (:func:`norse_module`, or ``module``
    when the caller built it already), one sample and one step at a time, without a batch
    dimension (NIR shapes have none)."""
    graph = read_graph(graph)
    if module is None:
        module = norse_module(graph, dt=dt, honour_r=honour_r, legacy=legacy)
    lifs = _lif_names(graph)
    rec = _Recorder(module, {n: _sanitize(n) for n in lifs})
    spikes = np.asarray(spikes, dtype=np.float32)
    T, B = spikes.shape[:2]
    per_step: list[dict[str, list[np.ndarray]]] = [{n: [] for n in lifs} for _ in range(T)]
    outs = []
    try:
        with torch.no_grad():
            for b in range(B):
                state, total = None, 0
                for t in range(T):
                    y, state = module(torch.from_numpy(spikes[t, b]), state)
                    total = total + y.numpy().astype(np.int64)
                    for n in lifs:
                        per_step[t][n].append(rec.current[n].numpy())
                outs.append(np.asarray(total).reshape(-1))
    finally:
        rec.close()
    steps = [{n: np.stack(per_step[t][n]) for n in lifs} for t in range(T)]
    return _collect(T, B, lifs, steps, np.stack(outs), record)


# ---------------------------------------------------------------------------------------------
# nirtorch reads our files


class NIRLIF(nn.Module):
    """NIR's LIF, ``tau dv/dt = (v_leak - v) + r I``, one forward-Euler step of ``dt`` per call.

    ``v = beta v + gain I + leak`` with ``beta = 1 - dt/tau``, ``gain = r dt/tau``,
    ``leak = v_leak dt/tau`` (computed in float64 from the file's values, rounded once to
    float32); spike where ``v > v_threshold`` (strict); ``v = v_reset`` where it spiked.
    """

    def __init__(self, node: nir.LIF, dt: float) -> None:
        super().__init__()

        def f64(x):
            return np.asarray(x, dtype=np.float64)

        alpha = dt / f64(node.tau)
        v_reset = node.v_reset if node.v_reset is not None else np.zeros_like(f64(node.v_threshold))
        for key, value in (("beta", 1.0 - alpha), ("gain", alpha * f64(node.r)), ("leak", alpha * f64(node.v_leak)),
                           ("v_threshold", f64(node.v_threshold)), ("v_reset", f64(v_reset))):  # fmt: skip
            self.register_buffer(key, torch.from_numpy(np.asarray(value, dtype=np.float32)))

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        v = torch.zeros_like(x) if state is None else state
        v = self.beta * v + self.gain * x + self.leak
        s = v > self.v_threshold
        return s.to(x.dtype), torch.where(s, self.v_reset, v)


class _SumPool2d(nn.Module):
    def __init__(self, node: nir.SumPool2d) -> None:
        super().__init__()
        self.kernel = tuple(int(k) for k in np.broadcast_to(np.asarray(node.kernel_size), (2,)))
        self.stride = tuple(int(k) for k in np.broadcast_to(np.asarray(node.stride), (2,)))
        self.padding = tuple(int(k) for k in np.broadcast_to(np.asarray(node.padding), (2,)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x, self.kernel, self.stride, self.padding, divisor_override=1)


def _affine(node: nir.Affine) -> nn.Linear:
    w = torch.as_tensor(np.asarray(node.weight, dtype=np.float32))
    module = nn.Linear(w.shape[1], w.shape[0], bias=True)
    module.weight.data = w
    module.bias.data = torch.as_tensor(np.asarray(node.bias, dtype=np.float32))
    return module


def _flatten(node: nir.Flatten) -> nn.Flatten:
    # NIR dims are batch-free; the module sees (B, ...): shift non-negative dims by one.
    start, end = int(node.start_dim), int(node.end_dim)
    return nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)


def nirtorch_node_map(dt: float) -> dict:
    """The node map for ``nirtorch.nir_to_torch``: LIF (none by default), Affine (the default
    drops the bias), SumPool2d (the default ignores padding), Flatten (batch-aware). nirtorch's
    defaults for Input, Output, Linear, Conv2d and AvgPool2d are correct and kept."""
    return {nir.LIF: lambda node: NIRLIF(node, dt), nir.Affine: _affine, nir.SumPool2d: _SumPool2d,
            nir.Flatten: _flatten}  # fmt: skip


def nirtorch_module(graph: str | Path | nir.NIRGraph, *, dt: float | None = None) -> nn.Module:
    """``nirtorch.nir_to_torch`` with :func:`nirtorch_node_map`: ``(x_t (B, ...), state) -> (y_t, state)``."""
    import nirtorch

    graph = read_graph(graph)
    _check_nodes(graph, NIRTORCH_NODES, "the nirtorch node map")
    dt = graph_dt(graph) if dt is None else float(dt)
    return nirtorch.nir_to_torch(graph, nirtorch_node_map(dt))


def run_nirtorch(
    graph: str | Path | nir.NIRGraph, spikes: np.ndarray, *, dt: float | None = None, record: bool = False
) -> InteropResult:
    """Run ``spikes`` ``(T, B, *input_shape)`` through nirtorch, the whole batch one step at a time."""
    graph = read_graph(graph)
    return _run_batched(nirtorch_module(graph, dt=dt), spikes, {n: _sanitize(n) for n in _lif_names(graph)}, record)


# ---------------------------------------------------------------------------------------------
# Norse writes graphs that we read


def norse_export(
    module: nn.Module, input_shape: tuple[int, ...], *, dt: float = DEFAULT_FOREIGN_DT, repair: bool = True
) -> nir.NIRGraph:
    """``norse.torch.to_nir(module, sample, dt=dt)`` with a batch-free sample of ``input_shape``.

    With ``repair`` (the default), Norse 1.1.0's export defects are undone: ``tau`` is written as
    ``dt / tau_mem_inv`` (``export_nir.py``; it should be ``1 / tau_mem_inv``): the exact
    ``1 / tau_mem_inv`` is taken from the module's cell of the same name and stored in float64, so
    that ``dt / tau`` is the coefficient Norse integrates with; parameters are torch tensors (0-d
    for scalar parameters, which ``nir.write`` cannot store): they become numpy arrays of at least
    one dimension. The input type is batch-free because the sample is. Without ``repair`` the
    graph is exactly Norse's.
    """
    norse = _norse()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = norse.to_nir(module, torch.zeros(tuple(input_shape)), dt=dt)
    if not repair:
        return graph
    nodes = {}
    for name, node in graph.nodes.items():
        if isinstance(node, nir.LIF):
            try:
                cell = module.get_submodule(name)
            except AttributeError:
                cell = None
            if not isinstance(cell, norse.LIFBoxCell):
                raise ModelError(f"node {name}: no LIFBoxCell of that name in the module to take tau_mem_inv from")
            v_th = _np(node.v_threshold)
            inv = np.broadcast_to(_np(cell.p.tau_mem_inv).astype(np.float64), v_th.shape)
            node = nir.LIF(tau=1.0 / inv, r=np.broadcast_to(_np(node.r), v_th.shape).copy(),
                           v_leak=np.broadcast_to(_np(node.v_leak), v_th.shape).copy(), v_threshold=v_th,
                           v_reset=np.broadcast_to(_np(node.v_reset), v_th.shape).copy())  # fmt: skip
        elif isinstance(node, nir.Affine):
            node = nir.Affine(weight=_np(node.weight), bias=_np(node.bias))
        elif isinstance(node, nir.Linear):
            node = nir.Linear(weight=_np(node.weight))
        nodes[name] = node
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=dict(graph.metadata or {}), type_check=False)


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.atleast_1d(np.asarray(x, dtype=np.float32))


def run_norse_module(module: nn.Module, spikes: np.ndarray, *, record: bool = False) -> InteropResult:
    """Norse's own output: a ``SequentialState`` (or any ``(x, state) -> (y, state)`` module) run
    step by step on ``spikes`` ``(T, B, ...)``; layer names are the module's child names (which
    ``to_nir`` uses as node names)."""
    norse = _norse()

    cells = {name: name for name, m in module.named_children() if isinstance(m, norse.LIFBoxCell)}
    return _run_batched(module, spikes, cells, record)


# ---------------------------------------------------------------------------------------------


def raster_mismatch(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, int]:
    """Per layer, how many (step, sample, neuron) spikes differ between two sets of rasters."""
    if set(a) != set(b):
        raise ModelError(f"the two runs record different layers: {sorted(a)} vs {sorted(b)}")
    return {n: int(np.count_nonzero(np.asarray(a[n], dtype=bool) != np.asarray(b[n], dtype=bool))) for n in a}


def run(plan, spikes: np.ndarray, *, record: bool = False):
    """The ``norse`` target: Norse runs the ``.nir`` file the plan was loaded from."""
    from targets.reference import RunResult

    if plan.precision != "float":
        raise ModelError("the norse target runs float precision only: NIR's LIF cannot express Loihi's integer decays")
    src = Path(plan.source)
    if src.suffix != ".nir" or not src.is_file():
        raise DataError("the norse target reads a .nir file; this plan was not loaded from one")
    reason = refusal(plan, spikes)
    if reason:
        raise ModelError(f"the norse target refuses {src.name}: {reason}")
    if "norse" not in plan.prepared:  # read the file and build the module once per plan
        graph = read_graph(src)
        plan.prepared["norse"] = (graph, norse_module(graph, dt=plan.meta.get("dt")))
    graph, module = plan.prepared["norse"]
    res = run_norse(graph, np.asarray(spikes), record=record, module=module)
    return RunResult(res.counts, res.layer_counts, res.rasters)
