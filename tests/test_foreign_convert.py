"""Bring your own graph to Loihi: ``convert.to_nir graph.nir --precision fixed --data ...`` on a float
graph without our metadata (a trained network, its neurons written the way another tool might)."""

from __future__ import annotations

import json

import nir
import numpy as np
import pytest

from convert import to_nir
from core.errors import ModelError
from runtime.latency import run_aligned
from targets import get_target, unavailable_reason
from targets import reference as ref
from targets.plan import load_plan
from tests.conftest import DATA


@pytest.fixture(scope="module")
def foreign_digits(trained_digits, tmp_path_factory):
    """The trained digits student as float32 NIR, our metadata removed and every LIF written with
    r and threshold doubled (the same spikes: the membrane doubles exactly)."""
    out = tmp_path_factory.mktemp("foreign")
    assert to_nir.main([str(trained_digits), "--out", str(out), "--name", "own", "--weight-bits", "0",
                        "--parity-samples", "32", "--onnx", "false"]) == 0  # fmt: skip
    g = nir.read(out / "own.nir")
    nodes = {k: nir.LIF(tau=v.tau, r=v.r * 2, v_leak=v.v_leak, v_threshold=v.v_threshold * 2, v_reset=v.v_reset)
             if isinstance(v, nir.LIF) else v for k, v in g.nodes.items()}  # fmt: skip
    nir.write(out / "foreign.nir", nir.NIRGraph(nodes, g.edges))
    return out


def test_a_foreign_float_graph_becomes_a_loihi_network(foreign_digits, capsys):
    own, foreign = load_plan(foreign_digits / "own.nir"), load_plan(foreign_digits / "foreign.nir")
    assert foreign.steps is None and foreign.meta == {"dt": 1e-3, "dialect": "nir"}
    x = (np.random.default_rng(0).random((4, 16, 1, 8, 8)) < 0.5).astype(np.float32)
    assert np.array_equal(ref.run(own, x).counts, ref.run(foreign, x).counts)  # the doubling changes no spike
    argv = [str(foreign_digits / "foreign.nir"), "--precision", "fixed", "--data", "digits", "--steps", "4",
            "--out", str(foreign_digits), "--name", "loihi", "--parity-samples", "400"]  # fmt: skip
    assert to_nir.main(argv) == 0, capsys.readouterr()
    rep = json.loads((foreign_digits / "loihi.conversion.json").read_text())
    assert rep["graph"].endswith("foreign.nir") and rep["precision"] == "fixed" and rep["parity_samples"] == 360
    assert rep["float_label"] == "float graph (reference)"
    flt, fix = rep["float_checkpoint"]["accuracy"], rep["graph_reference"]["accuracy"]
    # the digits test split (360 samples): no loss beyond 0.5 points (this tiny T = 4 student's spike
    # counts tie often, so the integer network may also land a few samples higher), and the same
    # prediction as the float graph on nearly every sample
    assert flt > 0.9 and fix >= flt - 0.005, (flt, fix)
    assert rep["onnx"]["identical_output_counts_vs_reference"] == 1.0
    plan = load_plan(foreign_digits / "loihi.nir")
    assert plan.precision == "fixed" and plan.steps == 4 and all(n.fixed for n in plan.nodes if n.kind == "lif")
    from inputs.graph_data import load_inputs

    float_plan = load_plan(str(foreign_digits / "foreign.nir"), steps=4)
    spikes, labels, _ = load_inputs(float_plan, "digits")
    same = ref.run(plan, spikes).counts.argmax(1) == ref.run(float_plan, spikes).counts.argmax(1)
    assert same.mean() >= 0.95, same.mean()


@pytest.mark.lava
def test_the_converted_foreign_graph_is_bit_exact_on_lava(foreign_digits):
    plan = load_plan(foreign_digits / "loihi.nir")
    if unavailable_reason("lava"):
        pytest.skip(f"lava is unavailable: {unavailable_reason('lava')}")
    x = (np.random.default_rng(1).random((4, 6, 1, 8, 8)) < 0.5).astype(np.float32)
    expected = ref.run(plan, x, record=True)
    got = run_aligned(get_target("lava"), plan, x, record=True)
    assert np.array_equal(got.counts, expected.counts)
    for k, r in expected.rasters.items():
        assert np.array_equal(got.rasters[k], r), k


