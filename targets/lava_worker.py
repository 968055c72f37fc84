r"""The Lava side of the ``lava`` target: runs inside ``.venv-lava`` (Python 3.10, lava-nc 0.10).

``python -m targets.lava_worker REQUEST.npz RESULT.npz`` reads a graph path and input
spikes ``(T, B, *input_shape)``, builds the graph as a Lava process graph from lava-nc's own
processes and runs it under ``Loihi2SimCfg(select_tag="fixed_pt" | "floating_pt")``. It imports
only numpy, scipy, nir, lava and the torch-free, Python-3.10-clean modules :mod:`targets.plan` and
:mod:`core.errors`. An error is printed as one line ``lava-worker-error: <Class>: <message>`` on
stderr and the exit status is 3; :mod:`targets.lava_target` turns it into the same error class.

The mapping (Lava keeps tensors in ``(W, H, C)`` order, ours are ``(C, H, W)``: reversed axes):

- LIF -> ``LIFReset`` (``du`` = 4095 fixed / 1.0 float, ``dv``, ``vth``, the synapse's bias as
  ``bias_mant``/``bias_exp``). Lava has no batch dimension: the samples of a batch run one after
  the other, each in a window of ``T`` steps, and every LIF resets its ``u`` and ``v`` at the step
  where its own window starts (``reset_offset`` = 1 + its depth), so no state crosses samples and
  the whole batch is one Lava run without a round trip per sample.
- Conv2d -> ``Conv`` (kernel flipped and in ``(O, W, H, C)``: Lava convolves, we correlate). Lava
  0.10's Python ``Conv`` model ignores its ``weight_exp`` Var, so the exponent (always >= 0 in our
  graphs) is folded into the kernel: ``sum(w x) << e == sum((w << e) x)`` exactly.
- Linear/Affine -> ``Dense`` (``weight_exp`` as a process parameter, applied by Lava).
- Sum/avg pooling and flatten are linear and have no neurons: they are folded into the synaptic
  layer they feed, so a pool adds no Lava step. A pool with stride = kernel, no padding and a
  divisible input before a Conv2d makes a conv with a ``s*k`` kernel and stride ``s*stride``;
  every other chain (pool before a Linear, a remainder row the pool drops) becomes the exact
  composite matrix, as ``Dense`` for Linear and ``Sparse`` for Conv2d.
- Residual ADD: several ports into one InPort are summed by Lava. Each Dense/Conv delays by one
  step, so a path with fewer synaptic layers arrives early: it is delayed through relays (an
  identity 1x1 ``Conv`` or ``Dense`` and a threshold-0, full-decay ``LIF``: spike in, spike out,
  one step later, no state) until every input of the sum has the depth of the longest path. The
  graph input is delayed by feeding that consumer from a second ``RingBuffer`` holding the input
  shifted in time.
- Spikes are read through one ``Extractor`` per LIF layer (whole arrays per step; ``Var.get``
  sends one element per message and is far too slow for rasters).
- CubaLIF -> ``LIFReset`` with its current in ``u``: ``du`` from the current's decay (fixed: the
  integer ``du`` as it is, the neuron's own bias), the input gains folded into the weights (float).
- I, Scale and CubaLI run as readouts, like LI (an analog node that feeds another is refused).
- LI (non-spiking readout) -> the same ``LIFReset`` with the current decaying fully (``du`` = 4095
  fixed / 1.0 float), ``dv`` from its ``beta``, and a threshold no membrane reaches: fixed
  ``vth = 2**17 - 1`` (the converter proved ``|v| <= 2**23 - 64``), float the largest float64. Its
  membrane ``v`` is read every step by a ``Monitor`` probe; an ``Extractor`` on its spikes checks
  that it never fired (a graph whose bound is wrong is an error, never a silent difference). An LI
  must be a graph output: Lava's LIF sends spikes, not its membrane. Float LI membranes are
  compared bit for bit with float32 targets, so :mod:`targets.lava_target` refuses a float graph
  whose LI membranes are not provably exact for the steps run (:func:`targets.plan.li_exact_steps`).

Result rows are Lava steps: a LIF (or LI) ``d`` synaptic layers deep shows model step ``t`` at row
``t + d`` (``TargetInfo.latency = 1``; :func:`runtime.latency.align_latency` undoes it). The rows
before a layer's first window step (``< d``) are reported as zero in every window, so a batch
gives what each sample gives alone.

A request with a ``netx`` path runs that lava-dl netx HDF5 file instead, through lava-dl's own
``hdf5.Network`` (imported without torch by :func:`import_netx`), and returns its output raster.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from core import fixed
from core.errors import DataError, ModelError, SnnDeployError
from targets.plan import Node, Plan, load_plan, lower_convolutions, power_of_two

SYNAPSES = ("conv", "affine")
LINEAR = ("sumpool", "avgpool", "flatten")
NEURONS = ("lif", "li")
GRADED_BITS = 24  # message bits for synapses whose input is not a plain 0/1 spike
# A plain 0/1 spike goes to a Sparse or Dense as a 1-bit message: Lava's models then take the product
# ``weights @ s`` (one pass over the matrix) instead of slicing out the spiking columns and summing them
# (``weights[:, s].sum(1)``, a new matrix per step: 4x slower in scipy, measured). For inputs of 0 and 1
# both are the same integer sum; in float they add the same float64 terms (Sparse in the same order,
# Dense in BLAS's, which can move the last bit of a float64 sum, as the unary path's numpy sum could
# against the reference's; the float tests check the rasters). The netx export keeps unary spikes.
SPIKE_BITS = 1
LI_VTH_FIXED = 2**17 - 1  # Loihi's largest threshold: the converter proves an LI's |v| stays at or below vth << 6
LI_VTH_FLOAT = float(np.finfo(np.float64).max)
# the stored weights up to which a convolution runs as a Sparse matrix (memory: 12 bytes each);
# SNN_DEPLOY_LAVA_SPARSE_MAX overrides it (0: every convolution Lava's Conv can hold runs as Conv)
SPARSE_CONV_MAX = int(os.environ.get("SNN_DEPLOY_LAVA_SPARSE_MAX", 2**24))


def lava_layout(x: np.ndarray, lead: int = 0) -> np.ndarray:
    """Our ``(..., C, H, W)`` as Lava's ``(W, H, C, ...)``: the sample axes reversed, leading axes last."""
    nd = x.ndim - lead
    return np.transpose(x, tuple(range(x.ndim - 1, lead - 1, -1))[:nd] + tuple(range(lead)))


