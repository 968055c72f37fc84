r"""Event augmentation on time-first input batches ``(T, B, C, H, W)``, applied once per training
step *before* the batch reaches the teacher and the student, so that both see the same view
(the teacher sees its time average) and the distillation terms compare them on inputs the teacher
may be unsure about.

Every operation keeps integer event counts integer and binary frames binary (except ``stretch``
on count frames, which repeats bins), so the augmented input is still something a sensor could
have produced:

- ``shift``: each sample moves by ``(dx, dy)`` whole pixels drawn uniformly from
  ``[-shift, shift]``; what leaves the frame is lost, what enters is empty (no events).
- ``drop``: each event is dropped independently with probability ``drop`` (a binary frame
  loses the pixel's spike, a count frame is thinned binomially).
- ``stretch``: each sample's time axis is scaled by ``f`` drawn uniformly from
  ``[1 - stretch, 1 + stretch]``: output bin ``t`` shows input bin ``floor(t / f)`` (empty when
  that lies beyond the window), i.e. the recording played slower or faster.
- ``erase``: with probability ``erase`` a rectangle of up to half the height and width is
  emptied over the whole window (occlusion, a dead sensor region).

All randomness comes from the generator passed in, so a resumed run sees the same views.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from core.errors import ConfigError


@dataclass(frozen=True)
class Augment:
    shift: int = 0  # largest shift, pixels
    drop: float = 0.0  # probability of dropping one event
    stretch: float = 0.0  # largest relative change of the time scale
    erase: float = 0.0  # probability of erasing one rectangle per sample

    def __post_init__(self) -> None:
        if not isinstance(self.shift, int) or self.shift < 0:
            raise ConfigError(f"aug_shift must be an integer >= 0, got {self.shift!r}")
        for name, closed in (("drop", False), ("stretch", False), ("erase", True)):
            v = getattr(self, name)
            if not (0.0 <= v <= 1.0 if closed else 0.0 <= v < 1.0):
                raise ConfigError(f"aug_{name} must lie in [0, 1{']' if closed else ')'}, got {v!r}")

    @property
    def active(self) -> bool:
        return bool(self.shift or self.drop or self.stretch or self.erase)

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """An augmented copy of ``x`` ``(T, B, ...)``; spatial operations need ``(T, B, C, H, W)``."""
        if not self.active:
            return x
        image = x.dim() == 5
        if self.stretch:
            x = stretch_time(x, self.stretch, generator)
        if self.shift and image:
            x = shift_space(x, self.shift, generator)
        if self.erase and image:
            x = erase_rectangle(x, self.erase, generator)
        if self.drop:
            x = drop_events(x, self.drop, generator)
        return x


def _uniform(shape, generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device)


def shift_space(x: torch.Tensor, shift: int, generator: torch.Generator | None) -> torch.Tensor:
    T, B, C, H, W = x.shape
    d = x.device
    offsets = torch.randint(0, 2 * shift + 1, (2, B), generator=generator, device=d)  # into the padded frame
    padded = torch.nn.functional.pad(x, (shift, shift, shift, shift))
    rows = offsets[0][:, None] + torch.arange(H, device=d)  # (B, H)
    cols = offsets[1][:, None] + torch.arange(W, device=d)  # (B, W)
    b = torch.arange(B, device=d)[:, None, None, None]
    c = torch.arange(C, device=d)[None, :, None, None]
    return padded[:, b, c, rows[:, None, :, None], cols[:, None, None, :]]


def drop_events(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    if bool((x > 1).any()) or bool((x < 0).any()):
        counts = x.clamp_min(0)
        return torch.binomial(counts, torch.full_like(counts, 1.0 - p), generator=generator) * torch.sign(x)
    return x * (_uniform(x.shape, generator, x.device) >= p)


def stretch_time(x: torch.Tensor, stretch: float, generator: torch.Generator | None) -> torch.Tensor:
    T, B = x.shape[:2]
    d = x.device
    factor = 1.0 + stretch * (2 * _uniform((B,), generator, d) - 1)  # (B,)
    src = torch.floor(torch.arange(T, device=d, dtype=torch.float64)[:, None] / factor.double()).long()  # (T, B)
    valid = src < T
    out = x[src.clamp_max(T - 1), torch.arange(B, device=d)[None, :]]
    return out * valid.view(T, B, *([1] * (x.dim() - 2))).to(x.dtype)


def erase_rectangle(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    T, B, C, H, W = x.shape
    d = x.device
    u = _uniform((5, B), generator, d)
    h = 1 + (u[0] * (H // 2)).long()
    w = 1 + (u[1] * (W // 2)).long()
    top = (u[2] * (H - h + 1)).long()
    left = (u[3] * (W - w + 1)).long()
    on = u[4] < p
    ys = torch.arange(H, device=d)[None, :]
    xs = torch.arange(W, device=d)[None, :]
    in_rows = (ys >= top[:, None]) & (ys < (top + h)[:, None])  # (B, H)
    in_cols = (xs >= left[:, None]) & (xs < (left + w)[:, None])  # (B, W)
    erase = (in_rows[:, :, None] & in_cols[:, None, :]) & on[:, None, None]  # (B, H, W)
    return x * (~erase)[None, :, None].to(x.dtype)
