"""``runtime.run`` and ``runtime.verify`` on a small trained model: every target, both precisions."""

import json
import shutil

import h5py
import nir
import numpy as np
import onnx
import pytest
import torch

from convert import to_nir
from core.errors import ConfigError, DataError
from inputs.graph_data import load_inputs
from runtime import run as run_cmd
from runtime import verify
from targets import TARGETS, unavailable_reason
from targets.plan import load_plan
from targets.reference import RunResult


@pytest.mark.parametrize("target", ["reference", "torch", "onnx", "norse"])
def test_run_reports(digits_graphs, target, capsys):
    out = digits_graphs / f"float.{target}.json"
    argv = [
        str(digits_graphs / "float.nir"),
        "--target",
        target,
        "--samples",
        "24",
        "--progress",
        "false",
        *(["--per-step"] if target != "onnx" else []),  # (onnx returns no rasters: refused there)
        "--out",
        str(out),
    ]
    assert run_cmd.main(argv) == 0
    rep = json.loads(out.read_text())
    assert rep["samples"] == 24 and 0 <= rep["accuracy"] <= 1 and rep["samples_per_s"] > 0
    assert set(rep["layers"]) == {"features.1", "features.4", "head.3"}
    assert 0 < rep["activation_sparsity"] < 1
    if target == "onnx":
        assert rep["synaptic_operations"] is None and "no per-layer rasters" in rep["note"]
    else:
        assert rep["synaptic_operations"]["per_sample"] > 0
        assert len(rep["layers"]["features.1"]["per_step"]) == rep["T"]
        assert sum(rep["layers"]["features.1"]["per_step"]) == rep["layers"]["features.1"]["total"]
    assert "accuracy" in capsys.readouterr().out


def test_synaptic_operations_by_hand(digits_graphs):
    """Effective accumulates of the first conv: every input spike times its fan-out (32 channels x
    the 3x3 kernel positions that stay inside the 8x8 map)."""
    from runtime.metrics import fanout, synaptic_operations
    from targets import reference

    plan = load_plan(digits_graphs / "float.nir")
    conv = plan.node("features.0")
    f = fanout(conv)
    assert f[0, 0, 0] == 32 * 4 and f[0, 0, 3] == 32 * 6 and f[0, 4, 4] == 32 * 9
    x = np.zeros((2, 1, 1, 8, 8), np.float32)
    x[0, 0, 0, 0, 0] = x[1, 0, 0, 4, 4] = 1
    res = reference.run(plan, x, record=True)
    assert synaptic_operations(plan, x, res.rasters)["features.0"].tolist() == [32 * 4 + 32 * 9]


