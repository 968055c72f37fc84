r"""Loihi-2-compatible fixed-point arithmetic, as Lava's bit-accurate ``fixed_pt`` process models
compute it (lava-nc ``lava/proc/{lif,dense,conv}/models.py`` is the specification).

Per layer, with integer weight mantissas ``w`` (stored doubled, as Lava's mixed-sign truncation
keeps only even 9-bit weights), weight exponent ``e`` and integer input counts ``x``:

.. math::
    a = \mathrm{shift}(\textstyle\sum w\,x,\ e), \qquad
    u = a \ll 6 \quad (du = 4095: \text{the current decays fully}), \\
    v = \mathrm{trunc}\big(v\,(4096 - dv) / 4096\big) + u + b, \qquad
    s = v > (v_{th} \ll 6), \qquad v \leftarrow 0 \text{ where } s

with ``shift`` a left shift for ``e >= 0`` and an arithmetic right shift (toward minus infinity)
otherwise, ``trunc`` rounding toward zero, ``v`` saturating at :math:`\pm(2^{23}-1)` and the bias
``b = bias_mant << bias_exp``.

A current-based neuron (NIR's ``CubaLIF``) keeps its current: with Lava's 12-bit ``du`` (its decay
constant is ``du + 1``: ``du = 4095`` is the full decay above),

.. math::
    u = \mathrm{wrap}\big(\mathrm{trunc}(u\,(4095 - du) / 4096) + (a \ll 6)\big), \qquad
    v = \mathrm{trunc}\big(v\,(4096 - dv) / 4096\big) + u + b

where ``wrap`` is Lava's 24-bit wrap-around of the current (a sum above :math:`2^{23}` loses
:math:`2^{24}`, one at or below :math:`-2^{23}` gains it). The bias enters the membrane, never the
current. These functions are the one implementation every integer target and the converter's
calibration share.
"""

from __future__ import annotations

import math

import numpy as np

DECAY_UNITY = 4096  # 12-bit decays: v * (4096 - dv) / 4096
DECAY_SHIFT = 12
ACT_SHIFT = 6  # synaptic input is MSB-aligned by 6 bits before it enters u
VTH_SHIFT = 6  # so is the threshold
STATE_BITS = 24
V_MAX = 2 ** (STATE_BITS - 1) - 1
U_WRAP = 2 ** (STATE_BITS - 1)  # a current wraps around beyond it (Lava's max_uv_val)
A_MAX = 2**15 - 1  # Dense/Conv a_out is a 16-bit message
MANT_MAX = 127  # weight mantissa magnitude (8-bit signed, symmetric)
VTH_MAX = 2**17 - 1  # 17-bit unsigned threshold
BIAS_MANT_MAX = 4095  # 13-bit signed bias mantissa
BIAS_EXP_MAX = 7
DU_FULL = 4095  # the current decays fully (decay constant du + 1 = 4096)


def shift(a: np.ndarray, e: int) -> np.ndarray:
    """``a << e`` for ``e >= 0``, arithmetic ``a >> -e`` otherwise (int64)."""
    a = np.asarray(a, dtype=np.int64)
    return np.left_shift(a, e) if e >= 0 else np.right_shift(a, -e)


def decay(v: np.ndarray, d: int) -> np.ndarray:
    """``trunc(v * (4096 - d) / 4096)``: rounds toward zero, like Lava's sign * (|x| >> 12)."""
    prod = np.asarray(v, dtype=np.int64) * (DECAY_UNITY - d)
    return np.sign(prod) * np.right_shift(np.abs(prod), DECAY_SHIFT)


def wrap_current(u: np.ndarray) -> np.ndarray:
    """Lava's 24-bit wrap-around of a current ``u`` (int64): above ``2**23`` it loses ``2**24``, at
    or below ``-2**23`` it gains it (once: its sum of a decayed current and one input cannot go
    further)."""
    u = np.asarray(u, dtype=np.int64)
    return np.where(u > U_WRAP, u - 2 * U_WRAP, np.where(u <= -U_WRAP, u + 2 * U_WRAP, u))


def current_step(u: np.ndarray, a: np.ndarray, du: int) -> np.ndarray:
    """One step of a current-based neuron's current: ``wrap(trunc(u (4095 - du) / 4096) + (a << 6))``."""
    return wrap_current(decay(u, du + 1) + np.left_shift(np.asarray(a, dtype=np.int64), ACT_SHIFT))


def membrane_step(
    v: np.ndarray, a: np.ndarray, dv: int, bias: np.ndarray | int = 0, current: bool = False
) -> np.ndarray:
    """The integer membrane after one step, before any spike (an LI layer's is its output):
    ``clip(trunc(v (4096 - dv) / 4096) + u + b)``, ``u`` the synaptic input ``a << 6`` (the current
    decays fully), or with ``current`` the neuron's current ``a`` itself (:func:`current_step`)."""
    u = np.asarray(a, dtype=np.int64) if current else np.left_shift(np.asarray(a, dtype=np.int64), ACT_SHIFT)
    return np.clip(decay(v, dv) + u + bias, -V_MAX, V_MAX)


def lif_fixed_step(
    v: np.ndarray, a: np.ndarray, dv: int, vth: int, bias: np.ndarray | int = 0, current: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One step of the integer LIF: returns ``(spikes bool, new v int64)``; the membrane is
    :func:`membrane_step`'s."""
    v = membrane_step(v, a, dv, bias, current)
    s = v > (vth << VTH_SHIFT)
    return s, np.where(s, 0, v)


def decay_from_beta(beta: float) -> int:
    """12-bit ``dv`` for a float decay ``beta``: ``round(4096 * (1 - beta))``."""
    return int(min(max(round(DECAY_UNITY * (1.0 - beta)), 0), DECAY_UNITY - 1))


def round_mantissa(x: float, bits: int = 16) -> float:
    """``x`` rounded to ``bits`` significant bits, so that ``int8 * x`` is exact in float32."""
    if x == 0 or not math.isfinite(x):
        return x
    m, ex = math.frexp(x)
    return math.ldexp(round(m * 2**bits) / 2**bits, ex)
