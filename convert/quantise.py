"""Quantisation of traced layers for deployment.

``float`` precision: weights rounded to ``bits`` with the symmetric power-of-two quantiser that
QAT uses (:mod:`train.quant`), stored as ``q * scale`` (exact in float32); biases are rounded to
the same grid; thresholds and state stay float.

``fixed`` precision: the Loihi-2-compatible integer network of :mod:`core.fixed`. Per synaptic
layer ``L`` feeding LIF layer ``N`` (threshold ``theta``): a weight exponent ``e``, an integer
threshold ``vth`` and a float scale ``S`` (one mantissa unit, 16 significant bits) with
``W ~ m * S``, ``|m| <= 127`` and ``theta ~ vth * S / 2**(e+1)``; the bias becomes
``bias_mant << bias_exp`` in the integer membrane units, with ``bias_exp`` at least ``min_bias_exp``
(lava-dl netx runs every bias with ``bias_exp = 6``: a graph meant to be written as netx is built
with ``min_bias_exp = 6`` so that its biases are multiples of 64 and the file holds them exactly);
``dv = round(4096 (1 - beta))``.
The graph stores the float equivalents (``m * S``, ``vth * S / 2**(e+1)``) so that a float reader
approximates the integer network, and the integers' scales and exponents in metadata.

An LI readout ``N`` (no threshold) is the integer LIF whose current decays fully (``du = 4095``),
with ``dv`` from its ``beta`` and a threshold no membrane can reach. Its scale uses all 8 mantissa
bits (``S = max|W| / 127``); its weight exponent is the largest ``e <= 0`` for which a worst-case
bound, over every input the layers below can produce (spikes are 0 or 1, sum pools add at most
their area, the graph input is bounded by the calibration data), keeps the synaptic input within
Lava's 16-bit messages and the membrane at or below ``vth_max << 6 = 2**23 - 64`` at every step,
however long it runs (``|v| <= max|u| * 4096 / dv``; behind a CubaLI's current ``|u|`` is at most
``|a << 6| * 4096 / (du + 1)`` plus the bias, and that current must stay below its wrap-around at
``2**23``): then it never saturates and Loihi's largest
threshold ``vth = 2**17 - 1`` is never crossed, so the LIF never spikes. Exponents up to ``-1`` lose
nothing (the weights are stored doubled); when no exponent down to ``-8`` fits, conversion refuses
and names the layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from convert.trace import Layer
from core import fixed
from core.errors import ModelError
from train.quant import quantise


@dataclass
class FixedChoice:
    """What fixed-precision conversion chose for one synapse + LIF (or LI) pair (reported per layer)."""

    synapse: str
    lif: str  # the neuron layer (a LIF, or an LI readout)
    weight_exp: int
    vth: int
    weight_scale: float
    dv: int
    bias_exp: int
    max_mantissa: int
    neuron: str = "lif"  # "lif" or "li"
    du: int = fixed.DU_FULL  # the current's decay (Lava's du; 4095: none kept), a CubaLIF's or CubaLI's own
    v_bound: int = 0  # LI: proven bound on |v| (integer membrane units), at every step
    a_bound: int = 0  # LI: proven bound on the synaptic input |a|


def _check_finite(layer: Layer) -> None:
    for key in ("weight", "bias"):
        arr = layer.params.get(key)
        if arr is not None and not np.isfinite(arr).all():
            idx = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise ModelError(f"layer {layer.name}: {key} holds a NaN or infinite value (first at index {idx})")


LOST_FRACTION_LIMIT = 0.9  # more weights than this rounding to zero: the range does not fit the bits


def check_range(name: str, w: np.ndarray, wq: np.ndarray, bits: int) -> None:
    """A weight range the bits cannot hold: most non-zero weights would round to zero."""
    nonzero = w != 0
    lost = float((nonzero & (wq == 0)).sum() / max(nonzero.sum(), 1))
    if lost > LOST_FRACTION_LIMIT:
        raise ModelError(
            f"layer {name}: the weight range ({np.abs(w).max():.3g} down to {np.abs(w[nonzero]).min():.3g}) cannot be "
            f"represented in {bits} bits: {100 * lost:.0f}% of the non-zero weights would round to zero"
        )


def quantise_float(layers: list[Layer], bits: int | None, per_channel: bool) -> None:
    """Round every synaptic layer's weights in place (``bits=None``: keep float32 weights)."""
    for layer in layers:
        if layer.kind not in ("conv", "conv1d", "affine"):
            continue
        _check_finite(layer)
        w = layer.params["weight"]
        if bits is None:
            layer.params["weight"] = w.astype(np.float32)
        else:
            q, scale = quantise(torch.from_numpy(w).float(), bits, per_channel, name=f"{layer.name}.weight")
            layer.params["weight"] = (q.float() * scale).numpy()
            check_range(layer.name, w, layer.params["weight"], bits)
            # The bias goes onto the same power-of-two grid, so that every partial sum of the
            # layer, bias included and in any order, is exact in float32.
            s = scale.flatten().double().numpy()
            layer.params["bias"] = np.rint(layer.params["bias"] / s) * s
            layer.params["quant"] = {
                "bits": bits,
                "axis": 0 if per_channel else None,
                "scale": scale.flatten().tolist(),
            }
        layer.params["bias"] = layer.params["bias"].astype(np.float32)