def test_run_errors(digits_graphs, tmp_path, capsys):
    assert run_cmd.main([str(digits_graphs / "float.nir"), "--target", "loihi3"]) == 2
    assert "unknown target 'loihi3'; known targets: " + ", ".join(TARGETS) in capsys.readouterr().err
    assert run_cmd.main([str(tmp_path / "none.nir")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_cmd.main([str(digits_graphs / "fixed.nir"), "--target", "norse"]) == 2
    assert "runs float precision; " in capsys.readouterr().err
    assert run_cmd.main([str(digits_graphs / "float.nir"), "--data", "event_digits", "--samples", "2"]) == 2
    assert "gives inputs (2, 34, 34), the graph takes (1, 8, 8)" in capsys.readouterr().err
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"not hdf5 at all")
    assert run_cmd.main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert "is not a readable NIR graph" in err and "checkpoint" not in err
    for kind, message in [(None, "node features.0 has no type"),
                          ("Frobnicate", "node features.0 has the type 'Frobnicate', which NIR does not define")]:  # fmt: skip
        shutil.copy(digits_graphs / "float.nir", bad)  # nir.read says KeyError: 'type' or an empty AssertionError
        with h5py.File(bad, "r+") as f:
            del f["node/nodes/features.0/type"]
            if kind:
                f["node/nodes/features.0/type"] = np.bytes_(kind)
        assert run_cmd.main([str(bad)]) == 2
        assert message in capsys.readouterr().err
    for field, message in [("input/shape", "node input (Input) lacks its field 'shape'"),  # nir: KeyError: 'shape'
                           ("features.1/tau", "node features.1 (LIF) lacks its field 'tau'"),
                           ("output/shape", "node output (Output) lacks its field 'shape'")]:  # fmt: skip
        shutil.copy(digits_graphs / "float.nir", bad)
        with h5py.File(bad, "r+") as f:
            del f[f"node/nodes/{field}"]
        assert run_cmd.main([str(bad)]) == 2
        assert message in capsys.readouterr().err
    spikes = np.zeros((4, 0, 1, 8, 8), np.float32)  # no samples: a ValueError from the first batch
    np.save(tmp_path / "none.npy", spikes)
    assert run_cmd.main([str(digits_graphs / "float.nir"), "--data", str(tmp_path / "none.npy")]) == 2
    assert "none.npy: the spike array (4, 0, 1, 8, 8) has no samples" in capsys.readouterr().err
    # another kind of file named as the graph: say what it is and which command takes it
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 1, 8, 8), np.float32))
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07\x12\x07pytorch")
    (tmp_path / "rec.aedat4").write_bytes(b"#!AER-DAT4.0\r\n" + bytes(64))
    for name, hint in [("x.npy", "it is a NumPy file: name a .nir graph first and this file with --data"),
                       ("model.onnx", "it is an ONNX file: the targets run the .nir graph"),
                       ("rec.aedat4", f"it is an event recording (aedat4): python -m runtime.stream {tmp_path / 'rec.aedat4'}"),
                       (".", "is a folder")]:  # fmt: skip
        assert run_cmd.main([str(tmp_path / name)]) == 2
        assert hint in capsys.readouterr().err, name
    g = nir.read(digits_graphs / "float.nir")  # a recorded dataset that cannot be rebuilt: say whose it is
    meta = json.loads(g.metadata["snn_deploy"])
    meta["dataset"]["name"] = "mnistx"
    g.metadata["snn_deploy"] = json.dumps(meta)
    nir.write(tmp_path / "meta.nir", g)
    assert run_cmd.main([str(tmp_path / "meta.nir")]) == 2
    assert f"{tmp_path / 'meta.nir'}: the dataset it records: unknown dataset 'mnistx'" in capsys.readouterr().err
    meta["dataset"] |= {"name": "nmnist", "args": {"root": str(tmp_path / "gone"), "steps": 8}}  # a folder moved
    g.metadata["snn_deploy"] = json.dumps(meta)
    nir.write(tmp_path / "meta.nir", g)
    assert run_cmd.main([str(tmp_path / "meta.nir")]) == 2
    err = capsys.readouterr().err
    assert f"the dataset it records, in {tmp_path / 'gone'}: N-MNIST folder" in err
    assert err.rstrip().endswith("name the folder where it lies now with --data-root"), err
    checkpoint = tmp_path / "student.pt"  # a checkpoint named as the graph: say how to get its graph
    torch.save({"w": torch.zeros(2)}, checkpoint)
    assert run_cmd.main([str(checkpoint)]) == 2
    assert (
        f"it is a PyTorch checkpoint: python -m convert.to_nir {checkpoint} writes its graph" in capsys.readouterr().err
    )


def _simulate_unavailable_lava(monkeypatch, reason="simulated: no Lava on this machine"):
    """The lava target's availability check answers ``reason`` (the registry resolves it lazily)."""
    from targets import lava_target

    monkeypatch.setattr(lava_target, "unavailable_reason", lambda: reason)
    return reason


