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
from tests.conftest import DATA, assert_targets_agree


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


def test_a_foreign_float_graph_becomes_a_loihi_network(trained_digits, foreign_digits, capsys):
    """The foreign graph converts to the very network that the checkpoint it came from converts to
    (every count and raster equal on the digits test split), which keeps the float graph's
    prediction on nearly every sample."""
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
    assert flt > 0.9, flt  # (the trained student)
    assert rep["onnx"]["identical_output_counts_vs_reference"] == 1.0
    plan = load_plan(foreign_digits / "loihi.nir")
    assert plan.precision == "fixed" and plan.steps == 4 and all(n.fixed for n in plan.nodes if n.kind == "lif")
    from inputs.graph_data import load_inputs

    float_plan = load_plan(str(foreign_digits / "foreign.nir"), steps=4)
    spikes, labels, _ = load_inputs(float_plan, "digits")
    # the checkpoint's own conversion to fixed precision: the same integer network, spike for spike
    assert to_nir.main([str(trained_digits), "--out", str(foreign_digits), "--name", "own.fixed", "--precision",
                        "fixed", "--parity-samples", "32", "--onnx", "false"]) == 0  # fmt: skip
    want = ref.run(load_plan(foreign_digits / "own.fixed.nir"), spikes, record=True)
    assert_targets_agree(plan, spikes, ["reference"], expected=want)  # (counts, layer counts, rasters)
    assert np.isclose(fix, (want.counts.argmax(1) == labels).mean())
    # the digits test split (360 samples): this tiny T = 4 student's spike counts tie often, so the
    # integer network's accuracy moves a few samples either way from the float graph's (within 0.5
    # points of it in one environment, 1.1 points below in another, for the same recipe); its
    # predictions stay the float graph's on nearly every sample
    same = want.counts.argmax(1) == ref.run(float_plan, spikes).counts.argmax(1)
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


def _recurrent_graph(path):
    """Input -> Linear -> LIF with a loop through its own Affine (bias included), -> CubaLIF with a loop
    into its current, -> LIF readout: a float graph another tool might write (every layer spikes)."""
    rng = np.random.default_rng(2)

    def f(n, v):
        return np.full(n, v)

    def aff(o, i, s, b=0.05):
        return nir.Affine(rng.normal(0, s, (o, i)).astype(np.float32), rng.normal(0, b, o).astype(np.float32))

    nodes = {"x": nir.Input(np.array([12])), "fc1": aff(16, 12, 0.6),
             "h": nir.LIF(tau=f(16, 5e-3), r=f(16, 1.0), v_leak=f(16, 0.0), v_threshold=f(16, 0.3)),
             "rec": aff(16, 16, 0.3), "fc2": aff(8, 16, 1.0, 0.1),
             "c": nir.CubaLIF(tau_syn=f(8, 3e-3), tau_mem=f(8, 6e-3), r=f(8, 1.0), v_leak=f(8, 0.0), v_threshold=f(8, 0.2)),
             "crec": nir.Linear(rng.normal(0, 0.3, (8, 8)).astype(np.float32)), "fc3": aff(4, 8, 1.0, 0.1),
             "o": nir.LIF(tau=f(4, 4e-3), r=f(4, 1.0), v_leak=f(4, 0.0), v_threshold=f(4, 0.2)),
             "y": nir.Output(np.array([4]))}  # fmt: skip
    edges = [("x", "fc1"), ("fc1", "h"), ("h", "rec"), ("rec", "h"), ("h", "fc2"), ("fc2", "c"), ("c", "crec"),
             ("crec", "c"), ("c", "fc3"), ("fc3", "o"), ("o", "y")]  # fmt: skip
    nir.write(path, nir.NIRGraph(nodes, edges))
    np.save(path.with_suffix(".npy"), (rng.random((30, 64, 12)) < 0.3).astype(np.float32))


@pytest.fixture(scope="module")
def recurrent_fixed(tmp_path_factory):
    out = tmp_path_factory.mktemp("recurrent")
    _recurrent_graph(out / "rec.nir")
    argv = [str(out / "rec.nir"), "--precision", "fixed", "--data", str(out / "rec.npy"), "--steps", "30",
            "--out", str(out), "--name", "loihi"]  # fmt: skip
    assert to_nir.main(argv) == 0
    return out


