"""The weight quantiser shared by quantisation-aware training and conversion.

Symmetric, round-to-nearest (ties to even, as ``torch.round``), zero-point 0:
``q = clamp(round(w / scale), -qmax, qmax)`` with ``qmax = 2**(bits-1) - 1`` and
``scale`` the smallest power of two with ``max|w| / scale <= qmax``, per output channel (dim 0) or
per layer. Power-of-two scales make every partial sum of ``q * scale * spikes`` exact in float32,
so float-precision targets agree bit for bit whatever order they add in. The dequantised weight
``q * scale`` is what the deployed graph stores, so training with :func:`fake_quantise` sees
exactly the weights that conversion will write.
"""

from __future__ import annotations

import torch

from core.errors import ModelError


def _check_bits(bits: int) -> int:
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ModelError(f"weight bits must be an integer in 2..16, got {bits!r}")
    return 2 ** (bits - 1) - 1


def weight_scale(w: torch.Tensor, bits: int, per_channel: bool, name: str = "weight") -> torch.Tensor:
    """Scale(s) of the symmetric quantiser, shaped to broadcast against ``w``."""
    qmax = _check_bits(bits)
    w = w.detach()
    if not torch.isfinite(w).all():
        bad = (~torch.isfinite(w)).nonzero()[0].tolist()
        raise ModelError(f"{name} holds a NaN or infinite value (first at index {bad}); cannot quantise")
    if per_channel and w.dim() > 1:
        amax = w.abs().flatten(1).amax(dim=1).view(-1, *([1] * (w.dim() - 1)))
    else:
        amax = w.abs().amax()
    # An all-zero channel keeps scale 1 so that it quantises to exact zeros instead of dividing by 0.
    ratio = torch.where(amax > 0, amax.double() / qmax, torch.ones_like(amax, dtype=torch.float64))
    return torch.exp2(torch.ceil(torch.log2(ratio))).to(w.dtype)


def quantise(w: torch.Tensor, bits: int, per_channel: bool, name: str = "weight") -> tuple[torch.Tensor, torch.Tensor]:
    """Integer weights (int32) and scale(s) with ``q * scale`` the dequantised weight."""
    qmax = _check_bits(bits)
    scale = weight_scale(w, bits, per_channel, name)
    q = torch.clamp(torch.round(w.detach() / scale), -qmax, qmax).to(torch.int32)
    return q, scale


def fake_quantise(w: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """``q * scale`` in the forward pass, identity gradient (straight-through estimator)."""
    q, scale = quantise(w, bits, per_channel)
    wq = q.to(w.dtype) * scale.to(w.dtype)
    return w + (wq - w).detach()