@pytest.mark.parametrize("precision", ["float", "fixed"])
def test_verify_all_targets_agree(digits_graphs, tmp_path, precision, capsys, monkeypatch):
    """Every target that supports the graph agrees; an unavailable one (lava, simulated so that the
    test stays fast) is skipped with its reason in the output and the report."""
    reason = _simulate_unavailable_lava(monkeypatch)
    out = tmp_path / "v"
    argv = [
        str(digits_graphs / f"{precision}.nir"),
        "--targets",
        "all",
        "--samples",
        "40",
        "--progress",
        "false",
        "--out",
        str(out),
    ]
    assert verify.main(argv) == 0, capsys.readouterr()
    captured = capsys.readouterr()
    rep = json.loads((out / "report.json").read_text())
    kinds = {n.kind for n in load_plan(digits_graphs / f"{precision}.nir").nodes}
    supported = {t for t, i in TARGETS.items() if precision in i.precisions and kinds <= set(i.kinds)}
    expected = supported - {"lava"}
    assert {"reference", "torch", "onnx"} <= expected and ("norse" in expected) == (precision == "float")
    assert set(rep["targets"]) == expected and rep["passed"]
    for t in expected - {"reference"}:
        c = rep["targets"][t]["comparison"]
        assert c["identical_output_counts"] == 1.0 and c["failed_samples"] == 0 and c["first_divergence"] is None
    for name in ("report.md", "spike_counts.png", "rasters.png", "agreement.png"):
        assert (out / name).is_file()
    assert "exact" in rep["tolerance"]
    float_only = [t for t in ("norse", "snntorch") if t in TARGETS and not unavailable_reason(t)]
    norse_skip = (
        {}
        if precision == "float"
        else {t: "declines this graph: it runs float precision only; the graph is fixed" for t in float_only}
    )
    assert rep["skipped"] == {"lava": reason} | norse_skip  # every target that did not run says why
    assert f"skipping target lava: {reason}" in captured.err
    assert f"Skipped lava: unavailable on this machine ({reason})" in (out / "report.md").read_text()


def test_unavailable_target_named_explicitly_is_an_error(digits_graphs, tmp_path, capsys, monkeypatch):
    reason = _simulate_unavailable_lava(monkeypatch)
    graph, common = str(digits_graphs / "fixed.nir"), ["--samples", "4", "--progress", "false"]
    assert verify.main([graph, "--targets", "torch,lava", *common, "--out", str(tmp_path / "v")]) == 2
    assert f"error: target 'lava' is unavailable on this machine: {reason}" in capsys.readouterr().err
    assert run_cmd.main([graph, "--target", "lava", *common, "--out", str(tmp_path / "r.json")]) == 2
    assert f"error: target 'lava' is unavailable on this machine: {reason}" in capsys.readouterr().err
    assert not (tmp_path / "v").exists() and not (tmp_path / "r.json").exists()


@pytest.mark.lava
def test_run_lava_gives_the_reference_counts(digits_graphs, tmp_path):
    """``runtime.run --target lava`` runs T + depth steps and aligns them: per-layer totals, per-step
    counts and predictions equal the reference's (with only T steps the deepest layers would miss
    their last steps)."""
    from targets import unavailable_reason

    if unavailable_reason("lava"):
        pytest.skip(f"lava target unavailable: {unavailable_reason('lava')}")
    reps = {}
    for target in ("reference", "lava"):
        out = tmp_path / f"{target}.json"
        argv = [str(digits_graphs / "fixed.nir"), "--target", target, "--samples", "6", "--progress", "false",
                "--per-step", "--out", str(out)]  # fmt: skip
        assert run_cmd.main(argv) == 0
        reps[target] = json.loads(out.read_text())
    ref, lava = reps["reference"], reps["lava"]
    assert lava["T"] == ref["T"] and lava["predictions"] == ref["predictions"]
    assert lava["accuracy"] == ref["accuracy"]
    assert sum(v["total"] for v in ref["layers"].values()) > 0
    for k, v in ref["layers"].items():
        assert lava["layers"][k]["total"] == v["total"], k
        assert lava["layers"][k]["per_step"] == v["per_step"], k
    assert lava["synaptic_operations"] == ref["synaptic_operations"]