def _synapse_lif_pairs(layers: list[Layer]) -> list[tuple[list[Layer], Layer]]:
    """Each LIF/LI layer with the Conv2d/Linear layers that feed it (an LI readout: exactly one; a LIF
    may also read a loop's synapse, listed last)."""
    by_name = {layer.name: layer for layer in layers}
    pairs = []
    for layer in layers:
        if layer.kind not in ("lif", "li"):
            continue
        # (a synapse may reach it through a Delay: the delayed ones come after the direct ones)
        srcs = [s for s in layer.sources if _kind(by_name, s) != "delay"]
        srcs += [by_name[s].sources[0] for s in layer.sources if _kind(by_name, s) == "delay"]
        syns = [by_name.get(s) for s in srcs]
        if (
            not syns
            or any(s is None or s.kind not in ("conv", "conv1d", "affine") for s in syns)
            or (layer.kind == "li" and len(syns) != 1)
        ):
            raise ModelError(
                f"fixed precision needs every LIF layer to be fed by Conv2d or Linear layers and every LI layer by "
                f"exactly one; {layer.name} is fed by {layer.sources}"
            )
        pairs.append((syns, layer))
    return pairs


def _kind(by_name: dict[str, Layer], name: str) -> str | None:
    return by_name[name].kind if name in by_name else None


def _fold_average_pools(layers: list[Layer]) -> None:
    """Integer networks carry spike counts: an average pool becomes a sum pool and its
    ``1/(kh*kw)`` moves into the synaptic layer it feeds (through a flatten if there is one)."""
    consumers: dict[str, list[Layer]] = {}
    for layer in layers:
        for s in layer.sources:
            consumers.setdefault(s, []).append(layer)
    for layer in layers:
        if layer.kind != "avgpool":
            continue
        k = layer.params["kernel"][0] * layer.params["kernel"][1]
        nxt = consumers.get(layer.name, [])
        if len(nxt) == 1 and nxt[0].kind == "flatten":
            nxt = consumers.get(nxt[0].name, [])
        if len(nxt) != 1 or nxt[0].kind not in ("conv", "affine") or len(nxt[0].sources) != 1:
            raise ModelError(
                f"fixed precision: average pool {layer.name} must feed exactly one Conv2d/Linear to be folded"
            )
        nxt[0].params["weight"] = nxt[0].params["weight"] / k
        layer.kind = "sumpool"


def choose_fixed(
    syns: list[Layer], lif: Layer, weight_exp: int | None = None, vth_cap: int = fixed.VTH_MAX
) -> FixedChoice:
    """Exponent, threshold and scale for one LIF and its synapses (one unit for all of them: their
    sums add in the membrane): the largest integer threshold that keeps every mantissa within 8
    bits, starting from the smallest exponent that gives ``vth >= 256``."""
    for s in syns:
        _check_finite(s)
    names = "+".join(s.name for s in syns)
    theta = float(lif.params["v_threshold"])
    ratio = max(float(np.abs(s.params["weight"]).max()) for s in syns) / theta
    if ratio == 0:
        raise ModelError(f"layer {names}: all weights are zero; the LIF layer {lif.name} can never fire")
    e = weight_exp
    if e is None:
        e = 0
        while e < 7 and math.floor(2 * fixed.MANT_MAX * 2**e / ratio) < 256:
            e += 1
    vth = min(math.floor(2 * fixed.MANT_MAX * 2**e / ratio), vth_cap)
    if vth < 1:
        raise ModelError(
            f"layer {names}: weights up to {ratio:.3g} x the threshold of {lif.name} cannot be represented "
            f"with 8-bit mantissas (needs an integer threshold below 1)"
        )
    scale = fixed.round_mantissa(theta * 2 ** (e + 1) / vth)
    m_max = max(np.abs(np.rint(s.params["weight"] / scale)).max() for s in syns)
    if m_max > fixed.MANT_MAX:  # scale rounding can push one mantissa to 128
        scale = fixed.round_mantissa(scale * (1 + 2**-15))
        m_max = min(max(np.abs(np.rint(s.params["weight"] / scale)).max() for s in syns), fixed.MANT_MAX)
    beta = 1.0 - lif.params["dt"] / lif.params["tau"]
    return FixedChoice(names, lif.name, e, vth, scale, fixed.decay_from_beta(beta), 0, int(m_max))


