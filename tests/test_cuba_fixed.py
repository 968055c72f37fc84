"""Current-based neurons (NIR's ``CubaLIF``) in fixed precision: Loihi's LIF with its current ``u``
(Lava's 12-bit ``du``, its 24-bit wrap-around), the bias in the membrane. The integer arithmetic by
hand, every integer target equal to the reference spike for spike and current for current (a
current that wraps around included), and a foreign float CubaLIF network converted to Loihi
integers within half a point of its float accuracy."""

from __future__ import annotations

import json

import nir
import numpy as np
import pytest

from convert import to_nir
from convert.to_onnx import export_step_onnx
from core import fixed
from core.errors import ModelError
from runtime.latency import run_aligned
from targets import get_target, unavailable_reason
from targets import reference as ref
from targets.onnx_target import check_onnx
from targets.plan import METADATA_KEY, load_plan
from tests.conftest import assert_targets_agree

INTEGER_TARGETS = ["torch", "onnx", "eventsim", pytest.param("lava", marks=pytest.mark.lava)]


def test_the_current_decays_by_du_plus_one_and_wraps_around_like_lava():
    u = np.array([4096, -4096, 100, -100, 0, 2**23 - 1, -(2**23) + 1, 5000])
    a = np.array([0, 0, 0, 0, 3, 0, 0, 2**15 - 1])
    got = fixed.current_step(u, a, du=1023)  # keeps (4095 - 1023) / 4096 = 3/4, truncated toward zero
    assert got[:5].tolist() == [3072, -3072, 75, -75, 3 << 6]
    # the current's own bounds (Lava's max_uv_val = 2**23): one above it loses 2**24, one at or below -2**23 gains it
    top = 2**23 - 64
    dec = top * 4095 // 4096  # du = 0: the slowest decay, 8386496
    big = fixed.current_step(np.array([top, top, -top, -top]), np.array([33, 34, -32, -33]), du=0)
    assert dec + 33 * 64 == 2**23
    assert big.tolist() == [2**23, dec + 34 * 64 - 2**24, -dec - 32 * 64, -dec - 33 * 64 + 2**24]
    assert fixed.current_step(np.array([7]), np.array([0]), du=fixed.DU_FULL).tolist() == [0]  # decays fully
    s, v = fixed.lif_fixed_step(np.array([0, 0]), np.array([1000, 64 * 5]), dv=0, vth=5, bias=0, current=True)
    assert v.tolist() == [0, 320] and s.tolist() == [True, False]  # the current enters unshifted; v > vth << 6


def _fixed_cuba_graph(
    path,
    *,
    seed=0,
    du=(1023, 2047),
    dv=(512, 256),
    vth=(60, 40),
    mant_scale=40.0,
    bias=True,
    syn_bias=False,
    T=24,
    weight_exp=0,
):
    """Input(6) -> Affine -> CubaLIF -> Affine -> CubaLIF -> Output, written in fixed precision by
    hand: 8-bit mantissas, each CubaLIF with its du, dv, vth and its own (membrane) bias."""
    rng = np.random.default_rng(seed)
    scale = 2.0**-7
    m1 = np.clip(np.rint(rng.normal(0, mant_scale, (8, 6))), -127, 127)
    m2 = np.clip(np.rint(rng.normal(0, mant_scale, (3, 8))), -127, 127)
    b1 = np.rint(rng.normal(0, 200, 8)).astype(int) if bias else np.zeros(8, int)
    b2 = np.rint(rng.normal(0, 200, 3)).astype(int) if bias else np.zeros(3, int)
    f = np.full
    nodes = {"x": nir.Input(np.array([6])),
             "fc1": nir.Affine((m1 * scale).astype(np.float32), np.zeros(8, np.float32)),
             "c1": nir.CubaLIF(tau_syn=f(8, 4e-3), tau_mem=f(8, 8e-3), r=f(8, 8.0), w_in=f(8, 4.0), v_leak=f(8, 0.0),
                               v_threshold=f(8, 1.0), v_reset=f(8, 0.0)),
             "fc2": nir.Affine((m2 * scale).astype(np.float32), np.zeros(3, np.float32)),
             "c2": nir.CubaLIF(tau_syn=f(3, 2e-3), tau_mem=f(3, 4e-3), r=f(3, 4.0), w_in=f(3, 2.0), v_leak=f(3, 0.0),
                               v_threshold=f(3, 1.0), v_reset=f(3, 0.0)),
             "y": nir.Output(np.array([3]))}  # fmt: skip
    layers = {
        "fc1": {"fixed": {"weight_exp": weight_exp, "weight_scale": scale, "bias_exp": 0,
                          "bias_mant": ([5] * 8 if syn_bias else [0] * 8)}},
        "c1": {"fixed": {"vth": vth[0], "dv": dv[0], "du": du[0], "bias_mant": b1.tolist(), "bias_exp": 0}},
        "fc2": {"fixed": {"weight_exp": 0, "weight_scale": scale, "bias_exp": 0, "bias_mant": [0] * 3}},
        "c2": {"fixed": {"vth": vth[1], "dv": dv[1], "du": du[1], "bias_mant": b2.tolist(), "bias_exp": 0}},
    }  # fmt: skip
    meta = {"format": "snn-deploy.graph/1", "precision": "fixed", "T": T, "dt": 1e-3, "layers": layers}
    edges = [("x", "fc1"), ("fc1", "c1"), ("c1", "fc2"), ("fc2", "c2"), ("c2", "y")]
    nir.write(path, nir.NIRGraph(nodes, edges, metadata={METADATA_KEY: json.dumps(meta)}))
    return load_plan(path)


