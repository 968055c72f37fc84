"""Our float graphs as other libraries read them: ``python -m convert.to_nir model.pt --for LIBRARY``.

Our ``.nir`` files follow NIR's semantics (forward Euler with the graph's ``dt``, input gain
``r dt / tau``, spike at ``v > threshold``, reset to ``v_reset``); each library's own import reads
the same fields its own way (``tests/data/foreign/README.md`` has each one's arithmetic, read
from its source). :func:`graph_for` rewrites a graph so that the library, importing the file with
its own documented call, computes our spikes:

- ``snntorch`` (``snntorch.import_nir.import_from_nir(graph)``): it assumes ``dt = 1e-4`` and takes
  ``beta = 1 - dt / tau`` with ``r dt / tau = 1``: every ``tau`` is rescaled to ``tau * 1e-4 / dt``
  and ``r`` to ``tau / 1e-4`` (the same ``beta``, input gain 1). It has no ``SumPool2d``: a pool
  becomes ``AvgPool2d`` and the synapse it feeds takes its area into the weights (exact for the
  power-of-two areas we use; others are refused), and it maps ``Flatten`` dims literally onto
  batched tensors, so ``start_dim`` is written as 1.
- ``spikingjelly`` (``import_from_nir(graph, dt=1e-4)``): the same rescaling (its LIF with
  ``r = tau / dt`` is ``decay_input=False``), the same pools, and every threshold one float32 step
  up, because it spikes at ``v >= threshold``.
- ``norse`` (``norse.torch.from_nir(graph, dt=dt)``): it ignores ``r`` (input gain ``dt / tau``), so
  ``r`` is folded into the rows of the synapse feeding each LIF (weights and bias times ``r``) and
  written as 1; ``Flatten`` as for snnTorch.
- ``nir``: the graph as it is.

Refused, with the reason: ``nirtorch`` (no LIF mapping of its own: it needs the caller's node map,
:func:`targets.norse_target.nirtorch_node_map`), ``sinabs`` (3.1.3 pins nir <= 1.0.4, which cannot
read ``v_reset``, and simulates tau in steps with several spikes per step and a subtractive reset),
``rockpool`` (3.1.0 imports no ``Conv2d`` or pooling, fails on every ``LIF``: its import reads
``tau_mem``, which ``nir.LIF`` does not have; and it resets by subtraction).
A fixed-precision graph is Loihi's integer network, which no float reader computes exactly
(its decays truncate, its right shifts floor): :func:`integer_units` writes the float network
nearest to it, in the integer network's own units, and the rewrite above makes that file. In
mantissa units every weight is its 8-bit integer mantissa (times a pool's power-of-two area), the
bias ``b << bias_exp`` becomes ``b 2**(bias_exp - 7 - e)``, the threshold ``vth 2**(-1 - e)`` and
the decay ``1 - dv / 4096``: every synaptic sum of spikes is an exact float32 integer in any order,
so the library's spikes are our reference's on the same file, bit for bit; how far that float
network is from the integers is measured by ``convert.to_nir`` and reported. The file's metadata
keeps the integer parameters under ``fixed_source``, with each synapse's ``weight_scale`` following
the rewrite (``mantissa = weight / weight_scale``, exactly).
"""

from __future__ import annotations

import json

import nir
import numpy as np

from core import fixed
from core.errors import ModelError
from targets.plan import METADATA_KEY, load_plan, power_of_two

