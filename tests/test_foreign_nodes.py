"""NIR's other neuron nodes (IF, I, CubaLIF, CubaLI, Threshold, Scale) in graphs another tool wrote:
the reference's semantics checked by hand, every target equal to the reference, and the command
line for a graph without our metadata (``--dt``, ``--steps``, ``--bin-us``, ``.npy`` spikes)."""

from __future__ import annotations

import json

import nir
import numpy as np
import pytest

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
        reason = info.refusal(plan, x)
        assert "CubaLIF node cl" in reason and "Scale node sc" in reason and "I node i" in reason
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
    if "delay" not in info.kinds:  # declined by name (verify --targets all reports it)
        assert target in ("lava", "norse", "snntorch")
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
    assert "loop (delay)" in rep["skipped"]["lava"] and "Delay (delay)" in rep["skipped"]["norse"]
    assert "Skipped lava: declines this graph" in (out / "report.md").read_text()