def _spikes(T, B, n, p=0.4, seed=1):
    return (np.random.default_rng(seed).random((T, B, n)) < p).astype(np.float32)


def test_the_reference_follows_loihis_current_by_hand(tmp_path):
    plan = _fixed_cuba_graph(tmp_path / "g.nir")
    assert [(n.name, n.kind, n.fixed.get("du"), n.fixed.get("current")) for n in plan.nodes if n.kind != "affine"] == [
        ("c1.syn", "li", 1023, None), ("c1", "lif", None, True), ("c2.syn", "li", 2047, None), ("c2", "lif", None, True)]  # fmt: skip
    x = _spikes(24, 5, 6)
    got = ref.run(plan, x, record=True)
    fc1, c1 = plan.node("fc1"), plan.node("c1")
    u = np.zeros((5, 8), np.int64)
    v = np.zeros((5, 8), np.int64)
    for t in range(24):
        a = x[t].astype(np.int64) @ fc1.fixed["weight"].T  # (weight exponent 0)
        u = np.trunc(u * (4095 - 1023) / 4096).astype(np.int64) + (a << 6)
        v = np.clip(np.trunc(v * (4096 - 512) / 4096).astype(np.int64) + u + c1.fixed["bias"], -(2**23 - 1), 2**23 - 1)
        s = v > (60 << 6)
        v = np.where(s, 0, v)
        assert np.array_equal(got.traces["c1.syn"][t], u), t
        assert np.array_equal(got.rasters["c1"][t], s), t
    assert got.rasters["c1"].sum() > 20 and got.rasters["c2"].sum() > 5