# ---------------------------------------------------------------------------------------------
# Linear operators in our C-order flat layout (scipy.sparse), for composite synapses


def _taps(size, out, kernel, stride, pad):
    """Per kernel tap ``(i, j)``: the input rows/columns ``(yy, xx)`` each output pixel reads, and
    which of them lie inside the input (``ok``)."""
    (h, w), (oh, ow), (kh, kw), (sh, sw), (ph, pw) = size, out, kernel, stride, pad
    for i in range(kh):
        for j in range(kw):
            yy, xx = np.meshgrid(np.arange(oh) * sh + i - ph, np.arange(ow) * sw + j - pw, indexing="ij")
            yield i, j, yy, xx, (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)


def pool_matrix(shape: tuple[int, ...], n: Node) -> sp.csr_matrix:
    """Sum (or average) pooling of a ``(C, H, W)`` tensor as a sparse ``(out, in)`` matrix."""
    c, h, w = shape
    (kh, kw), (sh, sw), (ph, pw) = n.params["kernel"], n.params["stride"], n.params["padding"]
    _, oh, ow = n.out_shape
    rows, cols = [], []
    out_idx = np.arange(c * oh * ow).reshape(c, oh, ow)
    for _, _, yy, xx, ok in _taps((h, w), (oh, ow), (kh, kw), (sh, sw), (ph, pw)):
        for ch in range(c):
            rows.append(out_idx[ch][ok])
            cols.append((ch * h + yy[ok]) * w + xx[ok])
    r, cidx = np.concatenate(rows), np.concatenate(cols)
    scale = 1.0 / (kh * kw) if n.kind == "avgpool" else 1.0
    return sp.csr_matrix((np.full(len(r), scale), (r, cidx)), shape=(c * oh * ow, c * h * w))


def conv_matrix(n: Node, weight: np.ndarray) -> sp.csr_matrix:
    """A correlation with ``weight (O, C, kh, kw)`` on ``n.in_shape`` as a sparse ``(out, in)`` matrix."""
    c, h, w = n.in_shape
    o, oh, ow = n.out_shape
    _, _, kh, kw = weight.shape
    (sh, sw), (ph, pw) = n.params["stride"], n.params["padding"]
    rows, cols, vals = [], [], []
    pos_out = np.arange(oh)[:, None] * ow + np.arange(ow)[None, :]
    for i, j, yy, xx, ok in _taps((h, w), (oh, ow), (kh, kw), (sh, sw), (ph, pw)):
        for oc in range(o):
            for ic in range(c):
                if weight[oc, ic, i, j] == 0:
                    continue
                rows.append(oc * oh * ow + pos_out[ok])
                cols.append((ic * h + yy[ok]) * w + xx[ok])
                vals.append(np.full(int(ok.sum()), weight[oc, ic, i, j], dtype=np.float64))
    if not rows:
        return sp.csr_matrix((o * oh * ow, c * h * w))
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(o * oh * ow, c * h * w)
    )


def reversed_perm(shape: tuple[int, ...]) -> np.ndarray:
    """Index ``j`` of a Lava-layout flat vector holds our flat index ``perm[j]``."""
    return np.arange(int(np.prod(shape))).reshape(shape).transpose(tuple(range(len(shape) - 1, -1, -1))).reshape(-1)


# ---------------------------------------------------------------------------------------------
# The plan as synaptic groups: one synapse (or several into one LIF), the spike sources it reads
# and the linear chain (pools, flatten) between them


@dataclass
class Leaf:
    name: str  # "input" or a LIF
    ops: tuple[str, ...]  # the pool/flatten nodes from the leaf to the synapse, leaf first
    delay: int = 0  # steps of Delay nodes (a loop's closing edge included) between the leaf and the synapse


@dataclass
class Layer:
    lif: Node
    synapses: list[Node]
    leaves: dict[str, list[Leaf]] = field(default_factory=dict)  # synapse -> leaves
    depth: int = 0
    delays: dict[str, int] = field(default_factory=dict)  # synapse -> steps of a Delay between it and the LIF
    current: Node | None = None  # a CubaLIF's current (``<name>.syn``): Lava's LIF holds it in u
    scale: float = 1.0  # the input gain(s), a power of two, folded into the synapses' weights (float precision)


def _delay_steps(plan: Plan, n: Node) -> int:
    """A Delay node's steps, which the lava target relays for whole layers: one value for all elements."""
    steps = np.asarray(n.params["steps"]).reshape(-1)
    if np.ptp(steps) != 0:
        raise ModelError(f"{plan.source}: Delay {n.name} delays its elements by {int(steps.min())} to "
                         f"{int(steps.max())} steps; the lava target delays whole layers by one number of steps")  # fmt: skip
    return int(steps[0])


