"""lava-dl netx HDF5 export of a fixed-precision graph (``<name>.netx.h5``), for Loihi users' tools.

The layout is what ``lava.lib.dl.netx.hdf5.Network`` (lava-dl 0.6.0) reads: a group ``layer`` with
one group per layer, ``"0"``, ``"1"``, ... in execution order, each holding

- ``type``: ``input`` (only ``shape``, ``(C, H, W)``), ``conv``, ``flatten`` or ``dense``;
- ``shape``: the layer's output shape, ``(C, H, W)`` or ``(N,)`` (netx reverses it to Lava's WHC);
- ``weight``: integers, ``(O, C, kh, kw)`` as a correlation kernel for ``conv`` (netx flips and
  transposes it for Lava's Conv), ``(O, I)`` for ``dense``; ``stride``, ``padding``, ``dilation``
  as ``(y, x)`` and ``groups`` for ``conv``;
- ``bias``: per channel (conv) or per neuron (dense); netx runs it as ``bias_mant`` with
  ``bias_exp = 6``, so the stored value is our integer bias divided by 64;
- ``neuron``: ``type = CUBA``, ``iDecay = du + 1`` (4096: the current decays fully; a CubaLIF's
  current keeps its own ``du``, and its bias is the neuron's), ``vDecay``
  (our ``dv``), ``vThMant`` (our ``vth``), ``refDelay = 1``, ``gradedSpike = False``.

An LI readout (non-spiking) is written as netx can express it: the same CUBA neuron with
``vThMant = 2**17 - 1``, a threshold its membrane provably never reaches (the converter's bound,
``|v| <= 2**23 - 64``), so it never fires; Loihi users read its membrane ``v`` (the worker's test
run probes it). A dense layer's negative exponent ``e`` (an LI readout's) is exact in netx when every
weight is a multiple of ``2**-e`` (``e = -1`` always: the weights are stored doubled): the file then
holds ``w >> -e`` at exponent 0. Smaller exponents are refused with the layer named.

netx builds a purely sequential network of synapse + neuron blocks, without pooling blocks: pools
are folded into the synaptic layer they feed (exactly: a conv after a pool that tiles its input
becomes one conv with an ``s*k`` kernel; a pool and flatten before a Linear become its weight
columns). Lava's Conv model ignores ``weight_exp``, so a conv's exponent is folded into its kernel;
netx derives a dense layer's exponent from its weights, which is exact when ours is 0. A graph that
netx cannot hold exactly (residual ADDs, a pool that drops a remainder row before a conv, a dense
exponent above 0) is refused with the layer named.

Biases must be multiples of 64 to be stored exactly. ``convert.to_nir --netx`` builds the graph with
``min_bias_exp = 6`` (recorded in its metadata), so its biases are, and the ``.nir`` and the
``.netx.h5`` hold the same integer network; in such a graph a bias off the grid is an error. A graph
built without it (older files, ``write_netx`` called on its own) has its biases rounded to the
nearest multiple, and the rounding is returned (and shown in the conversion report with the spike
differences it causes), never hidden.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from core import fixed
from core.errors import ModelError
from core.fileio import atomic_path
from targets.plan import Node, Plan

NETX_BIAS_SHIFT = 6  # netx's LIF blocks run the stored bias with bias_exp = 6


def _pool_matrix(shape: tuple[int, ...], n: Node) -> np.ndarray:
    """Sum pooling of a ``(C, H, W)`` tensor as a dense ``(out, in)`` 0/1 matrix (C-order flat)."""
    c, h, w = shape
    (kh, kw), (sh, sw), (ph, pw) = n.params["kernel"], n.params["stride"], n.params["padding"]
    _, oh, ow = n.out_shape
    m = np.zeros((c, oh, ow, c, h, w), dtype=np.int64)
    for ch in range(c):
        for y in range(oh):
            for x in range(ow):
                ys = slice(max(y * sh - ph, 0), min(y * sh - ph + kh, h))
                xs = slice(max(x * sw - pw, 0), min(x * sw - pw + kw, w))
                m[ch, y, x, ch, ys, xs] = 1
    return m.reshape(c * oh * ow, c * h * w)


def _sequence(plan: Plan) -> list[tuple[Node, list[Node], Node]]:
    """``(synapse, pools/flatten before it, LIF)`` per layer, checking that the graph is a chain."""
    if plan.precision != "fixed":
        raise ModelError(f"{plan.source}: netx holds Loihi integers; convert with --precision fixed to write it")
    consumers: dict[str, list[str]] = {}
    for n in plan.nodes:
        if len(n.sources) != 1:
            raise ModelError(
                f"{plan.source}: node {n.name} sums {len(n.sources)} inputs (a residual ADD); netx networks are sequential"
            )
        consumers.setdefault(n.sources[0], []).append(n.name)
    for src, cons in consumers.items():
        if len(cons) > 1:
            raise ModelError(f"{plan.source}: {src} feeds {', '.join(cons)}; netx networks are sequential")
    layers, linear, syn = [], [], None
    currents: dict[str, Node] = {}
    for n in plan.nodes:
        if n.kind in ("sumpool", "flatten"):
            if syn is not None:
                raise ModelError(f"{plan.source}: {n.kind} {n.name} follows synaptic layer {syn.name} without a LIF")
            linear.append(n)
        elif n.kind == "conv1d" or (n.kind == "conv" and (n.params["dilation"] != (1, 1) or n.params["groups"] != 1)):
            raise ModelError(f"{plan.source}: netx export cannot hold {n.origin} {n.name} (a 1-D, dilated or grouped "
                             "convolution): Lava's Conv runs netx's 2-D convolutions only")  # fmt: skip
        elif n.kind in ("conv", "affine"):
            if syn is not None:
                raise ModelError(
                    f"{plan.source}: synaptic layers {syn.name} and {n.name} follow each other without a LIF"
                )
            syn = n
        elif n.kind == "li" and "du" in n.fixed:  # a CubaLIF's current: netx's CUBA neuron keeps it (iDecay)
            if syn is None:
                raise ModelError(f"{plan.source}: the current {n.name} is not fed by a Conv2d/Linear")
            currents[n.name[: -len(".syn")]] = n
        elif n.kind in ("lif", "li"):
            if syn is None and n.name not in currents:
                raise ModelError(f"{plan.source}: {n.kind.upper()} {n.name} is not fed by a Conv2d/Linear")
            if n.name not in currents and n.fixed.get("current"):
                raise ModelError(f"{plan.source}: {n.kind.upper()} {n.name} reads a current that is not its own")
            layers.append((syn, linear, n))
            linear, syn = [], None
        else:
            raise ModelError(f"{plan.source}: netx export cannot hold {n.kind} node {n.name}")
    if linear or syn is not None or plan.outputs != [layers[-1][2].name]:
        raise ModelError(
            f"{plan.source}: the graph must end in a LIF (or LI) layer that is its only output to be written as netx"
        )
    return layers


def built_for_netx(plan: Plan) -> bool:
    """Whether ``plan`` was built with its biases on netx's grid (``min_bias_exp >= 6``)."""
    return int(plan.meta.get("min_bias_exp", 0)) >= NETX_BIAS_SHIFT