@pytest.mark.parametrize("target", INTEGER_TARGETS)
@pytest.mark.parametrize("case", ["biased", "wrapping"])
def test_every_integer_target_runs_a_current_based_network_exactly(tmp_path, target, case):
    """Spikes, spike counts and the currents (``<name>.syn`` traces: Lava's ``u``) equal the
    reference's; ``wrapping``: currents that decay slowly under large weights wrap around at 2**23,
    which every target must compute as Lava does, not saturate."""
    if unavailable_reason(target):
        pytest.skip(f"{target} is unavailable: {unavailable_reason(target)}")
    wrapping = {"du": (0, 1), "dv": (64, 128), "vth": (20000, 20000), "mant_scale": 120.0, "weight_exp": 3, "T": 48}
    plan = _fixed_cuba_graph(tmp_path / "g.nir", **(wrapping if case == "wrapping" else {}))
    x = _spikes(plan.steps, 4, 6, p=0.6 if case == "wrapping" else 0.4)
    expected = ref.run(plan, x, record=True)
    if case == "wrapping":
        u = expected.traces["c1.syn"]
        assert u.max() > 2**22 and u.min() < -(2**22), "the currents must reach the wrap-around"
        assert (np.abs(np.diff(u, axis=0)) > 2**23).any(), "some current must wrap around"
    info = get_target(target)
    got = run_aligned(info, plan, x, record=True)
    assert np.array_equal(got.counts, expected.counts)
    assert all(np.array_equal(got.layer_counts[k], c) for k, c in expected.layer_counts.items())
    if not info.rasters:  # onnx: the whole-T file's outputs are counts; its step file, run T times, agrees too
        export_step_onnx(plan, tmp_path / "g.step.onnx")
        step = check_onnx(plan, tmp_path / "g.step.onnx", x, threads=1)
        assert np.array_equal(step["counts"], expected.counts)
        assert all(np.array_equal(step["layer_counts"][k], c) for k, c in expected.layer_counts.items())
        return
    for k, r in expected.rasters.items():
        assert np.array_equal(got.rasters[k], r), k
    for k in ("c1.syn", "c2.syn"):
        assert np.array_equal(np.asarray(got.traces[k]).astype(np.int64), expected.traces[k]), k


def test_a_bias_into_the_current_is_refused_by_name(tmp_path):
    with pytest.raises(ModelError, match="fc1 adds a bias to CubaLIF c1's current; Loihi adds biases to the membrane"):
        _fixed_cuba_graph(tmp_path / "g.nir", syn_bias=True)


@pytest.fixture(scope="module")
def cuba_digits(trained_digits, tmp_path_factory):
    """The trained digits student as a foreign float graph whose every LIF is a CubaLIF (a current with
    tau_syn = 2 dt in front of the same membrane, w_in 1: the same gain once settled), and its
    conversion to Loihi integers (with netx)."""
    out = tmp_path_factory.mktemp("cuba")
    assert to_nir.main([str(trained_digits), "--out", str(out), "--name", "own", "--weight-bits", "0",
                        "--parity-samples", "32", "--onnx", "false"]) == 0  # fmt: skip
    g = nir.read(out / "own.nir")
    dt = 1e-3
    nodes = {k: nir.CubaLIF(tau_syn=np.full_like(v.tau, 2 * dt), tau_mem=v.tau, r=v.r, v_leak=v.v_leak,
                            v_threshold=v.v_threshold, v_reset=v.v_reset, w_in=np.ones_like(v.tau))
             if isinstance(v, nir.LIF) else v for k, v in g.nodes.items()}  # fmt: skip
    nir.write(out / "cuba.nir", nir.NIRGraph(nodes, g.edges))
    argv = [str(out / "cuba.nir"), "--precision", "fixed", "--data", "digits", "--steps", "4", "--out", str(out),
            "--name", "loihi", "--parity-samples", "400", "--netx"]  # fmt: skip
    assert to_nir.main(argv) == 0
    return out


def test_a_foreign_cubalif_network_becomes_loihi_integers_within_half_a_point(cuba_digits):
    rep = json.loads((cuba_digits / "loihi.conversion.json").read_text())
    flt, fix = rep["float_checkpoint"]["accuracy"], rep["graph_reference"]["accuracy"]
    assert rep["parity_samples"] == 360 and flt > 0.8 and fix >= flt - 0.005, (flt, fix)
    assert rep["onnx"]["identical_output_counts_vs_reference"] == 1.0
    plan = load_plan(cuba_digits / "loihi.nir")
    currents = [n for n in plan.nodes if n.origin == "CubaLIF" and n.kind == "li"]
    assert currents and all(0 <= n.fixed["du"] < fixed.DU_FULL for n in currents)
    # the bias is the neuron's (Loihi's membrane), stated as the CubaLIF's v_leak; the synapses add none
    g = nir.read(cuba_digits / "loihi.nir")
    assert all(not np.any(g.nodes[n.sources[0]].bias) for n in currents)
    assert any(np.any(g.nodes[n.name.removesuffix(".syn")].v_leak) for n in currents)
    assert_targets_agree(plan, _spikes(4, 16, 64, p=0.5).reshape(4, 16, 1, 8, 8), ("torch", "eventsim", "onnx"))