def _leaves(plan: Plan, name: str, ops: tuple[str, ...], where: str) -> list[Leaf]:
    if name == "input":
        return [Leaf("input", ops)]
    n = plan.node(name)
    if n.kind == "lif":
        return [Leaf(name, ops)]
    if n.kind == "delay":  # delays and the linear chain commute: the leaf's spikes, later
        k = _delay_steps(plan, n)
        return [Leaf(leaf.name, leaf.ops, leaf.delay + k) for leaf in _leaves(plan, n.sources[0], ops, where)]
    if n.kind == "li":
        raise ModelError(
            f"{plan.source}: LI layer {name} feeds {where}; the lava target runs an LI as a LIF that never fires "
            "and reads its membrane, which Lava's LIF cannot send on: an LI layer must be a graph output there"
        )
    if n.kind in LINEAR:
        return [leaf for s in n.sources for leaf in _leaves(plan, s, (name, *ops), where)]
    raise ModelError(
        f"{plan.source}: the lava target needs a LIF layer between synaptic layers; {where} reads "
        f"{n.kind} node {name} directly"
    )


def layers_of(plan: Plan) -> list[Layer]:
    """Group the plan into LIF layers with their synapses; names every shape Lava cannot take."""
    consumers: dict[str, list[str]] = {}
    for n in plan.nodes:
        for s in n.sources:
            consumers.setdefault(s, []).append(n.name)
    # (the non-spiking nodes, LI, CubaLI, I and Scale, run as readouts: a LIF that never fires, its
    # membrane probed; one that feeds another node is refused below)
    currents = {n.name: _current(plan, n) for n in plan.nodes
                if n.origin in ("CubaLIF", "CubaLI") and n.kind in NEURONS and not n.name.endswith(".syn")}  # fmt: skip
    current_names = {c.name for c in currents.values()}
    layers = []
    for n in plan.nodes:
        if n.kind in NEURONS and n.name not in current_names:
            current = currents.get(n.name)
            feed = current or n  # a CubaLIF's synapses feed its current
            # a synapse may reach the LIF through a Delay (a loop closes there: Lava's Dense back-connection)
            delays, via = {}, {}
            syns = []
            for src in feed.sources:
                m = plan.node(src) if src != "input" else None
                if m is not None and m.kind == "delay" and m.sources[0] != "input":
                    via[m.sources[0]] = src
                    delays[m.sources[0]] = _delay_steps(plan, m)
                    m = plan.node(m.sources[0])
                syns.append(m)
            bad = [s.name if s is not None else "input" for s in syns if s is None or s.kind not in SYNAPSES]
            if bad:
                raise ModelError(
                    f"{plan.source}: {n.kind.upper()} {n.name} is fed by {', '.join(bad)}; the lava target needs every "
                    "LIF/LI to be fed by Conv2d/Linear layers (Lava's LIF takes synaptic current only)"
                )
            layer = Layer(n, syns, delays={k: v for k, v in delays.items() if v}, current=current)
            if current is not None:
                layer.scale = _cuba_scale(plan, n, current, syns)
            for s in syns:
                into = via.get(s.name, feed.name)  # what the synapse feeds: the LIF, its current, or a Delay to them
                if consumers.get(s.name) != [into] or (into != feed.name and consumers.get(into) != [feed.name]):
                    raise ModelError(
                        f"{plan.source}: synaptic layer {s.name} feeds {consumers.get(s.name)}; the lava target "
                        "needs it to feed exactly one LIF/LI layer"
                    )
                if s.name in layer.delays and (
                    np.any(s.params["bias"] != 0) or (s.fixed and np.any(s.fixed["bias"] != 0))
                ):
                    raise ModelError(f"{plan.source}: {s.name} has a bias and reaches {feed.name} through a Delay, which "
                                     "holds no bias before its first step; Lava adds a LIF's bias from the first step")  # fmt: skip
                layer.leaves[s.name] = [leaf for src in s.sources for leaf in _leaves(plan, src, (), s.name)]
            layers.append(layer)
    bad_out = [o for o in plan.outputs if plan.node(o).kind not in NEURONS]
    if bad_out:
        raise ModelError(
            f"{plan.source}: the graph output reads {', '.join(bad_out)}; the lava target reads spikes of LIF "
            "layers and membranes of LI layers only"
        )
    for n in plan.nodes:
        readers = [m.name for m in plan.nodes if n.name in m.sources]
        if n.kind == "li" and readers and n.name not in current_names:
            raise ModelError(
                f"{plan.source}: LI layer {n.name} feeds {', '.join(readers)}; the lava target runs an LI as a LIF "
                "that never fires and reads its membrane, which Lava's LIF cannot send on: an LI layer must be a "
                "graph output there"
            )
    if plan.precision == "float":
        for layer in layers:
            _float_neuron_check(plan, layer.lif, cuba=layer.current is not None)
            if layer.current is None:  # the input gain (a power of two) into the weights and bias: exact
                layer.scale = float(layer.lif.params["gain"].flat[0])
    # depths as the alignment counts them (a delay restarts the count); every leaf's spikes must then
    # reach the LIF no earlier than Lava's Dense/Conv (one step) can bring them: relays add the rest
    depth = {"input": 0} | plan.depths()
    for layer in layers:
        layer.depth = depth[layer.lif.name]
        for s, leaves in layer.leaves.items():
            for leaf in leaves:
                if relay_steps(layer, s, leaf, depth) < 0:
                    raise ModelError(
                        f"{plan.source}: {leaf.name} reaches {layer.lif.name} through {s} {leaf.delay + layer.delays.get(s, 0)} "
                        f"step(s) later, but it is {depth[leaf.name]} synaptic layer(s) deep and {layer.lif.name} "
                        f"{layer.depth}: Lava delays every synaptic layer by one step, so the loop cannot close in time"
                    )  # fmt: skip
    return layers


def relay_steps(layer: Layer, synapse: str, leaf: Leaf, depth: dict[str, int]) -> int:
    """Steps of relay between ``leaf`` and ``synapse`` of ``layer``: the leaf shows model step ``t`` at
    Lava step ``t + depth``; the LIF must get it ``delays`` model steps later, at its own depth, and
    the synapse adds one step."""
    return layer.depth - 1 + leaf.delay + layer.delays.get(synapse, 0) - depth[leaf.name]