def _one_layer(path, neuron):
    nodes = {"x": nir.Input(np.array([3])), "fc": nir.Affine(np.ones((2, 3), np.float32), np.zeros(2, np.float32)),
             "n": neuron, "y": nir.Output(np.array([2]))}  # fmt: skip
    nir.write(path, nir.NIRGraph(nodes, [("x", "fc"), ("fc", "n"), ("n", "y")]))
    np.save(path.with_suffix(".npy"), np.ones((4, 2, 3), np.float32))
    return [str(path), "--precision", "fixed", "--data", str(path.with_suffix(".npy")), "--out", str(path.parent)]


@pytest.mark.parametrize(
    "neuron,message",
    [
        (nir.I(r=np.full(2, 1e3)), "n \\(I: an integrator read as a value"),
        (nir.CubaLIF(tau_syn=np.array([2e-3, 3e-3]), tau_mem=np.full(2, 4e-3), r=np.ones(2), v_leak=np.zeros(2),
                     v_threshold=np.ones(2)), "CubaLIF n has a current decay per neuron"),
        (nir.LIF(tau=np.array([2e-3, 4e-3]), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2)),
         "decay per neuron"),
        (nir.LIF(tau=np.full(2, 2e-3), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2), v_reset=np.full(2, 0.5)),
         "resets to 0.5"),
    ],
    ids=["integrator", "cubalif-per-neuron-tau-syn", "per-neuron-tau", "reset"],
)  # fmt: skip
def test_what_loihi_cannot_compute_is_refused_by_name(tmp_path, capsys, neuron, message):
    assert to_nir.main(_one_layer(tmp_path / "g.nir", neuron)) == 2
    err = capsys.readouterr().err
    assert "error:" in err and pytest.importorskip("re").search(message, err), err
    assert not list(tmp_path.glob("model*"))  # nothing written


def test_a_graph_needs_inputs_and_a_checkpoint_takes_none(tmp_path, capsys, trained_digits):
    argv = _one_layer(tmp_path / "g.nir", nir.LIF(tau=np.full(2, 2e-3), r=np.ones(2), v_leak=np.zeros(2),
                                                  v_threshold=np.ones(2)))  # fmt: skip
    assert to_nir.main(argv[:3]) == 2
    assert "name the inputs to calibrate and check it on with --data" in capsys.readouterr().err
    assert to_nir.main([str(trained_digits), "--data", "digits", "--out", str(tmp_path)]) == 2
    assert "--data is for a .nir graph another tool wrote" in capsys.readouterr().err
    with pytest.raises(ModelError, match="already a fixed-precision graph"):
        from convert.foreign import layers_from_plan

        assert to_nir.main(argv) == 0
        layers_from_plan(load_plan(tmp_path / "model.fixed.nir"))


def test_a_producers_graph_converts_in_its_dialect(tmp_path, capsys):
    fixtures = DATA / "foreign"
    np.save(tmp_path / "x.npy", np.load(fixtures / "snntorch_linear_reset_zero.npz")["input"])
    argv = [str(fixtures / "snntorch_linear_reset_zero.nir"), "--dialect", "snntorch-zero", "--precision", "fixed",
            "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path), "--onnx", "false"]  # fmt: skip
    assert to_nir.main(argv) == 0, capsys.readouterr()
    rep = json.loads((tmp_path / "model.fixed.conversion.json").read_text())
    assert rep["dt"] == 1e-4 and rep["graph_reference"]["same_prediction_as_float"] == 1.0  # (4 samples)
    # snnTorch's default (delayed subtraction) is not Loihi's reset: refused by name
    argv[2] = "snntorch"
    assert to_nir.main(argv[:-2] + ["--name", "sub"]) == 2
    assert "subtract_next rule; Loihi resets to 0" in capsys.readouterr().err
