"""Every registered target against the reference, over node kinds and both precisions."""

import nir
import numpy as np
import pytest
import torch

from convert.build import build_nir
from convert.nirgraph import write_graph
from convert.to_onnx import export_onnx, export_step_onnx
from core.errors import ConfigError, DataError, ModelError
from runtime.latency import extra_steps, run_aligned
from targets import TARGETS, get_target, unavailable_reason
from targets import reference as ref
from targets.plan import load_plan
from train.models import build_model

# Targets whose backend lives outside the main environment carry a marker and skip with the reason.
MARKS = {"lava": pytest.mark.lava}


NETWORKS = {
    # name: (model factory, input shape)
    "digits_csnn": (lambda: build_model("digits_csnn"), (1, 8, 8)),
    "nmnist_csnn": (lambda: build_model("nmnist_csnn"), (2, 34, 34)),
    "sew_resnet18": (lambda: build_model("sew_resnet18", width=4), (3, 16, 16)),  # residual ADDs, avg pool
    # the analog readout: a non-spiking LI whose membrane summed over T is the class score
    "digits_csnn_li": (lambda: build_model("digits_csnn", readout="li"), (1, 8, 8)),
    "nmnist_csnn_li": (lambda: build_model("nmnist_csnn", readout="li"), (2, 34, 34)),
}