def _current(plan: Plan, n: Node) -> Node:
    """The current of CubaLIF (or CubaLI) ``n`` (the plan's ``<name>.syn`` LI, read by ``n`` alone)."""
    cur = plan.node(n.sources[0]) if len(n.sources) == 1 and n.sources[0] != "input" else None
    if cur is None or cur.kind != "li" or cur.name != n.name + ".syn":
        raise ModelError(f"{plan.source}: {n.origin} {n.name} is not fed by its own current")
    readers = [m.name for m in plan.nodes if cur.name in m.sources]
    if readers != [n.name] or cur.name in plan.outputs:
        raise ModelError(
            f"{plan.source}: the current of {n.origin} {n.name} is read by {readers}; Lava's LIF keeps it in u"
        )
    return cur


def _cuba_scale(plan: Plan, n: Node, cur: Node, syns: list[Node]) -> float:
    """What Lava's LIF, ``u = (1 - du) u + a; v = (1 - dv) v + u + bias``, needs of a CubaLIF
    (``i = beta_s i + g_s I; v = beta v + g i + leak``): ``u = g i``, so the synapses carry ``g g_s``
    in their weights, exact only for a power of two; no leak in the current, and no synaptic bias,
    which would enter the current here and Lava's ``v`` there. Returns ``g g_s``."""
    if plan.precision == "fixed":  # the integer current is Lava's u as it is (the plan checked: no bias into it)
        return 1.0
    p, q = cur.params, n.params
    for key, arr in (("current decay", p["beta"]), ("current gain", p["gain"]), ("input gain", q["gain"])):
        if np.ptp(arr) != 0:
            raise ModelError(
                f"{plan.source}: {n.origin} {n.name} has a per-neuron {key}; Lava's LIF takes one per layer"
            )
    if np.any(p["leak"] != 0):
        raise ModelError(f"{plan.source}: {n.origin} {n.name}'s current has a leak; Lava's u decays to 0")
    biased = [s.name for s in syns if np.any(s.params["bias"] != 0)]
    if biased:
        raise ModelError(f"{plan.source}: {', '.join(biased)} add a bias to {n.origin} {n.name}'s current; Lava adds a "
                         "LIF's bias to v, not to the decaying current")  # fmt: skip
    g = float(np.float64(p["gain"].flat[0]) * np.float64(q["gain"].flat[0]))
    if not power_of_two(g):
        raise ModelError(f"{plan.source}: {n.origin} {n.name}'s input gains multiply to {g:g}, not a power of two: "
                         "folded into Lava's weights they would round")  # fmt: skip
    return g


def _float_neuron_check(plan: Plan, n: Node, cuba: bool = False) -> None:
    """What Lava's float LIF (one ``dv``, ``vth`` per layer, reset to 0, input gain 1) cannot take
    (a CubaLIF's gains are folded into its weights: :func:`_cuba_scale`)."""
    p, li = n.params, n.kind == "li"
    for key in ("beta", "gain") if li else ("beta", "v_threshold", "gain"):
        if np.ptp(p[key]) != 0:
            raise ModelError(f"{plan.source}: {n.kind.upper()} {n.name} has a per-neuron {key}; Lava's LIF "
                             "takes one value per layer")  # fmt: skip
    if not li and np.any(p["v_reset"] != 0):
        raise ModelError(f"{plan.source}: LIF {n.name} resets to {float(p['v_reset'].flat[0])}; Lava resets to 0")
    if p.get("compare") == ">=":
        raise ModelError(f"{plan.source}: LIF {n.name} spikes at v >= threshold ({plan.meta.get('dialect')} dialect); "
                         "Lava's floating_pt spikes at v > threshold and misses the float32 step below it")  # fmt: skip
    gain = float(p["gain"].flat[0])
    if not power_of_two(gain) and not cuba:
        raise ModelError(f"{plan.source}: {n.kind.upper()} {n.name} scales its input by r*dt/tau = {gain:g}, not a "
                         "power of two: folded into Lava's weights and bias (Lava's LIF has input gain 1) it would "
                         "round")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Building the Lava graph