def test_a_recurrent_graph_becomes_loihi_recurrent_connections(recurrent_fixed):
    """Loops from a synapse back into a LIF (and into a CubaLIF's current) are Loihi's recurrent
    connections: one weight exponent and unit with the layer's other synapse, the loop's bias moved
    to the direct synapse (Loihi adds it from the first step); the same spikes as the float graph on
    nearly every sample, and the file states the loops as edges again."""
    rep = json.loads((recurrent_fixed / "loihi.conversion.json").read_text())
    assert [c["synapse"] for c in rep["fixed"]["choices"]] == ["fc1+rec", "fc2+crec", "fc3"]
    assert rep["graph_reference"]["same_prediction_as_float"] >= 0.9
    assert rep["onnx"]["identical_output_counts_vs_reference"] == 1.0
    plan = load_plan(recurrent_fixed / "loihi.nir")
    assert [(n.name, n.sources) for n in plan.nodes if n.kind == "delay"] == [
        ("rec->h", ["rec"]),
        ("crec->c", ["crec"]),
    ]
    assert not plan.node("rec").fixed["bias"].any() and plan.node("h").fixed["bias"] is plan.node("fc1").fixed["bias"]
    expected = assert_targets_agree(plan, np.load(recurrent_fixed / "rec.npy")[:, :8], ("torch", "onnx", "eventsim"))
    assert all(c.sum() > 0 for c in expected.layer_counts.values())


@pytest.mark.lava
def test_verify_all_passes_on_the_recurrent_integer_graph_and_says_what_it_skipped(recurrent_fixed, capsys):
    """``runtime.verify --targets all`` on the recurrent CubaLIF graph in Loihi's integers: every target
    that runs fixed precision (Lava too: its loops are Dense back-connections) agrees spike for spike,
    and the report names each target it skipped with the reason."""
    from runtime import verify

    if unavailable_reason("lava"):
        pytest.skip(f"lava is unavailable: {unavailable_reason('lava')}")
    out = recurrent_fixed / "verify"
    argv = [str(recurrent_fixed / "loihi.nir"), "--targets", "all", "--data", str(recurrent_fixed / "rec.npy"),
            "--samples", "4", "--progress", "false", "--out", str(out)]  # fmt: skip
    assert verify.main(argv) == 0, capsys.readouterr()
    rep = json.loads((out / "report.json").read_text())
    assert rep["passed"] and {"reference", "torch", "onnx", "eventsim", "lava"} <= set(rep["targets"])
    assert "runs float precision only; the graph is fixed" in rep["skipped"]["norse"]


def test_a_fixed_loop_with_a_bias_is_refused_by_name(recurrent_fixed, tmp_path):
    g = nir.read(recurrent_fixed / "loihi.nir")
    meta = json.loads(g.metadata["snn_deploy"])
    meta["layers"]["rec"]["fixed"]["bias_mant"] = [1] * 16
    nodes = dict(g.nodes) | {"rec": nir.Affine(g.nodes["rec"].weight, np.full(16, 1e-3, np.float32))}
    nir.write(tmp_path / "b.nir", nir.NIRGraph(nodes, g.edges, metadata={"snn_deploy": json.dumps(meta)}))
    with pytest.raises(
        ModelError,
        match="rec adds a bias to h through a delay .a loop's or a Delay node's.; Loihi adds a neuron's bias",
    ):
        load_plan(tmp_path / "b.nir")


FIXTURES = DATA / "foreign"
_MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())["fixtures"]


