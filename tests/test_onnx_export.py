"""ONNX export: the whole-T file and the step file give the reference's spikes exactly."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from convert.build import build_nir
from convert.to_onnx import METADATA_KEY, export_onnx, export_step_onnx
from core import fixed
from core.errors import DataError, ModelError
from targets import reference
from targets.onnx_target import check_onnx, onnx_session
from targets.plan import Node, Plan, load_plan
from train.models import build_model

T, B = 6, 5
DIGITS = ("digits_csnn", {"v_threshold": 0.5, "tau": 3e-3}, (1, 8, 8))  # beta = 2/3: not a round float
NMNIST = ("nmnist_csnn", {"v_threshold": 0.5}, (2, 34, 34))
SEW = ("sew_resnet18", {"width": 4, "v_threshold": 0.2}, (3, 32, 32))  # residual ADDs, folded BatchNorm
DIGITS_LI = ("digits_csnn", {"v_threshold": 0.5, "readout": "li"}, (1, 8, 8))
NMNIST_LI = ("nmnist_csnn", {"v_threshold": 0.5, "readout": "li", "readout_tau": 8e-3}, (2, 34, 34))  # beta 0.875
# case -> (model, precision, weight_bits, per_channel); thresholds are lowered so that every LIF
# layer of a random-init model spikes on random input (asserted below)
CASES = {
    "digits-float8-channel": (DIGITS, "float", 8, True),
    "digits-float8-layer": (DIGITS, "float", 8, False),
    "digits-float12": (DIGITS, "float", 12, True),
    "digits-float32": (DIGITS, "float", None, True),
    "digits-fixed": (DIGITS, "fixed", 8, True),
    "nmnist-float8": (NMNIST, "float", 8, True),
    "sew18-float8": (SEW, "float", 8, True),
    # the analog readout: LI membranes summed over T (float64 scores; integers in fixed precision)
    "digits-li-float8": (DIGITS_LI, "float", 8, True),
    "digits-li-float32": (DIGITS_LI, "float", None, True),
    "digits-li-fixed": (DIGITS_LI, "fixed", 8, True),
    "nmnist-li-fixed": (NMNIST_LI, "fixed", 8, True),
}


def _model(name: str, kwargs: dict) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name, **kwargs).eval()
    with torch.no_grad():  # non-zero biases (and, through BatchNorm, non-trivial folded weights)
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.normal_(0, 0.05)
            elif isinstance(m, nn.BatchNorm2d):
                m.bias.normal_(0, 0.05)
                m.running_mean.normal_(0, 0.05)
                m.running_var.uniform_(0.5, 2.0)
    return model


def _spikes(shape: tuple[int, ...], batch: int = B, seed: int = 1) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, batch, *shape, generator=g) < 0.3).float().numpy()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """case -> (plan, spikes, reference result, whole-T file, step file), each built once."""
    cache = {}

    def get(case: str):
        if case not in cache:
            (name, kwargs, shape), precision, bits, per_channel = CASES[case]
            x = _spikes(shape)
            graph, _ = build_nir(_model(name, kwargs), shape, precision=precision, weight_bits=bits,
                                 per_channel=per_channel, steps=T, calibration=x)  # fmt: skip
            plan = load_plan(graph)
            out = tmp_path_factory.mktemp(case)
            export_onnx(plan, out / "model.onnx")
            export_step_onnx(plan, out / "model.step.onnx")
            cache[case] = (plan, x, reference.run(plan, x, record=True), out / "model.onnx", out / "model.step.onnx")
        return cache[case]

    return get


def _assert_same(got: dict, ref) -> None:
    np.testing.assert_array_equal(got["counts"], ref.counts)
    assert got["layer_counts"].keys() == ref.layer_counts.keys()
    for name, counts in ref.layer_counts.items():
        np.testing.assert_array_equal(got["layer_counts"][name], counts, err_msg=f"layer {name}")


@pytest.mark.parametrize("case", list(CASES))
def test_onnx_files_equal_the_reference(built, case):
    plan, x, ref, whole, step = built(case)
    silent = [name for name, c in ref.layer_counts.items() if c.sum() == 0]
    assert not silent, f"layers {silent} never spike: the comparison would prove nothing"
    got = check_onnx(plan, whole, x, threads=1)
    _assert_same(got, ref)
    assert got["provider"] in ("CPUExecutionProvider", "CUDAExecutionProvider")
    # the step file, run T times from zero states, gives the same counts as the whole file
    _assert_same(check_onnx(plan, step, x, threads=1), ref)


@pytest.mark.parametrize("case", ["digits-fixed", "sew18-float8"])
def test_step_file_matches_the_reference_at_every_step(built, case):
    plan, x, ref, _, step = built(case)
    sess = onnx_session(step, threads=1)
    outputs = [o.name for o in sess.get_outputs()]
    state = {f"v/{n}": np.zeros((B, *plan.node(n).out_shape), np.float32) for n in plan.lif_names}
    readout = plan.outputs[0]
    for t in range(T):
        res = dict(zip(outputs, sess.run(None, {"x_t": x[t], **state})))
        np.testing.assert_array_equal(res["out_t"], ref.rasters[readout][t].reshape(B, -1), err_msg=f"t={t}")
        for n in plan.lif_names:
            np.testing.assert_array_equal(res[f"spikes/{n}"], ref.rasters[n][t].reshape(B, -1).sum(1))
            assert res[f"v_next/{n}"].shape == (B, *plan.node(n).out_shape)
            assert res[f"v_next/{n}"].dtype == np.float32
        state = {f"v/{n}": res[f"v_next/{n}"] for n in plan.lif_names}


def _dequantize_nodes(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, np.ndarray]]:
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [(n, inits[n.input[0]]) for n in model.graph.node if n.op_type == "DequantizeLinear"]


@pytest.mark.parametrize(
    ("case", "dtype", "axis"),
    [("digits-float8-channel", np.int8, 0), ("digits-float8-layer", np.int8, None), ("digits-float12", np.int16, 0)],
)
def test_quantised_weights_are_qdq(built, case, dtype, axis):
    plan, _, _, whole, _ = built(case)
    model = onnx.load(whole)
    dq = _dequantize_nodes(model)
    synapses = [n.name for n in plan.nodes if n.kind in ("conv", "affine")]
    assert sorted(n.name for n, _ in dq) == sorted(f"{s}/weight" for s in synapses)
    for node, q in dq:
        assert q.dtype == dtype
        attrs = {a.name: a.i for a in node.attribute}
        assert attrs.get("axis") == axis
    # the first layer may see analog input: it accumulates in float64; the others are exact in float32
    meta = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    assert meta["float64_layers"] == ["features.0"]
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm") and n.input[1].endswith("/weight")]
    assert {n.input[1] for n in convs} == {"features.3/weight", "head.2/weight"}


def test_unquantised_weights_are_plain_float32(built):
    model = onnx.load(built("digits-float32")[3])
    assert not _dequantize_nodes(model)
    weights = [i for i in model.graph.initializer if i.name.endswith("/weight")]
    assert len(weights) == 3 and all(w.data_type == onnx.TensorProto.FLOAT for w in weights)


@pytest.mark.parametrize("batch", [1, 7])
def test_checker_passes_and_batch_size_is_free(built, batch):
    plan, _, _, whole, step = built("digits-float8-channel")
    for path in (whole, step):
        onnx.checker.check_model(str(path), full_check=True)
    x = _spikes(plan.input_shape, batch, seed=batch)
    ref = reference.run(plan, x)
    _assert_same(check_onnx(plan, whole, x, threads=1), ref)
    _assert_same(check_onnx(plan, step, x, threads=1), ref)


def test_a_changed_weight_is_caught(built, tmp_path):
    plan, x, ref, whole, _ = built("digits-float8-channel")
    model = onnx.load(whole)
    init = next(i for i in model.graph.initializer if i.name == "features.3/weight_quantised")
    q = numpy_helper.to_array(init).copy()
    q[0, 0, 1, 1] = -127 if q[0, 0, 1, 1] > 0 else 127  # one int8 value
    init.CopyFrom(numpy_helper.from_array(q, init.name))
    onnx.save(model, tmp_path / "changed.onnx")
    got = check_onnx(plan, tmp_path / "changed.onnx", x, threads=1)
    assert not np.array_equal(got["layer_counts"]["features.4"], ref.layer_counts["features.4"])


def test_analog_input_is_exact(built, tmp_path):
    """The direct encoder feeds pixel values: float32 accumulation in the first layer differs from
    the reference's float64 sums in the last bit for about half of the currents. Thresholds equal to
    the reference's own currents at t=0 turn any such difference into a spike that should not be."""
    plan, _, _, _, _ = built("digits-float8-channel")
    plan = copy.deepcopy(plan)
    x = torch.rand(T, 1, *plan.input_shape, generator=torch.Generator().manual_seed(3)).numpy()
    conv, lif = plan.node("features.0"), plan.node("features.1")
    current = reference.conv2d(x[0].astype(np.float64), conv.params["weight"].astype(np.float64),
                               conv.params["stride"], conv.params["padding"]).astype(np.float32)  # fmt: skip
    lif.params["v_threshold"] = (current[0] + conv.params["bias"][:, None, None]).astype(np.float32)
    export_onnx(plan, tmp_path / "analog.onnx")
    ref = reference.run(plan, x, record=True)
    assert ref.rasters["features.1"][0].sum() == 0 and ref.layer_counts["features.1"].sum() > 0
    _assert_same(check_onnx(plan, tmp_path / "analog.onnx", x, threads=1), ref)


