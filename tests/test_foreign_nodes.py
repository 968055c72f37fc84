"""NIR's other neuron nodes (IF, I, CubaLIF, CubaLI, Threshold, Scale) in graphs another tool wrote:
the reference's semantics checked by hand, every target equal to the reference, and the command
line for a graph without our metadata (``--dt``, ``--steps``, ``--bin-us``, ``.npy`` spikes)."""

from __future__ import annotations

import json

import nir
import numpy as np
import pytest

from convert import to_nir
from core.errors import ConfigError, ModelError
from runtime import run as run_cmd
from runtime import verify
from runtime.latency import run_aligned
from targets import TARGETS, get_target, unavailable_reason
from targets import reference as ref
from targets.plan import load_plan

MARKS = {"lava": pytest.mark.lava}


def f(n, v):
    return np.full(n, v, dtype=np.float64)


def _chain(path, neuron: nir.NIRNode, n_in: int, weight: np.ndarray, bias=None) -> nir.NIRGraph:
    """Input -> Affine -> ``neuron`` -> Output, written to ``path``."""
    n = weight.shape[0]
    bias = np.zeros(n, np.float32) if bias is None else bias
    nodes = {"x": nir.Input(np.array([n_in])), "fc": nir.Affine(weight.astype(np.float32), bias.astype(np.float32)),
             "n": neuron, "y": nir.Output(np.array([n]))}  # fmt: skip
    nir.write(path, nir.NIRGraph(nodes, [("x", "fc"), ("fc", "n"), ("n", "y")]))
    return load_plan(path)


def _assert_same_run(info, plan, x, expected) -> None:
    """The target's counts, per-layer spike counts, rasters and LI traces equal the reference's."""
    got = run_aligned(info, plan, x, record=True)
    assert np.array_equal(got.counts, expected.counts)
    assert {k: v.tolist() for k, v in got.layer_counts.items()} == {
        k: v.tolist() for k, v in expected.layer_counts.items()
    }
    if info.rasters:
        for k, r in expected.rasters.items():
            assert np.array_equal(got.rasters[k], r), k
        for k, v in (expected.traces or {}).items():
            assert np.array_equal(got.traces[k], v), k


def _spikes(T, B, n, p=0.5, seed=0):
    return (np.random.default_rng(seed).random((T, B, n)) < p).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Semantics, by hand (values on power-of-two grids: every float operation exact)


def test_if_integrates_without_leak_and_resets(tmp_path):
    w = np.array([[0.5, 0.25], [1.0, -0.5]])
    plan = _chain(tmp_path / "g.nir", nir.IF(r=f(2, 500.0), v_threshold=f(2, 0.75), v_reset=f(2, 0.125)), 2, w)
    assert [(n.name, n.kind, n.origin) for n in plan.nodes][1] == ("n", "lif", "IF")
    x = _spikes(12, 3, 2)
    got = ref.run(plan, x, record=True).rasters["n"]
    v = np.zeros((3, 2))
    for t in range(12):  # dv/dt = r I, Euler: v += dt r I (dt r = 0.5)
        v = v + 0.5 * (x[t] @ w.T)
        s = v > 0.75
        assert np.array_equal(got[t], s), t
        v = np.where(s, 0.125, v)
    assert got.sum() > 0


def test_cubalif_current_then_membrane_in_the_same_step(tmp_path):
    w = np.array([[1.0, 0.5], [0.5, 1.0]])
    node = nir.CubaLIF(tau_syn=f(2, 2e-3), tau_mem=f(2, 4e-3), r=f(2, 2.0), v_leak=f(2, 0.25),
                       v_threshold=f(2, 0.5), w_in=f(2, 2.0))  # fmt: skip
    plan = _chain(tmp_path / "g.nir", node, 2, w)
    assert [(n.name, n.kind) for n in plan.nodes] == [("fc", "affine"), ("n.syn", "li"), ("n", "lif")]
    x = _spikes(16, 3, 2, seed=1)
    res = ref.run(plan, x, record=True)
    i, v = np.zeros((3, 2)), np.zeros((3, 2))
    for t in range(16):
        i = 0.5 * i + 0.5 * 2.0 * (x[t] @ w.T)  # tau_syn dI/dt = -I + w_in S: beta 1 - dt/tau_syn, gain w_in dt/tau_syn
        v = 0.75 * v + 0.25 * 2.0 * i + 0.25 * 0.25  # tau_mem dv/dt = (v_leak - v) + r I, with the I just updated
        assert np.array_equal(res.traces["n.syn"][t], i), t
        s = v > 0.5
        assert np.array_equal(res.rasters["n"][t], s), t
        v = np.where(s, 0.0, v)
    assert res.rasters["n"].sum() > 0 and plan.lif_names == ["n"] and plan.li_names == ["n.syn"]


def test_cubali_i_threshold_and_scale(tmp_path):
    w = np.array([[1.0, 0.5], [0.25, -1.0]])
    x = _spikes(10, 2, 2, seed=2)
    y = np.einsum("tbi,oi->tbo", x, w)
    th = ref.run(_chain(tmp_path / "t.nir", nir.Threshold(f(2, 0.4)), 2, w), x, record=True)
    assert np.array_equal(th.rasters["n"], y > 0.4)  # a Heaviside per step, no state
    sc = _chain(tmp_path / "s.nir", nir.Scale(f(2, -1.5)), 2, w)
    assert sc.scores and np.array_equal(ref.run(sc, x).counts, (-1.5 * y).sum(axis=0))
    integ = ref.run(_chain(tmp_path / "i.nir", nir.I(r=f(2, 250.0)), 2, w), x, record=True)
    assert np.array_equal(integ.traces["n"], np.cumsum(0.25 * y, axis=0))  # dv/dt = r I: dt r = 0.25
    cli = _chain(tmp_path / "c.nir", nir.CubaLI(tau_syn=f(2, 2e-3), tau_mem=f(2, 2e-3), r=f(2, 2.0),
                                                 v_leak=f(2, 0.0), w_in=f(2, 1.0)), 2, w)  # fmt: skip
    got = ref.run(cli, x, record=True).traces["n"]
    i = v = np.zeros((2, 2))
    for t in range(10):
        i = 0.5 * i + 0.5 * y[t]
        v = 0.5 * v + i
        assert np.array_equal(got[t], v), t


def test_foreign_node_errors(tmp_path):
    w = np.ones((2, 2))
    with pytest.raises(ModelError, match=r"tau_syn 0\.0005 s is shorter than dt 0\.001 s.*--dt"):
        _chain(tmp_path / "a.nir", nir.CubaLIF(tau_syn=f(2, 5e-4), tau_mem=f(2, 4e-3), r=f(2, 1.0),
                                               v_leak=f(2, 0.0), v_threshold=f(2, 1.0)), 2, w)  # fmt: skip
    assert load_plan(tmp_path / "a.nir", dt=1e-4).meta["dt"] == 1e-4  # the producer's dt runs it
    with pytest.raises(ModelError, match="IF r holds NaN"):
        _chain(tmp_path / "b.nir", nir.IF(r=np.array([1.0, np.nan]), v_threshold=f(2, 1.0)), 2, w)
    nodes = {"x": nir.Input(np.array([2])), "fc": nir.Affine(np.ones((2, 2), np.float32), np.zeros(2, np.float32)),
             "n": nir.CubaLIF(tau_syn=f(2, 2e-3), tau_mem=f(2, 4e-3), r=f(2, 1.0), v_leak=f(2, 0.0), v_threshold=f(2, 1.0)),
             "n.syn": nir.LIF(tau=f(2, 2e-3), r=f(2, 1.0), v_leak=f(2, 0.0), v_threshold=f(2, 1.0)),
             "y": nir.Output(np.array([2]))}  # fmt: skip
    g = nir.NIRGraph(nodes, [("x", "fc"), ("fc", "n"), ("n", "n.syn"), ("n.syn", "y")], type_check=False)
    with pytest.raises(ModelError, match="needs the name n.syn for its synaptic current"):
        load_plan(g)