@pytest.mark.parametrize("name", sorted(_MANIFEST))
def test_every_producer_fixture_converts_to_loihi_or_is_refused_by_name(tmp_path, capsys, name):
    """Each producer's fixture, in its own dialect, to fixed precision: what Loihi's LIF computes
    converts (a dialect's arithmetic as the NIR update it equals: Norse's order of operations, its
    current that jumps then decays) and runs identically on the integer targets; several spikes per
    step with a subtractive reset (Rockpool, Sinabs) and snnTorch's delayed subtraction are refused
    by name, nothing written."""
    info = _MANIFEST[name]
    dialect = "snntorch-zero" if name == "snntorch_linear_reset_zero" else info["library"]
    x = np.load(FIXTURES / info["files"]["npz"])["input"]
    np.save(tmp_path / "x.npy", x)
    argv = [str(FIXTURES / info["files"]["nir"]), "--dialect", dialect, "--precision", "fixed", "--data",
            str(tmp_path / "x.npy"), "--out", str(tmp_path), "--onnx", "false"]  # fmt: skip
    rc = to_nir.main(argv)
    err = capsys.readouterr().err
    if info["library"] in ("rockpool", "sinabs"):
        assert rc == 2 and "emits several spikes per step, each subtracting its threshold" in err, err
    elif info["library"] == "snntorch" and dialect == "snntorch":
        assert rc == 2 and "subtract_next rule; Loihi resets to 0" in err, err
    else:
        assert rc == 0, err
        rep = json.loads((tmp_path / "model.fixed.conversion.json").read_text())
        assert rep["graph_reference"]["same_prediction_as_float"] >= 0.75  # (4 samples each)
        plan = load_plan(tmp_path / "model.fixed.nir")
        expected = ref.run(plan, x, record=True)
        got = get_target("eventsim").runner()(plan, x, record=True)
        assert np.array_equal(got.counts, expected.counts)
        assert all(np.array_equal(got.rasters[k], r) for k, r in expected.rasters.items())
        return
    assert not list(tmp_path.glob("model*"))


def _conv_graph(path, one_d: bool):
    """A float graph with a dilated, grouped convolution (1-D or 2-D), a LIF, a Flatten, a Linear and a
    LIF readout: Loihi's integer targets write such kernels out as plain 2-D convolutions."""
    rng = np.random.default_rng(7)

    def lif(shape, th):
        return nir.LIF(
            tau=np.full(shape, 4e-3), r=np.ones(shape), v_leak=np.zeros(shape), v_threshold=np.full(shape, th)
        )

    if one_d:
        conv = nir.Conv1d(input_shape=20, weight=rng.normal(0, 1.0, (8, 2, 3)).astype(np.float32), stride=1,
                          padding=2, dilation=2, groups=2, bias=rng.normal(0.1, 0.05, 8).astype(np.float32))  # fmt: skip
        shape, hidden = (4, 20), (8, 20)
    else:
        conv = nir.Conv2d(input_shape=(9, 9), weight=rng.normal(0, 0.8, (8, 1, 3, 3)).astype(np.float32), stride=1,
                          padding=2, dilation=2, groups=4, bias=rng.normal(0, 0.05, 8).astype(np.float32))  # fmt: skip
        shape, hidden = (4, 9, 9), (8, 9, 9)
    n = int(np.prod(hidden))
    nodes = {"x": nir.Input(np.array(shape)), "conv": conv, "h": lif(hidden, 0.4),
             "flat": nir.Flatten(input_type={"input": np.array(hidden)}, start_dim=0, end_dim=-1),
             "fc": nir.Affine(rng.normal(0.02, 0.3, (3, n)).astype(np.float32), np.zeros(3, np.float32)),
             "o": lif((3,), 0.3), "y": nir.Output(np.array([3]))}  # fmt: skip
    edges = [("x", "conv"), ("conv", "h"), ("h", "flat"), ("flat", "fc"), ("fc", "o"), ("o", "y")]
    nir.write(path, nir.NIRGraph(nodes, edges, type_check=False))
    np.save(path.with_suffix(".npy"), (rng.random((12, 32, *shape)) < 0.3).astype(np.float32))


@pytest.mark.parametrize("one_d", [True, False], ids=["conv1d", "conv2d"])
def test_dilated_grouped_convolutions_become_loihi_integers(tmp_path, one_d):
    _conv_graph(tmp_path / "c.nir", one_d)
    argv = [str(tmp_path / "c.nir"), "--precision", "fixed", "--data", str(tmp_path / "c.npy"), "--steps", "12",
            "--out", str(tmp_path), "--name", "loihi"]  # fmt: skip
    assert to_nir.main(argv) == 0
    rep = json.loads((tmp_path / "loihi.conversion.json").read_text())
    assert rep["graph_reference"]["same_prediction_as_float"] >= 0.9
    assert rep["onnx"]["identical_output_counts_vs_reference"] == 1.0
    plan = load_plan(tmp_path / "loihi.nir")
    conv = plan.node("conv")
    assert conv.kind == ("conv1d" if one_d else "conv") and conv.params["groups"] > 1 and conv.fixed is not None
    targets = ["torch", "onnx", "eventsim"] + ([] if unavailable_reason("lava") else ["lava"])
    expected = assert_targets_agree(plan, np.load(tmp_path / "c.npy")[:, :6], targets)
    assert all(c.sum() > 0 for c in expected.layer_counts.values())
    with pytest.raises(ModelError, match="netx export cannot hold Conv"):
        from convert.netx import netx_layers

        netx_layers(plan)