def test_verify_refuses_a_wrong_target_before_reading_any_input(digits_graphs, tmp_path, capsys, monkeypatch):
    """An unknown target or one that does not run the graph's precision is told at once: the inputs
    (for ``--data nmnist_emulated``, seconds of emulation) are never read."""

    def no_inputs(*args, **kwargs):
        raise AssertionError("the inputs were read before the targets were checked")

    monkeypatch.setattr(verify, "command_inputs", no_inputs)
    out = ["--out", str(tmp_path / "v")]
    assert verify.main([str(digits_graphs / "float.nir"), "--targets", "torch,loihi3", *out]) == 2
    assert "unknown target 'loihi3'" in capsys.readouterr().err
    assert verify.main([str(digits_graphs / "fixed.nir"), "--targets", "eventsim,norse", *out]) == 2
    assert "target 'norse' runs float precision; " in capsys.readouterr().err
    # nothing to compare with (a TypeError from the plots, after the runs), and a --device nothing takes
    for targets in ("reference", "", " , "):
        assert verify.main([str(digits_graphs / "float.nir"), "--targets", targets, *out]) == 2, targets
        assert "--targets names no target to compare with the reference" in capsys.readouterr().err
    assert verify.main([str(digits_graphs / "float.nir"), "--targets", "eventsim", "--device", "cpu", *out]) == 2
    assert "--device does not apply to target(s) eventsim" in capsys.readouterr().err


def test_verify_catches_a_perturbed_graph(digits_graphs, tmp_path, capsys):
    """One int8 weight changed in model.onnx: the onnx target must fail, naming layer and sample."""
    import shutil

    work = tmp_path / "p"
    work.mkdir()
    for suffix in (".nir", ".onnx", ".step.onnx"):
        shutil.copy(digits_graphs / f"float{suffix}", work / f"float{suffix}")
    model = onnx.load(work / "float.onnx")
    init = next(i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8 and "features.0" in i.name)
    arr = onnx.numpy_helper.to_array(init).copy()
    arr.flat[np.argmax(np.abs(arr))] *= -1
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    onnx.save(model, work / "float.onnx")
    assert (
        verify.main([str(work / "float.nir"), "--targets", "torch,onnx", "--samples", "40", "--progress", "false"]) == 1
    )
    err = capsys.readouterr().err
    assert "FAIL: target onnx disagrees with the reference" in err and "layer features.1" in err


def test_tie_tracing_counts_ties_and_fails_the_rest(digits_graphs):
    plan = load_plan(digits_graphs / "float.nir")
    spikes, labels, _ = load_inputs(plan, samples=3)
    from targets import reference

    ref = reference.run(plan, spikes, record=True, margins=True)
    got = RunResult(
        ref.counts.copy(),
        {k: v.copy() for k, v in ref.layer_counts.items()},
        {k: v.copy() for k, v in ref.rasters.items()},
    )
    # sample 0: flip a neuron that sat exactly on its threshold (a tie); sample 1: one far from it
    layer = "features.1"
    margins = {k: v.copy() for k, v in ref.margins.items()}
    margins[layer][2, 0, 0, 0, 0] = 0.0
    margins[layer][2, 1, 0, 0, 0] = -0.5
    ref.margins = margins
    for s in (0, 1):
        got.rasters[layer][2, s, 0, 0, 0] ^= 1
        got.layer_counts[layer][s] += 1
    c = verify.compare(plan, ref, got, labels)
    assert c["threshold_tie_samples"] == 1 and c["ties"][0]["sample"] == 0
    assert c["failed_samples"] == 1 and c["failures"][0] == {
        "sample": 1,
        "layer": layer,
        "step": 2,
        "neuron": 0,
        "reference_spiked": bool(ref.rasters[layer][2, 1, 0, 0, 0]),
    }
    assert not c["passed"]


