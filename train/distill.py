r"""Knowledge distillation from an ANN teacher: BKD (blurred feature distillation) and WSLD.

BKD (Xu et al., "BKDSNN", ECCV 2024), as its reference implementation does it: the student's
last-stage feature map, averaged over the T steps, is *blurred* by a fresh random mask that
zeroes each (sample, channel) with probability ``lambda``; a 1x1 convolution aligns channels when
student and teacher differ; a generation block (3x3 conv, ReLU, 3x3 conv) restores the map; the
loss is the summed squared error against the teacher's feature map over the batch size, times
``alpha``:

.. math::
    L_{BKD} = \frac{\alpha}{N} \sum \big(G(M \odot A(\bar F_S)) - F_T\big)^2

WSLD (Zhou et al. 2021, "Rethinking soft labels for knowledge distillation"):

.. math::
    L_{WSLD} = \tau^2 \,\mathrm{mean}_i\, w_i \,\mathrm{CE}\big(\mathrm{softmax}(z^T_i/\tau),
    \mathrm{log\,softmax}(z^S_i/\tau)\big), \quad w_i = 1 - e^{-CE^S_i / CE^T_i}

with ``CE^S``, ``CE^T`` the (detached) cross-entropies of student and teacher on the true label.

The generation block and the align conv are training-only; they are never part of the deployed model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DISTILL_MODES = ("none", "logits", "feature", "bkd", "mixed")


def blur_mask(n: int, c: int, lam: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """A ``(N, C, 1, 1)`` mask: 0 with probability ``lam`` per (sample, channel), else 1."""
    u = torch.rand((n, c, 1, 1), generator=generator, device=device)
    return (u >= lam).float()


GENERATORS = ("full", "bottleneck")
ORDERS = ("student_first", "teacher_first")


class FeatureDistiller(nn.Module):
    """Feature distillation head: ``bkd`` (mask + generation block) or ``feature`` (plain MSE).

    ``student_feature`` is the time-averaged student map ``(N, Cs, H, W)``; ``teacher_feature`` is
    the teacher map ``(N, Ct, H', W')`` or vector ``(N, Ct)``.

    Options (all ablated by ``bench.bkd_ablation``):

    - ``generator``: ``full`` is the reference block at the teacher's width (two 3x3 convs, C_t -> C_t);
      ``bottleneck`` narrows it to ``width`` channels (default: the student's), C_t -> width -> C_t, so that
      a head of a few thousand parameters cannot fit the teacher's map on its own.
    - ``order``: ``student_first`` (the reference code for CNNs and the paper) masks and restores the
      student's map towards the teacher's; ``teacher_first`` is what the reference DVS scripts do by
      passing the arguments the other way round: the *teacher's* map is masked and restored, and the
      student's map is the target (the gradient then reaches the student through the target).
    - ``clip``: the reference ``use_clip``: the target is rescaled so that its maximum equals the
      restored side's input maximum, ``target / max(target) * max(input)`` (batch-wide maxima).
    """

    def __init__(self, student_channels: int, teacher_channels: int, mode: str = "bkd",
                 alpha: float = 2e-3, lam: float = 0.15, *, generator: str = "full",
                 width: int | None = None, order: str = "student_first", clip: bool = False) -> None:  # fmt: skip
        super().__init__()
        if mode not in ("bkd", "feature"):
            raise ValueError(f"FeatureDistiller mode must be 'bkd' or 'feature', got {mode!r}")
        if generator not in GENERATORS:
            raise ValueError(f"BKD generator must be one of {', '.join(GENERATORS)}, got {generator!r}")
        if order not in ORDERS:
            raise ValueError(f"BKD order must be one of {', '.join(ORDERS)}, got {order!r}")
        self.mode, self.alpha, self.lam, self.order, self.clip = mode, alpha, lam, order, clip
        # The restored side's input channels -> the target's channels.
        c_in, c_out = (
            (student_channels, teacher_channels) if order == "student_first" else (teacher_channels, student_channels)
        )
        self.align = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None
        self.generation = None
        if mode == "bkd":
            hidden = c_out if generator == "full" else (width or student_channels)
            self.generation = nn.Sequential(
                nn.Conv2d(c_out, hidden, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(hidden, c_out, 3, padding=1),
            )

    def forward(self, student_feature: torch.Tensor, teacher_feature: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
        if self.order == "student_first":
            source, target = student_feature, teacher_feature
        else:
            if teacher_feature.dim() != 4:
                raise ValueError("BKD order 'teacher_first' needs a teacher feature map (N, C, H, W), not a vector")
            source, target = teacher_feature, student_feature
            if source.shape[-2:] != target.shape[-2:]:
                source = F.adaptive_avg_pool2d(source, target.shape[-2:])
        x = source if self.align is None else self.align(source)
        if self.clip:
            target = target / target.max().clamp_min(1e-12) * x.max()
        if self.generation is not None:
            x = x * blur_mask(x.shape[0], x.shape[1], self.lam, generator, x.device)
            x = self.generation(x)
        if target.dim() == 2:
            x = x.mean(dim=(2, 3))  # a vector teacher feature: pool the restored map over space
        elif x.shape[-2:] != target.shape[-2:]:
            x = F.adaptive_avg_pool2d(x, target.shape[-2:])
        return self.alpha * F.mse_loss(x, target, reduction="sum") / x.shape[0]


def wsld_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
              tau: float = 2.0) -> torch.Tensor:  # fmt: skip
    """Weighted soft-label distillation loss (mean over the batch, times ``tau**2``)."""
    soft_t = F.softmax(teacher_logits / tau, dim=1)
    soft_ce = -(soft_t * F.log_softmax(student_logits / tau, dim=1)).sum(dim=1)
    with torch.no_grad():
        ce_s = F.cross_entropy(student_logits, labels, reduction="none")
        ce_t = F.cross_entropy(teacher_logits, labels, reduction="none")
        w = 1.0 - torch.exp(-(ce_s / (ce_t + 1e-7)).clamp_min(0.0))
    return tau**2 * (w * soft_ce).mean()
