"""The ``snntorch`` target: snnTorch 1.0.0's own NIR import runs the graph, float precision.

The plan's ``.nir`` file is rewritten for snnTorch (:func:`convert.peers.graph_for`: its dt of
1e-4, average pools, batched Flatten dims) and imported with snnTorch's documented call,
``snntorch.import_nir.import_from_nir``; the modules it builds step the whole batch, one step per
call, and forward hooks on its ``Leaky`` modules record the spikes. An independent implementation
of our float semantics, like the ``norse`` target; snnTorch is the ``interop`` extra
(``pip install -e '.[interop]'``, which ``make`` installs).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import warnings
from pathlib import Path

import nir
import numpy as np

from core.errors import DataError, ModelError
from targets.plan import Plan, check_spikes
from targets.reference import RunResult


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("snntorch") is None:
        return "snnTorch is not installed (pip install -e '.[interop]')"
    return None


def refusal(plan: Plan, spikes) -> str | None:
    """Why snnTorch would not compute this graph as the reference does, or None."""
    from convert.peers import graph_for
    from targets.norse_target import GROUPS_WHY, conv_groups_torch_refuses

    if plan.precision != "float":
        return "snnTorch runs float precision only"
    if plan.meta.get("dialect", "nir") != "nir":
        return f"the snntorch target runs NIR's semantics; this graph runs in the {plan.meta['dialect']} dialect"
    src = Path(plan.source)
    if src.suffix != ".nir" or not src.is_file():
        return "the snntorch target reads a .nir file; this plan was not loaded from one"
    partial = [n.name for n in plan.nodes if n.kind == "flatten" and len(n.out_shape) > 1]
    if partial:
        return (f"Flatten {', '.join(partial)} joins only some dims; the graph written for snnTorch (convert.peers) "
                "flattens the whole sample (start_dim 1 on batched tensors)")  # fmt: skip
    graph = nir.read(src, type_check=False)
    try:
        graph_for(graph, "snntorch", dt=float(plan.meta["dt"]))
    except ModelError as e:
        return str(e)
    uneven = conv_groups_torch_refuses(graph)
    if uneven:
        return f"Conv2d {', '.join(uneven)}: {GROUPS_WHY.format(library='snnTorch 1.0.0')}"
    if any(n.kind in ("lif", "li") and np.ptp(n.params.get("v_threshold", np.zeros(1))) != 0 for n in plan.nodes):
        return "snnTorch's import takes one threshold per layer"
    joins = [n.name for n in plan.nodes if len(n.sources) > 1]
    if joins:
        return (f"snnTorch's import wires modules with nirtorch's GraphExecutor, whose depth-first order feeds one "
                f"input of a join one step late ({', '.join(joins)})")  # fmt: skip
    return None


def _module(plan: Plan):
    from snntorch.import_nir import import_from_nir

    from convert.peers import graph_for

    if "snntorch" not in plan.prepared:
        reason = refusal(plan, None)
        if reason:
            raise ModelError(f"the snntorch target refuses {Path(plan.source).name}: {reason}")
        graph = graph_for(nir.read(plan.source, type_check=False), "snntorch", dt=float(plan.meta["dt"]))
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # (it prints as it imports)
            warnings.simplefilter("ignore")
            net = import_from_nir(graph)  # (it edits the graph it is given: this one is ours alone)
        plan.prepared["snntorch"] = net
    return plan.prepared["snntorch"]


def run(plan: Plan, spikes, *, record: bool = False) -> RunResult:
    """``spikes (T, B, *input_shape)`` through snnTorch's import of the plan's file."""
    import torch

    spikes = check_spikes(plan, spikes)
    if Path(plan.source).suffix != ".nir":
        raise DataError("the snntorch target reads a .nir file; this plan was not loaded from one")
    net = _module(plan)
    mods = dict(net.named_modules())
    for m in mods.values():  # snnTorch neurons keep their membrane between calls: every run starts from rest
        if hasattr(m, "reset_mem") and hasattr(m, "mem"):
            m.reset_mem()
    names = {n: next((k for k in (n, n.replace(".", "_")) if k in mods), None) for n in plan.lif_names}
    missing = [n for n, k in names.items() if k is None]
    if missing:
        raise ModelError(f"snnTorch's import has no module for LIF node(s) {', '.join(missing)}")
    T, B = spikes.shape[:2]
    current: dict[str, torch.Tensor] = {}

    def hook(name):
        def keep(_module, _inputs, out):  # a Leaky returns its spikes, or (spikes, membrane)
            current[name] = (out[0] if isinstance(out, tuple) else out).detach()

        return keep

    hooks = [mods[k].register_forward_hook(hook(n)) for n, k in names.items()]
    rasters = {n: np.zeros((T, B, *plan.node(n).out_shape), np.uint8) for n in plan.lif_names}
    total, state = 0, None
    try:
        with torch.no_grad():
            for t in range(T):
                y, state = net(torch.from_numpy(np.ascontiguousarray(spikes[t], dtype=np.float32)), state)
                total = total + y.reshape(B, -1).numpy().astype(np.int64)
                for n in plan.lif_names:
                    rasters[n][t] = current[n].reshape(B, *plan.node(n).out_shape).numpy() > 0
    finally:
        for h in hooks:
            h.remove()
    layer_counts = {n: r.reshape(T, B, -1).sum(axis=(0, 2)).astype(np.int64) for n, r in rasters.items()}
    return RunResult(np.asarray(total), layer_counts, rasters if record else None)
