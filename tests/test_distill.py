import math

import pytest
import torch
import torch.nn.functional as F

from train.distill import FeatureDistiller, blur_mask, wsld_loss
from train.models import build_model


def test_mask_statistics():
    g = torch.Generator().manual_seed(1)
    m = blur_mask(4000, 64, 0.15, g)
    assert m.shape == (4000, 64, 1, 1)
    assert set(m.unique().tolist()) == {0.0, 1.0}
    zero = 1 - m.mean().item()
    # binomial std over 256k draws is 0.0007: 0.004 is over 5 sigma
    assert abs(zero - 0.15) < 0.004
    # per channel and per sample the rate is the same (no channel is always kept)
    per_channel = 1 - m.mean(dim=(0, 2, 3))
    assert (per_channel - 0.15).abs().max() < 0.03
    # fresh every call
    assert not torch.equal(m, blur_mask(4000, 64, 0.15, g))


def test_mask_is_per_sample_channel_and_blurs_whole_maps():
    d = FeatureDistiller(8, 8, "bkd", lam=0.5)
    seen = {}
    d.generation.register_forward_hook(lambda mod, inp, out: seen.setdefault("x", inp[0]))
    s = torch.rand(16, 8, 3, 3) + 0.1
    d(s, torch.zeros(16, 8, 3, 3), torch.Generator().manual_seed(0))
    x = seen["x"]
    zeroed = (x == 0).all(dim=(2, 3))
    kept = (x == s).all(dim=(2, 3))
    assert (zeroed | kept).all(), "each (sample, channel) map is either zeroed whole or kept whole"
    assert 0 < zeroed.float().mean() < 1


def test_loss_is_summed_squared_error_over_batch_times_alpha():
    d = FeatureDistiller(4, 4, "feature", alpha=2e-3)
    s, t = torch.rand(5, 4, 2, 2), torch.rand(5, 4, 2, 2)
    assert float(d(s, t)) == pytest.approx(2e-3 * float(((s - t) ** 2).sum()) / 5, rel=1e-6)
    # a vector teacher feature: the (restored) map is pooled over space first
    tv = torch.rand(5, 4)
    assert float(d(s, tv)) == pytest.approx(2e-3 * float(((s.mean((2, 3)) - tv) ** 2).sum()) / 5, rel=1e-6)


def test_align_conv_only_when_channels_differ():
    assert FeatureDistiller(8, 8).align is None
    d = FeatureDistiller(8, 16)
    assert d.align.in_channels == 8 and d.align.out_channels == 16
    assert d.generation[0].in_channels == 16 and d.generation[2].out_channels == 16
    assert FeatureDistiller(8, 16, "feature").generation is None


def test_gradients_reach_student_and_generator_not_teacher():
    student, teacher = build_model("digits_csnn"), build_model("digits_cnn")
    for p in teacher.parameters():
        p.requires_grad_(False)
    x = (torch.rand(4, 8, 1, 8, 8) < 0.4).float()
    feat, _ = student.forward_features(x)
    with torch.no_grad():
        t_feat, _ = teacher.forward_features(x.mean(0))
    d = FeatureDistiller(feat.shape[2], t_feat.shape[1], "bkd")
    d(feat.mean(0), t_feat, torch.Generator().manual_seed(0)).backward()
    conv_grads = [p.grad for n, p in student.named_parameters() if n.startswith("features")]
    assert all(g is not None and g.abs().sum() > 0 for g in conv_grads)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.generation.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_wsld_against_hand_computation():
    zs = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    zt = torch.tensor([[3.0, 0.0, 1.0], [1.0, 1.0, 2.0]])
    y = torch.tensor([0, 2])
    tau = 2.0

    def softmax(v):
        e = [math.exp(a) for a in v]
        return [a / sum(e) for a in e]

    total = 0.0
    for s, t, label in zip(zs.tolist(), zt.tolist(), y.tolist()):
        pt = softmax([a / tau for a in t])
        log_ps = [math.log(p) for p in softmax([a / tau for a in s])]
        soft_ce = -sum(p * lp for p, lp in zip(pt, log_ps))
        ce_s = -math.log(softmax(s)[label])
        ce_t = -math.log(softmax(t)[label])
        w = 1 - math.exp(-ce_s / ce_t)
        total += w * soft_ce
    expected = tau**2 * total / 2
    assert float(wsld_loss(zs, zt, y, tau)) == pytest.approx(expected, rel=1e-6)


def test_wsld_weight_is_detached():
    zs = torch.randn(3, 4, requires_grad=True)
    zt = torch.randn(3, 4)
    y = torch.tensor([0, 1, 2])
    wsld_loss(zs, zt, y).backward()
    # gradient equals that of the soft CE scaled by the constant weights
    with torch.no_grad():
        w = 1 - torch.exp(-(F.cross_entropy(zs, y, reduction="none") / F.cross_entropy(zt, y, reduction="none")))
    zs2 = zs.detach().clone().requires_grad_(True)
    soft = -(F.softmax(zt / 2, 1) * F.log_softmax(zs2 / 2, 1)).sum(1)
    (4 * (w * soft).mean()).backward()
    assert torch.allclose(zs.grad, zs2.grad, atol=1e-6)