PEERS = ("nir", "snntorch", "spikingjelly", "norse", "nirtorch", "sinabs", "rockpool")
REFUSED = {
    "nirtorch": "nirtorch 2.6 maps no LIF: nir_to_torch needs the caller's node map (our files run exactly with "
    "targets.norse_target.nirtorch_node_map)",
    "sinabs": "Sinabs 3.1.3 pins nir <= 1.0.4, which cannot read v_reset, and simulates tau in steps with several "
    "spikes per step and a subtractive reset: no NIR file makes it compute our spikes",
    "rockpool": "Rockpool 3.1.0 imports no Conv2d or pooling, fails on every LIF (its import reads tau_mem, which "
    "nir.LIF does not have) and resets by subtraction, which no NIR field turns off",
}
IMPORT_CALLS = {
    "nir": "nir.read(path)",
    "snntorch": "import nir, snntorch.import_nir; net = snntorch.import_nir.import_from_nir(nir.read(path))",
    "spikingjelly": "from spikingjelly.activation_based.nir_exchange import import_from_nir; "
    "net = import_from_nir(path, dt=1e-4)",
    "norse": "import nir, norse.torch; net = norse.torch.from_nir(nir.read(path), dt=DT)",
}
PEER_DT = {"snntorch": 1e-4, "spikingjelly": 1e-4}
# The dialect in which our own loader reads each library's file as the library computes it (written
# into the file's metadata): the check that every file is right before it is written.
READ_AS = {"snntorch": "snntorch-zero", "spikingjelly": "spikingjelly", "norse": "norse-import"}


def refusal(peer: str) -> str | None:
    """Why ``--for peer`` cannot be written (an unknown library, or one no file makes compute our spikes), if so."""
    if peer not in PEERS:
        return f"--for {peer!r}: unknown library; known: {', '.join(PEERS)}"
    return f"--for {peer}: {REFUSED[peer]}" if peer in REFUSED else None


def graph_for(graph: nir.NIRGraph, peer: str, *, dt: float, precision: str = "float") -> nir.NIRGraph:
    """``graph`` (one of ours, time step ``dt``) rewritten for ``peer``'s own NIR import."""
    refused = refusal(peer)
    if refused:
        raise ModelError(refused)
    if peer == "nir":
        return graph
    fixed_source = None
    if precision == "fixed":
        graph, fixed_source = integer_units(graph, dt)
    elif precision != "float":
        raise ModelError(f"--for {peer}: unknown precision {precision!r}")
    nodes = dict(graph.nodes)
    edges = [tuple(e) for e in graph.edges]
    consumers = {a: [b for x, b in edges if x == a] for a in nodes}
    scale: dict[str, np.ndarray | float] = {}  # synapse -> factor of its weight rows and bias (r into Norse)
    area_of: dict[str, float] = {}  # synapse -> factor of its weights only (an average pool's area before it)
    for name, node in graph.nodes.items():
        if isinstance(node, nir.SumPool2d) and peer in ("snntorch", "spikingjelly"):
            k = np.broadcast_to(np.asarray(node.kernel_size), (2,)).astype(int)
            area = int(k[0] * k[1])
            if area & (area - 1) or np.any(np.asarray(node.padding) != 0):
                raise ModelError(f"--for {peer}: pool {name} has area {area} or padding; {peer} has no sum pool and "
                                 "an average pool times the area is exact only for power-of-two areas without padding")  # fmt: skip
            nodes[name] = nir.AvgPool2d(kernel_size=k, stride=np.broadcast_to(np.asarray(node.stride), (2,)).astype(int),
                                        padding=np.zeros(2, int))  # fmt: skip
            for syn in _synapses_after(name, nodes, consumers):
                area_of[syn] = area_of.get(syn, 1.0) * area
        elif isinstance(node, nir.Flatten) and peer in ("snntorch", "norse"):
            nodes[name] = nir.Flatten(input_type=node.input_type, start_dim=1, end_dim=-1)
        elif isinstance(node, nir.LIF):
            nodes[name] = _lif_for(name, node, peer, dt, nodes, edges, scale)
        elif isinstance(node, nir.SumPool2d) and np.any(np.asarray(node.padding) != 0):  # (Norse: LPPool2d(1))
            raise ModelError(f"--for {peer}: pool {name} pads its input, which {peer}'s import ignores")
        elif isinstance(node, nir.AvgPool2d) and peer == "norse":
            raise ModelError(f"--for norse: pool {name} is an average pool, which Norse 1.1.0's import drops silently")
        elif not isinstance(
            node, (nir.Input, nir.Output, nir.Affine, nir.Linear, nir.Conv2d, nir.Flatten, nir.SumPool2d, nir.AvgPool2d)
        ):
            raise ModelError(f"--for {peer}: node {name} ({type(node).__name__}) is not written for {peer} yet")
    for syn in set(scale) | set(area_of):
        nodes[syn] = _scaled(nodes[syn], scale.get(syn, 1.0), area_of.get(syn, 1.0))
    # our metadata, saying which library the file is for and the dialect that reads it so (our loader
    # then runs it as that library does); the per-layer quantisation grids no longer hold
    meta = json.loads((graph.metadata or {}).get(METADATA_KEY, "{}"))
    meta = {k: v for k, v in meta.items() if k != "layers"} | {
        "for": peer, "dt": PEER_DT.get(peer, dt), "dialect": READ_AS[peer]}  # fmt: skip
    if fixed_source is not None:  # the integer parameters, with the scales the rewrite gave the weights
        for syn in set(scale) | set(area_of):  # (per output row where the rows were scaled apart)
            f = np.asarray(scale.get(syn, 1.0), np.float64) * area_of.get(syn, 1.0)
            fixed_source[syn]["weight_scale"] = float(f.flat[0]) if np.ptp(f) == 0 else f.tolist()
        meta = {k: v for k, v in meta.items() if k != "min_bias_exp"} | {
            "precision": "float",
            "fixed_source": fixed_source,
        }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={METADATA_KEY: json.dumps(meta)}, type_check=False)