def _lif_chain_graph(edges=(), out_type=(2,), tau=2e-3) -> nir.NIRGraph:
    """Input -> Affine -> LIF -> Output with extra ``edges`` (not type-checked: nir would refuse some)."""
    nodes = {"x": nir.Input(np.array([2])), "fc": nir.Affine(np.ones((2, 2), np.float32), np.zeros(2, np.float32)),
             "n": nir.LIF(tau=f(2, tau), r=f(2, 1.0), v_leak=f(2, 0.0), v_threshold=f(2, 1.0)),
             "y": nir.Output(np.array(out_type))}  # fmt: skip
    return nir.NIRGraph(nodes, [("x", "fc"), ("fc", "n"), ("n", "y"), *edges], type_check=False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"edges": [("fc", "n")]}, r"edge \(fc -> n\) is listed twice"),
        ({"edges": [("n", "x")]}, r"edge \(n -> x\) leads into the Input node"),
        ({"edges": [("y", "fc")]}, r"edge \(y -> fc\) leaves the Output node"),
        ({"out_type": (3,)}, r"the Output node y declares shape \(3,\), but n gives \(2,\)"),
        ({"tau": -2e-3}, r"node n: LIF tau must be positive \(a time constant\), holds -0.002 s"),
        ({"tau": 0.0}, r"node n: LIF tau must be positive"),
    ],
)
@pytest.mark.parametrize("dialect", ["nir", "norse", "rockpool", "sinabs"])
def test_a_malformed_graph_structure_is_named(change, message, dialect):
    """Each was run before: a doubled edge counted its input twice, an edge into the Input or out of
    the Output was ignored, a wrong Output shape was not noticed, and a tau of 0 or below ran as a
    decay above 1 (or none) in the dialects that exponentiate it."""
    with pytest.raises(ModelError, match=message):
        load_plan(_lif_chain_graph(**change), dialect=dialect)
    nodes = _lif_chain_graph().nodes
    with pytest.raises(ModelError, match="the Output node y has no incoming edge"):
        load_plan(nir.NIRGraph(nodes, [("x", "fc"), ("fc", "n")], type_check=False))
    # a Norse-style batch dimension of 1 in the declared Output type is the same shape
    assert load_plan(_lif_chain_graph(out_type=(1, 2)), dialect=dialect).outputs == ["n"]