LI_EXP_RANGE = range(0, -9, -1)  # weight exponents tried for an LI readout, largest first
LI_V_LIMIT = fixed.VTH_MAX << fixed.VTH_SHIFT  # 2**23 - 64: at or below, Loihi's largest threshold is never crossed


def _bias_integers(syn: Layer, c: FixedChoice, min_bias_exp: int) -> tuple[np.ndarray, int]:
    """The bias as ``(mantissas, exponent)`` in integer membrane units: the smallest exponent from
    ``min_bias_exp`` up that holds it in a 13-bit mantissa."""
    unit = c.weight_scale / (2 ** (c.weight_exp + 1) * 2**fixed.ACT_SHIFT)  # float value of one membrane unit
    b_int = np.rint(syn.params["bias"] / unit)
    bias_exp = min_bias_exp
    while np.abs(b_int).max(initial=0) / 2**bias_exp > fixed.BIAS_MANT_MAX and bias_exp < fixed.BIAS_EXP_MAX:
        bias_exp += 1
    return np.clip(np.rint(b_int / 2**bias_exp), -fixed.BIAS_MANT_MAX, fixed.BIAS_MANT_MAX), bias_exp


def li_input_bounds(syn: Layer, in_lo: float, in_hi: float, m: np.ndarray, e: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output neuron, the least and greatest synaptic input ``a = shift(sum 2m x, e)`` over every
    input with each element in ``[in_lo, in_hi]`` (padding zeros included for a convolution)."""
    w = 2 * m.reshape(m.shape[0], -1).astype(np.int64)  # stored doubled, as Lava's mixed-sign synapses
    lo, hi = (min(in_lo, 0.0), max(in_hi, 0.0)) if syn.kind in ("conv", "conv1d") else (in_lo, in_hi)
    a_hi = np.maximum(w * lo, w * hi).sum(axis=1)
    a_lo = np.minimum(w * lo, w * hi).sum(axis=1)
    return fixed.shift(np.floor(a_lo).astype(np.int64), e), fixed.shift(np.ceil(a_hi).astype(np.int64), e)


def choose_fixed_li(syn: Layer, li: Layer, in_lo: float, in_hi: float, min_bias_exp: int = 0) -> FixedChoice:
    """Scale, exponent and decay of an LI readout, such that its membrane provably never saturates
    and never reaches Loihi's largest threshold (module docstring); else a :class:`ModelError`."""
    _check_finite(syn)
    w_max = float(np.abs(syn.params["weight"]).max())
    if w_max == 0:
        raise ModelError(f"layer {syn.name}: all weights are zero; the LI readout {li.name} would read a constant")
    beta = 1.0 - li.params["dt"] / li.params["tau"]
    dv = fixed.decay_from_beta(beta)
    du = current_decay(li) if "tau_syn" in li.params else fixed.DU_FULL  # a CubaLI's current
    if dv == 0:
        raise ModelError(f"LI layer {li.name}: beta {beta:g} rounds to no decay (dv = 0) in 12 bits; its membrane "
                         "would grow without bound on Loihi. Use a shorter tau")  # fmt: skip
    scale = fixed.round_mantissa(w_max / fixed.MANT_MAX)
    m = np.rint(syn.params["weight"] / scale)
    if np.abs(m).max() > fixed.MANT_MAX:
        scale = fixed.round_mantissa(scale * (1 + 2**-15))
        m = np.clip(np.rint(syn.params["weight"] / scale), -fixed.MANT_MAX, fixed.MANT_MAX)
    tried = []
    for e in LI_EXP_RANGE:
        c = FixedChoice(syn.name, li.name, e, fixed.VTH_MAX, scale, dv, 0, int(np.abs(m).max()), neuron="li", du=du)
        a_lo, a_hi = li_input_bounds(syn, in_lo, in_hi, m, e)
        mant, bias_exp = _bias_integers(syn, c, min_bias_exp)
        b = (mant.astype(np.int64) << bias_exp).reshape(-1)
        per_ch = len(b)
        a_lo, a_hi = a_lo.reshape(per_ch, -1), a_hi.reshape(per_ch, -1)
        if du != fixed.DU_FULL:  # the current sums its inputs, decayed: |u| <= |a << 6| * 4096 / (du + 1)
            cur = -(-(np.maximum(np.abs(a_lo), np.abs(a_hi)) << fixed.ACT_SHIFT) * fixed.DECAY_UNITY // (du + 1))
            if cur.max(initial=0) >= fixed.U_WRAP:
                tried.append(f"e={e}: |current| <= {int(cur.max())}, which wraps around at 2**23")
                continue
            u_hi, u_lo = cur + b[:, None], -cur + b[:, None]
        else:
            u_hi = (a_hi << fixed.ACT_SHIFT) + b[:, None]
            u_lo = (a_lo << fixed.ACT_SHIFT) + b[:, None]
        u_max = int(max(np.maximum(u_hi, 0).max(), np.maximum(-u_lo, 0).max()))
        v_bound = -(-u_max * fixed.DECAY_UNITY // dv)  # |v| <= |u|max * (1 + keep/4096 + ...) <= |u|max * 4096/dv
        a_bound = int(max(np.abs(a_lo).max(), np.abs(a_hi).max()))
        tried.append(f"e={e}: |a| <= {a_bound}, |v| <= {v_bound}")
        if a_bound <= fixed.A_MAX and v_bound <= LI_V_LIMIT:
            c.v_bound, c.a_bound, c.bias_exp = int(v_bound), a_bound, bias_exp
            return c
    raise ModelError(
        f"fixed precision: LI readout {li.name} cannot be kept below saturation: with the 8-bit weights of {syn.name} "
        f"and inputs in [{in_lo:g}, {in_hi:g}] its membrane could exceed {LI_V_LIMIT} (Loihi's largest threshold, "
        f"where its LIF would spike) or its input Lava's 16-bit messages for every weight exponent down to "
        f"{LI_EXP_RANGE[-1]} ({tried[-1]})"
    )


def apply_fixed(syns: list[Layer], lif: Layer, c: FixedChoice, min_bias_exp: int = 0) -> None:
    """Write the integer parameters of ``c`` into the LIF and its synapses (and their float
    equivalents); the bias (the first synapse's: :func:`prepare_fixed` gathered it there) gets the
    smallest exponent from ``min_bias_exp`` up that holds it in a 13-bit mantissa."""
    if not 0 <= min_bias_exp <= fixed.BIAS_EXP_MAX:
        raise ModelError(f"min_bias_exp must be in 0..{fixed.BIAS_EXP_MAX}, got {min_bias_exp}")
    unit = c.weight_scale / (2 ** (c.weight_exp + 1) * 2**fixed.ACT_SHIFT)  # float value of one membrane unit
    for i, s in enumerate(syns):
        m = np.clip(np.rint(s.params["weight"] / c.weight_scale), -fixed.MANT_MAX, fixed.MANT_MAX)
        check_range(s.name, s.params["weight"], m, 8)
        bias_mant, bias_exp = _bias_integers(s, c, min_bias_exp) if i == 0 else (np.zeros(len(s.params["bias"])), 0)
        s.params["weight"] = (m.astype(np.float32) * np.float32(c.weight_scale)).astype(np.float32)
        s.params["bias"] = (bias_mant * 2**bias_exp * unit).astype(np.float32)
        s.params["fixed"] = {"weight_exp": c.weight_exp, "weight_scale": c.weight_scale,
                             "bias_mant": bias_mant.astype(int).tolist(), "bias_exp": bias_exp}  # fmt: skip
    syn = syns[0]
    bias_exp = c.bias_exp = syn.params["fixed"]["bias_exp"]
    if c.neuron == "li":  # no threshold in the graph: the LIF that runs it on Loihi has one it never reaches
        lif.params["fixed"] = {"dv": c.dv, "du": fixed.DU_FULL, "vth": c.vth, "v_bound": c.v_bound,
                               "a_bound": c.a_bound, "v_unit": unit}  # fmt: skip
    else:
        theta_eq = c.vth * c.weight_scale / 2 ** (c.weight_exp + 1)
        lif.params["v_threshold"] = theta_eq
        lif.params["fixed"] = {"vth": c.vth, "dv": c.dv, "du": fixed.DU_FULL}
    if "tau_syn" in lif.params:  # Loihi's bias belongs to the membrane: the neuron states it, the synapse adds none
        du = c.du = current_decay(lif)
        lif.params["fixed"] |= {"du": du, "bias_mant": syn.params["fixed"]["bias_mant"], "bias_exp": bias_exp}
        lif.params["v_bias"] = syn.params["bias"].astype(np.float64)
        lif.params["tau_syn"] = lif.params["dt"] * fixed.DECAY_UNITY / (du + 1)  # the float graph's: Loihi's decay
        syn.params["fixed"]["bias_mant"] = [0] * len(syn.params["fixed"]["bias_mant"])
        syn.params["bias"] = np.zeros_like(syn.params["bias"])


def value_bounds(layers: list[Layer], input_lo: float, input_hi: float) -> dict[str, tuple[float, float]]:
    """Per layer, the least and greatest value it can pass on in the integer network, for the
    values that synaptic layers read: spikes are 0 or 1, sum pools add their area, flatten keeps,
    residual sums add; the graph input is ``[input_lo, input_hi]``. (Synapses and LI membranes
    are not bounded here: the integer network never feeds them to another synapse directly.)"""
    bounds: dict[str, tuple[float, float]] = {"input": (input_lo, input_hi)}
    for layer in layers:
        srcs = [bounds.get(s, (-np.inf, np.inf)) for s in layer.sources]
        lo, hi = sum(b[0] for b in srcs), sum(b[1] for b in srcs)
        if layer.kind == "lif":
            bounds[layer.name] = (0.0, 1.0)
        elif layer.kind == "delay":  # what its source passed on earlier, zero before
            bounds[layer.name] = (min(lo, 0.0), max(hi, 0.0))
        elif layer.kind in ("sumpool", "avgpool"):
            k = layer.params["kernel"][0] * layer.params["kernel"][1]
            bounds[layer.name] = (min(lo, 0.0) * k, max(hi, 0.0) * k)  # (padding adds zeros)
        elif layer.kind == "flatten":
            bounds[layer.name] = (lo, hi)
        else:
            bounds[layer.name] = (-np.inf, np.inf)
    return bounds


def prepare_fixed(layers: list[Layer]) -> list[tuple[list[Layer], Layer]]:
    """Fold average pools and return the (synapses, LIF/LI) pairs that fixed precision quantises.

    A LIF read by a loop (a recurrent synapse, listed last) takes that synapse's bias into the first
    synapse's: Loihi adds it from the first step, where the float graph's loop delivers nothing yet
    (the parity check measures that step).

    A current-based LIF (``tau_syn``) adds its bias to the membrane on Loihi, not to the current: the
    synapse's bias ``b`` into the current becomes the constant the current settles to,
    ``b / (1 - beta_syn)``, added to the membrane with the layer's own ``v_bias``. That is exact once
    the current has settled (a few ``tau_syn``); in the first steps the integer membrane gets the
    bias's full value where the float one gets its rising part (the parity check measures it)."""
    _fold_average_pools(layers)
    pairs = _synapse_lif_pairs(layers)
    by_name = {layer.name: layer for layer in layers}
    for syns, lif in pairs:
        if all(_kind(by_name, s) == "delay" for s in lif.sources) and any(np.any(s.params["bias"]) for s in syns):
            raise ModelError(f"fixed precision: {syns[0].name} adds a bias to {lif.name} through a Delay, and no synapse "
                             "reaches it directly; Loihi adds a neuron's bias from the first step")  # fmt: skip
        for s in syns[1:]:  # Loihi adds one bias per neuron, from the first step: a loop's or a delayed
            # synapse's bias (absent at the first steps in the float graph) joins the first synapse's
            if np.any(s.params["bias"]):
                if s.params["bias"].shape != syns[0].params["bias"].shape:
                    raise ModelError(f"fixed precision: {s.name} and {syns[0].name} both add a bias to {lif.name}, per "
                                     "channel and per neuron: Loihi adds one bias per neuron")  # fmt: skip
                syns[0].params["bias"] = syns[0].params["bias"] + s.params["bias"]
                s.params["bias"] = np.zeros_like(s.params["bias"])
        if "tau_syn" in lif.params:
            beta_syn = 1.0 - lif.params["dt"] / lif.params["tau_syn"]
            syns[0].params["bias"] = syns[0].params["bias"] / (1.0 - beta_syn) + lif.params.pop("v_bias", 0.0)
    return pairs


def current_decay(lif: Layer) -> int:
    """Lava's 12-bit ``du`` of a current-based LIF: its decay constant ``du + 1`` is
    ``round(4096 (1 - beta_syn))``, at least 1 (a current Loihi decays by at least 1/4096 per step)."""
    return max(fixed.decay_from_beta(1.0 - lif.params["dt"] / lif.params["tau_syn"]) - 1, 0)