def _synapses_after(name: str, nodes: dict, consumers: dict) -> list[str]:
    out = []
    for c in consumers.get(name, []):
        if isinstance(nodes[c], (nir.Conv2d, nir.Affine, nir.Linear)):
            out.append(c)
        elif isinstance(nodes[c], nir.Flatten):
            out += _synapses_after(c, nodes, consumers)
        else:
            raise ModelError(f"pool {name} feeds {c} ({type(nodes[c]).__name__}); its area cannot move into a synapse")
    return out


def _lif_for(name: str, node: nir.LIF, peer: str, dt: float, nodes: dict, edges: list, scale: dict) -> nir.LIF:
    tau, r = np.asarray(node.tau, np.float64), np.asarray(node.r, np.float64)
    v_th = np.asarray(node.v_threshold, np.float32)
    v_reset = np.zeros_like(v_th) if node.v_reset is None else np.asarray(node.v_reset, np.float32)
    if np.any(np.asarray(node.v_leak) != 0) or np.any(v_reset != 0):
        raise ModelError(f"--for {peer}: LIF {name} has a leak or a reset other than 0, which {peer} does not import")
    if peer == "norse" and not power_of_two(r).all():
        # r ignored by Norse and not a power of two: the membrane in units of r instead (v / r, the
        # threshold / r), which leaves the weights on their grid; exact in the reals like the fold
        return nir.LIF(tau=tau, r=np.ones_like(r), v_leak=np.zeros_like(tau),
                       v_threshold=(v_th / r).astype(np.float32), v_reset=(v_reset / r).astype(np.float32))  # fmt: skip
    if peer == "norse":  # r ignored by Norse: into the synapse rows (exactly: r is a power of two), written as 1
        for src in [a for a, b in edges if b == name]:
            if not isinstance(nodes[src], (nir.Conv2d, nir.Affine, nir.Linear)):
                raise ModelError(f"--for norse: LIF {name} is fed by {src}; r must fold into a Conv2d/Linear")
            per_row = r.reshape(r.shape[0], -1)[:, 0] if r.ndim > 1 else r
            if r.ndim > 1 and np.ptp(r.reshape(r.shape[0], -1), axis=1).max() != 0:
                raise ModelError(f"--for norse: LIF {name}'s r varies inside a channel")
            scale[src] = scale.get(src, 1.0) * per_row
        return nir.LIF(tau=tau, r=np.ones_like(r), v_leak=np.zeros_like(tau), v_threshold=v_th, v_reset=v_reset)
    if not np.allclose(r * dt / tau, 1.0, rtol=1e-6):
        raise ModelError(f"--for {peer}: LIF {name} has an input gain r dt/tau other than 1, which {peer} imports by "
                         "scaling its threshold (not exactly)")  # fmt: skip
    t = tau * (PEER_DT[peer] / dt)
    if peer == "spikingjelly":  # it spikes at v >= threshold: one float32 step up is v > threshold
        v_th = np.nextafter(v_th, np.float32(np.inf), dtype=np.float32)
    return nir.LIF(tau=t, r=t / PEER_DT[peer], v_leak=np.zeros_like(t), v_threshold=v_th, v_reset=v_reset)