def test_a_graph_without_neurons_runs_and_verifies(tmp_path, capsys):
    """A graph of synapses only (a convolution straight to the Output) has no spiking layer: its
    sparsity is n/a and verification writes no spike plots (both ended in a traceback)."""
    nodes = {"x": nir.Input(np.array([2, 4, 4])),
             "c": nir.Conv2d(input_shape=(4, 4), weight=np.ones((3, 2, 3, 3), np.float32), stride=1, padding=1,
                             dilation=1, groups=1, bias=np.zeros(3, np.float32)),
             "y": nir.Output(np.array([3, 4, 4]))}  # fmt: skip
    nir.write(tmp_path / "c.nir", nir.NIRGraph(nodes, [("x", "c"), ("c", "y")]))
    np.save(tmp_path / "x.npy", _spikes(4, 3, 32, p=0.3).reshape(4, 3, 2, 4, 4))
    argv = [str(tmp_path / "c.nir"), "--data", str(tmp_path / "x.npy"), "--progress", "false"]
    assert run_cmd.main([*argv, "--target", "eventsim", "--out", str(tmp_path / "r.json")]) == 0
    assert "activation sparsity      n/a (no spiking layer)" in capsys.readouterr().out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["activation_sparsity"] is None and rep["output"]["kind"] == "values"  # (it said "spike counts")
    assert "silent_samples" not in rep["output"]["predictions"]
    assert verify.main([*argv, "--targets", "torch,eventsim", "--out", str(tmp_path / "v")]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "no plots: the graph has no neuron layer" in out and "Traceback" not in out
    assert not list((tmp_path / "v").glob("*.png"))
    assert "Spikes per sample by layer" not in (tmp_path / "v" / "report.md").read_text()


# ---------------------------------------------------------------------------------------------
# Every target on a graph of all of them (rasters and membrane traces bit for bit)


def _all_nodes_graph(path):
    rng = np.random.default_rng(0)

    def aff(o, i, s=0.8):
        return nir.Affine(rng.normal(0, s, (o, i)).astype(np.float32), rng.normal(0, 0.1, o).astype(np.float32))

    nodes = {"in": nir.Input(np.array([4])), "a1": aff(6, 4),
             "cl": nir.CubaLIF(tau_syn=f(6, 4e-3), tau_mem=f(6, 8e-3), r=f(6, 8.0), v_leak=f(6, 0.0),
                               v_threshold=f(6, 1.0), w_in=f(6, 4.0)),
             "a2": aff(5, 6), "if": nir.IF(r=f(5, 1000.0), v_threshold=f(5, 1.0)),
             "a3": aff(5, 5), "sc": nir.Scale(f(5, 0.5)), "th": nir.Threshold(f(5, 0.1)),
             "a4": aff(4, 5), "i": nir.I(r=f(4, 500.0)), "a5": aff(4, 4, 0.3),
             "cli": nir.CubaLI(tau_syn=f(4, 2e-3), tau_mem=f(4, 4e-3), r=f(4, 4.0), v_leak=f(4, 0.0), w_in=f(4, 2.0)),
             "a6": aff(3, 4), "lif": nir.LIF(tau=f(3, 2e-3), r=f(3, 2.0), v_leak=f(3, 0.0), v_threshold=f(3, 1.0)),
             "out": nir.Output(np.array([3]))}  # fmt: skip
    chain = ["in", "a1", "cl", "a2", "if", "a3", "sc", "th", "a4", "i", "a5", "cli", "a6", "lif", "out"]
    nir.write(path, nir.NIRGraph(nodes, list(zip(chain, chain[1:]))))
    return load_plan(path)


@pytest.mark.parametrize("target", [pytest.param(t, marks=MARKS.get(t, ())) for t in TARGETS if t != "reference"])
def test_every_target_runs_every_neuron_node(tmp_path, target):
    plan = _all_nodes_graph(tmp_path / "all.nir")  # no .onnx beside it: the onnx target exports its own
    x = _spikes(30, 6, 4, p=0.4, seed=3)
    expected = ref.run(plan, x, record=True)
    assert all(c.sum() > 0 for c in expected.layer_counts.values()), "every spiking layer must spike"
    info = get_target(target)
    if unavailable_reason(target):
        pytest.skip(f"{target} is unavailable: {unavailable_reason(target)}")
    if target == "norse":  # Norse maps no Scale, Threshold, I or CubaLI: refused by name, never dropped
        with pytest.raises(
            ModelError, match=r"cannot map node\(s\) cli \(CubaLI\), i \(I\), sc \(Scale\), th \(Threshold\)"
        ):
            info.runner()(plan, x)
        return
    if target == "lava":
        # (its readouts, I, Scale and CubaLI: test_lava_runs_integrator_and_scale_readouts_...)
        assert "add a bias to CubaLIF cl's current" in info.refusal(plan, x)
        return
    if target == "snntorch":  # its import maps no CubaLIF as NIR means it (nor Scale, I, ...): declined by name
        assert "node cl (CubaLIF)" in info.refusal(plan, x)
        return
    _assert_same_run(info, plan, x, expected)
    assert np.array_equal(run_aligned(info, plan, x[:7, :1]).counts, ref.run(plan, x[:7, :1]).counts)


def _if_threshold_graph(path, gain_one: bool):
    rng = np.random.default_rng(1)

    def aff(o, i):
        return nir.Affine(rng.normal(0, 0.8, (o, i)).astype(np.float32), rng.normal(0, 0.1, o).astype(np.float32))

    r = 1000.0 if gain_one else 300.0  # dt r: 1 (Lava takes it), 0.3 (Norse's IF needs r and dt restored)
    nodes = {"in": nir.Input(np.array([4])), "a1": aff(6, 4), "if": nir.IF(r=f(6, r), v_threshold=f(6, 1.0)),
             "a2": aff(5, 6), "if2": nir.IF(r=f(5, r), v_threshold=f(5, 0.5)), "a3": aff(3, 5),
             "lif": nir.LIF(tau=f(3, 2e-3), r=f(3, 2.0), v_leak=f(3, 0.0), v_threshold=f(3, 1.0)),
             "out": nir.Output(np.array([3]))}  # fmt: skip
    chain = ["in", "a1", "if", "a2", "if2", "a3", "lif", "out"]
    nir.write(path, nir.NIRGraph(nodes, list(zip(chain, chain[1:]))))
    return load_plan(path)


@pytest.mark.parametrize("target", [pytest.param("norse"), pytest.param("lava", marks=pytest.mark.lava)])
def test_if_graph_on_norse_and_lava(tmp_path, target):
    plan = _if_threshold_graph(tmp_path / "if.nir", gain_one=target == "lava")
    x = _spikes(25, 5, 4, p=0.4, seed=5)
    expected = ref.run(plan, x, record=True)
    assert all(c.sum() > 0 for c in expected.layer_counts.values())
    if unavailable_reason(target):
        pytest.skip(f"{target} is unavailable: {unavailable_reason(target)}")
    got = run_aligned(get_target(target), plan, x, record=True)
    assert np.array_equal(got.counts, expected.counts)
    for k, r in expected.rasters.items():
        assert np.array_equal(got.rasters[k], r), k


# ---------------------------------------------------------------------------------------------
# The command line for a graph without our metadata


def test_verify_a_foreign_graph_on_npy_spikes(tmp_path, capsys):
    plan = _all_nodes_graph(tmp_path / "all.nir")
    np.save(tmp_path / "x.npy", _spikes(20, 8, 4, p=0.4, seed=6))
    out = tmp_path / "v"
    argv = [str(tmp_path / "all.nir"), "--targets", "all", "--data", str(tmp_path / "x.npy"), "--progress", "false",
            "--out", str(out)]  # fmt: skip
    assert verify.main(argv) == 0, capsys.readouterr()
    rep = json.loads((out / "report.json").read_text())
    assert rep["passed"] and rep["T"] == 20 and rep["samples"] == 8
    assert {"torch", "onnx", "eventsim"} <= set(rep["targets"])
    assert "no CubaLI (li), CubaLIF (li), I (li), Scale (li)" in rep["skipped"]["norse"]  # said, not dropped
    assert not (tmp_path / "all.onnx").exists()  # the onnx target exported into a temporary folder
    assert plan.lif_names == ["cl", "if", "th", "lif"]


def test_dt_steps_and_bin_us_for_a_foreign_graph(tmp_path, capsys, eventdata):
    # a conv graph written elsewhere: tau 0.5 ms needs the producer's dt (here 1e-4 s)
    rng = np.random.default_rng(2)
    nodes = {"in": nir.Input(np.array([2, 34, 34])),
             "conv": nir.Conv2d(input_shape=(34, 34), weight=rng.normal(0, 0.5, (4, 2, 5, 5)).astype(np.float32),
                                stride=3, padding=0, dilation=1, groups=1, bias=np.zeros(4, np.float32)),
             "lif": nir.LIF(tau=np.full((4, 10, 10), 5e-4), r=np.full((4, 10, 10), 5.0), v_leak=np.zeros((4, 10, 10)),
                            v_threshold=np.full((4, 10, 10), 0.5)),
             "flat": nir.Flatten(input_type={"input": np.array([4, 10, 10])}, start_dim=0, end_dim=-1),
             "fc": nir.Affine(rng.normal(0, 0.3, (10, 400)).astype(np.float32), np.zeros(10, np.float32)),
             "out_lif": nir.IF(r=np.full(10, 1e4), v_threshold=np.ones(10)), "out": nir.Output(np.array([10]))}  # fmt: skip
    chain = ["in", "conv", "lif", "flat", "fc", "out_lif", "out"]
    path = tmp_path / "conv.nir"
    nir.write(path, nir.NIRGraph(nodes, list(zip(chain, chain[1:]))))
    rec = sorted((eventdata / "nmnist" / "train").rglob("*.bin"))[0]
    common = ["--data", str(rec), "--progress", "false"]
    assert run_cmd.main([str(path), *common]) == 2
    assert "shorter than dt 0.001 s" in capsys.readouterr().err
    assert run_cmd.main([str(path), "--dt", "1e-4", *common]) == 2
    assert "pass --steps" in capsys.readouterr().err  # no T, no binning recorded
    out = tmp_path / "r.json"
    timing = ["--dt", "1e-4", "--steps", "30", "--bin-us", "1000"]  # the producer's dt; 30 bins of 1 ms
    argv = [str(path), *timing, "--target", "eventsim", "--out", str(out), *common]
    assert run_cmd.main(argv) == 0, capsys.readouterr()
    rep = json.loads(out.read_text())
    assert rep["T"] == 30 and rep["samples"] == 1 and rep["layers"]["lif"]["total"] > 0
    # the same recording in 30 bins of 1 ms through verify, every float target
    vout = tmp_path / "v"
    argv = [str(path), *timing, "--targets", "all", "--out", str(vout), *common]
    assert verify.main(argv) == 0, capsys.readouterr()
    vrep = json.loads((vout / "report.json").read_text())
    assert vrep["passed"] and vrep["T"] == 30 and {"torch", "onnx", "eventsim"} <= set(vrep["targets"])
    with pytest.raises(ConfigError, match="--steps must be positive"):
        load_plan(str(path), steps=0)
    # a spike array is already in steps: --steps of another T or --bin-us contradicts it (a conversion
    # wrote the array's T into the graph instead of the asked one; --bin-us was ignored)
    np.save(tmp_path / "x.npy", _spikes(12, 2, 2 * 34 * 34).reshape(12, 2, 2, 34, 34))
    spikes = ["--dt", "1e-4", "--data", str(tmp_path / "x.npy")]
    for extra, message in [(["--steps", "30"], "--steps 30, but x.npy has T = 12 steps: a spike array is its own T"),
                           (["--bin-us", "1000"], "--bin-us bins events; x.npy is a spike array, already in steps")]:  # fmt: skip
        quiet = ["--progress", "false"]
        for main, more in [(run_cmd.main, ["--out", str(out), *quiet]), (verify.main, ["--out", str(vout), *quiet]),
                           (to_nir.main, ["--out", str(tmp_path / "c"), "--onnx", "false"])]:  # fmt: skip
            assert main([str(path), *spikes, *extra, *more]) == 2, (main, extra)
            assert message in capsys.readouterr().err
    assert run_cmd.main([str(path), *spikes, "--steps", "12", "--out", str(out)]) == 0


# ---------------------------------------------------------------------------------------------
# Nested subgraphs


def _nested_and_flat(tmp_path):
    rng = np.random.default_rng(7)

    def aff(o, i):
        return nir.Affine(rng.normal(0, 0.8, (o, i)).astype(np.float32), rng.normal(0, 0.1, o).astype(np.float32))

    def lif(n):
        return nir.LIF(tau=f(n, 2e-3), r=f(n, 2.0), v_leak=f(n, 0.0), v_threshold=f(n, 0.3))

    a1, l1, a2, l2, a3, l3 = aff(6, 4), lif(6), aff(5, 6), lif(5), aff(3, 5), lif(3)
    inner = nir.NIRGraph({"i": nir.Input(np.array([5])), "fc": a3, "lif": l3, "o": nir.Output(np.array([3]))},
                         [("i", "fc"), ("fc", "lif"), ("lif", "o")])  # fmt: skip
    block = nir.NIRGraph({"input": nir.Input(np.array([6])), "fc": a2, "lif": l2, "deep": inner,
                          "output": nir.Output(np.array([3]))},
                         [("input", "fc"), ("fc", "lif"), ("lif", "deep"), ("deep", "output")], type_check=False)  # fmt: skip
    nested = nir.NIRGraph({"in": nir.Input(np.array([4])), "a1": a1, "l1": l1, "blk": block, "out": nir.Output(np.array([3]))},
                          [("in", "a1"), ("a1", "l1"), ("l1", "blk.input"), ("blk.output", "out")], type_check=False)  # fmt: skip
    flat = nir.NIRGraph({"in": nir.Input(np.array([4])), "a1": a1, "l1": l1, "fc": a2, "lif": l2, "fc3": a3, "lif3": l3,
                         "out": nir.Output(np.array([3]))},
                        [("in", "a1"), ("a1", "l1"), ("l1", "fc"), ("fc", "lif"), ("lif", "fc3"), ("fc3", "lif3"), ("lif3", "out")])  # fmt: skip
    nir.write(tmp_path / "nested.nir", nested)
    return load_plan(tmp_path / "nested.nir"), load_plan(flat)


@pytest.mark.parametrize("target", [pytest.param(t, marks=MARKS.get(t, ())) for t in TARGETS if t != "reference"])
def test_nested_subgraphs_run_as_their_flat_twin(tmp_path, target):
    plan, flat = _nested_and_flat(tmp_path)
    assert [n.name for n in plan.nodes] == ["a1", "l1", "blk.fc", "blk.lif", "blk.deep.fc", "blk.deep.lif"]
    x = _spikes(20, 5, 4, p=0.5, seed=8)
    expected = ref.run(plan, x, record=True)
    twin = ref.run(flat, x, record=True)
    assert np.array_equal(expected.counts, twin.counts) and expected.counts.sum() > 0
    assert np.array_equal(expected.rasters["blk.deep.lif"], twin.rasters["lif3"])
    if unavailable_reason(target):
        pytest.skip(f"{target} is unavailable: {unavailable_reason(target)}")
    info = get_target(target)
    if target == "norse":  # Norse's importer maps no nested graph: refused by name
        with pytest.raises(ModelError, match=r"cannot map node\(s\) blk \(NIRGraph\)"):
            info.runner()(plan, x)
        return
    if target == "snntorch":  # (its importer nests subgraphs only as recurrent cells)
        with pytest.raises(ModelError, match=r"node blk \(NIRGraph\)"):
            info.runner()(plan, x)
        return
    got = run_aligned(info, plan, x, record=True)
    assert np.array_equal(got.counts, expected.counts)
    if info.rasters:
        for k, r in expected.rasters.items():
            assert np.array_equal(got.rasters[k], r), k


# ---------------------------------------------------------------------------------------------
# Delays and loops: a value computed at step t reaches the edge that closes a loop at step t + 1


def test_delay_emits_its_input_steps_later(tmp_path):
    nodes = {"x": nir.Input(np.array([3])), "d": nir.Delay(np.array([1e-3, 2e-3, 4e-3])),
             "th": nir.Threshold(f(3, 0.5)), "y": nir.Output(np.array([3]))}  # fmt: skip
    nir.write(tmp_path / "d.nir", nir.NIRGraph(nodes, [("x", "d"), ("d", "th"), ("th", "y")]))
    plan = load_plan(tmp_path / "d.nir")
    assert plan.delay_names == ["d"] and plan.node("d").params["steps"].tolist() == [1, 2, 4]
    x = _spikes(12, 2, 3, seed=9)
    got = ref.run(plan, x, record=True).rasters["th"]
    for i, d in enumerate((1, 2, 4)):
        assert np.array_equal(got[d:, :, i], x[:-d, :, i]) and not got[:d, :, i].any()
    with pytest.raises(ModelError, match="whole number"):
        load_plan(tmp_path / "d.nir", dt=3e-4)


def _recurrent_graph(path, w_in, w_rec, b_in, b_rec):
    n = w_rec.shape[0]
    nodes = {"x": nir.Input(np.array([w_in.shape[1]])), "fc": nir.Affine(w_in.astype(np.float32), b_in.astype(np.float32)),
             "lif": nir.LIF(tau=f(n, 2e-3), r=f(n, 2.0), v_leak=f(n, 0.0), v_threshold=f(n, 1.0)),
             "rec": nir.Affine(w_rec.astype(np.float32), b_rec.astype(np.float32)), "y": nir.Output(np.array([n]))}  # fmt: skip
    edges = [("x", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "y")]
    nir.write(path, nir.NIRGraph(nodes, edges, type_check=False))
    return load_plan(path)


def test_loop_closing_edge_carries_the_previous_step(tmp_path):
    w_in = np.array([[1.0, 0.5], [0.25, 1.0], [0.5, -0.5]])
    w_rec = np.array([[0.0, 0.5, -1.0], [0.75, 0.0, 0.25], [0.5, 0.5, 0.0]])
    b_in, b_rec = np.array([0.125, 0.0, 0.25]), np.array([0.0, 0.125, 0.0])
    plan = _recurrent_graph(tmp_path / "r.nir", w_in, w_rec, b_in, b_rec)
    assert [(n.name, n.kind, n.sources) for n in plan.nodes][:1] == [("rec->lif", "delay", ["rec"])]
    assert plan.node("lif").sources == ["fc", "rec->lif"]
    x = _spikes(20, 3, 2, seed=10)
    got = ref.run(plan, x, record=True).rasters["lif"]
    v, rec = np.zeros((3, 3)), np.zeros((3, 3))  # rec: the loop's value of the previous step (0 before the first)
    for t in range(20):
        v = 0.5 * v + (x[t] @ w_in.T + b_in + rec)
        s = v > 1.0
        assert np.array_equal(got[t], s), t
        v = np.where(s, 0.0, v)
        rec = s @ w_rec.T + b_rec
    assert got.sum() > 0


@pytest.mark.lava
def test_lava_closes_loops_with_a_dense_back_connection_and_relays_delays(tmp_path):
    """A LIF layer's recurrence is a Dense from its spikes back into it (Lava's one-step synaptic
    delay is the loop's step); a Delay of k steps on a feed-forward path is k relays; samples run
    one Lava run each, so nothing in flight crosses into the next sample. Identical rasters."""
    if unavailable_reason("lava"):
        pytest.skip(f"lava is unavailable: {unavailable_reason('lava')}")
    info = get_target("lava")
    rng = np.random.default_rng(31)
    w_in, w_rec = rng.normal(0, 0.8, (3, 2)), rng.normal(0, 0.6, (3, 3))
    plan = _recurrent_graph(tmp_path / "r.nir", np.rint(w_in * 8) / 8, np.rint(w_rec * 8) / 8, np.full(3, 0.125),
                            np.zeros(3))  # fmt: skip
    x = _spikes(20, 3, 2, seed=32)
    expected = ref.run(plan, x, record=True)
    assert expected.counts.sum() > 0 and info.refusal(plan, x) is None
    _assert_same_run(info, plan, x, expected)
    # a Delay of 2 steps between two LIF layers, beside a direct path: relays of whole layers
    nodes = {"x": nir.Input(np.array([4])), "fc": nir.Affine((rng.normal(0.4, 0.8, (6, 4)) * 8).round().astype(np.float32) / 8, f(6, 0.0)),
             "l1": _lif((6,)), "late": nir.Delay(f(6, 2e-3)),
             "fc2": nir.Affine((rng.normal(0, 0.8, (3, 6)) * 8).round().astype(np.float32) / 8, f(3, 0.0)),
             "fc3": nir.Affine((rng.normal(0, 0.8, (3, 6)) * 8).round().astype(np.float32) / 8, f(3, 0.0)),
             "l2": _lif((3,)), "y": nir.Output(np.array([3]))}  # fmt: skip
    edges = [("x", "fc"), ("fc", "l1"), ("l1", "late"), ("late", "fc2"), ("fc2", "l2"), ("l1", "fc3"), ("fc3", "l2"),
             ("l2", "y")]  # fmt: skip
    nir.write(tmp_path / "d.nir", nir.NIRGraph(nodes, edges, type_check=False))
    plan = load_plan(tmp_path / "d.nir")
    x = _spikes(16, 2, 4, p=0.4, seed=33)
    expected = ref.run(plan, x, record=True)
    assert all(c.sum() > 0 for c in expected.layer_counts.values())
    _assert_same_run(info, plan, x, expected)
    # a loop whose synapse has a bias: the Delay holds none before its first step, Lava's LIF would
    plan = _recurrent_graph(tmp_path / "b.nir", w_in, w_rec, np.zeros(3), np.full(3, 0.25))
    assert "has a bias and reaches lif through a Delay" in info.refusal(plan, x[:, :, :2])


@pytest.mark.lava
def test_lava_folds_a_power_of_two_input_gain_into_weights_and_bias(tmp_path):
    """NIR's LIF with ``r = 1`` scales its input by ``dt / tau``; Lava's LIF has gain 1: a power-of-two
    gain goes into the weights and bias exactly (identical rasters), any other is refused by name."""
    if unavailable_reason("lava"):
        pytest.skip(f"lava is unavailable: {unavailable_reason('lava')}")
    rng = np.random.default_rng(51)

    def graph(path, tau):
        w = (np.rint(rng.normal(0.3, 1.0, (6, 5)) * 8) / 8).astype(np.float32)
        nodes = {"x": nir.Input(np.array([5])), "fc": nir.Affine(w, f(6, 0.25)),
                 "l": nir.LIF(tau=f(6, tau), r=f(6, 1.0), v_leak=f(6, 0.0), v_threshold=f(6, 0.5)),
                 "y": nir.Output(np.array([6]))}  # fmt: skip
        nir.write(path, nir.NIRGraph(nodes, [("x", "fc"), ("fc", "l"), ("l", "y")]))
        return load_plan(path)

    info = get_target("lava")
    plan = graph(tmp_path / "g.nir", 4e-3)  # gain 1/4, beta 3/4
    assert float(plan.node("l").params["gain"][0]) == 0.25
    x = _spikes(12, 3, 5, p=0.5, seed=52)
    expected = ref.run(plan, x, record=True)
    assert expected.counts.sum() > 0
    _assert_same_run(info, plan, x, expected)
    assert "not a power of two" in info.refusal(graph(tmp_path / "h.nir", 3e-3), x)


@pytest.mark.lava
@pytest.mark.parametrize("w_in", [2.0, 4.0], ids=["gain1", "gain2"])
def test_lava_runs_a_recurrent_cubalif_with_its_current_in_u(tmp_path, w_in):
    """CubaLIF on Lava: the current is Lava's ``u`` (``du`` its decay), the input gains folded into the
    weights (a power of two: exact), the loop a Dense into the current; the current's trace is Lava's
    ``u``, compared bit for bit where the reference's float32 current is provably exact."""
    if unavailable_reason("lava"):
        pytest.skip(f"lava is unavailable: {unavailable_reason('lava')}")
    rng = np.random.default_rng(41)

    def grid(*shape, s=0.8):
        return (np.rint(rng.normal(0, s, shape) * 8) / 8).astype(np.float32)

    nodes = {"x": nir.Input(np.array([5])), "fc": nir.Linear(grid(6, 5)),
             "cl": nir.CubaLIF(tau_syn=f(6, 2e-3), tau_mem=f(6, 4e-3), r=f(6, 4.0), v_leak=f(6, 0.0),
                               v_threshold=f(6, 1.0), w_in=f(6, w_in)),
             "rec": nir.Linear(grid(6, 6, s=0.5)), "fc2": nir.Linear(grid(3, 6)), "out": _lif((3,), th=0.5),
             "y": nir.Output(np.array([3]))}  # fmt: skip
    edges = [("x", "fc"), ("fc", "cl"), ("cl", "rec"), ("rec", "cl"), ("cl", "fc2"), ("fc2", "out"), ("out", "y")]
    nir.write(tmp_path / "c.nir", nir.NIRGraph(nodes, edges, type_check=False))
    plan = load_plan(tmp_path / "c.nir")
    x = _spikes(8, 3, 5, p=0.5, seed=42)
    expected = ref.run(plan, x, record=True)
    assert all(c.sum() > 0 for c in expected.layer_counts.values()) and "cl.syn" in expected.traces
    info = get_target("lava")
    assert info.refusal(plan, np.concatenate([x, np.zeros((2, *x.shape[1:]), x.dtype)])) is None
    _assert_same_run(info, plan, x, expected)
    # what Lava's LIF cannot hold is refused by name: a bias into the current
    nodes["fc"] = nir.Affine(grid(6, 5), np.full(6, 0.25, np.float32))
    nir.write(tmp_path / "b.nir", nir.NIRGraph(nodes, edges, type_check=False))
    assert "add a bias to CubaLIF cl's current" in info.refusal(load_plan(tmp_path / "b.nir"), x)


def _recurrent_cubalif_graph(path):
    rng = np.random.default_rng(11)

    def aff(o, i, s=0.8):
        return nir.Affine(rng.normal(0, s, (o, i)).astype(np.float32), rng.normal(0, 0.1, o).astype(np.float32))

    nodes = {"in": nir.Input(np.array([2, 6, 6])),
             "conv": nir.Conv2d(input_shape=(6, 6), weight=rng.normal(0, 0.6, (3, 2, 3, 3)).astype(np.float32), stride=1,
                                padding=1, dilation=1, groups=1, bias=np.zeros(3, np.float32)),
             "l0": nir.LIF(tau=np.full((3, 6, 6), 2e-3), r=np.full((3, 6, 6), 2.0), v_leak=np.zeros((3, 6, 6)),
                           v_threshold=np.full((3, 6, 6), 0.5)),
             "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
             "late": nir.Delay(np.full((3, 3, 3), 2e-3)),
             "flat": nir.Flatten(input_type={"input": np.array([3, 3, 3])}, start_dim=0, end_dim=-1),
             "fc": aff(8, 27, 0.5),
             "cl": nir.CubaLIF(tau_syn=f(8, 4e-3), tau_mem=f(8, 8e-3), r=f(8, 8.0), v_leak=f(8, 0.0),
                               v_threshold=f(8, 1.0), w_in=f(8, 2.0)),
             "rec": aff(8, 8, 0.5), "fc2": aff(4, 8),
             "out_lif": nir.LIF(tau=f(4, 2e-3), r=f(4, 2.0), v_leak=f(4, 0.0), v_threshold=f(4, 1.0)),
             "out": nir.Output(np.array([4]))}  # fmt: skip
    edges = [("in", "conv"), ("conv", "l0"), ("l0", "pool"), ("pool", "late"), ("late", "flat"), ("flat", "fc"),
             ("fc", "cl"), ("cl", "rec"), ("rec", "cl"), ("cl", "fc2"), ("fc2", "out_lif"), ("out_lif", "out")]  # fmt: skip
    nir.write(path, nir.NIRGraph(nodes, edges, type_check=False))
    return load_plan(path)


@pytest.mark.parametrize("target", [pytest.param(t, marks=MARKS.get(t, ())) for t in TARGETS if t != "reference"])
def test_recurrent_cubalif_with_delay_on_every_target(tmp_path, target):
    from convert.to_onnx import export_onnx, export_step_onnx

    path = tmp_path / "rec.nir"
    plan = _recurrent_cubalif_graph(path)
    assert plan.delay_names == ["late", "rec->cl"]
    x = _spikes(24, 4, 72, p=0.3, seed=12).reshape(24, 4, 2, 6, 6)
    expected = ref.run(plan, x, record=True)
    assert all(c.sum() > 0 for c in expected.layer_counts.values())
    if unavailable_reason(target):
        pytest.skip(f"{target} is unavailable: {unavailable_reason(target)}")
    info = get_target(target)
    why = info.unsupported(plan) or info.refusal(plan, x)
    if why:  # declined by name (verify --targets all reports it)
        assert target in ("lava", "norse", "snntorch"), why
        assert "bias to CubaLIF cl's current" in why if target == "lava" else "Delay (delay)" in why
        return
    if target == "onnx":  # the whole-T file beside the graph, and the step file for other T
        export_onnx(plan, path.with_suffix(".onnx"), steps=24)
        export_step_onnx(plan, path.with_suffix(".step.onnx"))
    _assert_same_run(info, plan, x, expected)
    assert np.array_equal(run_aligned(info, plan, x[:9, 1:2]).counts, ref.run(plan, x[:9, 1:2]).counts)
    if info.streams:  # the delays' memories are state: three calls give what one run gives
        st = info.streamer()(plan)
        parts = [st.feed(x[a:b, 2]) for a, b in ((0, 5), (5, 13), (13, 24))]
        assert np.array_equal(np.sum(parts, axis=0), expected.counts[2])


def test_verify_all_on_a_recurrent_cubalif_graph(tmp_path, capsys):
    path = tmp_path / "rec.nir"
    _recurrent_cubalif_graph(path)
    np.save(tmp_path / "x.npy", _spikes(24, 6, 72, p=0.3, seed=13).reshape(24, 6, 2, 6, 6))
    out = tmp_path / "v"
    argv = [str(path), "--targets", "all", "--data", str(tmp_path / "x.npy"), "--progress", "false", "--out", str(out)]
    assert verify.main(argv) == 0, capsys.readouterr()
    rep = json.loads((out / "report.json").read_text())
    assert rep["passed"] and {"torch", "onnx", "eventsim"} <= set(rep["targets"])
    assert "add a bias to CubaLIF cl's current" in rep["skipped"]["lava"] and "Delay (delay)" in rep["skipped"]["norse"]
    assert "Skipped lava: declines this graph" in (out / "report.md").read_text()


# ---------------------------------------------------------------------------------------------
# Conv1d, dilated and grouped Conv2d, and a Flatten of part of the sample


def _lif(shape, th=0.3):
    return nir.LIF(
        tau=np.full(shape, 2e-3), r=np.full(shape, 2.0), v_leak=np.zeros(shape), v_threshold=np.full(shape, th)
    )


def _weights(rng, grid: bool):
    """Float32 weights: general floats, or multiples of 1/8 (every float32 sum exact in any order)."""

    def w(*shape, s=0.5):
        a = rng.normal(0, s, shape)
        return (np.rint(a * 8) / 8 if grid else a).astype(np.float32)

    return w


def _write(path, nodes, chain):
    # NIR 1.0.8's type check takes weight.shape[1] as a Conv's input channels, groups aside: not checked
    nir.write(path, nir.NIRGraph(nodes, list(zip(chain, chain[1:])), type_check=False))
    return load_plan(path)


def _conv1d_graph(path, grid: bool = False):
    """(4, 6, 8) -> Conv2d -> LIF -> partial Flatten (6, 64) -> Conv1d (stride, padding, dilation, groups) -> LIF
    -> Conv1d ('same') -> LIF -> Flatten -> Affine -> LIF."""
    w = _weights(np.random.default_rng(21), grid)
    nodes = {"x": nir.Input(np.array([4, 8, 8])),
             "c2": nir.Conv2d(input_shape=(8, 8), weight=w(6, 4, 3, 3), stride=1, padding=1, dilation=1, groups=1,
                              bias=w(6, s=0.1)),
             "l1": _lif((6, 8, 8)),
             "rows": nir.Flatten(input_type={"input": np.array([6, 8, 8])}, start_dim=1, end_dim=-1),
             "c1": nir.Conv1d(input_shape=64, weight=w(4, 3, 3), stride=2, padding=2, dilation=3, groups=2,
                              bias=w(4, s=0.1)),
             "l2": _lif((4, 31)),
             "c1s": nir.Conv1d(input_shape=31, weight=w(4, 4, 5), stride=1, padding="same", dilation=1, groups=1,
                               bias=w(4, s=0.1)),
             "l3": _lif((4, 31)),
             "flat": nir.Flatten(input_type={"input": np.array([4, 31])}, start_dim=0, end_dim=-1),
             "fc": nir.Affine(w(5, 124, s=0.3), w(5, s=0.1)), "l4": _lif((5,)), "y": nir.Output(np.array([5]))}  # fmt: skip
    return _write(path, nodes, ["x", "c2", "l1", "rows", "c1", "l2", "c1s", "l3", "flat", "fc", "l4", "y"])


def _dilated_grouped_graph(path, grid: bool, groups: int = 2):
    """(4, 8, 8) -> Conv2d (dilation 2, groups) -> LIF -> Conv2d (dilation (1, 2), stride 2) -> LIF -> Flatten -> Affine -> LIF."""
    w = _weights(np.random.default_rng(22), grid)
    nodes = {"x": nir.Input(np.array([4, 8, 8])),
             "dg": nir.Conv2d(input_shape=(8, 8), weight=w(8, 4 // groups, 3, 3), stride=1, padding=2, dilation=2,
                              groups=groups, bias=w(8, s=0.1)),
             "l1": _lif((8, 8, 8)),
             "d2": nir.Conv2d(input_shape=(8, 8), weight=w(4, 8, 3, 3, s=0.3), stride=2, padding=(1, 2),
                              dilation=(1, 2), groups=1, bias=w(4, s=0.1)),
             "l2": _lif((4, 4, 4)),
             "flat": nir.Flatten(input_type={"input": np.array([4, 4, 4])}, start_dim=0, end_dim=-1),
             "fc": nir.Affine(w(5, 64, s=0.4), w(5, s=0.1)), "l3": _lif((5,)), "y": nir.Output(np.array([5]))}  # fmt: skip
    return _write(path, nodes, ["x", "dg", "l1", "d2", "l2", "flat", "fc", "l3", "y"])


def _partial_flatten_graph(path):
    """(2, 6, 6) -> Conv2d -> LIF -> Flatten dims 1..2 (3, 36) -> Flatten -> Affine -> LIF."""
    w = _weights(np.random.default_rng(23), True)
    nodes = {"x": nir.Input(np.array([2, 6, 6])),
             "c": nir.Conv2d(input_shape=(6, 6), weight=w(3, 2, 3, 3), stride=1, padding=1, dilation=1, groups=1,
                             bias=w(3, s=0.1)),
             "l1": _lif((3, 6, 6)),
             "rows": nir.Flatten(input_type={"input": np.array([3, 6, 6])}, start_dim=1, end_dim=2),
             "flat": nir.Flatten(input_type={"input": np.array([3, 36])}, start_dim=0, end_dim=-1),
             "fc": nir.Affine(w(4, 108, s=0.3), w(4, s=0.1)), "l2": _lif((4,)), "y": nir.Output(np.array([4]))}  # fmt: skip
    return _write(path, nodes, ["x", "c", "l1", "rows", "flat", "fc", "l2", "y"])


def test_reference_convolutions_are_torch_functional_ones(tmp_path):
    """The reference's synapse (float64 sum rounded once to float32, then the bias) against
    ``torch.nn.functional.conv1d``/``conv2d`` in float64 on the same weights and spikes: the same bits."""
    import torch
    import torch.nn.functional as F

    from targets.reference import _synapse

    checked = 0
    for plan in (_conv1d_graph(tmp_path / "c1.nir"), _dilated_grouped_graph(tmp_path / "dg.nir", grid=False)):
        for n in plan.nodes:
            if n.kind not in ("conv", "conv1d"):
                continue
            p = n.params
            x = (np.random.default_rng(checked).random((3, *n.in_shape)) < 0.5).astype(np.float32)
            conv = F.conv2d if n.kind == "conv" else F.conv1d
            want = conv(torch.from_numpy(x.astype(np.float64)), torch.from_numpy(p["weight"].astype(np.float64)),
                        stride=p["stride"], padding=p["padding"], dilation=p["dilation"], groups=p["groups"])  # fmt: skip
            want = want.numpy().astype(np.float32) + p["bias"].reshape((-1,) + (1,) * (len(n.out_shape) - 1))
            got = _synapse(n, x, integer=False)
            assert got.dtype == np.float32 and got.shape == (3, *n.out_shape) and np.array_equal(got, want), n.name
            checked += 1
    assert checked == 5
    plan = _conv1d_graph(tmp_path / "c1.nir")
    assert [(n.name, n.kind, n.out_shape) for n in plan.nodes if n.kind in ("conv1d", "flatten")] == [
        ("rows", "flatten", (6, 64)), ("c1", "conv1d", (4, 31)), ("c1s", "conv1d", (4, 31)), ("flat", "flatten", (124,))]  # fmt: skip
    assert plan.node("c1s").params["padding"] == (2,)  # 'same' at stride 1: (k - 1) / 2 zeros each side
    assert plan.conv_features == {"dilation": ["c1"], "groups": ["c1"]}


def _check_target(tmp_path, target, plan, path, x, *, declines: dict[str, str]):
    """``target`` equals the reference on ``plan`` (rasters, counts; the onnx target also from the whole-T and
    step files beside the graph, torch and onnx also streaming), or declines it with ``declines[target]``."""
    from convert.to_onnx import export_onnx, export_step_onnx

    expected = ref.run(plan, x, record=True)
    assert all(c.sum() > 0 for c in expected.layer_counts.values()), "every spiking layer must spike"
    if unavailable_reason(target):
        pytest.skip(f"{target} is unavailable: {unavailable_reason(target)}")
    info = get_target(target)
    why = info.unsupported(plan) or info.refusal(plan, np.concatenate([x, np.zeros((4, *x.shape[1:]), x.dtype)]))
    if target in declines:
        assert why and declines[target] in why, why
        return
    assert why is None, why
    if target == "onnx":
        export_onnx(plan, path.with_suffix(".onnx"), steps=x.shape[0])
        export_step_onnx(plan, path.with_suffix(".step.onnx"))
    _assert_same_run(info, plan, x, expected)
    assert np.array_equal(run_aligned(info, plan, x[:5, 1:2]).counts, ref.run(plan, x[:5, 1:2]).counts)
    if target in ("torch", "onnx"):
        st = info.streamer()(plan)
        parts = [st.feed(x[a:b, 0]) for a, b in ((0, 4), (4, x.shape[0]))]
        assert np.array_equal(np.sum(parts, axis=0), expected.counts[0])


TARGET_PARAMS = [pytest.param(t, marks=MARKS.get(t, ())) for t in TARGETS if t != "reference"]
NO_CONV1D = "Conv1d (conv1d): node(s) c1, c1s"


@pytest.mark.parametrize("target", TARGET_PARAMS)
def test_conv1d_after_a_partial_flatten_on_every_target(tmp_path, target):
    plan = _conv1d_graph(tmp_path / "c1.nir")  # general float weights: the float64 sums, rounded once
    x = (np.random.default_rng(24).random((14, 4, 4, 8, 8)) < 0.4).astype(np.float32)
    declines = dict.fromkeys(("norse", "snntorch"), NO_CONV1D)
    _check_target(tmp_path, target, plan, tmp_path / "c1.nir", x, declines=declines)


@pytest.mark.parametrize("grid", [False, True], ids=["float", "grid"])
@pytest.mark.parametrize("target", TARGET_PARAMS)
def test_dilated_and_grouped_conv2d_on_every_target(tmp_path, target, grid):
    path = tmp_path / "dg.nir"
    plan = _dilated_grouped_graph(path, grid)
    x = (np.random.default_rng(25).random((14, 4, 4, 8, 8)) < 0.4).astype(np.float32)
    declines = {}
    if not grid and target in ("norse", "snntorch"):  # they sum in float32: the reference's bits only where exact
        pytest.skip("float32 sums of general float weights depend on their order")
    _check_target(tmp_path, target, plan, path, x, declines=declines)
    if target == "torch" and grid:  # weights on a grid: its float32 convolutions (dilated, grouped) ran
        from targets.torch_target import prepare

        assert prepare(plan).float64_synapses == set()


@pytest.mark.parametrize("target", TARGET_PARAMS)
def test_partial_flatten_on_every_target(tmp_path, target):
    path = tmp_path / "pf.nir"
    plan = _partial_flatten_graph(path)
    assert plan.node("rows").out_shape == (3, 36)
    x = (np.random.default_rng(26).random((14, 4, 2, 6, 6)) < 0.4).astype(np.float32)
    _check_target(tmp_path, target, plan, path, x, declines={"snntorch": "Flatten rows joins only some dims"})


def test_declining_targets_name_the_node_and_why(tmp_path, capsys):
    from convert.foreign import layers_from_plan

    path = tmp_path / "depthwise.nir"
    plan = _dilated_grouped_graph(path, grid=True, groups=4)  # one channel per group
    x = (np.random.default_rng(27).random((6, 2, 4, 8, 8)) < 0.4).astype(np.float32)
    for target in ("norse", "snntorch"):  # their imports build a Conv2d torch refuses
        if not unavailable_reason(target):
            assert "Conv2d dg (4 groups of 1 channels)" in get_target(target).refusal(plan, x)
    # eventsim writes the depthwise, dilated kernels out in full (zeros between taps and across groups)
    expected = ref.run(plan, x, record=True)
    _assert_same_run(get_target("eventsim"), plan, x, expected)

    # conversion to Loihi's integer network keeps them (the integer targets write them out alike:
    # tests/test_foreign_convert.py); a Flatten of part of the sample it cannot keep
    layers = {layer.name: layer for layer in layers_from_plan(plan)[0]}
    assert layers["dg"].params["groups"] == 4 and layers["dg"].params["dilation"] == (2, 2)
    c1 = _conv1d_graph(tmp_path / "c1.nir")
    with pytest.raises(ModelError, match=r"rows \(a Flatten of part of the sample"):
        layers_from_plan(c1)
    np.save(tmp_path / "x.npy", (np.random.default_rng(28).random((10, 3, 4, 8, 8)) < 0.4).astype(np.float32))
    out = tmp_path / "v"
    argv = [str(tmp_path / "c1.nir"), "--targets", "all", "--data", str(tmp_path / "x.npy"), "--progress", "false",
            "--out", str(out)]  # fmt: skip
    assert verify.main(argv) == 0, capsys.readouterr()
    rep = json.loads((out / "report.json").read_text())
    assert rep["passed"] and {"torch", "onnx"} <= set(rep["targets"])
    assert {"eventsim", "lava"} <= set(rep["targets"]) or unavailable_reason("lava")
    for target in ("norse",) + (() if unavailable_reason("snntorch") else ("snntorch",)):
        assert NO_CONV1D in rep["skipped"][target], target


def test_conv_and_flatten_errors(tmp_path):
    w = np.ones((2, 2, 3), np.float32)

    def conv1d_plan(**kw):
        args = {"input_shape": 8, "weight": w, "stride": 1, "padding": 0, "dilation": 1, "groups": 1,
                "bias": np.zeros(2, np.float32)} | kw  # fmt: skip
        nodes = {"x": nir.Input(np.array([2, 8])), "c": nir.Conv1d(**args), "y": nir.Output(np.array([2, 6]))}
        return load_plan(nir.NIRGraph(nodes, [("x", "c"), ("c", "y")], type_check=False))

    assert conv1d_plan(padding="valid").node("c").out_shape == (2, 6)
    with pytest.raises(ModelError, match="padding 'same' with stride"):
        conv1d_plan(padding="same", stride=2)
    with pytest.raises(ModelError, match="pads unevenly"):
        conv1d_plan(padding="same", weight=np.ones((2, 2, 4), np.float32))
    with pytest.raises(ModelError, match=r"node c: Conv1d with 2 group\(s\) .* needs 4 input channels"):
        conv1d_plan(groups=2)
    with pytest.raises(ModelError, match="does not fit its input"):
        conv1d_plan(dilation=5)
    nodes = {"x": nir.Input(np.array([2, 3, 4])), "f": nir.Flatten(input_type={"input": np.array([2, 3, 4])},
             start_dim=2, end_dim=1), "y": nir.Output(np.array([24]))}  # fmt: skip
    with pytest.raises(ModelError, match=r"node f: Flatten dims 2\.\.1 do not fit"):
        load_plan(nir.NIRGraph(nodes, [("x", "f"), ("f", "y")], type_check=False))


@pytest.mark.parametrize(
    ("one_d", "stride", "padding", "dilation", "groups"),
    [(False, 1, 1, 1, 1), (False, 2, 1, 2, 1), (False, 1, 2, 2, 2), (True, 1, 0, 1, 1), (True, 2, 3, 2, 2)],
)
def test_synaptic_operation_fanout_counts_every_connection(one_d, stride, padding, dilation, groups):
    """Each input element's fanout (runtime.metrics) is the number of outputs a one-hot input reaches
    through all-ones weights, counted independently by torch's own convolution."""
    import torch
    import torch.nn.functional as F

    from runtime.metrics import fanout
    from targets.plan import Node

    c, o, k = 4, 6, 3
    in_shape = (c, 11) if one_d else (c, 9, 8)
    conv = F.conv1d if one_d else F.conv2d
    w = torch.ones((o, c // groups, *([k] if one_d else [k, k])), dtype=torch.float64)
    nd = 1 if one_d else 2
    args = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    out_shape = tuple(conv(torch.zeros((1, *in_shape), dtype=torch.float64), w, **args).shape[1:])
    node = Node("c", "conv1d" if one_d else "conv", ["input"], in_shape, out_shape,
                {"weight": w.numpy().astype(np.float32), "stride": (stride,) * nd, "padding": (padding,) * nd,
                 "dilation": (dilation,) * nd, "groups": groups})  # fmt: skip
    want = np.zeros(in_shape, dtype=np.int64)
    for idx in np.ndindex(*in_shape):
        x = torch.zeros((1, *in_shape), dtype=torch.float64)
        x[(0, *idx)] = 1.0
        want[idx] = int((conv(x, w, **args) != 0).sum())
    np.testing.assert_array_equal(fanout(node), want)


def test_run_counts_synaptic_operations_through_a_loop(tmp_path):
    """runtime.run's synaptic operations on snnTorch's recurrent fixture, whose loop delays the recurrent
    synapse's output by a step (the delay is read before its turn): the recurrent synapse's accumulates
    are its fanout times its layer's spikes."""
    from runtime.metrics import fanout
    from tests.conftest import DATA

    fixtures = DATA / "foreign"
    x = np.load(fixtures / "snntorch_recurrent.npz")["input"]
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "r.json"
    argv = [str(fixtures / "snntorch_recurrent.nir"), "--target", "torch", "--dialect", "snntorch",
            "--data", str(tmp_path / "x.npy"), "--progress", "false", "--out", str(out)]  # fmt: skip
    assert run_cmd.main(argv) == 0
    ops = json.loads(out.read_text())["synaptic_operations"]
    plan = load_plan(fixtures / "snntorch_recurrent.nir", dialect="snntorch")
    assert any(n.origin == "loop" for n in plan.nodes)
    res = ref.run(plan, x, record=True)
    rec = plan.node("rlif.w_rec")
    want = ((res.rasters["rlif.lif"] != 0) * fanout(rec)).reshape(len(x), x.shape[1], -1).sum(axis=(0, 2))
    assert want.sum() > 0
    assert ops["per_layer_per_sample"]["rlif.w_rec"] == pytest.approx(float(want.mean()))


@pytest.mark.lava
def test_lava_runs_integrator_and_scale_readouts_and_says_why_not_a_float_cubali(tmp_path):
    """NIR's non-spiking nodes as a graph's readout on Lava: I (no decay) and Scale (no state) are its LIF
    that never fires, the membrane probed, bit for bit; a float CubaLI readout is refused with the
    reason (its membrane is not provably exact in float32; fixed precision runs it:
    tests/test_cuba_fixed.py); fed into another node, any of them is refused by name."""
    if unavailable_reason("lava"):
        pytest.skip(f"lava is unavailable: {unavailable_reason('lava')}")
    rng = np.random.default_rng(3)

    def grid(*shape, s=0.8):
        return (np.rint(rng.normal(0, s, shape) * 8) / 8).astype(np.float32)

    readouts = {"i": nir.I(r=f(3, 1000.0)), "scale": nir.Scale(scale=f(3, 0.5)),
                "cubali": nir.CubaLI(tau_syn=f(3, 2e-3), tau_mem=f(3, 4e-3), r=f(3, 4.0), v_leak=f(3, 0.0),
                                     w_in=f(3, 2.0))}  # fmt: skip
    info = get_target("lava")
    for name, node in readouts.items():
        nodes = {"x": nir.Input(np.array([5])), "fc": nir.Linear(grid(6, 5)), "h": _lif((6,), th=0.5),
                 "fc2": nir.Linear(grid(3, 6)), "ro": node, "y": nir.Output(np.array([3]))}  # fmt: skip
        edges = [("x", "fc"), ("fc", "h"), ("h", "fc2"), ("fc2", "ro"), ("ro", "y")]
        nir.write(tmp_path / f"{name}.nir", nir.NIRGraph(nodes, edges, type_check=False))
        plan = load_plan(tmp_path / f"{name}.nir")
        x = _spikes(8, 3, 5, p=0.5, seed=4)
        why = info.refusal(plan, np.concatenate([x, np.zeros((2, *x.shape[1:]), x.dtype)]))
        if name == "cubali":
            assert "LI layer(s) ro (exact for 0 steps) are not provably exact in float32" in why
            continue
        assert why is None, why
        expected = ref.run(plan, x, record=True)
        assert np.abs(expected.traces["ro"]).max() > 0
        _assert_same_run(info, plan, x, expected)
        nodes["fc3"], nodes["out"] = nir.Linear(grid(3, 3)), _lif((3,))  # the readout feeding on: refused by name
        edges = edges[:-1] + [("ro", "fc3"), ("fc3", "out"), ("out", "y")]
        nir.write(tmp_path / f"{name}_on.nir", nir.NIRGraph(nodes, edges, type_check=False))
        assert "LI layer ro feeds fc3" in info.refusal(load_plan(tmp_path / f"{name}_on.nir"), x)