def netx_layers(plan: Plan) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The netx layer descriptions of ``plan`` and, per layer whose bias had to be rounded, the
    largest change in integer membrane units (always empty for a graph built for netx, where a bias
    off the grid is an error)."""
    out: list[dict[str, Any]] = [{"type": "input", "shape": list(plan.input_shape)}]
    rounded: dict[str, float] = {}
    for syn, linear, lif in _sequence(plan):
        w = syn.fixed["weight"].astype(np.int64)
        e = int(syn.fixed["weight_exp"])
        in_shape = linear[0].in_shape if linear else syn.in_shape
        pools = [p for p in linear if p.kind == "sumpool"]
        layer: dict[str, Any] = {}
        if syn.kind == "conv":
            if any(p.kind == "flatten" for p in linear):
                raise ModelError(f"{plan.source}: a flatten before Conv2d {syn.name}")
            kernel, stride, pad = w, syn.params["stride"], syn.params["padding"]
            if len(pools) > 1:
                raise ModelError(f"{plan.source}: more than one pool before {syn.name}; netx has no pooling block")
            if pools:
                p = pools[0]
                k, s = p.params["kernel"], p.params["stride"]
                if k != s or p.params["padding"] != (0, 0) or in_shape[1] % s[0] or in_shape[2] % s[1]:
                    raise ModelError(
                        f"{plan.source}: pool {p.name} (kernel {k}, stride {s}) on {in_shape} does not tile its input, so "
                        f"it cannot be folded into Conv2d {syn.name} exactly; netx has no pooling block"
                    )
                o, c, kh, kw = kernel.shape
                comp = np.zeros((o, c, kh * s[0], kw * s[1]), dtype=np.int64)
                for i in range(s[0]):
                    for j in range(s[1]):
                        comp[:, :, i :: s[0], j :: s[1]] = kernel
                kernel, stride, pad = comp, (stride[0] * s[0], stride[1] * s[1]), (pad[0] * s[0], pad[1] * s[1])
            if e < 0:
                raise ModelError(f"{plan.source}: {syn.name} has weight exponent {e} < 0; Lava's Conv cannot apply it")
            layer = {"type": "conv", "shape": list(syn.out_shape), "weight": kernel << e,
                     "stride": list(stride), "padding": list(pad), "dilation": [1, 1], "groups": 1}  # fmt: skip
        else:
            if e < 0 and not np.any(w % (1 << -e)):  # sum(w x) >> k == sum((w >> k) x) when 2**k divides every w
                w, e = w >> -e, 0
            if e != 0:
                raise ModelError(
                    f"{plan.source}: Linear {syn.name} has weight exponent {e}; netx derives a dense layer's "
                    "exponent from its weights, which reproduces only exponent 0 (or a negative one whose shift "
                    "divides every weight)"
                )
            shape = in_shape
            mat = np.eye(int(np.prod(in_shape)), dtype=np.int64)
            for op in linear:
                if op.kind == "sumpool":
                    mat = _pool_matrix(shape, op) @ mat
                shape = op.out_shape
            m = w @ mat
            if np.abs(m).max(initial=0) > 254:
                raise ModelError(f"{plan.source}: folding pools into {syn.name} gives weights beyond 8 bits")
            if len(in_shape) > 1:
                out.append({"type": "flatten"})
            layer = {"type": "dense", "shape": [int(np.prod(syn.out_shape))], "weight": m}
        bias = lif.fixed["bias"].astype(np.int64)  # the membrane's (its synapse's, or a CubaLIF's own)
        stored = np.rint(bias / 2**NETX_BIAS_SHIFT).astype(np.int64)
        err = np.abs(stored * 2**NETX_BIAS_SHIFT - bias)
        if err.max(initial=0) > 0:
            if built_for_netx(plan):
                raise ModelError(
                    f"{plan.source}: the bias of {lif.name} is not a multiple of {2**NETX_BIAS_SHIFT} (off by up to "
                    f"{int(err.max())} units) although the graph was built for netx (min_bias_exp "
                    f"{plan.meta.get('min_bias_exp')}); its metadata does not match the quantiser"
                )
            rounded[syn.name] = float(err.max())
        if np.abs(stored).max(initial=0) > 4095:
            raise ModelError(f"{plan.source}: the bias of {lif.name} exceeds netx's 13-bit bias mantissa")
        layer["bias"] = stored
        vth = fixed.VTH_MAX if lif.kind == "li" else int(lif.fixed["vth"])  # an LI: a threshold it never reaches
        i_decay = fixed.DECAY_UNITY if not lif.fixed.get("current") else int(plan.node(lif.sources[0]).fixed["du"]) + 1
        layer["neuron"] = {"type": "CUBA", "iDecay": i_decay, "vDecay": int(lif.fixed["dv"]),
                           "vThMant": vth, "refDelay": 1, "gradedSpike": False}  # fmt: skip
        out.append(layer)
    return out, rounded


def netx_plan(plan: Plan) -> Plan:
    """The integer network that the netx file holds: ``plan`` with biases on netx's grid of 64."""
    twin = copy.deepcopy(plan)
    twin.prepared = {}
    for n in twin.nodes:
        if n.fixed and "bias" in n.fixed:
            n.fixed["bias"] = np.rint(n.fixed["bias"] / 2**NETX_BIAS_SHIFT).astype(np.int64) << NETX_BIAS_SHIFT
    return twin