def test_foreign_graph_needs_data(tmp_path):
    import nir

    g = nir.NIRGraph(
        nodes={"input": nir.Input({"input": np.array([3])}), "a": nir.Affine(np.ones((2, 3), np.float32), np.zeros(2, np.float32)),
               "l": nir.LIF(np.full(2, 2e-3), np.full(2, 2.0), np.zeros(2), np.ones(2), np.zeros(2)), "output": nir.Output({"output": np.array([2])})},
        edges=[("input", "a"), ("a", "l"), ("l", "output")],
    )  # fmt: skip
    with pytest.raises(ConfigError, match="records no dataset"):
        load_inputs(load_plan(g))


def _delayed_run(plan, spikes, *, record=False):
    """A stand-in for a target whose synaptic layers each deliver one step late (like Lava's)."""
    from runtime.latency import layer_depths
    from targets import reference

    res = reference.run(plan, spikes, record=True)
    depths = layer_depths(plan)
    rasters = {}
    for k, r in res.rasters.items():
        shifted = np.zeros_like(r)
        d = depths[k]
        shifted[d:] = r[: r.shape[0] - d]
        rasters[k] = shifted
    counts = {k: r.reshape(r.shape[0], r.shape[1], -1).sum(axis=(0, 2)) for k, r in rasters.items()}
    out = rasters[plan.outputs[0]]
    return RunResult(out.reshape(out.shape[0], out.shape[1], -1).sum(axis=0), counts, rasters)


@pytest.mark.parametrize("declared,passes", [(1, True), (0, False)])
def test_verify_aligns_per_layer_latency(digits_graphs, tmp_path, monkeypatch, declared, passes):
    import sys
    import types

    from targets import TARGETS, TargetInfo

    module = types.ModuleType("delayed_target")
    module.run = _delayed_run
    monkeypatch.setitem(sys.modules, "delayed_target", module)
    monkeypatch.setitem(
        TARGETS,
        "delayed",
        TargetInfo(
            "delayed",
            "delayed_target",
            ("float", "fixed"),
            ("conv", "affine", "lif", "sumpool", "flatten"),
            "test",
            latency=declared,
        ),
    )
    argv = [
        str(digits_graphs / "fixed.nir"),
        "--targets",
        "delayed",
        "--samples",
        "16",
        "--progress",
        "false",
        "--out",
        str(tmp_path / "v"),
    ]
    assert (verify.main(argv) == 0) is passes


@pytest.mark.parametrize("precision", ["float", "fixed"])
def test_real_nmnist_through_the_runtime(eventdata, tmp_path, precision):
    """Real N-MNIST recordings (../shared/eventdata) through the runtime's input path: torch and
    onnx equal the reference on them, in both precisions."""
    import torch

    from convert.build import build_nir
    from convert.nirgraph import write_graph
    from convert.to_onnx import export_onnx
    from targets import get_target, reference
    from train.models import build_model

    torch.manual_seed(0)
    model = build_model("nmnist_csnn").eval()
    with torch.no_grad():
        model.head[2].weight.mul_(8)
    root = str(eventdata / "nmnist" / "train")
    plan0 = load_plan(build_nir(model, (2, 34, 34), steps=8)[0])
    plan0.meta["T"] = 8
    spikes, labels, what = load_inputs(plan0, "nmnist", root=root, samples=12)
    assert spikes.shape == (8, 12, 2, 34, 34) and labels.shape == (12,) and "nmnist/test" in what
    assert spikes.sum() > 1000, "real recordings give events"
    graph, _ = build_nir(model, (2, 34, 34), precision=precision, steps=8, calibration=spikes)
    path = tmp_path / "m.nir"
    write_graph(path, graph)
    plan = load_plan(path)
    export_onnx(plan, path.with_suffix(".onnx"))
    expected = reference.run(plan, spikes)
    assert sum(int(v.sum()) for v in expected.layer_counts.values()) > 0
    for target in ("torch", "onnx"):
        got = get_target(target).runner()(plan, spikes)
        assert np.array_equal(got.counts, expected.counts), target
        assert all(np.array_equal(got.layer_counts[k], v) for k, v in expected.layer_counts.items()), target