def _scaled(node, factor, area: float = 1.0) -> nir.NIRNode:
    """A synapse with its output rows (weights and bias) multiplied by ``factor`` (a scalar or per row)
    and its weights alone by ``area``."""
    w = np.asarray(node.weight, np.float64)
    f = np.asarray(factor, np.float64)
    fw = f.reshape((-1,) + (1,) * (w.ndim - 1)) if f.ndim else f
    weight = (w * fw * area).astype(np.float32)
    bias = None if isinstance(node, nir.Linear) else (np.asarray(node.bias, np.float64) * f).astype(np.float32)
    return _with(node, weight, bias)


def integer_units(graph: nir.NIRGraph, dt: float) -> tuple[nir.NIRGraph, dict[str, dict]]:
    """A fixed-precision graph as the float network nearest its integers, in mantissa units (NIR's
    semantics, time step ``dt``), and its integer parameters per layer (``fixed_source``). The
    integers are the loader's (:func:`targets.plan.load_plan` recovers and checks them)."""
    plan = load_plan(graph)
    meta = json.loads((graph.metadata or {}).get(METADATA_KEY, "{}"))
    layers = meta.get("layers", {})
    nodes = dict(graph.nodes)
    source: dict[str, dict] = {}
    for n in plan.nodes:
        node = graph.nodes.get(n.name)
        if isinstance(node, (nir.LI, nir.CubaLIF, nir.CubaLI, nir.IF)) or n.kind == "li":
            raise ModelError(f"--for: fixed-precision {n.origin} {n.name.removesuffix('.syn')} is not written for "
                             "float readers (their LI or current does not follow Loihi's integer one)")  # fmt: skip
        if n.kind in ("conv", "conv1d", "affine"):  # mantissas (stored doubled), the bias in units of 2**(7 + e)
            e = n.fixed["weight_exp"]
            bias = (n.fixed["bias"] * 2.0 ** (-7 - e)).astype(np.float32)
            nodes[n.name] = _with(node, (n.fixed["weight"] // 2).astype(np.float32), bias)
            fx = layers[n.name]["fixed"]
            source[n.name] = {k: fx[k] for k in ("weight_exp", "bias_mant", "bias_exp")} | {"weight_scale": 1.0}
        elif n.kind == "lif":
            syn = plan.node(n.sources[0])
            shape = np.shape(node.tau)
            tau = np.full(shape, dt * fixed.DECAY_UNITY / n.fixed["dv"])
            vth = np.full(shape, n.fixed["vth"] * 2.0 ** (-1 - syn.fixed["weight_exp"]), np.float32)
            nodes[n.name] = nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros(shape), v_threshold=vth,
                                    v_reset=np.zeros(shape, np.float32))  # fmt: skip
            source[n.name] = {"vth": n.fixed["vth"], "dv": n.fixed["dv"]}
    meta = {k: v for k, v in meta.items() if k != "layers"} | {"precision": "float"}
    out = nir.NIRGraph(nodes=nodes, edges=[tuple(e) for e in graph.edges], metadata={METADATA_KEY: json.dumps(meta)},
                       type_check=False)  # fmt: skip
    return out, source


def _with(node, weight: np.ndarray, bias: np.ndarray | None) -> nir.NIRNode:
    """The synapse ``node`` with other weights and bias (a Linear keeps none)."""
    if isinstance(node, nir.Linear):
        return nir.Linear(weight=weight)
    if isinstance(node, nir.Affine):
        return nir.Affine(weight=weight, bias=bias)
    cls = nir.Conv1d if isinstance(node, nir.Conv1d) else nir.Conv2d
    return cls(input_shape=node.input_shape, weight=weight, stride=node.stride, padding=node.padding,
               dilation=node.dilation, groups=node.groups, bias=bias)  # fmt: skip
