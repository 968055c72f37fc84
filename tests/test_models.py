import pytest
import torch

from core.errors import ModelError
from train.models import MODELS, build_model, model_spec, set_weight_quantisation, teacher_arguments
from train.quant import fake_quantise, quantise

SHAPES = {"digits": (1, 8, 8), "nmnist": (2, 34, 34), "dvs": (2, 128, 128), "sew": (3, 32, 32), "resnet": (3, 32, 32)}
SMALL = {"sew_resnet18": {"width": 8}, "sew_resnet34": {"width": 8}, "sew_resnet50": {"width": 4}}


def shape_of(name):
    return SHAPES[name.split("_")[0].rstrip("0123456789")]


@pytest.mark.parametrize("name", sorted(n for n, s in MODELS.items() if s.spiking))
def test_every_student_runs_and_has_a_teacher(name):
    student = build_model(name, **SMALL.get(name, {}))
    x = (torch.rand(3, 2, *shape_of(name)) < 0.3).float()
    feature, out = student.forward_features(x)
    assert out.shape[:2] == (3, 2) and feature.dim() == 5 and feature.shape[:2] == (3, 2)
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    spec = model_spec(name)
    teacher = build_model(spec.teacher, **teacher_arguments(name, SMALL.get(name, {})))
    t_feature, logits = teacher.forward_features(x.mean(0))
    assert logits.shape == (2, out.shape[-1])
    assert t_feature.shape[-2:] == feature.shape[-2:], "student and teacher feature maps align spatially"


def test_sew_resnet50_matches_torchvision_channels():
    s = build_model("sew_resnet50")
    t = build_model("resnet50")
    x = torch.zeros(1, 1, 3, 32, 32)
    assert s.forward_features(x)[0].shape[2] == t.forward_features(x[0])[0].shape[1] == 2048


def test_sew_add_connection_outputs_more_than_binary():
    torch.manual_seed(1)
    m = build_model("sew_resnet18", width=8)
    block = m.features[3]  # first SEW block
    x = (torch.rand(4, 2, 8, 8, 8) < 0.5).float()
    y = block(x)
    assert y.max() >= 1 and y.shape == x.shape


def test_unknown_model_lists_known():
    with pytest.raises(ModelError, match=r"unknown model 'lenet'; known models: .*digits_csnn.*sew_resnet18"):
        build_model("lenet")
    with pytest.raises(ModelError, match=r"takes no argument\(s\) depth"):
        build_model("digits_csnn", depth=3)


def test_quantiser_symmetric_per_channel():
    w = torch.tensor([[0.5, -1.0, 0.25], [0.03, 0.01, -0.04]])
    q, scale = quantise(w, 8, per_channel=True)
    assert q.dtype == torch.int32 and q.abs().max() <= 127
    # power-of-two scales: max|w|=1 -> 2^-6 (64 steps), max|w|=0.04 -> 2^-11
    assert scale.flatten().tolist() == [2**-6, 2**-11]
    assert q[0].tolist() == [32, -64, 16] and q[1].tolist() == [61, 20, -82]
    assert torch.allclose(q * scale, w, atol=float(scale.max()) / 2)
    q2, s2 = quantise(w, 8, per_channel=False)
    assert s2.numel() == 1 and q2[0, 1] == -64
    with pytest.raises(ModelError, match="NaN or infinite"):
        quantise(torch.tensor([1.0, float("nan")]), 8, True)
    with pytest.raises(ModelError, match="2..16"):
        quantise(w, 1, True)


def test_fake_quantise_straight_through():
    w = torch.randn(4, 3, requires_grad=True)
    wq = fake_quantise(w, 4, True)
    q, s = quantise(w, 4, True)
    assert torch.equal(wq.detach(), q * s)
    wq.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_qat_uses_quantised_weights_and_rejects_batchnorm():
    m = build_model("digits_csnn")
    x = (torch.rand(4, 2, 1, 8, 8) < 0.5).float()
    set_weight_quantisation(m, 3, True)
    conv = m.features[0]
    q, s = quantise(conv.weight, 3, True)
    assert torch.equal(conv.effective_parameters()[0].detach(), q * s)
    m(x)
    with pytest.raises(ModelError, match="BatchNorm"):
        set_weight_quantisation(build_model("digits_csnn", batch_norm=True), 8)


@pytest.mark.parametrize("name,shape", [("digits_csnn", (1, 8, 8)), ("nmnist_csnn", (2, 34, 34)),
                                        ("dvs_csnn", (2, 128, 128)), ("sew_resnet18", (3, 16, 16))])  # fmt: skip
def test_li_readout(name, shape):
    """readout="li": the head's last LIF becomes an LI; the output is its membrane trace, whose sum over
    T is the logit; the teacher does not take the argument."""
    from train.neuron import LI, LIF

    kwargs = {"width": 4} if name.startswith("sew") else {}
    model = build_model(name, readout="li", **kwargs)
    assert isinstance(model.head[-1], LI) and sum(isinstance(m, LI) for m in model.modules()) == 1
    assert isinstance(build_model(name, **kwargs).head[-1], LIF)  # spikes remain the default
    x = (torch.rand(3, 2, *shape) < 0.3).float()
    out = model(x)
    assert out.shape[:2] == (3, 2) and not set(out.unique().tolist()) <= {0.0, 1.0}  # analog, not spikes
    assert teacher_arguments(name, {"readout": "li", "readout_tau": 4e-3}) == {}
    assert model.head[-1].params.beta == 0.5
    assert build_model(name, readout="li", readout_tau=8e-3, **kwargs).head[-1].params.beta == 0.875


def test_readout_errors():
    with pytest.raises(ModelError, match="unknown readout 'rate'; known readouts: spikes, li"):
        build_model("digits_csnn", readout="rate")
    with pytest.raises(ModelError, match="readout_tau applies to readout='li' only"):
        build_model("digits_csnn", readout_tau=4e-3)