class Builder:
    def __init__(self, plan: Plan, spikes: np.ndarray) -> None:
        from lava.proc.io.source import RingBuffer

        self.plan, self.fixed = plan, plan.precision == "fixed"
        self.T = spikes.shape[0]  # the window of one sample
        self.stream = spikes.transpose(1, 0, *range(2, spikes.ndim)).reshape(-1, *spikes.shape[2:])  # (B*T, ...)
        self.layers = layers_of(plan)
        self.depth = {"input": 0} | {layer.lif.name: layer.depth for layer in self.layers}
        self.ports: dict[tuple[str, int], Any] = {}  # (leaf, delay) -> OutPort
        self.shapes = {"input": plan.input_shape} | {n.name: n.out_shape for n in plan.nodes}
        self.sources: list[Any] = []
        self.RingBuffer = RingBuffer
        self.lifs: dict[str, Any] = {}
        self.probes: dict[str, tuple[str, str, float, int]] = {}  # LI -> (Lava process, Var, scale, depth)
        self.relays = 0

    # -- spike sources, delayed on request ------------------------------------------------------
    def port(self, leaf: str, delay: int):
        key = (leaf, delay)
        if key in self.ports:
            return self.ports[key]
        if leaf == "input":
            data = np.zeros_like(self.stream, dtype=np.int32 if self.fixed else np.float64)
            data[delay:] = self.stream[: len(self.stream) - delay]
            src = self.RingBuffer(data=lava_layout(data, lead=1).copy())
            self.sources.append(src)
            port = src.s_out
        elif delay == 0:
            port = self.lifs[leaf].s_out
        else:
            port = self._relay(self.port(leaf, delay - 1), self.shapes[leaf])
        self.ports[key] = port
        return port

    def _relay(self, port, shape: tuple[int, ...]):
        """One step of delay for 0/1 spikes: identity synapse, then a stateless threshold-0 LIF."""
        from lava.proc.conv.process import Conv
        from lava.proc.dense.process import Dense
        from lava.proc.lif.process import LIF

        lshape = tuple(reversed(shape))
        if len(shape) == 3:
            eye = np.eye(shape[0], dtype=np.int32).reshape(shape[0], 1, 1, shape[0])
            syn = Conv(weight=eye, input_shape=lshape)
        else:
            syn = Dense(weights=np.eye(int(np.prod(shape)), dtype=np.int32 if self.fixed else np.float64))
        # fixed: v = a << 6 = 64 > 0; float: v = a = 1 > 0; dv = full decay and reset keep v at 0
        lif = LIF(shape=lshape, du=4095 if self.fixed else 1.0, dv=4095 if self.fixed else 1.0, vth=0)
        port.connect(syn.s_in)
        syn.a_out.connect(lif.a_in)
        self.relays += 1
        return lif.s_out

    # -- synapses --------------------------------------------------------------------------------
    def synapse(self, layer: Layer, s: Node):
        """The Lava process of synaptic layer ``s``, connected to its (delayed) sources."""
        from lava.proc.conv.process import Conv
        from lava.proc.dense.process import Dense
        from lava.proc.sparse.process import Sparse

        leaves = layer.leaves[s.name]
        chains = {leaf.ops for leaf in leaves}
        if len(chains) != 1:
            raise ModelError(
                f"{self.plan.source}: synaptic layer {s.name} sums inputs through different pooling paths "
                f"({sorted(chains)}); the lava target supports one path per synaptic layer"
            )
        ops = [self.plan.node(o) for o in chains.pop()]
        in_shape = self.shapes[leaves[0].name]
        graded = len(leaves) > 1 or any(leaf.name == "input" for leaf in leaves)
        bits = GRADED_BITS if graded else SPIKE_BITS
        w = s.fixed["weight"].astype(np.int64) if self.fixed else s.params["weight"].astype(np.float64) * layer.scale
        e = s.fixed["weight_exp"] if self.fixed else 0
        proc, lava_in = None, None
        # A convolution runs as Lava's Sparse (its matrix, pooling folded in) while that matrix is
        # small: Lava's Python Conv model without torch loops over every (output, input) channel pair
        # per step (64 x 32 scipy calls for the N-MNIST CSNN's third conv), Sparse does one product
        # (verify on Lava: 3.3x faster, measured). Both are Lava's own fixed-point arithmetic.
        if s.kind == "conv" and _matrix_entries(s, w, ops) > SPARSE_CONV_MAX:
            kernel, stride, pad = w, s.params["stride"], s.params["padding"]
            if ops and len(ops) == 1 and ops[0].kind in ("sumpool", "avgpool"):
                composite = _pooled_conv(ops[0], kernel, stride, pad, in_shape)
                if composite is not None:
                    kernel, stride, pad = composite
                    ops = []
            # Lava 0.10's Python Conv model computes a wrong output shape for unequal paddings per axis
            # (measured: padding (2, 0) on a (31, 1, 4) input gives (31, 4, 4)): those go through Sparse
            if not ops and pad[0] == pad[1]:
                if self.fixed:
                    if e < 0:
                        raise ModelError(f"{self.plan.source}: {s.name} has weight exponent {e} < 0, which Lava's "
                                         "Conv model (it ignores weight_exp) cannot apply")  # fmt: skip
                    kernel = kernel << e
                lava_w = np.ascontiguousarray(kernel[:, :, ::-1, ::-1].transpose(0, 3, 2, 1))
                proc = Conv(weight=lava_w.astype(np.int32 if self.fixed else np.float64),
                            input_shape=tuple(reversed(in_shape)), stride=tuple(reversed(stride)),
                            padding=tuple(reversed(pad)), num_message_bits=bits)  # fmt: skip
                lava_in = proc.s_in
        if proc is None:
            m = sp.identity(int(np.prod(in_shape)), format="csr")
            shape = in_shape
            for op in ops:
                if op.kind in ("sumpool", "avgpool"):
                    m = pool_matrix(shape, op) @ m
                shape = op.out_shape
            m = (conv_matrix(s, w) if s.kind == "conv" else sp.csr_matrix(w)) @ m
            # rows: our flat output order -> Lava's (W, H, C) flat order; columns likewise
            m = m[reversed_perm(s.out_shape)][:, reversed_perm(in_shape)].tocsr()
            if self.fixed:
                m.data = np.rint(m.data)
                if np.abs(m.data).max(initial=0) > 254:
                    raise ModelError(f"{self.plan.source}: folding the pooling before {s.name} gives weights beyond "
                                     "Lava's 8-bit range (overlapping pools); not representable exactly")  # fmt: skip
            dtype = np.int32 if self.fixed else np.float64
            kw = {"weight_exp": e, "num_weight_bits": 8} if self.fixed else {}
            if s.kind == "affine":
                proc = Dense(weights=m.toarray().astype(dtype), num_message_bits=bits, **kw)
            else:
                m.data = m.data.astype(dtype)
                proc = Sparse(weights=m, num_message_bits=bits, **kw)
            lava_in = proc.s_in
        flat = proc.s_in.shape != tuple(reversed(in_shape))
        for leaf in leaves:
            port = self.port(leaf.name, relay_steps(layer, s.name, leaf, self.depth))
            (port.flatten() if flat and len(in_shape) > 1 else port).connect(lava_in)
        return proc

    # -- LIF layers ------------------------------------------------------------------------------
    def lif(self, layer: Layer):
        from lava.proc.lif.process import LIFReset

        n = layer.lif
        lshape = tuple(reversed(n.out_shape))
        window = dict(reset_interval=self.T, reset_offset=(1 + layer.depth) % self.T)
        shape = (-1,) + (1,) * (len(n.out_shape) - 1)
        li = n.kind == "li"
        if self.fixed:  # the membrane's bias (the plan's: its synapse's, or a CubaLIF's own) and current decay
            bias = np.broadcast_to(n.fixed["bias"].reshape(shape), n.out_shape)
            mant, exp = _bias_mant_exp(bias.astype(np.int64), n.name)
            vth = LI_VTH_FIXED if li else int(n.fixed["vth"])
            du = fixed.DU_FULL if layer.current is None else int(layer.current.fixed["du"])
            return LIFReset(shape=lshape, du=du, dv=int(n.fixed["dv"]), vth=vth,
                            bias_mant=lava_layout(mant), bias_exp=lava_layout(exp), **window)  # fmt: skip
        bias = np.zeros(n.out_shape)
        for s in layer.synapses:
            bias = bias + np.asarray(s.params["bias"].astype(np.float64) * layer.scale).reshape(shape)
        p = n.params  # (checked by layers_of: _float_neuron_check)
        beta = float(p["beta"].flat[0])
        vth = LI_VTH_FLOAT if li else float(p["v_threshold"].flat[0])
        du = 1.0 if layer.current is None else 1.0 - float(layer.current.params["beta"].flat[0])
        return LIFReset(shape=lshape, du=du, dv=1.0 - beta, vth=vth,
                        bias_mant=lava_layout(bias + p["leak"].astype(np.float64)), bias_exp=0, **window)  # fmt: skip

    def build(self, steps: int):
        """The process graph; returns the spike extractors (every LIF and LI layer: an LI's must stay
        silent) and a ``Monitor`` per LI layer probing its membrane for ``steps`` steps."""
        from lava.proc.io.extractor import Extractor
        from lava.proc.monitor.process import Monitor

        extractors, monitors = {}, {}
        for layer in self.layers:  # every LIF first: a loop reads a layer's spikes before its own layer is wired
            self.lifs[layer.lif.name] = self.lif(layer)
        for layer in self.layers:
            lif = self.lifs[layer.lif.name]
            for s in layer.synapses:
                out = self.synapse(layer, s).a_out
                (out.reshape(lif.a_in.shape) if out.shape != lif.a_in.shape else out).connect(lif.a_in)
            ex = Extractor(shape=lif.s_out.shape, buffer_size=64)
            lif.s_out.connect(ex.in_port)
            extractors[layer.lif.name] = ex
            probes = [(layer.lif.name, "v", 1.0)] if layer.lif.kind == "li" else []
            if layer.current is not None:  # a CubaLIF's current, the plan's LI: Lava's u / g, exactly
                probes.append((layer.current.name, "u", 1.0 if self.fixed else float(layer.lif.params["gain"].flat[0])))
            for name, var, scale in probes:
                monitors[name] = Monitor()
                monitors[name].probe(getattr(lif, var), steps)
                self.probes[name] = (lif.name, var, scale, layer.depth)
        return extractors, monitors


