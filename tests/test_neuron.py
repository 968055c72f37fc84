import pytest
import torch

from core.errors import ModelError
from train.models import build_model
from train.neuron import LIF, LIFParameters, LIFState, lif_sequence, lif_step

# beta = 1 - dt/tau = 0.5, threshold 1; the sixth and seventh steps reach exactly 1.0 (no spike: strict >).
CURRENTS = [0.6, 0.6, 0.6, 1.2, 0.0, 1.0, 0.5]
GOLDEN_V_BEFORE_RESET = [0.6, 0.9, 1.05, 1.2, 0.0, 1.0, 1.0]
GOLDEN_SPIKES = [0, 0, 1, 1, 0, 0, 0]
GOLDEN_V_AFTER = [0.6, 0.9, 0.0, 0.0, 0.0, 1.0, 1.0]


def test_golden_trajectory_and_spike_train():
    p = LIFParameters(tau=2e-3, v_threshold=1.0, dt=1e-3)
    assert p.beta == 0.5
    state = LIFState(torch.zeros(1, dtype=torch.float64))
    spikes, v_after = [], []
    for i in CURRENTS:
        s, state = lif_step(torch.tensor([i], dtype=torch.float64), state, p)
        spikes.append(int(s))
        v_after.append(float(state.v))
    assert spikes == GOLDEN_SPIKES
    assert v_after == pytest.approx(GOLDEN_V_AFTER, abs=1e-12)

    layer = LIF(p)
    layer.record = True
    out = layer(torch.tensor(CURRENTS).view(-1, 1))
    assert out.view(-1).tolist() == GOLDEN_SPIKES
    assert layer.trace.view(-1).tolist() == pytest.approx(GOLDEN_V_BEFORE_RESET, abs=1e-6)


def test_sequence_matches_step_and_is_time_first():
    p = LIFParameters.from_beta(0.75, v_threshold=0.5)
    x = torch.rand(10, 3, 4)
    spikes, state = lif_sequence(x, p)
    assert spikes.shape == (10, 3, 4)
    assert torch.equal(LIF(p)(x), spikes)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}


def test_parameters_are_si_and_nir_named():
    p = LIFParameters(tau=5e-3, v_threshold=2.0, dt=1e-3)
    assert p.to_dict() == {"tau": 5e-3, "v_threshold": 2.0, "dt": 1e-3, "v_reset": 0.0, "v_leak": 0.0}
    assert p.beta == pytest.approx(0.8)
    assert LIFParameters.from_beta(0.8, dt=1e-3).tau == pytest.approx(5e-3)


@pytest.mark.parametrize("kwargs,match", [
    (dict(tau=0.5e-3, dt=1e-3), "tau >= dt"),
    (dict(tau=float("nan")), "finite tau"),
    (dict(v_threshold=0.0), "positive v_threshold"),
    (dict(v_reset=0.1), "v_reset = v_leak = 0"),
])  # fmt: skip
def test_invalid_parameters(kwargs, match):
    with pytest.raises(ModelError, match=match):
        LIFParameters(**kwargs)


def test_surrogate_gradient_reaches_every_layer():
    model = build_model("nmnist_csnn")
    x = (torch.rand(6, 4, 2, 34, 34) < 0.2).float()
    out = model(x)
    assert out.sum() > 0, "a fresh model should spike"
    loss = torch.nn.functional.cross_entropy(out.sum(0), torch.arange(4))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_forward_is_exact_heaviside():
    # The surrogate must not leak into the forward value.
    p = LIFParameters()
    s, _ = lif_step(torch.tensor([1.0 + 1e-6, 1.0, 0.999]), LIFState(torch.zeros(3)), p)
    assert s.tolist() == [1.0, 0.0, 0.0]


# The LI readout: the LIF's equation without threshold and reset, beta = 0.5; its membrane is its output.
LI_CURRENTS = [0.5, 0.5, 1.0, -0.25, 0.0, 2.0]
# exact in binary: a power-of-two beta adds one bit per step
GOLDEN_LI_V = [0.5, 0.75, 1.375, 0.4375, 0.21875, 2.109375]


def test_li_golden_trajectory():
    from train.neuron import LI, LIParameters, LIState, li_step

    p = LIParameters()
    assert p.tau == 2e-3 and p.dt == 1e-3 and p.beta == 0.5
    state = LIState(torch.zeros(1, dtype=torch.float64))
    trace = []
    for i in LI_CURRENTS:
        v, state = li_step(torch.tensor([i], dtype=torch.float64), state, p)
        trace.append(float(v))
    assert trace == GOLDEN_LI_V  # exactly: no rounding anywhere
    out = LI(p)(torch.tensor(LI_CURRENTS).view(-1, 1))
    assert out.view(-1).tolist() == GOLDEN_LI_V  # float32 too
    assert float(out.sum(0)) == sum(GOLDEN_LI_V)  # the logit of a readout: the membrane summed over T


def test_li_sequence_parameters_and_gradient():
    from train.neuron import LI, LIParameters, li_sequence

    p = LIParameters.from_beta(0.75)
    assert p.tau == pytest.approx(4e-3) and p.to_dict() == {"tau": p.tau, "dt": 1e-3, "v_leak": 0.0}
    x = torch.randn(7, 3, 4, requires_grad=True)
    trace, state = li_sequence(x, p)
    assert trace.shape == (7, 3, 4) and torch.equal(trace[-1], state.v)
    assert torch.equal(LI(p)(x), trace)
    # no threshold: large or negative currents pass through linearly
    assert torch.allclose(trace[1], 0.75 * x[0] + x[1])
    trace.sum().backward()
    assert x.grad is not None and (x.grad > 0).all()  # every step reaches the logit


@pytest.mark.parametrize("kwargs,match", [
    (dict(tau=0.5e-3, dt=1e-3), "tau >= dt"),
    (dict(tau=float("inf")), "finite tau"),
    (dict(v_leak=0.1), "v_leak = 0"),
])  # fmt: skip
def test_invalid_li_parameters(kwargs, match):
    from train.neuron import LIParameters

    with pytest.raises(ModelError, match=match):
        LIParameters(**kwargs)