@pytest.mark.lava
def test_the_converted_cubalif_network_and_its_netx_file_run_on_lava(cuba_digits):
    if unavailable_reason("lava"):
        pytest.skip(f"lava is unavailable: {unavailable_reason('lava')}")
    rep = json.loads((cuba_digits / "loihi.conversion.json").read_text())
    assert rep["netx"]["identical_output_counts_vs_reference"] == 1.0, rep["netx"]
    plan = load_plan(cuba_digits / "loihi.nir")
    assert_targets_agree(plan, _spikes(4, 6, 64, p=0.5, seed=3).reshape(4, 6, 1, 8, 8), ("lava",))


@pytest.mark.parametrize("target", INTEGER_TARGETS)
def test_a_foreign_cubali_readout_becomes_a_bounded_loihi_readout(tmp_path, target):
    """A CubaLIF layer and a CubaLI readout (float, another tool's) converted to integers: the readout's
    bound covers its current (never wrapping) and its membrane (never reaching Loihi's largest
    threshold), and every integer target gives the reference's scores, currents and membranes."""
    if unavailable_reason(target):
        pytest.skip(f"{target} is unavailable: {unavailable_reason(target)}")
    rng = np.random.default_rng(0)
    f = np.full
    nodes = {"x": nir.Input(np.array([12])),
             "fc1": nir.Affine(rng.normal(0, 0.6, (16, 12)).astype(np.float32), rng.normal(0, 0.05, 16).astype(np.float32)),
             "c1": nir.CubaLIF(tau_syn=f(16, 4e-3), tau_mem=f(16, 8e-3), r=f(16, 2.0), v_leak=f(16, 0.0),
                               v_threshold=f(16, 1.0), w_in=f(16, 1.5)),
             "fc2": nir.Affine(rng.normal(0, 0.5, (4, 16)).astype(np.float32), rng.normal(0, 0.05, 4).astype(np.float32)),
             "ro": nir.CubaLI(tau_syn=f(4, 3e-3), tau_mem=f(4, 6e-3), r=f(4, 1.0), v_leak=f(4, 0.1), w_in=f(4, 1.0)),
             "y": nir.Output(np.array([4]))}  # fmt: skip
    edges = [("x", "fc1"), ("fc1", "c1"), ("c1", "fc2"), ("fc2", "ro"), ("ro", "y")]
    nir.write(tmp_path / "g.nir", nir.NIRGraph(nodes, edges))
    np.save(tmp_path / "x.npy", _spikes(40, 32, 12, p=0.3))
    argv = [str(tmp_path / "g.nir"), "--precision", "fixed", "--data", str(tmp_path / "x.npy"), "--steps", "40",
            "--out", str(tmp_path), "--onnx", "false"]  # fmt: skip
    assert to_nir.main(argv) == 0
    rep = json.loads((tmp_path / "model.fixed.conversion.json").read_text())
    ro = next(c for c in rep["fixed"]["choices"] if c["lif"] == "ro")
    assert ro["neuron"] == "li" and ro["du"] < fixed.DU_FULL and 0 < ro["v_bound"] <= fixed.VTH_MAX << 6
    assert rep["graph_reference"]["same_prediction_as_float"] >= 0.9
    plan = load_plan(tmp_path / "model.fixed.nir")
    assert plan.scores and plan.node("ro").fixed["current"]
    x = _spikes(40, 6, 12, p=0.3, seed=5)
    expected = ref.run(plan, x, record=True)
    assert np.abs(expected.traces["ro"]).max() <= ro["v_bound"] and expected.layer_counts["c1"].sum() > 0
    got = run_aligned(get_target(target), plan, x, record=True)
    assert np.array_equal(got.counts, expected.counts)
    if get_target(target).rasters:
        for k in ("ro", "ro.syn", "c1.syn"):
            assert np.array_equal(np.asarray(got.traces[k]).astype(np.int64), expected.traces[k]), k
