"""Another tool's float NIR graph as the layers conversion quantises: bring your own graph to Loihi.

``python -m convert.to_nir graph.nir --precision fixed --data INPUTS`` reads a graph any library
wrote (through :func:`targets.plan.load_plan`, so ``--dt`` and every node it runs apply), turns its
plan into the traced-layer form of :mod:`convert.trace` and converts it as a checkpoint is
converted: calibration on the inputs the user names, the integer network of :mod:`core.fixed`, the
ONNX and netx files, and the same parity check (the float graph as the reference side).

Exact rewrites, so that every neuron is the Loihi LIF ``v = beta v + I + bias`` with one ``beta``
per layer, threshold 1 and reset to 0: a neuron's input gain ``g`` (``r dt / tau``), threshold
``theta`` and constant leak are folded into the synapse rows feeding it (``W' = g W / theta``,
``b' = (g b + leak) / theta``; an LI readout keeps its scale: ``W' = g W``, ``b' = g b + leak``),
which leaves every spike as it was. A ``CubaLIF`` (``CubaLI``: the readout) is Loihi's LIF with its
current: the current's gain joins the rows (``W' = g_syn g W / theta``: the current is then in
threshold units, and its decay ``beta_syn`` becomes Loihi's ``du``), and the leak stays a constant
added to the membrane (``v_bias = leak / theta`` per step). A loop from a Conv2d/Linear back into a
neuron (the plan's one-step delay on the edge that closes it) is Loihi's recurrent connection: its
rows are folded like the others, and the graph written states it as the same edge. A ``Delay``
node on spikes into a synapse, or on a synapse's output into a neuron, is kept as it is. What
Loihi's LIF cannot be made to compute is refused by name: per-neuron decays, a reset other than 0,
a gain or threshold that varies inside a convolution channel, a neuron fed by anything but
Conv2d/Linear layers that feed only it (directly or through a Delay), several spikes per step with
subtractive reset (Rockpool's and Sinabs' dialects), a rest state other than 0 (Norse's
``v_leak``), integrators and scales used as layers (I, Scale), delays and loops of another shape,
pooling with padding and a Flatten of part of the sample. (Conv1d, dilated and grouped
convolutions are kept: the integer targets write them out as plain 2-D convolutions.) A producer
dialect's arithmetic (Norse's order of float32 operations, Rockpool's ``(v + I) b``) converts as
the NIR update it equals algebraically; the parity check measures the rest.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from convert.trace import Layer
from core.errors import ModelError
from targets.plan import Plan

REFUSED_ORIGINS = {
    "I": "an integrator read as a value (Loihi's LIF sends spikes only)",
    "Scale": "an analog scale (Loihi's LIF sends spikes only)",
}


def layers_from_plan(plan: Plan) -> tuple[list[Layer], list[str]]:
    """The layers and output nodes of a float ``plan``, rewritten as above; errors name the node."""
    where = plan.source
    if plan.precision != "float":
        raise ModelError(f"{where} is already a {plan.precision}-precision graph; conversion takes a float graph")
    bad = sorted({f"{n.name.split('.')[0]} ({n.origin}: {REFUSED_ORIGINS[n.origin]})" for n in plan.nodes
                  if n.origin in REFUSED_ORIGINS})  # fmt: skip
    # a delay runs from a synapse into neurons (a loop's one-step delay ``<synapse>-><neuron>``: Loihi's
    # recurrent connection), or a Delay node delays spikes into synapses
    synapse_kinds = ("conv", "conv1d", "affine")
    for n in plan.nodes:
        if n.kind != "delay":
            continue
        readers = [m for m in plan.nodes if n.name in m.sources]
        into_neuron = (n.sources[0] != "input" and plan.node(n.sources[0]).kind in synapse_kinds
                       and all(m.kind in ("lif", "li") for m in readers))  # fmt: skip
        into_synapse = n.origin != "loop" and all(m.kind in synapse_kinds for m in readers)
        if not (into_neuron or into_synapse):
            bad.append(f"{n.name} ({'a loop' if n.origin == 'loop' else 'a Delay'} from {n.sources[0]} into "
                       f"{', '.join(m.name for m in readers)}: Loihi delays a synapse's output into a neuron, its "
                       "recurrent connections included, or spikes into a synapse)")  # fmt: skip
    loops = {n.name: n.sources[0] for n in plan.nodes if n.kind == "delay" and n.origin == "loop"}
    bad += [f"{n.name} (a Flatten of part of the sample: the converted graph's Flatten joins the whole sample)"
            for n in plan.nodes if n.kind == "flatten" and len(n.out_shape) > 1]  # fmt: skip
    if bad:
        raise ModelError(f"{where}: cannot become a Loihi integer network: {'; '.join(bad)}")
    dt = float(plan.meta["dt"])
    # every node read through its loops' sources (a loop's synapse last), a current's sources given
    # to its neuron, the delays and currents left out (the graph written states the loop as an edge)
    currents = {n.name.removesuffix(".syn"): n for n in plan.nodes
                if n.origin in ("CubaLIF", "CubaLI") and n.name.endswith(".syn")}  # fmt: skip
    nodes = []
    for n in plan.nodes:
        if n.name in loops or any(n is c for c in currents.values()):
            continue
        srcs = currents[n.name].sources if n.name in currents else n.sources
        srcs = [s for s in srcs if s not in loops] + [loops[s] for s in srcs if s in loops]
        nodes.append(replace(n, sources=srcs))
    consumers: dict[str, list[str]] = {}
    for n in nodes:
        for s in n.sources:
            consumers.setdefault(s, []).append(n.name)
    layers: dict[str, Layer] = {}
    delays = {n.name: n.sources[0] for n in nodes if n.kind == "delay"}
    for n in sorted(nodes, key=lambda n: n.kind in ("lif", "li")):  # synapses first: a neuron folds into its rows
        p = n.params
        if n.kind in ("conv", "conv1d"):  # (Conv1d, dilation and groups: Loihi's 2-D convolution, written out)
            params = {"weight": p["weight"].astype(np.float64), "bias": p["bias"].astype(np.float64),
                      "stride": tuple(p["stride"]), "padding": tuple(p["padding"]), "input_hw": tuple(n.in_shape[1:]),
                      "dilation": tuple(p["dilation"]), "groups": int(p["groups"])}  # fmt: skip
        elif n.kind == "affine":
            params = {"weight": p["weight"].astype(np.float64), "bias": p["bias"].astype(np.float64)}
        elif n.kind in ("sumpool", "avgpool"):
            if any(p["padding"]):
                raise ModelError(f"{where}: pool {n.name} pads its input; conversion takes pools without padding")
            params = {"kernel": tuple(p["kernel"]), "stride": tuple(p["stride"])}
        elif n.kind == "flatten":
            params = {}
        elif n.kind == "delay":
            params = {"steps": np.asarray(p["steps"], dtype=np.int64), "dt": dt}
        else:  # lif, li
            params = _neuron(plan, n, layers, consumers, dt, currents.get(n.name), delays)
        layers[n.name] = Layer(n.name, n.kind, list(n.sources), tuple(n.in_shape), tuple(n.out_shape), params)
    if any(plan.node(o).kind not in ("lif", "li") for o in plan.outputs if o != "input"):
        raise ModelError(f"{where}: the graph output must read LIF (or LI readout) layers to become a Loihi network")
    order = [n.name for n in nodes if n.kind != "delay"]  # a Delay right after its source (the plan has it first)
    for d, src in delays.items():
        order.insert(order.index(src) + 1 if src in order else 0, d)
    return [layers[name] for name in order], list(plan.outputs)


def _neuron(plan: Plan, n, layers: dict[str, Layer], consumers: dict[str, list[str]], dt: float, current=None,
            delays: dict[str, str] | None = None) -> dict:  # fmt: skip
    """The layer parameters of neuron ``n`` (with ``current``: a CubaLIF's or CubaLI's ``.syn`` node), its input
    gains, threshold and leak folded into the synapse rows feeding it."""
    where, p = plan.source, n.params
    dialect = plan.meta.get("dialect")
    if "spike" in p:
        raise ModelError(f"{where}: {n.origin} {n.name} emits several spikes per step, each subtracting its threshold "
                         f"(the {dialect} dialect); Loihi's LIF emits one and resets to 0")  # fmt: skip
    if np.any(p.get("v0", 0.0) != 0):
        raise ModelError(f"{where}: {n.origin} {n.name} starts from its rest value v_leak (the {dialect} dialect); "
                         "Loihi's membrane starts at 0")  # fmt: skip
    beta = np.asarray(p["beta"], dtype=np.float64)
    if np.ptp(beta) != 0:
        raise ModelError(f"{where}: {n.origin} {n.name} has a decay per neuron; Loihi's LIF takes one per layer")
    if n.kind == "lif" and p.get("reset", "value") != "value":
        raise ModelError(f"{where}: {n.origin} {n.name} resets by the {plan.meta.get('dialect')} dialect's {p['reset']} "
                         "rule; Loihi resets to 0 in the step of the spike")  # fmt: skip
    if n.kind == "lif" and np.any(p["v_reset"] != 0):
        raise ModelError(
            f"{where}: {n.origin} {n.name} resets to {float(np.max(np.abs(p['v_reset'])))}; Loihi resets to 0"
        )
    if n.kind == "lif" and np.any(p["v_threshold"] <= 0):
        raise ModelError(f"{where}: {n.origin} {n.name} has a threshold <= 0; Loihi's threshold is positive")
    delays = delays or {}
    # a synapse reaching the neuron through a Delay node (feeding that delay alone, which feeds the neuron)
    syns = [layers.get(delays[s]) if s in delays and consumers.get(s) == [n.name] else layers.get(s) for s in n.sources]
    feeds = [s if s in delays else n.name for s in n.sources]  # what each synapse must feed alone
    if any(s is None or s.kind not in ("conv", "conv1d", "affine") or consumers.get(s.name) != [f]
           for s, f in zip(syns, feeds, strict=True)):  # fmt: skip
        raise ModelError(f"{where}: {n.origin} {n.name} must be fed by Conv2d/Linear layers that feed only it (it reads "
                         f"{', '.join(n.sources)})")  # fmt: skip
    gain = _gain(p)
    theta = np.asarray(p["v_threshold"], dtype=np.float64) if n.kind == "lif" else np.ones_like(gain)
    scale, shift = gain / theta, np.asarray(p["leak"], dtype=np.float64) / theta
    if current is not None:
        beta_syn = np.asarray(current.params["beta"], dtype=np.float64)
        if np.ptp(beta_syn) != 0:
            raise ModelError(
                f"{where}: {n.origin} {n.name} has a current decay per neuron; Loihi's takes one per layer"
            )
        # the current in the membrane's threshold units: W' = g_syn g W / theta; the leak stays a
        # constant added to the membrane (Loihi's bias), apart from the synapse's bias into the current
        scale = scale * _gain(current.params)
    if len(n.out_shape) > 1:  # a convolution's rows are channels (Conv1d's too): one factor per channel
        per_c = scale.reshape(n.out_shape[0], -1)
        if (
            np.ptp(per_c, axis=1).max(initial=0) != 0
            or np.ptp(shift.reshape(n.out_shape[0], -1), axis=1).max(initial=0) != 0
        ):
            raise ModelError(f"{where}: {n.origin} {n.name} varies its gain, threshold or leak inside a channel; a "
                             "convolution's weights are shared across the channel")  # fmt: skip
        scale, shift = per_c[:, 0], shift.reshape(n.out_shape[0], -1)[:, 0]
    # the leak joins the bias of the first synapse that reaches the neuron without a delay (from the first step)
    direct = [i for i, f in enumerate(feeds) if f == n.name]
    if current is None and np.any(shift) and not direct:
        raise ModelError(f"{where}: {n.origin} {n.name} has a leak but every synapse reaches it through a Delay; the "
                         "converted graph adds a leak with a synapse's bias, which would arrive late")  # fmt: skip
    for i, syn in enumerate(syns):
        w = syn.params["weight"]
        syn.params["weight"] = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        syn.params["bias"] = syn.params["bias"] * scale + (
            shift if direct and i == direct[0] and current is None else 0.0
        )
    b = float(beta.flat[0])
    tau = np.inf if b == 1.0 else dt / (1.0 - b)
    out = {"tau": tau, "dt": dt} | ({"v_threshold": 1.0} if n.kind == "lif" else {})
    if current is not None:
        if np.isinf(tau):
            raise ModelError(f"{where}: {n.origin} {n.name}'s membrane does not decay; NIR's {n.origin} needs a finite tau_mem "
                             "to be written back")  # fmt: skip
        b_syn = float(np.asarray(current.params["beta"]).flat[0])
        if not 0.0 <= b_syn < 1.0:
            raise ModelError(f"{where}: {n.origin} {n.name}'s current decays by {b_syn:g} per step; Loihi's current decays "
                             "(0 <= beta < 1)")  # fmt: skip
        out |= {"tau_syn": dt / (1.0 - b_syn), "v_bias": np.asarray(shift, dtype=np.float64)}
    return out


def _gain(p: dict) -> np.ndarray:
    """A neuron piece's input gain as NIR's ``v = beta v + gain I + leak`` states it; a dialect's
    arithmetic is the same update in another order of float32 operations (Norse's: the plan's
    ``beta``, ``gain`` and ``leak`` say it already), except Rockpool's ``(v + I) b``: gain ``b``."""
    return np.asarray(p["b"] if p.get("form") == "rockpool_syn" else p["gain"], dtype=np.float64)