def test_fixed_integer_corner_cases(built, tmp_path):
    """Negative weight exponents (right shifts rounding toward minus infinity), membrane
    saturation at +-(2**23 - 1), biases, and negative membranes through the decay."""
    plan, x, _, _, _ = built("digits-fixed")
    plan = copy.deepcopy(plan)
    conv0, conv1 = plan.node("features.0"), plan.node("features.3")
    conv0.fixed["weight_exp"] = 10  # currents far beyond 2**23: the membrane saturates
    plan.node("features.1").fixed["dv"] = 1000
    conv1.fixed["weight_exp"] = -3
    conv1.fixed["bias"] = np.arange(conv1.fixed["bias"].size, dtype=np.int64) * 37 - 1000
    export_onnx(plan, tmp_path / "corner.onnx")
    ref = reference.run(plan, x)
    assert ref.stats["features.1"]["max_abs_v"] == fixed.V_MAX  # it saturated
    assert all(c.sum() > 0 for c in ref.layer_counts.values())
    _assert_same(check_onnx(plan, tmp_path / "corner.onnx", x, threads=1), ref)


def _neuron_plan(precision: str, exp: int, k: int = 64) -> Plan:
    """Affine (diagonal) -> LIF, with everything our converted graphs leave at 1 or 0 made
    non-trivial: per-neuron gain, leak and reset (float); negative weights and biases (fixed)."""
    rng = np.random.default_rng(7)
    sign = np.where(np.arange(k) % 2, 1.0, -1.0)
    syn = Node("fc", "affine", ["input"], (k,), (k,))
    lif = Node("lif", "lif", ["fc"], (k,), (k,))
    if precision == "fixed":
        w = np.diag(sign * 2 * rng.integers(1, 128, k)).astype(np.int64)  # doubled 8-bit mantissas
        syn.params = {"weight": w.astype(np.float32), "bias": np.zeros(k, np.float32)}
        syn.fixed = {"weight": w, "weight_exp": exp, "bias": rng.integers(-(2**14), 2**14, k)}
        lif.fixed = {"vth": 3000, "dv": 1234, "bias": syn.fixed["bias"], "current": False}  # (as targets.plan attaches)
    else:
        syn.params = {"weight": np.diag(rng.normal(0, 1, k)).astype(np.float32),
                      "bias": rng.normal(0, 0.1, k).astype(np.float32)}  # fmt: skip
        lif.params = {name: rng.uniform(lo, hi, k).astype(np.float32) for name, lo, hi in
                      (("beta", 0.3, 0.95), ("gain", 0.5, 1.5), ("leak", -0.1, 0.1),
                       ("v_threshold", 0.5, 1.5), ("v_reset", -0.3, 0.3))}  # fmt: skip
    return Plan([syn, lif], (k,), ["lif"], {"precision": precision, "T": T, "dt": 1e-3}, "<neuron test>")