# ---------------------------------------------------------------------------------------------
# Prediction ties and dead outputs; the LI readout through runtime.run and runtime.verify


def test_silenced_class_is_reported(digits_graphs, tmp_path, capsys):
    """Class 2's readout neuron silenced (its weights and bias made negative): runtime.run names class 2
    as never firing and never winning in one warning line, and counts ties and silent samples."""
    import nir

    graph = nir.read(digits_graphs / "float.nir")
    fc = graph.nodes["head.2"]
    w, b = np.array(fc.weight), np.array(fc.bias)
    w[2], b[2] = -np.abs(w[2]), -np.abs(b).max() - 1
    nodes = dict(graph.nodes) | {"head.2": nir.Affine(weight=w, bias=b)}
    path = tmp_path / "silenced.nir"
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=graph.edges, metadata=graph.metadata))
    out = tmp_path / "r.json"
    assert run_cmd.main([str(path), "--target", "reference", "--samples", "48", "--progress", "false",
                         "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    rep = json.loads(out.read_text())
    st = rep["output"]["predictions"]
    assert rep["output"]["kind"] == "spike counts" and "lowest class index" in st["tie_rule"]
    assert 2 in st["never_firing_classes"] and 2 in st["never_winning_classes"]
    assert 2 not in rep["predictions"]
    counts = run_cmd.predictions  # the documented rule: argmax, the lowest tied class
    assert counts(np.array([[0, 3, 3], [0, 0, 0]])).tolist() == [1, 0]
    warnings = [line for line in printed.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "class(es) 2" in warnings[0] and "never fire" in warnings[0]
    assert rep["output"]["warning"] == warnings[0]
    assert f"{st['tied_samples']} of 48 samples with a tied maximum, {st['silent_samples']} without" in printed


def test_prediction_stats_by_hand():
    from runtime.metrics import prediction_stats, prediction_warning

    counts = np.array([[0, 0, 0], [2, 2, 1], [0, 1, 4], [0, 0, 0]])
    st = prediction_stats(counts, spike_readout=True)
    assert st["tied_samples"] == 3 and st["silent_samples"] == 2 and st["tied_sample_indices"] == [0, 1, 3]
    assert st["never_firing_classes"] == [] and st["never_winning_classes"] == [1]
    assert prediction_warning(st, 4) == ("warning: on the 4 evaluated samples class(es) 1 never win; "
                                         "3 tied maxima went to the lowest class index, 2 samples had no output spike")  # fmt: skip
    scores = np.array([[0.5, -1.0], [0.25, 0.25]])
    st = prediction_stats(scores, spike_readout=False)
    assert st["tied_samples"] == 1 and "silent_samples" not in st and st["never_winning_classes"] == [1]


@pytest.fixture(scope="module")
def li_graphs(trained_digits, tmp_path_factory):
    from tests.li_helpers import li_checkpoint

    out = tmp_path_factory.mktemp("li_graphs")
    ckpt = li_checkpoint(trained_digits, out / "student.pt")
    for precision in ("float", "fixed"):
        argv = [str(ckpt), "--out", str(out), "--name", precision, "--precision", precision,
                "--parity-samples", "32", *(["--calibration-samples", "64"] if precision == "fixed" else [])]  # fmt: skip
        assert to_nir.main(argv) == 0
    return out


@pytest.mark.parametrize("precision", ["float", "fixed"])
def test_li_readout_run_and_verify(li_graphs, tmp_path, precision, capsys, monkeypatch):
    """An LI readout: runtime.run reports scores (no LI spike count) and verify finds every target's
    scores and membrane traces identical to the reference's (lava simulated unavailable here; the
    lava-marked target tests run it)."""
    graph = str(li_graphs / f"{precision}.nir")
    out = tmp_path / "r.json"
    assert (
        run_cmd.main([graph, "--target", "eventsim", "--samples", "24", "--progress", "false", "--out", str(out)]) == 0
    )
    rep = json.loads(out.read_text())
    assert rep["output"]["kind"] == "scores" and set(rep["layers"]) == {"features.1", "features.4"}
    assert rep["accuracy"] > 0.5 and rep["synaptic_operations"]["per_sample"] > 0
    assert "output: scores (per-class membrane of the LI readout summed over T)" in capsys.readouterr().out
    _simulate_unavailable_lava(monkeypatch)
    vout = tmp_path / "v"
    argv = [graph, "--targets", "all", "--samples", "40", "--progress", "false", "--out", str(vout)]
    assert verify.main(argv) == 0, capsys.readouterr()
    rep = json.loads((vout / "report.json").read_text())
    assert rep["output"] == "scores" and rep["li_layers"] == ["head.3"] and "LI readout scores" in rep["tolerance"]
    assert set(rep["targets"]) == {"reference", "torch", "onnx", "eventsim"}  # norse maps no nir.LI
    for t in ("torch", "onnx", "eventsim"):
        c = rep["targets"][t]["comparison"]
        assert c["passed"] and c["identical_output_counts"] == 1.0 and c["identical_predictions"] == 1.0
        if t != "onnx":
            assert c["li_identical_traces"] == {"head.3": 1.0}
    assert (vout / "scores.png").is_file()
    assert "samples with a tied maximum" in (vout / "report.md").read_text()


def test_verify_finds_a_changed_li_membrane(li_graphs):
    """A target whose LI membrane differs in one step (its scores too) fails, and the divergence is
    never taken for a threshold tie (an LI has no threshold)."""
    from targets import reference

    plan = load_plan(li_graphs / "float.nir")
    spikes, labels, _ = load_inputs(plan, samples=3)
    ref = reference.run(plan, spikes, record=True, margins=True)
    traces = {k: v.copy() for k, v in ref.traces.items()}
    traces["head.3"][2, 1, 4] += np.float32(2**-10)
    counts = ref.counts.copy()
    counts[1, 4] += 2**-10
    got = RunResult(counts, dict(ref.layer_counts), dict(ref.rasters), traces=traces)
    rec = verify.compare(plan, ref, got, labels)
    assert not rec["passed"] and rec["threshold_tie_samples"] == 0 and rec["failed_samples"] == 1
    assert rec["first_divergence"]["layer"] == "head.3" and rec["first_divergence"]["step"] == 2
    assert rec["li_identical_traces"]["head.3"] == pytest.approx(2 / 3)


def test_a_labelled_folder_is_evaluated_whole(eventdata, tmp_path, capsys):
    """``--split all``: every recording that a folder's labels.csv lists; the default test split, a
    stratified 20% hold-out, cannot even be drawn from a folder this small."""
    import json

    import torch

    from convert.build import build_nir
    from convert.nirgraph import write_graph
    from runtime import run, verify
    from train.models import build_model

    folder = tmp_path / "ten"
    folder.mkdir()
    source = eventdata / "nmnist" / "train"
    rows = [f"{(source / f'{k}.bin').resolve()},{lab}" for k, lab in zip(range(1, 11), [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])]
    (folder / "labels.csv").write_text("file,label\n" + "\n".join(rows) + "\n")
    torch.manual_seed(0)
    graph, _ = build_nir(build_model("nmnist_csnn").eval(), (2, 34, 34), steps=8)
    path = tmp_path / "m.nir"
    write_graph(path, graph)
    out = tmp_path / "all.json"
    argv = [str(path), "--target", "reference", "--data", "nmnist", "--data-root", str(folder), "--out", str(out),
            "--progress", "false"]  # fmt: skip
    assert run.main(argv + ["--split", "all"]) == 0
    assert json.loads(out.read_text())["samples"] == 10
    assert run.main(argv) == 2
    assert "cannot hold out a stratified 20% test split" in capsys.readouterr().err
    argv = [str(path), "--targets", "reference,torch", "--data", "nmnist", "--data-root", str(folder), "--split", "all",
            "--samples", "None", "--out", str(tmp_path / "v"), "--progress", "false"]  # fmt: skip
    assert verify.main(argv) == 0
    assert "(10 samples)" in (tmp_path / "v" / "report.md").read_text()


def test_an_event_file_is_one_window_from_its_start_inside_the_graphs_frame(event_model, tmp_path):
    """``--data FILE``: a recording on a device's clock (first event at 41 s) binned from the
    dataset's t0 = 0 gave an all-zero input, and a larger sensor's events were dropped; both without
    a word (every layer silent)."""
    import dataclasses

    from inputs.events import EVENT_DTYPE
    from inputs.formats.arrays import write_npy

    plan = load_plan(event_model["float"])
    binning = {"steps": plan.steps, "duration_us": 300_000, "height": 34, "width": 34, "binary": True, "t0_us": 0}
    plan = dataclasses.replace(plan, meta=plan.meta | {"dataset": {"name": "nmnist", "binning": binning}})
    ev = np.zeros(5, EVENT_DTYPE)
    ev["x"], ev["y"], ev["p"] = [1, 2, 3, 4, 5], [6, 7, 8, 9, 10], 1
    for first_us in (1_000, 41_000_000):  # at 1 ms: the dataset's window, from 0; at 41 s: from its first event
        ev["t"] = first_us + np.array([0, 10_000, 100_000, 250_000, 400_000])
        write_npy(tmp_path / "rec.npy", ev)
        frames, _, what = load_inputs(plan, str(tmp_path / "rec.npy"))
        assert frames.sum() == 4, first_us
        start = 0 if first_us == 1_000 else first_us
        assert what == f"rec.npy (300 ms from t = {start:,} µs; 1 events outside it not used)"
    # --steps (plan.steps) and --bin-us bin it as they bin a dataset (--steps was ignored: T stayed the graph's)
    ev["t"] = 1_000 + np.array([0, 10_000, 100_000, 250_000, 400_000])
    write_npy(tmp_path / "rec.npy", ev)
    for steps, bin_us, shape, span in [(16, None, 16, 300), (16, 1_000, 16, 16), (300, 1_000, 300, 300)]:
        with_t = dataclasses.replace(plan, meta=plan.meta | {"T": steps})  # (what load_plan(steps=) sets)
        frames, _, what = load_inputs(with_t, str(tmp_path / "rec.npy"), bin_us=bin_us)
        assert frames.shape[0] == shape and what.startswith(f"rec.npy ({span} ms from t = 0 µs"), (steps, bin_us)
    ev["x"][2] = 100  # a 128-wide sensor's pixel
    write_npy(tmp_path / "rec.npy", ev)
    with pytest.raises(
        DataError, match=r"1 of the window's events lie outside the graph's 34x34 input .* runtime.stream"
    ):
        load_inputs(plan, str(tmp_path / "rec.npy"))


@pytest.mark.parametrize("named", [False, True], ids=["recorded", "--data"])
def test_samples_builds_only_that_many(digits_graphs, monkeypatch, named):
    """``--samples N`` built the whole split and then took N: ``--steps 1000000 --samples 2`` tried to
    encode all 360 test digits (172 GiB) and told the user to lower --samples."""
    from inputs import datasets

    built = []
    real = datasets.spike_batch
    monkeypatch.setattr(datasets, "spike_batch", lambda ds, idx: (built.append(len(ds)), real(ds, idx))[1])
    plan = load_plan(digits_graphs / "float.nir")
    whole, labels, _ = load_inputs(plan, "digits" if named else None)
    spikes, labels3, what = load_inputs(plan, "digits" if named else None, samples=3)
    assert built == [360, 3] and what == "digits/test (3 samples)"
    assert np.array_equal(spikes, whole[:, :3]) and np.array_equal(labels3, labels[:3])
