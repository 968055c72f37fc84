"""``python -m convert.to_nir``: files, parity, metadata and bad input."""

import json
import os
import pickle

import nir
import numpy as np
import pytest
import torch

from convert import to_nir
from convert.build import build_nir
from convert.trace import trace
from core.errors import ModelError
from targets import reference
from targets.plan import load_plan
from train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from train.models import build_model


def test_float_conversion_round_trip(trained_digits, tmp_path, capsys):
    out = tmp_path / "float"
    assert to_nir.main([str(trained_digits), "--out", str(out), "--onnx", "false", "--parity-samples", "64"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.conversion.json", "model.nir"]
    graph = nir.read(out / "model.nir", type_check=True)
    meta = json.loads(graph.metadata["snn_deploy"])
    assert meta["precision"] == "float" and meta["T"] == 4 and meta["dt"] == 1e-3 and meta["reset"] == "zero"
    assert meta["dataset"]["name"] == "digits"
    # DESIGN's LIF mapping, one value per neuron
    lif = graph.nodes["features.1"]
    assert lif.tau.shape == (32, 8, 8) and np.allclose(lif.tau, 2e-3) and np.allclose(lif.r, 2.0)
    assert np.all(lif.v_leak == 0) and np.all(lif.v_reset == 0) and np.all(lif.v_threshold == 1)
    assert tuple(graph.nodes["features.0"].input_shape) == (8, 8)
    assert graph.nodes["head.1"].start_dim == 0
    # quantised weights are integer * power-of-two scale, exactly
    w = graph.nodes["features.0"].weight
    scale = np.array(meta["layers"]["features.0"]["quant"]["scale"]).reshape(-1, 1, 1, 1)
    q = w / scale
    assert np.array_equal(q, np.rint(q)) and np.abs(q).max() <= 127
    report = json.loads((out / "model.conversion.json").read_text())
    assert abs(report["accuracy_change"]) <= 0.05
    assert "accuracy" in capsys.readouterr().out


def test_fixed_conversion_reports_choices(trained_digits, tmp_path, capsys):
    out = tmp_path / "fixed"
    assert (
        to_nir.main(
            [
                str(trained_digits),
                "--out",
                str(out),
                "--onnx",
                "false",
                "--precision",
                "fixed",
                "--parity-samples",
                "64",
                "--calibration-samples",
                "64",
            ]
        )
        == 0
    )
    report = json.loads((out / "model.fixed.conversion.json").read_text())  # (the default name carries the precision)
    choices = report["fixed"]["choices"]
    assert [c["lif"] for c in choices] == ["features.1", "features.4", "head.3"]
    for c in choices:
        assert 1 <= c["vth"] < 2**17 and 0 <= c["weight_exp"] <= 7 and c["dv"] == 2048 and c["max_mantissa"] <= 127
    for name, cal in report["fixed"]["calibration"].items():
        assert cal["max_abs_input"] <= 2**15 - 1, name
        assert cal["spikes_per_sample"] > 0, f"{name} is silent in fixed precision"
    plan = load_plan(out / "model.fixed.nir")
    assert plan.precision == "fixed"
    assert all(np.abs(n.fixed["weight"]).max() <= 254 for n in plan.nodes if n.kind in ("conv", "affine"))
    assert "fixed-precision choices per layer" in capsys.readouterr().out


def test_float_unquantised_graph_equals_checkpoint(trained_digits):
    ckpt = load_checkpoint(trained_digits)
    model = model_from_checkpoint(ckpt).eval()
    graph, _ = build_nir(model, (1, 8, 8), weight_bits=None, steps=4)
    x = (torch.rand(4, 16, 1, 8, 8) < 0.4).float()
    with torch.no_grad():
        expected = model(x).sum(0).numpy()
    got = reference.run(load_plan(graph), x.numpy()).counts
    assert np.array_equal(got, expected)


def test_batch_norm_is_folded():
    torch.manual_seed(0)
    m = build_model("digits_csnn", batch_norm=True)
    for bn in (mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    m.eval()
    layers, _ = trace(m, (1, 8, 8))
    assert [layer.kind for layer in layers].count("conv") == 2 and all(layer.kind != "bn" for layer in layers)
    x = torch.rand(1, 1, 8, 8)
    conv, bn = m.features[0], m.features[1]
    with torch.no_grad():
        expected = bn(conv(x)).numpy()
    w, b = layers[0].params["weight"], layers[0].params["bias"]
    folded = torch.nn.functional.conv2d(x.double(), torch.from_numpy(w), torch.from_numpy(b), padding=1).numpy()
    assert np.allclose(folded, expected, atol=1e-5)


def test_residual_graph_has_multiple_edges_into_one_node():
    m = build_model("sew_resnet18", width=4).eval()
    graph, _ = build_nir(m, (3, 32, 32), steps=2)
    into = {}
    for a, b in graph.edges:
        into.setdefault(b, []).append(a)
    assert max(len(v) for v in into.values()) >= 2
    plan = load_plan(graph)
    assert [n.name for n in plan.nodes][0] == "features.0"  # order from edges, not names


def test_unsupported_layer_is_named():
    model = build_model("digits_csnn")
    model.features[2] = torch.nn.MaxPool2d(2)
    model.head[1] = torch.nn.Dropout()
    with pytest.raises(ModelError, match=r"features\.2 \(MaxPool2d\); head\.1 \(Dropout\).*Supported:"):
        trace(model, (1, 8, 8))


def test_weight_range_not_representable():
    model = build_model("digits_csnn")
    with torch.no_grad():
        model.features[0].weight[0, 0, 0, 0] = 1e4  # 10,000 x the threshold
    x = np.ones((2, 1, 1, 8, 8), dtype=np.float32)
    with pytest.raises(ModelError, match=r"features\.0: the weight range .* cannot be represented in 8 bits"):
        build_nir(model, (1, 8, 8), precision="fixed", steps=2, calibration=x)


def test_bad_checkpoints_leave_no_files(trained_digits, tmp_path, capsys):
    out = tmp_path / "out"
    cases = {}
    cases["missing"] = (tmp_path / "nope.pt", "does not exist")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(trained_digits.read_bytes()[:500])
    cases["truncated"] = (cut, "corrupt or truncated")
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(type("X", (), {"__reduce__": lambda self: (os.system, ("true",))})()))
    cases["pickle"] = (evil, "not plain data")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    cases["foreign"] = (foreign, "not a snn-deploy checkpoint")
    ckpt = load_checkpoint(trained_digits)
    nan = tmp_path / "nan.pt"
    sd = dict(ckpt["state_dict"])
    sd["head.2.weight"] = sd["head.2.weight"].clone()
    sd["head.2.weight"][0, 0] = float("inf")
    save_checkpoint(nan, {k: v for k, v in ckpt.items() if k not in ("format", "version")} | {"state_dict": sd})
    cases["nan"] = (nan, r"'head.2.weight' holds NaN or infinite")
    unknown = tmp_path / "unknown.pt"
    save_checkpoint(unknown, {k: v for k, v in ckpt.items() if k not in ("format", "version")} | {"arch": "resnet9000"})
    cases["arch"] = (unknown, "unknown model 'resnet9000'")
    teacher = trained_digits.parent / "teacher.pt"
    for label, (path, message) in cases.items():
        assert to_nir.main([str(path), "--out", str(out), "--onnx", "false"]) == 2, label
        assert message in capsys.readouterr().err, label
        assert not out.exists() or not any(out.iterdir()), f"{label} left files behind"
    del teacher


def test_float_weight_range_not_representable():
    model = build_model("digits_csnn")
    with torch.no_grad():
        model.head[2].weight[0, 0] = 1e3
    with pytest.raises(ModelError, match=r"head\.2: the weight range .* cannot be represented in 4 bits"):
        build_nir(model, (1, 8, 8), weight_bits=4, per_channel=False, steps=2)


@pytest.mark.parametrize("precision", ["float", "fixed"])
def test_onnx_files_agree_with_the_graph(trained_digits, tmp_path, precision):
    import onnx

    out = tmp_path / precision
    argv = [
        str(trained_digits),
        "--out",
        str(out),
        "--name",
        "model",
        "--precision",
        precision,
        "--parity-samples",
        "48",
        *(["--calibration-samples", "48"] if precision == "fixed" else []),
    ]
    assert to_nir.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "model.conversion.json",
        "model.nir",
        "model.onnx",
        "model.step.onnx",
    ]
    report = json.loads((out / "model.conversion.json").read_text())
    assert report["onnx"]["identical_output_counts_vs_reference"] == 1.0
    assert report["onnx"]["step_identical_output_counts_vs_reference"] == 1.0
    for name in ("model.onnx", "model.step.onnx"):
        onnx.checker.check_model(onnx.load(out / name), full_check=True)
    if precision == "float":
        ops = {
            (n.op_type, next((a.i for a in n.attribute if a.name == "axis"), None))
            for n in onnx.load(out / "model.onnx").graph.node
        }
        assert ("DequantizeLinear", 0) in ops, "per-channel QDQ on the weights"


def test_fixed_layer_gone_silent_is_an_error(trained_digits, tmp_path, monkeypatch, capsys):
    """If the chosen integers silence a layer that spikes in float, conversion must refuse."""
    import dataclasses

    from convert import build
    from core.fixed import VTH_MAX

    real = build.choose_fixed

    def too_high(syn, lif, **kw):
        c = real(syn, lif, **kw)
        # (the largest threshold Loihi holds: a larger one is refused as out of range before calibration)
        return dataclasses.replace(c, vth=min(c.vth * 1000, VTH_MAX)) if lif.name == "head.3" else c

    monkeypatch.setattr(build, "choose_fixed", too_high)
    argv = [
        str(trained_digits),
        "--out",
        str(tmp_path / "o"),
        "--precision",
        "fixed",
        "--onnx",
        "false",
        "--calibration-samples",
        "32",
    ]
    assert to_nir.main(argv) == 2
    assert "layer head.3 is silent on the calibration data, where the float model spikes" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# ---------------------------------------------------------------------------------------------
# The LI readout


@pytest.fixture(scope="module")
def li_student(trained_digits, tmp_path_factory):
    from tests.li_helpers import li_checkpoint

    return li_checkpoint(trained_digits, tmp_path_factory.mktemp("li") / "student.pt")


def test_li_float_conversion_round_trip(li_student, tmp_path):
    """nir.LI as DESIGN's mapping (one value per neuron), per-class scores in the parity report, and ONNX
    Runtime's scores identical to the reference's, bit for bit."""
    out = tmp_path / "li"
    assert to_nir.main([str(li_student), "--out", str(out), "--parity-samples", "64"]) == 0
    graph = nir.read(out / "model.nir", type_check=True)
    li = graph.nodes["head.3"]
    assert isinstance(li, nir.LI) and li.tau.shape == (10,) and np.all(li.tau == 2e-3) and np.all(li.r == 2.0)
    assert np.all(li.v_leak == 0)
    meta = json.loads(graph.metadata["snn_deploy"])
    assert meta["layers"]["head.3"] == {"kind": "li"} and meta["source"]["arch_args"]["readout"] == "li"
    report = json.loads((out / "model.conversion.json").read_text())
    assert report["onnx"]["identical_output_counts_vs_reference"] == 1.0
    assert report["onnx"]["step_identical_output_counts_vs_reference"] == 1.0
    assert set(report["graph_reference"]["spikes_per_sample"]) == {"features.1", "features.4"}  # no LI count
    assert report["graph_reference"]["accuracy"] > 0.5 and abs(report["accuracy_change"]) <= 0.05
    plan = load_plan(out / "model.nir")
    assert plan.scores and plan.li_names == ["head.3"]


def test_li_fixed_conversion_bounds_the_membrane(li_student, tmp_path, capsys):
    """Fixed precision: the LI readout's exponent keeps its membrane provably at or below Loihi's largest
    threshold (2**23 - 64), so the LIF that runs it never fires or saturates; all recorded in metadata."""
    out = tmp_path / "li-fixed"
    argv = [str(li_student), "--out", str(out), "--precision", "fixed", "--parity-samples", "64",
            "--calibration-samples", "64", "--netx", "true"]  # fmt: skip
    assert to_nir.main(argv) == 0
    report = json.loads((out / "model.fixed.conversion.json").read_text())
    c = report["fixed"]["choices"][-1]
    assert c["lif"] == "head.3" and c["neuron"] == "li" and c["vth"] == 2**17 - 1 and c["dv"] == 2048
    assert -1 <= c["weight_exp"] <= 0 and 0 < c["v_bound"] <= 2**23 - 64 and c["a_bound"] <= 2**15 - 1
    cal = report["fixed"]["calibration"]["head.3"]
    assert 0 < cal["max_abs_v"] <= c["v_bound"] and cal["v_headroom"] > 1 and "spikes_per_sample" not in cal
    meta = json.loads(nir.read(out / "model.fixed.nir").metadata["snn_deploy"])
    fx = meta["layers"]["head.3"]["fixed"]
    assert fx["du"] == 4095 and fx["dv"] == 2048 and fx["v_bound"] == c["v_bound"] and fx["vth"] == 2**17 - 1
    assert report["onnx"]["identical_output_counts_vs_reference"] == 1.0
    # netx holds the LI as a CUBA neuron with a threshold it never reaches; same integers as the .nir
    assert report["netx"]["layers"][-1] == "dense" and report["netx"]["identical_output_counts_vs_reference"] == 1.0
    from convert.netx import read_netx

    assert read_netx(out / "model.fixed.netx.h5")[-1]["neuron"]["vThMant"] == 2**17 - 1
    plan = load_plan(out / "model.fixed.nir")
    assert plan.node("head.3").fixed["dv"] == 2048 and not plan.node("head.3").fixed["current"]
    assert plan.node("head.3").fixed["bias"] is plan.node("head.2").fixed["bias"]  # its synapse's bias, in the membrane
    ref = reference.run(plan, (np.random.default_rng(0).random((4, 3, 1, 8, 8)) < 0.5).astype(np.float32))
    assert ref.counts.dtype == np.int64
    assert "LI readout: |v| <= " in capsys.readouterr().out


def test_li_errors(tmp_path):
    """An LI anywhere but at the end of a student is refused; an LI readout that cannot be bounded below
    Loihi's threshold is refused with the layer named."""
    from convert.quantise import choose_fixed_li
    from convert.trace import Layer
    from train.neuron import LI

    model = build_model("digits_csnn")
    model.features[2] = LI()  # the first conv layer's LIF as an LI
    with pytest.raises(ModelError, match=r"LI layers are readouts and must end the student; features.2"):
        trace(model, (1, 8, 8))
    syn = Layer("fc", "affine", ["p"], (4096,), (10,), {"weight": np.ones((10, 4096)), "bias": np.zeros(10)})
    li = Layer("out", "li", ["fc"], (10,), (10,), {"tau": 2e-3, "dt": 1e-3})
    assert choose_fixed_li(syn, li, 0.0, 1.0).weight_exp <= -4
    with pytest.raises(
        ModelError, match=r"LI readout out cannot be kept below saturation: with the 8-bit weights of fc"
    ):
        choose_fixed_li(syn, li, 0.0, 1e6)
    with pytest.raises(ModelError, match=r"LI layer out: beta 0.9999 rounds to no decay"):
        choose_fixed_li(syn, Layer("out", "li", ["fc"], (10,), (10,), {"tau": 10.0, "dt": 1e-3}), 0.0, 1.0)


def test_a_qat_student_is_written_on_its_training_grid(tmp_path):
    """A student trained with 6-bit per-layer QAT converts, by default, to exactly those weights: the
    float graph then equals the checkpoint's own forward pass (no second rounding)."""
    from tests.conftest import tiny_train_args
    from train import bkd

    run = tmp_path / "qat"
    argv = tiny_train_args(run, "--epochs", "1", "--distill", "none", "--weight-bits", "6", "--per-channel", "false")
    assert bkd.main(argv) == 0
    assert to_nir.main([str(run / "student.pt"), "--out", str(tmp_path / "g"), "--onnx", "false"]) == 0
    graph = nir.read(tmp_path / "g" / "model.nir")
    meta = json.loads(graph.metadata["snn_deploy"])
    assert meta["weight_bits"] == 6 and meta["per_channel"] is False
    model = model_from_checkpoint(load_checkpoint(run / "student.pt"))
    from train.quant import fake_quantise

    w = fake_quantise(model.features[0].weight, 6, False).detach().numpy()
    assert np.array_equal(graph.nodes["features.0"].weight, w.astype(np.float32))
    report = json.loads((tmp_path / "g" / "model.conversion.json").read_text())
    assert report["graph_reference"]["identical_output_counts_vs_checkpoint"] == 1.0, "the graph is the trained network"
