"""Deterministic image encoders: an image becomes ``steps`` time-first input frames.

Both encoders take images of any shape (typically ``(N, C, H, W)`` or one ``(C, H, W)``) and
return ``(steps, *images.shape)`` float32, as a numpy array for a numpy input and a torch tensor
for a torch input. Nothing here is random, so training and deployment see the same spikes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from core.errors import ConfigError, DataError
from inputs.events import _from_dict

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")


def encode_regular(images: Array, steps: int) -> Array:
    """Binary spikes from a per-pixel integrate-and-fire accumulator (rate code, no randomness).

    Each pixel value ``x`` in [0, 1] is added to an accumulator every step; the pixel spikes when
    the accumulator reaches 1, which then drops by 1::

        acc = 0.5;  for t in 0..steps-1:  acc += x;  s[t] = acc >= 1;  acc -= s[t]

    The accumulator starts at 0.5 (not 0) so that a pixel fires about half a period earlier: a
    mid-grey pixel (0.5) spikes at step 0 instead of step 1, and even short windows (few steps)
    carry every pixel of value >= 0.5 / steps at least once. Over ``steps`` steps a pixel fires
    ``floor(0.5 + steps * x)`` times, the rounded ideal rate.

    The loop above is computed in closed form, ``s[t] = floor(0.5 + (t+1) x) - floor(0.5 + t x)``
    in float64, which equals it exactly in real arithmetic and does not accumulate rounding error
    over long windows. Values outside [0, 1] or NaN raise :class:`DataError`.
    """
    _check_steps(steps)
    is_torch = isinstance(images, torch.Tensor)
    x = images.detach().cpu().double().numpy() if is_torch else np.asarray(images, dtype=np.float64)
    if x.size and not (np.all(x >= 0.0) and np.all(x <= 1.0)):  # also rejects NaN
        bad = x[~((x >= 0.0) & (x <= 1.0))].ravel()[0]
        raise DataError(f"encode_regular needs pixel values in [0, 1]; found {bad!r} (min {x.min()}, max {x.max()})")
    t = np.arange(steps + 1, dtype=np.float64).reshape((steps + 1,) + (1,) * x.ndim)
    fired = np.floor(0.5 + t * x)  # spikes fired by the end of step t-1
    spikes = np.diff(fired, axis=0).astype(np.float32)
    if is_torch:
        return torch.from_numpy(spikes).to(images.device)
    return spikes


def encode_direct(images: Array, steps: int) -> Array:
    """Repeat the analog image every step (the first layer sees the pixel values as currents)."""
    _check_steps(steps)
    if isinstance(images, torch.Tensor):
        return images.float().unsqueeze(0).expand(steps, *images.shape).contiguous()
    x = np.asarray(images, dtype=np.float32)
    return np.ascontiguousarray(np.broadcast_to(x, (steps,) + x.shape))


ENCODERS: dict[str, Callable[[Any, int], Any]] = {
    "regular": encode_regular,
    "direct": encode_direct,
}


@dataclass(frozen=True)
class Encoder:
    """A named encoder with its number of steps; call it on images to get time-first frames."""

    name: str  # a key of ENCODERS
    steps: int  # number of time steps T

    def __post_init__(self) -> None:
        if self.name not in ENCODERS:
            raise ConfigError(f"unknown encoder {self.name!r}; known: {', '.join(ENCODERS)}")
        _check_steps(self.steps)

    def __call__(self, images: Array) -> Array:
        """Encode ``images`` (any shape) into ``(steps, *images.shape)`` float32."""
        return ENCODERS[self.name](images, self.steps)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; :meth:`from_dict` rebuilds the same encoder."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Encoder:
        """Rebuild from :meth:`to_dict` output; unknown keys raise :class:`ConfigError`."""
        return _from_dict(cls, data)