def _matrix_entries(conv: Node, w: np.ndarray, pools: list[Node]) -> int:
    """At most how many weights ``conv``'s matrix holds, the ``pools`` before it folded in."""
    taps = int(np.prod(w.shape[1:]))
    for p in pools:
        if p.kind in ("sumpool", "avgpool"):
            taps *= int(np.prod(p.params["kernel"]))
    return int(np.prod(conv.out_shape)) * taps


def _pooled_conv(pool: Node, w: np.ndarray, stride, pad, in_shape) -> tuple[np.ndarray, tuple, tuple] | None:
    """``conv(sumpool(x))`` as one conv on ``x`` when the pool tiles ``x`` exactly; else None."""
    k, s, p = pool.params["kernel"], pool.params["stride"], pool.params["padding"]
    if k != s or p != (0, 0) or in_shape[1] % s[0] or in_shape[2] % s[1]:
        return None
    o, c, kh, kw = w.shape
    comp = np.zeros((o, c, kh * s[0], kw * s[1]), dtype=w.dtype)
    for i in range(s[0]):
        for j in range(s[1]):
            comp[:, :, i :: s[0], j :: s[1]] = w
    if pool.kind == "avgpool":
        comp = comp / (k[0] * k[1])
    return comp, (stride[0] * s[0], stride[1] * s[1]), (pad[0] * s[0], pad[1] * s[1])