def _delay_graph(path):
    """NIR ``Delay`` nodes both ways Loihi delays: spikes into a synapse (2 steps), and a synapse's output
    into a LIF (3 steps) beside a direct synapse that carries the bias."""
    rng = np.random.default_rng(4)

    def aff(o, i, s, b=0.05):
        return nir.Affine(rng.normal(0, s, (o, i)).astype(np.float32), rng.normal(0, b, o).astype(np.float32))

    def lif(n, th):
        return nir.LIF(tau=np.full(n, 5e-3), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.full(n, th))

    nodes = {"x": nir.Input(np.array([12])), "fc1": aff(16, 12, 0.6), "h": lif(16, 0.3),
             "dspk": nir.Delay(delay=np.full(16, 2e-3)), "fc2": aff(8, 16, 0.8, 0.1), "h2": lif(8, 0.3),
             "fc3": nir.Linear(rng.normal(0.05, 0.6, (4, 8)).astype(np.float32)), "dsyn": nir.Delay(delay=np.full(4, 3e-3)),
             "fc4": aff(4, 16, 0.5, 0.1), "o": lif(4, 0.3), "y": nir.Output(np.array([4]))}  # fmt: skip
    edges = [("x", "fc1"), ("fc1", "h"), ("h", "dspk"), ("dspk", "fc2"), ("fc2", "h2"), ("h2", "fc3"), ("fc3", "dsyn"),
             ("dsyn", "o"), ("h", "fc4"), ("fc4", "o"), ("o", "y")]  # fmt: skip
    nir.write(path, nir.NIRGraph(nodes, edges))
    np.save(path.with_suffix(".npy"), (rng.random((30, 64, 12)) < 0.3).astype(np.float32))


def test_delay_nodes_become_loihi_delays(tmp_path):
    """A Delay on spikes into a synapse and one on a synapse's output into a LIF convert to integers
    (the delayed synapse shares its LIF's unit; the file keeps both Delay nodes) and run identically
    on every integer target, Lava's relays included."""
    _delay_graph(tmp_path / "d.nir")
    argv = [str(tmp_path / "d.nir"), "--precision", "fixed", "--data", str(tmp_path / "d.npy"), "--steps", "30",
            "--out", str(tmp_path), "--name", "loihi"]  # fmt: skip
    assert to_nir.main(argv) == 0
    rep = json.loads((tmp_path / "loihi.conversion.json").read_text())
    assert [c["synapse"] for c in rep["fixed"]["choices"]] == ["fc1", "fc2", "fc4+fc3"]
    assert rep["graph_reference"]["same_prediction_as_float"] >= 0.9
    plan = load_plan(tmp_path / "loihi.nir")
    assert sorted((n.name, int(n.params["steps"].max())) for n in plan.nodes if n.kind == "delay") == [
        ("dspk", 2), ("dsyn", 3)]  # fmt: skip
    targets = ["torch", "onnx", "eventsim"] + ([] if unavailable_reason("lava") else ["lava"])
    expected = assert_targets_agree(plan, np.load(tmp_path / "d.npy")[:, :4], targets)
    assert all(c.sum() > 0 for c in expected.layer_counts.values())


def test_a_graph_netx_cannot_hold_names_the_file_in_out_and_writes_nothing(tmp_path, capsys):
    """The error named the staging folder's copy (/tmp/snn-deploy-staging/<pid>-.../loihi.nir), a file
    that no longer exists when the user reads it."""
    _delay_graph(tmp_path / "d.nir")
    out = tmp_path / "out"
    argv = [str(tmp_path / "d.nir"), "--precision", "fixed", "--data", str(tmp_path / "d.npy"), "--steps", "30",
            "--out", str(out), "--name", "loihi", "--netx", "true"]  # fmt: skip
    assert to_nir.main(argv) == 2
    err = capsys.readouterr().err
    assert f"error: {out / 'loihi.nir'}: node o sums 2 inputs (a residual ADD); netx networks are sequential" in err
    assert err.rstrip().endswith("(nothing was written)") and "snn-deploy-staging" not in err
    assert not out.exists() or not list(out.iterdir())