@pytest.mark.parametrize(("precision", "exp"), [("float", 0), ("fixed", -2), ("fixed", 9)])
def test_step_file_membrane_trajectory(tmp_path, precision, exp):
    """The step file's membranes, bit for bit, from random (negative, saturating) states:
    fixed against :func:`core.fixed.lif_fixed_step`, float against the float32 LIF equation."""
    plan = _neuron_plan(precision, exp)
    syn, lif = plan.nodes
    export_step_onnx(plan, tmp_path / "neuron.step.onnx")
    sess = onnx_session(tmp_path / "neuron.step.onnx", threads=1)
    outputs = [o.name for o in sess.get_outputs()]
    rng = np.random.default_rng(11)
    n, k = 32, plan.input_shape[0]
    if precision == "fixed":
        v = rng.integers(-fixed.V_MAX, fixed.V_MAX + 1, (n, k))
    else:
        v = rng.normal(0, 1, (n, k)).astype(np.float32)
    for t in range(4):
        x = rng.integers(0, 40, (n, k)) if precision == "fixed" else rng.normal(0, 1, (n, k)).astype(np.float32)
        res = dict(zip(outputs, sess.run(None, {"x_t": x.astype(np.float32), "v/lif": v.astype(np.float32)})))
        if precision == "fixed":
            a = fixed.shift(x @ syn.fixed["weight"].T, exp)
            s, v = fixed.lif_fixed_step(v, a, lif.fixed["dv"], lif.fixed["vth"], syn.fixed["bias"])
        else:
            p = lif.params
            current = (x.astype(np.float64) @ syn.params["weight"].T.astype(np.float64)).astype(np.float32)
            v = p["beta"] * v + p["gain"] * (current + syn.params["bias"]) + p["leak"]
            s = v > p["v_threshold"]
            v = np.where(s, p["v_reset"], v).astype(np.float32)
        np.testing.assert_array_equal(res["v_next/lif"], v.astype(np.float32), err_msg=f"t={t}")
        np.testing.assert_array_equal(res["out_t"], s.astype(np.float32))
        np.testing.assert_array_equal(res["spikes/lif"], s.sum(1))
        assert 0 < s.sum() < s.size
    if precision == "fixed":
        assert (np.abs(v) == fixed.V_MAX).any() if exp > 0 else (v < 0).any()