def _bias_mant_exp(b: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-neuron 13-bit mantissa and 3-bit exponent with ``mant << exp == b`` exactly."""
    mant, exp = b.copy(), np.zeros_like(b)
    for _ in range(8):
        big = np.abs(mant) > 4095
        if not big.any():
            return mant, exp
        if (mant[big] & 1).any():
            break
        mant[big] >>= 1
        exp[big] += 1
    raise ModelError(f"bias of {where} is not a 13-bit mantissa times 2**0..7")


# ---------------------------------------------------------------------------------------------
# lava-dl netx without torch


def import_netx():
    """``lava.lib.dl.netx.hdf5`` in an environment without torch: the one place that does this.

    lava-dl 0.6's ``netx/__init__.py`` imports ``sequential_modules`` (torch) and ``hdf5.py``
    imports ``lava.lib.dl.slayer.neuron.rf.neuron_params`` (slayer imports torch), used only for
    resonate-and-fire neurons. So ``lava.lib.dl.netx`` is registered as a bare package (its
    submodules ``hdf5``, ``blocks``, ``utils`` import normally, its ``__init__`` is skipped) and the
    slayer module is a stub whose ``neuron_params`` raises. Nothing of lava-dl is edited on disk.
    """
    import importlib
    import importlib.util
    import types

    if "lava.lib.dl.netx.hdf5" in sys.modules:
        return sys.modules["lava.lib.dl.netx.hdf5"]
    spec = importlib.util.find_spec("lava.lib.dl")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("lava-dl is not installed in this environment (make setup-lava installs it)")
    dl = list(spec.submodule_search_locations)[0]
    netx = types.ModuleType("lava.lib.dl.netx")
    netx.__path__, netx.__file__ = [f"{dl}/netx"], f"{dl}/netx/__init__.py"
    sys.modules["lava.lib.dl.netx"] = netx

    def no_rf(*_args, **_kwargs):
        raise ModelError("resonate-and-fire netx neurons need lava-dl's slayer, which needs torch")

    for name in (
        "lava.lib.dl.slayer",
        "lava.lib.dl.slayer.neuron",
        "lava.lib.dl.slayer.neuron.rf",
        "lava.lib.dl.netx.sequential_modules",
    ):
        stub = types.ModuleType(name)
        stub.__path__ = []
        stub.__file__ = f"{dl}/{name[len('lava.lib.dl.') :].replace('.', '/')}.py"  # Lava's compiler asks
        sys.modules.setdefault(name, stub)
    sys.modules["lava.lib.dl.slayer.neuron.rf"].neuron_params = no_rf
    return importlib.import_module("lava.lib.dl.netx.hdf5")


def run_netx(path: str, spikes: np.ndarray, fixed: bool = True, membrane: bool = False) -> np.ndarray:
    """``spikes (T, B, ...)`` through ``hdf5.Network(path)``: the last layer's raster ``(T, B, ...)``
    in Lava steps, samples one after another with netx's own per-layer reset (as :func:`run`); with
    ``membrane`` (an LI readout, a CUBA neuron that never fires) its membrane instead, read by a
    ``Monitor`` (int64), and an error if it ever fired."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel
    from lava.proc.io.source import RingBuffer

    hdf5 = import_netx()
    T, B = spikes.shape[:2]
    graded = bool(np.any((spikes != 0) & (spikes != 1)))
    # netx resets layer k at offset reset_offset + k: 1 + depth, as our own graph does
    net = hdf5.Network(
        net_config=path, reset_interval=T, reset_offset=1, input_message_bits=GRADED_BITS if graded else 0
    )
    stream = spikes.transpose(1, 0, *range(2, spikes.ndim)).reshape(-1, *spikes.shape[2:])
    src = RingBuffer(data=lava_layout(stream.astype(np.int32 if fixed else np.float64), lead=1).copy())
    if tuple(src.s_out.shape) != tuple(net.inp.shape):
        raise DataError(
            f"{path}: the network takes input of Lava shape {net.inp.shape}, the spikes give {src.s_out.shape}"
        )
    src.s_out.connect(net.inp)
    ex = Extractor(shape=net.out.shape, buffer_size=64)
    net.out.connect(ex.in_port)
    monitor = None
    if membrane:
        from lava.proc.monitor.process import Monitor

        monitor = Monitor()
        monitor.probe(net.layers[-1].neuron.v, B * T)
    cfg = Loihi2SimCfg(select_tag="fixed_pt" if fixed else "floating_pt",
                       exception_proc_model_map={Extractor: PyLoihiExtractorModel})  # fmt: skip
    shape = tuple(reversed(net.out.shape))
    raster = np.zeros((B * T, *shape), dtype=np.uint8)
    net.run(condition=RunSteps(num_steps=B * T, blocking=False), run_cfg=cfg)
    try:
        for step in range(B * T):
            raster[step] = lava_layout(np.asarray(ex.receive())) != 0
        net.wait()
        if monitor is not None:
            data = monitor.get_data()[net.layers[-1].neuron.name]["v"]
    finally:
        _stop(net)
    if monitor is not None:
        if raster.any():
            raise ModelError(f"{path}: the last layer (an LI readout) fired: its membrane crossed the threshold")
        raster = _steps_first(np.asarray(data)).astype(np.int64)
    raster = raster.reshape(B, T, *shape).swapaxes(0, 1).copy()
    raster[: min(len(net.layers), T)] = 0  # before the last layer's window starts, as in run()
    return raster


# ---------------------------------------------------------------------------------------------
# Running


STOP_WAIT_S = 30.0


def _stop(proc) -> None:
    """Lava's ``stop`` of a finished (or failed) run, given up after ``STOP_WAIT_S`` seconds: it has
    hung after a complete run (seen once in the test suite: the runtime waited forever for its
    service's acknowledgement, every process already gone), when every result was already read.
    The worker leaves through ``os._exit`` and its caller ends the worker's session, Lava's
    processes included."""
    stopper = threading.Thread(target=proc.stop, name="lava-stop", daemon=True)
    stopper.start()
    stopper.join(STOP_WAIT_S)
    if stopper.is_alive():
        print(f"lava-worker: Lava's stop did not return within {STOP_WAIT_S:g} s; the results were complete",
              file=sys.stderr)  # fmt: skip


def _steps_first(data: np.ndarray) -> np.ndarray:
    """Monitor data ``(steps, *Lava shape)`` in our layout ``(steps, *shape)``."""
    return np.transpose(data, (0, *range(data.ndim - 1, 0, -1)))


def run(plan: Plan, spikes: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float]]:
    """``spikes (T, B, ...)`` through Lava: per LIF, the raster ``(T, B, *shape)`` in Lava steps; per LI,
    the membrane trace ``(T, B, *shape)`` (int64 fixed, float64 float); and Lava's own stepping time
    (``seconds`` for ``steps`` steps: compile and start-up excluded). A graph with delays or loops
    runs one Lava run per sample: spikes in flight on a loop or a relay would otherwise cross into
    the next sample's window, which a LIF's reset does not stop."""
    lowered = lower_convolutions(plan)  # Conv1d, dilation, groups: plain 2-D convolutions (exact)
    T, B = spikes.shape[:2]
    spikes = spikes.reshape(T, B, *lowered.input_shape)
    if not plan.delay_names:
        rasters, traces, simulation = _run(lowered, spikes)
    else:
        parts = [_run(lowered, spikes[:, b : b + 1]) for b in range(B)]
        rasters = {k: np.concatenate([p[0][k] for p in parts], axis=1) for k in parts[0][0]}
        traces = {k: np.concatenate([p[1][k] for p in parts], axis=1) for k in parts[0][1]}
        simulation = {"seconds": sum(p[2].get("seconds", 0.0) for p in parts),
                      "steps": sum(p[2].get("steps", 0) for p in parts), "runs": len(parts)}  # fmt: skip
    shaped = {k: v.reshape(v.shape[0], v.shape[1], *plan.node(k).out_shape) for k, v in (rasters | traces).items()}
    return {k: shaped[k] for k in rasters}, {k: shaped[k] for k in traces}, simulation