def _active(model):
    """Scale the readout (and the residual network's batch norms) so that a random-weight network
    spikes in its layers, residual branches and shortcuts included."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(8)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.mul_(2)
                m.bias.add_(0.2)
    return model.eval()


@pytest.fixture(
    scope="module", params=[(n, p) for n in NETWORKS for p in ("float", "fixed")], ids=lambda v: f"{v[0]}-{v[1]}"
)
def case(request, tmp_path_factory):
    """The graph as files (``.nir`` and its ``.onnx`` files): targets run what files say."""
    name, precision = request.param
    torch.manual_seed(0)
    factory, shape = NETWORKS[name]
    model = _active(factory())
    x = (np.random.default_rng(1).random((5, 3, *shape)) < 0.3).astype(np.float32)
    graph, _ = build_nir(model, shape, precision=precision, steps=5, calibration=x)
    path = tmp_path_factory.mktemp(f"{name}-{precision}") / "model.nir"
    write_graph(path, graph)
    plan = load_plan(path)
    export_onnx(plan, path.with_suffix(".onnx"))
    export_step_onnx(plan, path.with_suffix(".step.onnx"))
    return name, precision, plan, x, ref.run(plan, x, record=True)


@pytest.mark.parametrize("target", [pytest.param(t, marks=MARKS.get(t, ())) for t in TARGETS if t != "reference"])
def test_target_matches_reference(case, target):
    name, precision, plan, x, expected = case
    info = get_target(target)
    reason = unavailable_reason(target)
    if reason:
        pytest.skip(f"{target} is unavailable: {reason}")
    if precision not in info.precisions:
        pytest.skip(f"{target} does not support {precision} precision")
    missing = {n.kind for n in plan.nodes} - set(info.kinds)
    if missing:
        pytest.skip(f"{target} does not support node kinds {sorted(missing)} of {name}")
    declined = info.refusal(
        plan, np.concatenate([x, np.zeros((extra_steps(plan, info.latency), *x.shape[1:]), x.dtype)])
    )
    if declined:
        pytest.skip(f"{target} declines {name}: {declined}")
    assert sum(int(c.sum()) for c in expected.layer_counts.values()) > 0, "a silent network proves nothing"
    got = run_aligned(info, plan, x, record=True)
    assert got.counts.dtype == expected.counts.dtype  # scores of an LI readout: float64 (float), int64 (fixed)
    assert np.array_equal(got.counts, expected.counts)
    assert set(got.layer_counts) == set(plan.lif_names)  # an LI layer never spikes: no spike count
    for layer, c in expected.layer_counts.items():
        assert np.array_equal(got.layer_counts[layer], c), layer
        if info.rasters:
            assert np.array_equal(got.rasters[layer], expected.rasters[layer]), layer
    for layer, v in (expected.traces or {}).items():  # LI membranes, bit for bit
        assert np.abs(v).sum() > 0
        if info.rasters:
            assert np.array_equal(got.traces[layer], v), layer
    # a T other than the file's (the onnx target then steps model.step.onnx)
    shorter = run_aligned(info, plan, x[:3])
    assert np.array_equal(shorter.counts, ref.run(plan, x[:3]).counts)
    # batch size 1 gives the same as the first sample of the batch
    one = run_aligned(info, plan, x[:, :1])
    assert np.array_equal(one.counts, expected.counts[:1])


def test_unknown_target_lists_known():
    with pytest.raises(ConfigError, match=r"unknown target 'tpu'; known targets: " + ", ".join(TARGETS) + "$"):
        get_target("tpu")


def test_availability_through_the_registry(monkeypatch):
    """Only targets that name an availability check can be unavailable; the check is resolved at
    call time, so a simulated reason is what the registry reports and refuses with."""
    from targets import lava_target, require_target

    assert all(unavailable_reason(t) is None for t, i in TARGETS.items() if i.available is None)
    monkeypatch.setattr(lava_target, "unavailable_reason", lambda: "simulated: no .venv-lava")
    assert unavailable_reason("lava") == "simulated: no .venv-lava"
    with pytest.raises(ConfigError, match=r"^target 'lava' is unavailable on this machine: simulated: no .venv-lava$"):
        require_target("lava")
    assert require_target("torch") is get_target("torch")
    with pytest.raises(ConfigError, match="unknown target 'tpu'"):
        unavailable_reason("tpu")


def test_wrong_input_shape(case):
    _, _, plan, x, _ = case
    with pytest.raises(DataError, match=r"input spikes must be shaped \(T, B,"):
        get_target("torch").runner()(plan, x[..., :4])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; this machine has none")
def test_torch_target_on_cuda_matches_reference(case):
    from targets import torch_target

    name, precision, plan, x, expected = case
    got = torch_target.run(plan, x, record=True, device="cuda")
    assert np.array_equal(got.counts, expected.counts)
    for layer in expected.rasters:
        assert np.array_equal(got.rasters[layer], expected.rasters[layer]), layer


@pytest.mark.gpu
def test_onnx_cuda_provider_matches_reference(case):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime's CUDA execution provider; this onnxruntime is CPU-only")
    from targets import onnx_target

    name, precision, plan, x, expected = case
    got = onnx_target.run(plan, x)
    assert np.array_equal(got.counts, expected.counts)


def test_cuda_device_refused_without_cuda(case):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from core.errors import ConfigError
    from targets import torch_target

    with pytest.raises(ConfigError, match="no CUDA device is available"):
        torch_target.run(case[2], case[3], device="cuda")


# ---------------------------------------------------------------------------------------------
# A foreign graph (hand-written with nir, no snn_deploy metadata) with LI nodes in the middle and at
# the end, per-neuron time constants: every target that supports the kinds equals the reference.


def _foreign_li_graph(path, out_li: bool):
    rng = np.random.default_rng(3)

    def w(*shape, scale=0.5):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    tau_mid = np.array([2e-3, 4e-3, 8e-3, 1.6e-3, 5e-3, 3e-3], dtype=np.float64)  # per neuron, beta 0.5 .. 0.8
    nodes = {
        "in": nir.Input(input_type={"input": np.array([2, 6, 6])}),
        "conv": nir.Conv2d(input_shape=(6, 6), weight=w(3, 2, 3, 3), stride=1, padding=1, dilation=1, groups=1,
                           bias=w(3, scale=0.1)),
        "lif1": nir.LIF(tau=np.full((3, 6, 6), 2e-3), r=np.full((3, 6, 6), 2.0), v_leak=np.zeros((3, 6, 6)),
                        v_threshold=np.full((3, 6, 6), 0.5)),
        "flat": nir.Flatten(input_type={"input": np.array([3, 6, 6])}, start_dim=0, end_dim=-1),
        "fc1": nir.Affine(weight=w(6, 108, scale=0.3), bias=w(6, scale=0.1)),
        "li_mid": nir.LI(tau=tau_mid, r=tau_mid / 1e-3, v_leak=np.full(6, 0.05)),
        "fc2": nir.Affine(weight=w(4, 6), bias=np.zeros(4, np.float32)),
        "end": (nir.LI(tau=np.full(4, 2e-3), r=np.full(4, 2.0), v_leak=np.zeros(4)) if out_li else
                nir.LIF(tau=np.full(4, 2e-3), r=np.full(4, 2.0), v_leak=np.zeros(4), v_threshold=np.full(4, 0.3))),
        "out": nir.Output(output_type={"output": np.array([4])}),
    }  # fmt: skip
    edges = [("in", "conv"), ("conv", "lif1"), ("lif1", "flat"), ("flat", "fc1"), ("fc1", "li_mid"),
             ("li_mid", "fc2"), ("fc2", "end"), ("end", "out")]  # fmt: skip
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=edges))
    plan = load_plan(path)
    export_onnx(plan, path.with_suffix(".onnx"), steps=6)
    export_step_onnx(plan, path.with_suffix(".step.onnx"))
    return plan


@pytest.mark.parametrize("out_li", [True, False], ids=["ends-in-li", "ends-in-lif"])
@pytest.mark.parametrize("target", [pytest.param(t, marks=MARKS.get(t, ())) for t in TARGETS if t != "reference"])
def test_foreign_graph_with_li_in_the_middle(tmp_path, target, out_li):
    plan = _foreign_li_graph(tmp_path / "foreign.nir", out_li)
    assert plan.li_names == (["li_mid", "end"] if out_li else ["li_mid"]) and plan.scores == out_li
    assert plan.meta["dt"] == 1e-3 and plan.precision == "float"
    x = (np.random.default_rng(4).random((6, 3, 2, 6, 6)) < 0.4).astype(np.float32)
    expected = ref.run(plan, x, record=True)
    assert expected.layer_counts["lif1"].sum() > 0 and np.abs(expected.traces["li_mid"]).min() > 0
    assert expected.counts.dtype == (np.float64 if out_li else np.int64)
    info = get_target(target)
    reason = unavailable_reason(target)
    if reason:
        pytest.skip(f"{target} is unavailable: {reason}")
    if "li" not in info.kinds:  # Norse 1.1.0 and snnTorch 1.0.0 map no nir.LI: named, not dropped
        with pytest.raises(ModelError, match=r"(li_mid|end) \(LI\)"):
            info.runner()(plan, x)
        return
    if target == "lava":  # Lava's LIF sends spikes, not its membrane: an LI must be an output there
        with pytest.raises(ModelError, match="LI layer li_mid feeds fc2; .* must be a graph output"):
            run_aligned(info, plan, x)
        return
    got = run_aligned(info, plan, x, record=True)
    assert np.array_equal(got.counts, expected.counts)
    if info.rasters:
        for k, v in expected.traces.items():
            assert np.array_equal(got.traces[k], v), k
        assert np.array_equal(got.rasters["lif1"], expected.rasters["lif1"])
    # batch 1 and a shorter T (the onnx target then steps the step file)
    assert np.array_equal(run_aligned(info, plan, x[:4, :1]).counts, ref.run(plan, x[:4, :1]).counts)