def write_netx(plan: Plan, path: str | Path) -> dict[str, Any]:
    """Write ``plan`` as lava-dl netx HDF5 at ``path`` (atomically); returns what was written."""
    import h5py

    layers, rounded = netx_layers(plan)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        grp = f.create_group("layer")
        for i, layer in enumerate(layers):
            g = grp.create_group(str(i))
            for key, value in layer.items():
                if key == "type":
                    g.create_dataset("type", (1,), "S10", [value.encode("ascii")])
                elif key == "neuron":
                    ng = g.create_group("neuron")
                    for nk, nv in value.items():
                        if nk == "type":
                            ng.create_dataset("type", (1,), "S10", [nv.encode("ascii")])
                        else:
                            ng.create_dataset(nk, data=nv)
                else:
                    g.create_dataset(key, data=np.asarray(value))
    return {"path": str(path), "layers": layers, "rounded_biases": rounded}


def read_netx(path: str | Path, expected: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Read a netx file's layers back (as netx's ``NetDict`` does); with ``expected``, check them."""
    import h5py

    def value(d):
        v = d[()]
        if isinstance(v, np.ndarray) and v.dtype.kind == "S":
            return v[0].decode("ascii")
        return v

    with h5py.File(path, "r") as f:
        layers = []
        for i in range(len(f["layer"])):
            g = f["layer"][str(i)]
            layer = {k: value(g[k]) for k in g if k != "neuron"}
            if "neuron" in g:
                layer["neuron"] = {k: value(g["neuron"][k]) for k in g["neuron"]}
            layers.append(layer)
    for i, (got, want) in enumerate(zip(layers, expected or [])):
        for key, v in want.items():
            same = (
                got.get(key) == v
                if isinstance(v, (str, dict))
                else np.array_equal(np.asarray(got.get(key)), np.asarray(v))
            )
            if not same:
                raise ModelError(f"{path}: layer {i} reads back a different {key!r} than was written")
    if expected is not None and len(layers) != len(expected):
        raise ModelError(f"{path}: {len(layers)} layers read back, {len(expected)} written")
    return layers