def _run(plan: Plan, spikes: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float]]:
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel

    T, B = spikes.shape[:2]
    if T < 1 or B < 1:
        raise DataError(f"input spikes of shape {spikes.shape} hold no step or no sample")
    builder = Builder(plan, spikes)
    extractors, monitors = builder.build(B * T)
    layers = {layer.lif.name: layer for layer in builder.layers}
    rasters = {k: np.zeros((B * T, *layers[k].lif.out_shape), dtype=np.uint8) for k in extractors}
    # The Extractor's model carries no precision tag; it is named explicitly.
    cfg = Loihi2SimCfg(
        select_tag="fixed_pt" if builder.fixed else "floating_pt",
        exception_proc_model_map={Extractor: PyLoihiExtractorModel},
    )
    root = next(iter(builder.lifs.values()))
    root.run(condition=RunSteps(num_steps=B * T, blocking=False), run_cfg=cfg)
    try:
        for step in range(B * T):
            for k, ex in extractors.items():
                rasters[k][step] = lava_layout(np.asarray(ex.receive())) != 0
            if step == 0:  # simulation time: from the first step's output to the last (compile excluded)
                t_first = time.perf_counter()
        root.wait()
        simulation = {"seconds": time.perf_counter() - t_first, "steps": B * T - 1}
        membranes = {}
        for k, m in monitors.items():
            proc, var, scale, _ = builder.probes[k]
            membranes[k] = _steps_first(np.asarray(m.get_data()[proc][var])) / scale
    finally:
        _stop(root)
    for k in [k for k in monitors if k in rasters]:  # (a CubaLIF's current has no spikes of its own)
        if rasters[k].any():  # the LIF that runs an LI crossed its threshold: its membrane bound was wrong
            step = int(np.argwhere(rasters[k].reshape(B * T, -1))[0][0])
            raise ModelError(
                f"{plan.source}: LI layer {k} fired in Lava at step {step}: its membrane crossed the threshold the "
                "conversion proved unreachable; the graph's fixed-point choice does not hold for this input"
            )
    out, traces = {}, {}
    for k, r in rasters.items():
        if k in monitors:
            continue
        r = r.reshape(B, T, *r.shape[1:]).swapaxes(0, 1)
        r[: min(layers[k].depth, T)] = 0  # before the layer's window starts (pipeline fill)
        out[k] = np.ascontiguousarray(r)
    for k, v in membranes.items():
        v = v.reshape(B, T, *v.shape[1:]).swapaxes(0, 1).copy()
        v[: min(builder.probes[k][3], T)] = 0  # before the layer's window starts (pipeline fill)
        traces[k] = np.ascontiguousarray(v.astype(np.int64) if builder.fixed else v.astype(np.float64))
    return out, traces, simulation


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if len(argv) != 2:
            raise DataError("usage: python -m targets.lava_worker REQUEST.npz RESULT.npz")
        with np.load(argv[0], allow_pickle=False) as req:
            graph, spikes = str(req["graph"]), req["spikes"]
            netx = str(req["netx"]) if "netx" in req else None
            req_membrane = str(req["membrane"]) == "1" if "membrane" in req else False
            dt = float(str(req["dt"])) if "dt" in req else None  # the caller's --dt, else the graph's
            dialect = str(req["dialect"]) if "dialect" in req else None
        if netx:  # a netx file: the output layer's raster (or membrane), under the name "netx"
            membrane = bool(req_membrane)
            got = run_netx(netx, spikes, fixed=True, membrane=membrane)
            rasters, traces, simulation = ({}, {"netx": got}, {}) if membrane else ({"netx": got}, {}, {})
        else:
            rasters, traces, simulation = run(load_plan(graph, dt=dt, dialect=dialect), spikes)
        names, trace_names = list(rasters), list(traces)
        np.savez(argv[1], names=np.array(json.dumps(names)), trace_names=np.array(json.dumps(trace_names)),
                 simulation=np.array(json.dumps(simulation)), **{f"r{i}": rasters[k] for i, k in enumerate(names)},
                 **{f"v{i}": traces[k] for i, k in enumerate(trace_names)})  # fmt: skip
    except SnnDeployError as e:
        print(f"lava-worker-error: {type(e).__name__}: {e}", file=sys.stderr)
        return 3
    except Exception as e:  # noqa: BLE001 - Lava raises anything; the main process gets it in one line
        tb = traceback.format_exc().strip().splitlines()
        print("\n".join(tb[-12:]), file=sys.stderr)
        print(f"lava-worker-error: LavaError: {type(e).__name__}: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # an error inside Lava's runtime can leave its process threads running, which would keep this
    # interpreter alive until the caller's timeout: leave at once, the result file (if any) is written
    os._exit(code)