def test_a_readout_that_is_not_a_lif_is_truncated_like_the_reference(tmp_path):
    # foreign graphs may end in a synapse: the reference counts ``out.astype(int64)`` at each step
    plan = _neuron_plan("float", 0)
    plan.outputs = ["fc"]
    x = np.random.default_rng(5).normal(0, 3, (T, 4, *plan.input_shape)).astype(np.float32)
    ref = reference.run(plan, x)
    assert (ref.counts < 0).any()
    export_onnx(plan, tmp_path / "m.onnx")
    export_step_onnx(plan, tmp_path / "m.step.onnx")
    for path in ("m.onnx", "m.step.onnx"):
        _assert_same(check_onnx(plan, tmp_path / path, x, threads=1), ref)


def test_bad_input_and_inconsistent_graphs_are_errors(built, tmp_path):
    plan, x, _, whole, _ = built("digits-float8-channel")
    with pytest.raises(DataError, match="unrolled for T=6"):
        check_onnx(plan, whole, x[:4])
    with pytest.raises(DataError, match=r"shaped \(T, B, 1, 8, 8\)"):
        check_onnx(plan, whole, x[..., :4])
    fixed_plan, fx, _, fixed_whole, _ = built("digits-fixed")
    with pytest.raises(DataError, match="integer spike counts"):
        check_onnx(fixed_plan, fixed_whole, fx * 0.5)
    bad = copy.deepcopy(plan)
    quant = bad.meta["layers"]["features.3"]["quant"]
    quant["scale"] = [s * 3 for s in quant["scale"]]
    with pytest.raises(ModelError, match="features.3: weights are not 8-bit integers times the scales"):
        export_onnx(bad, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


@pytest.mark.parametrize("case", ["digits-li-float8", "digits-li-fixed"])
def test_li_readout_files(built, case):
    """An LI readout: the whole-T file outputs float64 ``scores`` (no spike count for the LI layer),
    the step file carries the LI membrane as state and outputs it as ``out_t`` at every step."""
    plan, x, ref, whole, step = built(case)
    assert plan.scores and plan.li_names == ["head.3"] and "head.3" not in plan.lif_names
    model = onnx.load(whole)
    assert [o.name for o in model.graph.output] == ["scores", *(f"spikes/{n}" for n in plan.lif_names)]
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    meta = json.loads(next(p.value for p in model.metadata_props if p.key == METADATA_KEY))
    assert meta["output"] == "scores" and meta["li"] == ["head.3"]
    assert ref.counts.dtype == (np.int64 if plan.precision == "fixed" else np.float64)
    sess = onnx_session(step, threads=1)
    names = [o.name for o in sess.get_outputs()]
    assert "v_next/head.3" in names and "spikes/head.3" not in names
    held = [n.name for n in plan.nodes if n.kind in ("lif", "li")]
    state = {f"v/{n}": np.zeros((B, *plan.node(n).out_shape), np.float32) for n in held}
    total = np.zeros(ref.counts.shape)
    for t in range(T):
        res = dict(zip(names, sess.run(None, {"x_t": x[t], **state})))
        np.testing.assert_array_equal(res["out_t"], ref.traces["head.3"][t], err_msg=f"t={t}")
        total = total + res["out_t"].astype(np.float64)
        state = {f"v/{n}": res[f"v_next/{n}"] for n in held}
    np.testing.assert_array_equal(total, ref.counts)
