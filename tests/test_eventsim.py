"""The event-driven simulator: exact on real inputs, work proportional to events, state kept when streaming.

(The registry-parametrised agreement over every test network and precision is in test_targets.py.)
"""

import copy
import json
import threading

import nir
import numpy as np
import pytest
import torch

from convert.build import build_nir
from convert.nirgraph import write_graph
from core import fixed
from core.errors import DataError, ModelError
from inputs.datasets import load_dataset, spike_batch
from runtime.metrics import synaptic_operations
from runtime.verify import compare
from targets import eventsim, torch_target
from targets import reference as ref
from targets.eventsim import kernels
from targets.plan import load_plan
from train.models import build_model


def _graph(tmp_path, name: str, shape, precision: str, x: np.ndarray, *, bias: float = 0.0, **kw):
    torch.manual_seed(0)
    model = build_model(name, **kw)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(8)
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None and bias:
                m.bias.copy_(torch.empty_like(m.bias).uniform_(-bias, bias))
    graph, _ = build_nir(model.eval(), shape, precision=precision, steps=x.shape[0], calibration=x)
    path = tmp_path / f"{name}-{precision}-{bias}.nir"
    write_graph(path, graph)
    return load_plan(path)


def _same(a: ref.RunResult, b: ref.RunResult) -> None:
    assert np.array_equal(a.counts, b.counts)
    for k in a.layer_counts:
        assert np.array_equal(a.layer_counts[k], b.layer_counts[k]), k
        assert np.array_equal(a.rasters[k], b.rasters[k]), k


def _chain(nodes: dict, dt: float):
    """The plan of a hand-written graph whose nodes follow one another in ``nodes``' order."""
    order = list(nodes)
    graph = nir.NIRGraph(nodes=nodes, edges=list(zip(order, order[1:])), type_check=False,
                         metadata={"snn_deploy": json.dumps({"dt": dt})})  # fmt: skip
    return load_plan(graph)


@pytest.fixture(scope="module")
def nmnist_spikes():
    from tests.conftest import EVENTDATA

    root = EVENTDATA / "nmnist" / "train"
    if not root.is_dir():
        pytest.skip(f"real N-MNIST recordings not found at {root} (present in CI and dev machines)")
    # 30 steps of 10 ms, spike counts (not clipped to 1): inputs above 1 exercise the weighted scatter
    ds = load_dataset("nmnist", "train", root=str(root), steps=30, binary=False)
    x, labels = spike_batch(ds, range(12))
    assert x.max() > 1
    return x


@pytest.mark.parametrize("precision", ["fixed", "float"])
def test_real_nmnist_matches_reference_and_torch(tmp_path, nmnist_spikes, precision):
    x = nmnist_spikes
    plan = _graph(tmp_path, "nmnist_csnn", (2, 34, 34), precision, x)
    expected = ref.run(plan, x, record=True, margins=True)
    got = eventsim.run(plan, x, record=True)
    assert sum(int(c.sum()) for c in expected.layer_counts.values()) > 1000
    if precision == "fixed":  # bit-exact with the reference and with the torch target
        _same(expected, got)
        _same(torch_target.run(plan, x, record=True, device="cpu"), got)
    else:  # identical too: float32 accumulators only where every sum is exact (see below)
        cmp = compare(plan, expected, got, None)
        assert cmp["passed"] and cmp["identical_rasters"] == 1.0, cmp
    # the batch over three threads (each with its own buffers): the same rasters, counts and work
    split = eventsim.run(plan, x, record=True, threads=3)
    _same(got, split)
    assert split.stats == got.stats


def test_threads_take_the_batch_sample_by_sample_as_they_come_free(tmp_path, monkeypatch):
    """The threads' kernels share a counter of the batch's next sample: a thread that starts late (a
    busy core) takes only what is left; the results are the same, in the batch's order."""
    x = (np.random.default_rng(5).random((6, 16, 1, 8, 8)) < 0.3).astype(np.float32)
    plan = _graph(tmp_path, "digits_csnn", (1, 8, 8), "float", x, bias=0.3)
    expected = eventsim.run(plan, x, record=True)
    took, fast_done = {}, threading.Event()
    for name, twin in zip(("fast", "slow"), eventsim.prepare(plan).twins(2)):

        def late(*args, own=twin._call, name=name):
            if name == "slow":  # (it starts once the other thread's call has returned)
                assert fast_done.wait(60), "the other thread's call did not return"
            raw = own(*args)
            took[name] = np.flatnonzero(raw[3].any(axis=0))  # (its work per sample: the samples it ran)
            if name == "fast":
                fast_done.set()
            return raw

        monkeypatch.setattr(twin, "_call", late)
    got = eventsim.run(plan, x, record=True, threads=2)
    _same(expected, got)
    assert got.stats == expected.stats
    assert took["fast"].tolist() == list(range(16)) and took["slow"].size == 0, took


def test_a_large_input_is_read_by_every_thread_a_part_each(tmp_path, monkeypatch):
    """From ``SCAN_APART_BYTES`` on, every thread of a run reads a part of the input (joined): the
    same results; a bad value in any part is named."""
    x = (np.random.default_rng(7).random((6, 10, 1, 8, 8)) < 0.3).astype(np.float32)
    plan = _graph(tmp_path, "digits_csnn", (1, 8, 8), "fixed", x, bias=0.3)
    expected = eventsim.run(plan, x, record=True)
    given = (torch.from_numpy(x), x.tolist())  # (not arrays: converted once)
    assert all(np.array_equal(eventsim.run(plan, a, threads=3).counts, expected.counts) for a in given)
    monkeypatch.setattr(eventsim.driver, "SCAN_APART_BYTES", 0)
    assert all(np.array_equal(eventsim.run(plan, a, threads=3).counts, expected.counts) for a in given)
    read = []
    for twin in eventsim.prepare(plan).twins(3):
        monkeypatch.setattr(twin, "input_events", lambda s, own=twin.input_events: read.append(s.shape[1]) or own(s))
    got = eventsim.run(plan, x, record=True, threads=3)
    _same(expected, got)
    assert got.stats == expected.stats
    assert sorted(read) == [3, 3, 4]  # (10 samples, 3 threads)
    bad = x.copy()
    bad[4, 8, 0, 3, 3] = np.nan  # (in the last part)
    with pytest.raises(DataError, match="NaN"):
        eventsim.run(plan, bad, threads=3)


def test_a_kernel_call_takes_the_samples_from_the_counter_on(tmp_path):
    """A kernel call runs the samples from its counter's value on, each once, into its own arrays;
    input events read in parts and joined are the whole batch's."""
    x = (np.random.default_rng(6).random((5, 12, 1, 8, 8)) < 0.3).astype(np.float32)
    plan = _graph(tmp_path, "digits_csnn", (1, 8, 8), "fixed", x, bias=0.3)
    sim = eventsim.prepare(plan)
    whole = copy.deepcopy(sim.input_events(x))  # (views of buffers the next scan reuses: copied)
    events = eventsim.driver.joined_events(
        [copy.deepcopy(sim.input_events(x[:, a:b])) for a, b in ((0, 5), (5, 6), (6, 12))]
    )
    for field in ("offsets", "index", "value"):
        assert np.array_equal(getattr(events, field), getattr(whole, field)), field
    assert (events.steps, events.batch, events.largest, events.integral) == (5, 12, whole.largest, whole.integral)
    full = sim._call(events, sim.run_state(), True, None, np.zeros(1, dtype=np.int64))
    claim = np.array([7])
    part = sim._call(events, sim.run_state(), True, None, claim)
    assert claim[0] == 12 + 1  # (the call that found none left took one more number)
    counts, per_step, layers, work, _ = part
    assert work[:, 7:].any(axis=0).all() and not work[:, :7].any()
    assert np.array_equal(work[:, 7:], full[3][:, 7:])
    assert np.array_equal(counts[7:], full[0][7:]) and not counts[:7].any()
    assert np.array_equal(per_step[:, 7:], full[1][:, 7:]) and np.array_equal(layers[:, 7:], full[2][:, 7:])


@pytest.mark.parametrize("precision", ["fixed", "float"])
def test_biases_make_neurons_update_at_rest(tmp_path, precision):
    """Non-zero biases: a neuron with a constant input changes every step even without events."""
    x = (np.random.default_rng(2).random((6, 4, 1, 8, 8)) < 0.2).astype(np.float32)
    plan = _graph(tmp_path, "digits_csnn", (1, 8, 8), precision, x, bias=0.3)
    _same(ref.run(plan, x, record=True), eventsim.run(plan, x, record=True))
    silent = np.zeros_like(x)
    expected, got = ref.run(plan, silent, record=True), eventsim.run(plan, silent, record=True)
    _same(expected, got)
    assert sum(got.stats[k]["neuron_updates"] for k in plan.lif_names) > 0


def test_no_input_no_work_and_synaptic_events_are_effective_accumulates(tmp_path):
    x = (np.random.default_rng(3).random((5, 3, 2, 34, 34)) < 0.1).astype(np.float32)
    plan = _graph(tmp_path, "nmnist_csnn", (2, 34, 34), "fixed", x)
    got = eventsim.run(plan, x, record=True)
    ops = synaptic_operations(plan, x, got.rasters)
    for name, per_sample in ops.items():
        assert got.stats[name]["synaptic_events"] == per_sample.sum(), name
    rest = eventsim.run(plan, np.zeros_like(x))
    assert all(v == 0 for s in rest.stats.values() for v in s.values()), rest.stats
    # one input spike: work bounded by its fan-out, never by the network's size times the steps
    one = np.zeros_like(x[:, :1])
    one[0, 0, 0, 10, 10] = 1
    small = eventsim.run(plan, one)
    first = plan.nodes[0].name
    assert small.stats[first]["synaptic_events"] == plan.nodes[0].out_shape[0] * 9
    lif1 = plan.lif_names[0]
    assert 0 < small.stats[lif1]["neuron_updates"] <= 5 * plan.nodes[0].out_shape[0] * 9


def test_work_grows_linearly_with_input_events(tmp_path):
    rng = np.random.default_rng(4)
    x = (rng.random((8, 2, 2, 34, 34)) < 0.2).astype(np.float32)
    plan = _graph(tmp_path, "nmnist_csnn", (2, 34, 34), "fixed", x)
    keep = rng.random(x.shape)
    first = plan.nodes[0].name
    events, work = [], []
    for frac in (0.1, 0.25, 0.5, 1.0):
        xi = x * (keep < frac)
        events.append(xi.sum())
        work.append(eventsim.run(plan, xi).stats[first]["synaptic_events"])
    ratio = np.array(work) / np.array(events)  # first-layer work per input event: the kernel's fan-out
    assert np.all(np.abs(ratio / ratio[-1] - 1) < 0.05), ratio


@pytest.mark.parametrize("bias", [0.2, 0.0], ids=["dense", "blocked"])
def test_stream_keeps_state_across_chunks(tmp_path, bias):
    x = (np.random.default_rng(5).random((12, 1, 1, 8, 8)) < 0.25).astype(np.float32)
    for precision in ("fixed", "float"):
        plan = _graph(tmp_path, "digits_csnn", (1, 8, 8), precision, x, bias=bias)
        lif1 = 1 + [n.name for n in plan.nodes].index(plan.lif_names[0])
        assert bool(eventsim.prepare(plan).compiled.table[lif1, kernels.K_DENSE]) == (bias > 0)
        whole = eventsim.prepare(plan).execute(
            eventsim.prepare(plan).input_events(x), eventsim.prepare(plan).new_state(), reset=True, record=False
        )
        stream = eventsim.prepare(plan).stream()
        parts = [stream.step(x[a:b, 0]).per_step for a, b in ((0, 1), (1, 5), (5, 12))]
        assert np.array_equal(np.concatenate(parts), whole.per_step)
        assert whole.per_step.sum() > 0
        stream.reset()
        assert np.array_equal(stream.step(x[:5, 0]).per_step, whole.per_step[:5])


def test_wide_accumulators_when_int32_could_overflow(tmp_path):
    x = (np.random.default_rng(6).random((4, 2, 1, 8, 8)) < 0.3).astype(np.float32)
    plan = _graph(tmp_path, "digits_csnn", (1, 8, 8), "fixed", x)
    sim = eventsim.prepare(plan)
    assert sim.acc_dtype(1) == np.int32
    big = x * 2**22  # spike counts that no recording has, but integers all the same
    assert sim.acc_dtype(big.max()) == np.int64
    _same(ref.run(plan, big, record=True), eventsim.run(plan, big, record=True))


@pytest.mark.parametrize("precision", ["fixed", "float"])
def test_every_array_and_region_starts_on_a_cache_line(tmp_path, precision):
    """Vector loads of a region do not straddle two cache lines: the kernel's arrays start on 64 bytes,
    and every node's region of them (neurons, weights, biases, parameters) on 16 elements."""
    x = (np.random.default_rng(7).random((3, 2, 1, 8, 8)) < 0.3).astype(np.float32)
    plan = _graph(tmp_path, "digits_csnn", (1, 8, 8), precision, x, bias=0.2)
    sim = eventsim.prepare(plan)
    eventsim.run(plan, x)  # (the scratch, the state and the weights in the call's width)
    c, state = sim.compiled, sim._run_state
    arrays = [c.weights, c.biases, c.decode, c.sticky, c.vrest, *c.lif_params, state.v, state.act, state.nmark,
              *sim._event_buffers, *sim._weights_as.values(), *(a for t in sim._scratch.values() for a in t[:6])]  # fmt: skip
    assert all(a.ctypes.data % 64 == 0 for a in arrays)
    rows = c.table[1:]
    for col in (kernels.K_OFF, kernels.K_WOFF, kernels.K_BOFF) + ((kernels.K_POFF,) if precision == "float" else ()):
        used = rows[:, col][rows[:, col] >= 0]
        assert len(set(used.tolist())) > 1 and np.all(used % 16 == 0), col
    assert np.array_equal(eventsim.run(plan, x).counts, ref.run(plan, x).counts)


@pytest.mark.parametrize("kernel,stride_y,padding", [((3, 3), 1, (1, 1)), ((3, 3), 2, (1, 0)), ((5, 2), 3, (2, 1)),
                                                     ((1, 1), 1, (0, 0)), ((4, 3), 2, (3, 2)), ((2, 5), 1, (0, 4))])  # fmt: skip
def test_conv_windows_are_the_convolution(kernel, stride_y, padding):
    """Each input neuron's window rows (layout.conv_windows, the kernel's _conv_rows), replayed one-hot
    against weights stored as the layout stores them (rows and columns flipped), give the correlation
    of that input with the weights, at every position, stride and padding (borders included)."""
    from targets.eventsim.layout import conv_windows

    rng = np.random.default_rng(8)
    C, H, W, Co = 2, 7, 6, 3
    (KH, KW), (PH, PW) = kernel, padding
    Ho, Wo = (H + 2 * PH - KH) // stride_y + 1, W + 2 * PW - KW + 1
    w = rng.integers(-9, 10, (Co, C, KH, KW))
    stored = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 2, 3, 0)).reshape(-1)
    win = conv_windows((C, H, W), (Co, Ho, Wo), kernel, stride_y, padding)
    assert win.dtype == np.int32 and win.shape == (C * H * W, 4)
    for i, (g0, w0, n, rows) in enumerate(win.tolist()):
        got = np.zeros(Ho * Wo * Co, dtype=np.int64)
        for r in range(rows):
            a = (g0 + r * Wo) * Co
            b = w0 + r * stride_y * KW * Co
            got[a : a + n * Co] += stored[b : b + n * Co]
        y, x, c = np.unravel_index(i, (H, W, C))
        one = np.zeros((C, H + 2 * PH, W + 2 * PW))
        one[c, y + PH, x + PW] = 1
        want = np.zeros((Ho, Wo, Co), dtype=np.int64)
        for oy in range(Ho):
            for ox in range(Wo):
                patch = one[:, oy * stride_y : oy * stride_y + KH, ox : ox + KW]
                want[oy, ox] = np.einsum("ocyx,cyx->o", w, patch)
        assert np.array_equal(got, want.reshape(-1)), (i, (y, x, c))


def test_the_fixed_update_skips_its_clamps_only_where_they_cannot_act(tmp_path):
    """A fixed network's LIF layers run unclamped for spike inputs (their bounds leave saturation no
    room) and clamped where inputs could saturate them; bit-exact with the reference either way, the
    saturating case included (weights scaled so that the membranes do reach +-V_MAX)."""
    x = (np.random.default_rng(6).random((6, 2, 1, 8, 8)) < 0.3).astype(np.float32)
    plan = _graph(tmp_path, "digits_csnn", (1, 8, 8), "fixed", x, bias=0.2)
    sim = eventsim.prepare(plan)
    lifs = sim.compiled.lif_rows
    assert sim.unclamped(1)[lifs].all()
    wide = sim.unclamped(2.0**22)[lifs]  # the first layer's input could pass X_CLAMP; the others' are spikes
    assert not wide[0] and wide[1:].all()
    for inp in (x, x * 2**14):
        want = ref.run(plan, inp, record=True)
        _same(want, eventsim.run(plan, inp, record=True))
    assert want.stats[plan.lif_names[0]]["max_abs_v"] == fixed.V_MAX  # (x 2**14: it did saturate)
    assert not sim.unclamped(2.0**14)[lifs[0]]


def test_the_unclamped_fixed_update_is_core_fixed_within_its_bounds():
    """The dense fixed update without clamps against :mod:`core.fixed` (which clamps) on every input
    and membrane the driver's bounds admit (``EventSim.unclamped``): inputs up to the bound X, every
    membrane in +-V_MAX, biases up to what is left; and the clamps matter just past those bounds."""
    rng = np.random.default_rng(2)
    n, f32 = 1031, np.zeros(1, np.float32)
    for exp in (0, 1, 6, 23):
        for keep in (0, 1, 7, 1024, 2048, 4095, 4096):  # (powers of two: a shift of their own)
            for vth in (-(2**40), -1, 0, 1000, fixed.V_MAX - 1):
                room = fixed.V_MAX - (fixed.V_MAX * keep >> fixed.DECAY_SHIFT)  # for 64 X + max |bias|
                x_max = min(kernels.X_CLAMP, (room // 2) >> fixed.ACT_SHIFT)
                top = room - (x_max << fixed.ACT_SHIFT)
                a_max = x_max >> exp  # the accumulator before the weight exponent's shift
                src = rng.integers(-a_max, a_max + 1, n).astype(np.int32)
                src[:3] = [-a_max, a_max, 0]
                v = rng.integers(-fixed.V_MAX, fixed.V_MAX + 1, n).astype(np.int32)
                v[:4] = [-fixed.V_MAX, fixed.V_MAX, 0, -1]
                bias = rng.integers(-top, top + 1, n).astype(np.int32)
                bias[:2] = [-top, top]
                want = np.clip(fixed.decay(v, fixed.DECAY_UNITY - keep) + (fixed.shift(src, exp) << fixed.ACT_SHIFT)
                               + bias, -fixed.V_MAX, fixed.V_MAX)  # fmt: skip
                spikes = want > vth
                got_v, got_s = v.copy(), np.zeros(n, np.uint8)
                kernels._dense_layer(src.copy(), exp, False, np.float32(1), got_v, bias, got_s, keep, vth, f32, f32,
                                     f32, f32, f32, True, False)  # fmt: skip
                assert np.array_equal(got_s.astype(bool), spikes), (exp, keep, vth)
                assert np.array_equal(got_v, np.where(spikes, 0, want)), (exp, keep, vth)
    # past the bounds the clamps act: a threshold at V_MAX with a membrane pushed beyond it
    v, bias = np.full(8, fixed.V_MAX - 10, np.int32), np.full(8, 100, np.int32)
    outs = []
    for clamp in (True, False):
        got_v, got_s = v.copy(), np.zeros(8, np.uint8)
        kernels._dense_layer(np.zeros(8, np.int32), 0, False, np.float32(1), got_v, bias, got_s, 4096, fixed.V_MAX,
                             f32, f32, f32, f32, f32, True, clamp)  # fmt: skip
        outs.append(got_v)
    assert (outs[0] == fixed.V_MAX).all() and (outs[1] == 0).all()  # clamped it stays; unclamped it spikes


def test_float32_accumulators_only_where_every_sum_is_exact(tmp_path):
    """Quantised float weights (a power-of-two grid) and integer inputs: float32 accumulators hold
    every partial sum exactly, so the result is the reference's float64 one; anything else (a
    fractional input, sums beyond 2**24 grid steps, unquantised weights) accumulates in float64."""
    rng = np.random.default_rng(12)
    x = (rng.random((6, 3, 1, 8, 8)) < 0.3).astype(np.float32) * rng.integers(1, 4, (6, 3, 1, 8, 8))
    plan = _graph(tmp_path, "digits_csnn", (1, 8, 8), "float", x, bias=0.3)
    sim = eventsim.prepare(plan)
    assert sim.acc_dtype(float(x.max()), True) == np.float32
    for inp, dtype in ((x, np.float32), (x * 0.5, np.float64), (x * 2.0**16, np.float64)):
        events = sim.input_events(inp)
        assert sim.acc_dtype(events.largest, events.integral) == dtype
        _same(ref.run(plan, inp, record=True), eventsim.run(plan, inp, record=True))
    torch.manual_seed(0)
    model = build_model("digits_csnn").eval()
    graph, _ = build_nir(model, (1, 8, 8), precision="float", weight_bits=None, steps=6)
    assert eventsim.prepare(load_plan(graph)).acc_dtype(1.0, True) == np.float64


def test_foreign_graph_leak_multiple_sources_and_fractional_input():
    """A hand-written NIR graph: v_leak (every neuron has input every step), two affines summed into
    one LIF, an affine as the output; analog (direct-encoded) float input."""
    rng = np.random.default_rng(7)
    dt, tau = 1e-3, 4e-3

    def lif(n, leak):
        return nir.LIF(tau=np.full(n, tau), r=np.full(n, tau / dt), v_leak=np.full(n, leak),
                       v_threshold=np.ones(n), v_reset=np.zeros(n))  # fmt: skip

    def aff(o, i):
        return nir.Affine((rng.normal(0, 0.6, (o, i))).astype(np.float32), rng.normal(0, 0.1, o).astype(np.float32))

    nodes = {"input": nir.Input({"input": np.array([12])}), "a": aff(16, 12), "b": aff(16, 12), "l1": lif(16, 0.5),
             "c": aff(5, 16), "output": nir.Output({"output": np.array([5])})}  # fmt: skip
    edges = [("input", "a"), ("input", "b"), ("a", "l1"), ("b", "l1"), ("l1", "c"), ("c", "output")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata={"snn_deploy": json.dumps({"dt": dt})}, type_check=False)
    plan = load_plan(graph)
    x = rng.random((10, 4, 12)).astype(np.float32) * (rng.random((10, 4, 12)) < 0.4)
    expected, got = ref.run(plan, x, record=True), eventsim.run(plan, x, record=True)
    _same(expected, got)
    assert expected.layer_counts["l1"].sum() > 0


def test_foreign_graph_pools_and_per_neuron_parameters():
    """A hand-written conv graph: overlapping sum-pool windows with padding, an average pool whose
    windows miss the last row and column, and dense LIF layers (v_leak) with per-neuron time
    constants, one fed straight by the average pool."""
    rng = np.random.default_rng(11)
    dt = 1e-3

    def lif(shape, leak, tau=None):
        tau = rng.uniform(2e-3, 8e-3, shape) if tau is None else np.full(shape, tau)
        return nir.LIF(tau=tau, r=tau / dt, v_leak=np.full(shape, leak), v_threshold=np.ones(shape),
                       v_reset=np.zeros(shape))  # fmt: skip

    def conv(o, i, hw):
        return nir.Conv2d(input_shape=(hw, hw), weight=rng.normal(0, 0.8, (o, i, 3, 3)).astype(np.float32),
                          stride=1, padding=1, dilation=1, groups=1, bias=rng.normal(0, 0.1, o).astype(np.float32))  # fmt: skip

    nodes = {
        "input": nir.Input({"input": np.array([2, 9, 9])}),
        "c1": conv(4, 2, 9),
        "l1": lif((4, 9, 9), 0.2),
        "p1": nir.SumPool2d(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1)),  # (4, 5, 5), windows overlap
        "c2": conv(6, 4, 5),
        "l2": lif((6, 5, 5), 0.0, tau=4e-3),
        "p2": nir.AvgPool2d(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0)),  # (6, 2, 2): row 4, col 4 unused
        "l3": lif((6, 2, 2), 0.3),
        "f": nir.Flatten({"input": np.array([6, 2, 2])}, start_dim=0),
        "a": nir.Affine(rng.normal(0, 1.0, (5, 24)).astype(np.float32), np.zeros(5, dtype=np.float32)),
        "l4": lif((5,), 0.0, tau=4e-3),
        "output": nir.Output({"output": np.array([5])}),
    }
    plan = _chain(nodes, dt)
    sim = eventsim.prepare(plan)
    table = sim.compiled.table
    rows = {n.name: k for k, n in enumerate(plan.nodes, start=1)}
    assert table[rows["p1"], kernels.K_MAP] < 0 and table[rows["p2"], kernels.K_MAP] >= 0  # both pool paths
    assert table[rows["l1"], kernels.K_DENSE] and not table[rows["l1"], kernels.K_UNIFORM]
    assert table[rows["l3"], kernels.K_FUSED] == rows["p2"]  # the dense LIF reads the average pool itself
    x = (rng.random((12, 3, 2, 9, 9)) < 0.3).astype(np.float32) * rng.integers(1, 3, (12, 3, 2, 9, 9))
    expected, got = ref.run(plan, x, record=True), eventsim.run(plan, x, record=True)
    _same(expected, got)
    assert all(c.sum() > 0 for c in expected.layer_counts.values()), expected.layer_counts
    _same(expected, eventsim.run(plan, x, record=True, threads=2))  # the batch split over two threads


def test_crowded_lists_and_neurons_that_spike_at_rest():
    """A listed layer (no bias, no leak) with most neurons listed is updated densely that step and
    relisted; neurons whose threshold is below 0 spike at rest, so they are always listed."""
    rng = np.random.default_rng(14)
    dt, tau = 1e-3, 4e-3

    def lif(n, vth):
        return nir.LIF(tau=np.full(n, tau), r=np.full(n, tau / dt), v_leak=np.zeros(n), v_threshold=vth,
                       v_reset=np.zeros(n))  # fmt: skip

    nodes = {"input": nir.Input({"input": np.array([12])}),
             "a": nir.Affine(rng.normal(0, 0.8, (40, 12)).astype(np.float32), np.zeros(40, dtype=np.float32)),
             "l1": lif(40, np.where(np.arange(40) < 4, -0.2, 1.0)),
             "c": nir.Affine(rng.normal(0, 0.8, (5, 40)).astype(np.float32), np.zeros(5, dtype=np.float32)),
             "l2": lif(5, np.ones(5)), "output": nir.Output({"output": np.array([5])})}  # fmt: skip
    plan = _chain(nodes, dt)
    sim = eventsim.prepare(plan)
    assert not sim.compiled.table[2, kernels.K_DENSE]  # l1 is a listed layer (4 of 40 restless)
    for density in (0.02, 0.9):
        x = (rng.random((10, 3, 12)) < density).astype(np.float32)
        expected, got = ref.run(plan, x, record=True), eventsim.run(plan, x, record=True)
        _same(expected, got)
        assert expected.rasters["l1"][:, :, :4].mean() > 0.25  # they spike at rest (0 > threshold)
        updates = got.stats["l1"]["neuron_updates"]
        if density > 0.5:  # crowded from the first input on: every neuron, every step
            assert updates == 10 * 3 * 40
        else:
            assert updates < 10 * 3 * 40


def test_blocked_lif_layers_after_convolutions():
    """A LIF after a convolution, without constant input for most neurons, is listed by blocks (an
    output pixel's channels, which a convolution's event reaches together) and reads the
    convolution's accumulators itself: exact at low and high input density (crowded: a dense pass,
    then the blocks relisted), with neurons that spike at rest listed from the start, per-neuron and
    layer-wide parameters, channel counts that are no multiple of 8, two threads and streaming."""
    rng = np.random.default_rng(15)
    dt = 1e-3

    def lif(shape, tau, vth):
        return nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros(shape), v_threshold=vth, v_reset=np.zeros(shape))

    def conv(o, i, hw):
        return nir.Conv2d(input_shape=(hw, hw), weight=rng.normal(0, 0.8, (o, i, 3, 3)).astype(np.float32),
                          stride=1, padding=1, dilation=1, groups=1, bias=np.zeros(o, dtype=np.float32))  # fmt: skip

    vth1 = np.ones((5, 16, 16))
    vth1[[0, 2, 4, 1], [0, 3, 15, 15], [0, 3, 15, 0]] = -0.2  # four neurons in four pixels spike at rest
    nodes = {
        "input": nir.Input({"input": np.array([2, 16, 16])}),
        "c1": conv(5, 2, 16),
        "l1": lif((5, 16, 16), rng.uniform(2e-3, 8e-3, (5, 16, 16)), vth1),
        "p1": nir.SumPool2d(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0)),  # (5, 8, 8)
        "c2": conv(8, 5, 8),
        "l2": lif((8, 8, 8), np.full((8, 8, 8), 4e-3), np.ones((8, 8, 8))),
        "f": nir.Flatten({"input": np.array([8, 8, 8])}, start_dim=0),
        "a": nir.Affine(rng.normal(0, 0.5, (4, 512)).astype(np.float32), np.zeros(4, dtype=np.float32)),
        "l3": lif((4,), np.full(4, 4e-3), np.ones(4)),
        "output": nir.Output({"output": np.array([4])}),
    }
    plan = _chain(nodes, dt)
    sim = eventsim.prepare(plan)
    table = sim.compiled.table
    rows = {n.name: k for k, n in enumerate(plan.nodes, start=1)}
    for lif_name, conv_name in (("l1", "c1"), ("l2", "c2")):
        assert table[rows[lif_name], kernels.K_FUSED] == rows[conv_name] and not table[rows[lif_name], kernels.K_DENSE]
    assert not table[rows["l1"], kernels.K_UNIFORM] and table[rows["l2"], kernels.K_UNIFORM]
    assert table[rows["l3"], kernels.K_FUSED] < 0  # (after an affine layer: listed neuron by neuron)
    for density, crowded in ((0.0015, False), (0.6, True)):
        x = (rng.random((10, 3, 2, 16, 16)) < density).astype(np.float32) * rng.integers(1, 3, (10, 3, 2, 16, 16))
        expected, got = ref.run(plan, x, record=True), eventsim.run(plan, x, record=True)
        _same(expected, got)
        assert expected.layer_counts["l2"].sum() > 0
        assert expected.rasters["l1"][:, :, 0, 0, 0].mean() > 0.5  # (it spikes at rest)
        _same(expected, eventsim.run(plan, x, record=True, threads=2))
        # blocks of 5: never more than every neuron; crowded from the first steps on: every neuron
        updates = got.stats["l1"]["neuron_updates"]
        every = 10 * 3 * 5 * 16 * 16
        assert updates % 5 == 0 and (updates > 0.8 * every if crowded else updates < 0.25 * every), updates
        stream = sim.stream()
        parts = [stream.step(x[a:e, 1]).per_step for a, e in ((0, 3), (3, 4), (4, 10))]
        whole = sim.execute(sim.input_events(x[:, 1:2]), sim.new_state(), reset=True, record=False)
        assert np.array_equal(np.concatenate(parts), whole.per_step)


def test_bad_input(tmp_path):
    x = (np.random.default_rng(8).random((3, 2, 1, 8, 8)) < 0.3).astype(np.float32)
    plan = _graph(tmp_path, "digits_csnn", (1, 8, 8), "fixed", x)
    with pytest.raises(DataError, match=r"input spikes must be shaped \(T, B, 1, 8, 8\), got \(3, 2, 1, 8, 7\)"):
        eventsim.run(plan, x[..., :7])
    with pytest.raises(DataError, match="NaN"):
        eventsim.run(plan, np.full_like(x, np.nan))
    with pytest.raises(DataError, match="integer spike counts"):
        eventsim.run(plan, x * 0.5)
    with pytest.raises(DataError, match="must be numbers"):
        eventsim.run(plan, x.astype(str))
    for bad, match in ((np.inf, "infinite"), (2.5, "integer spike counts"), (np.nan, "NaN")):
        one = x.copy()
        one[2, 1, 0, 7, 5] = bad  # a single value, deep in the input
        with pytest.raises(DataError, match=match):
            eventsim.run(plan, one)
    # split over threads: a bad value in any part is reported, and the threads serve the next call
    for sample in (0, 3):
        wide = np.concatenate([x, x], axis=1)
        wide[1, sample, 0, 2, 2] = np.nan
        with pytest.raises(DataError, match="NaN"):
            eventsim.run(plan, wide, threads=2)
    good = np.concatenate([x, x], axis=1)
    assert np.array_equal(eventsim.run(plan, good, threads=2).counts, eventsim.run(plan, good).counts)


def test_input_scan_grows_its_buffers_and_skips_negative_zero(tmp_path):
    """More input events than the reused buffers hold at first (they grow), and -0.0 (a non-zero bit
    pattern) is no event."""
    rng = np.random.default_rng(13)
    x = rng.integers(0, 3, (300, 6, 1, 8, 8)).astype(np.float32)
    plan = _graph(tmp_path, "digits_csnn", (1, 8, 8), "fixed", x[:8])
    sim = eventsim.prepare(plan)
    assert np.count_nonzero(x) > len(sim._event_buffers[0])
    _same(ref.run(plan, x, record=True), eventsim.run(plan, x, record=True))
    events = sim.input_events(np.where(x == 0, np.float32(-0.0), x))
    assert len(events.index) == np.count_nonzero(x) and events.integral and events.largest == 2


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.float16, np.float32, np.float64, ">f4", ">f8"])
def test_input_scan_finds_every_event_of_every_input_type(dtype):
    """The scan tests 32 values per vector compare (of the values' bits) and the rest of a channel's
    row one by one: every non-zero value of every input type is found, with its internal index
    (pixel * C + channel) and value, and none else; 63 pixels per channel leave a tail of 31."""
    rng = np.random.default_rng(17)
    shape = (2, 7, 9)
    w = rng.normal(0, 1.0, (3, 2, 3, 3)).astype(np.float32)
    nodes = {"input": nir.Input({"input": np.array(shape)}),
             "c": nir.Conv2d(input_shape=(7, 9), weight=w, stride=1, padding=1, dilation=1, groups=1,
                             bias=np.zeros(3, dtype=np.float32)),
             "l": nir.LIF(tau=np.full((3, 7, 9), 4e-3), r=np.full((3, 7, 9), 4.0), v_leak=np.zeros((3, 7, 9)),
                          v_threshold=np.ones((3, 7, 9)), v_reset=np.zeros((3, 7, 9))),
             "output": nir.Output({"output": np.array([3, 7, 9])})}  # fmt: skip
    plan = _chain(nodes, 1e-3)
    sim = eventsim.prepare(plan)
    values = rng.integers(1, 2 if dtype == np.bool_ else 4, (6, 3, *shape))
    x = (values * (rng.random(values.shape) < 0.1)).astype(dtype)
    x[0, 0] = 0  # an empty step, and a full one
    x[1, 0] = 1
    events = sim.input_events(x)
    for b in range(3):
        for t in range(6):
            row = b * 6 + t
            got = events.index[events.offsets[row] : events.offsets[row + 1]]
            c, yy, xx = np.nonzero(x[t, b])
            assert sorted(got.tolist()) == sorted(((yy * 9 + xx) * 2 + c).tolist()), (b, t)
            assert np.array_equal(np.sort(events.value[events.offsets[row] : events.offsets[row + 1]]),
                                  np.sort(x[t, b][x[t, b] != 0].astype(events.value.dtype)))  # fmt: skip
    _same(ref.run(plan, x.astype(np.float32), record=True), eventsim.run(plan, x, record=True))


def test_batch_slices_are_read_in_place_with_the_same_events(tmp_path, monkeypatch):
    """A large batch slice of a larger input (each step's values together, samples apart) is scanned
    where it lies, without a copy; small inputs and other layouts are copied first; all give the
    events of a packed copy."""
    from targets.eventsim import driver
    from targets.eventsim.driver import step_rows

    rng = np.random.default_rng(21)
    x = (rng.random((5, 7, 1, 8, 8)) < 0.2).astype(np.float32) * rng.integers(1, 4, (5, 7, 1, 8, 8))
    plan = _graph(tmp_path, "digits_csnn", (1, 8, 8), "fixed", x)
    sim = eventsim.prepare(plan)
    part = x[:, 2:5]
    assert not np.shares_memory(step_rows(part)[0], x)  # small: a copy is cheaper than a view
    monkeypatch.setattr(driver, "VIEW_BYTES", 0)
    flat, s_t, s_b = step_rows(part)
    assert np.shares_memory(flat, x) and (s_t, s_b) == (7 * 64, 64)
    packed = np.ascontiguousarray(part)
    flipped = np.ascontiguousarray(part[..., ::-1])[..., ::-1]  # each step's values reversed in memory
    assert not np.shares_memory(step_rows(flipped)[0], flipped)
    want = sim.input_events(packed)
    want = (want.offsets.copy(), want.index.copy(), want.value.copy())
    sample_major = np.ascontiguousarray(x.swapaxes(0, 1)).swapaxes(0, 1)[:, 2:5]  # samples' steps together
    assert step_rows(sample_major)[1:] == (64, 5 * 64)
    for got in (sim.input_events(part), sim.input_events(flipped), sim.input_events(sample_major)):
        assert all(np.array_equal(a, b) for a, b in zip(want, (got.offsets, got.index, got.value), strict=True))
    _same(eventsim.run(plan, packed, record=True), eventsim.run(plan, part, record=True))
    bad = x.copy()
    bad[3, 6, 0, 7, 7] = 0.5  # the last value of the slice's span, in the sample after it: not read
    assert eventsim.run(plan, bad[:, 2:5]).counts.shape == (3, 10)
    bad[4, 4, 0, 7, 7] = 0.5  # the slice's own last value
    with pytest.raises(DataError, match="integer spike counts"):
        eventsim.run(plan, bad[:, 2:5])


def test_an_input_form_met_before_is_read_alike(tmp_path, monkeypatch):
    """An input array of a form met before (dtype, shape and flags; C-contiguous) skips the checks
    and the layout work: its events equal those a simulator meeting it for the first time reads,
    for every kind of input; forms read from a converted copy are not kept, nor more than
    ``MAX_FORMS``; bad values of a kept form are still refused, a wrong shape still named."""
    from targets.eventsim import EventSim, driver

    rng = np.random.default_rng(23)
    x = (rng.random((5, 3, 1, 8, 8)) < 0.2) * rng.integers(1, 4, (5, 3, 1, 8, 8))
    plan = _graph(tmp_path, "digits_csnn", (1, 8, 8), "fixed", x.astype(np.float32))
    sim = eventsim.prepare(plan)
    read_only = x.astype(np.float32)
    read_only.flags.writeable = False
    longer = np.concatenate([x, x]).astype(np.float64)
    kept = {"float32": x.astype(np.float32), "float64": x.astype(np.float64), "int16": x.astype(np.int16),
            "bool": x > 0, "read-only": read_only, "a view of a longer input": longer[2:7]}  # fmt: skip
    copied = {"float16": x.astype(np.float16), ">f4": x.astype(">f4"), "not contiguous": x.astype(np.float32)[:, ::-1],
              "list": x.tolist()}  # fmt: skip

    def events(s, a):
        e = s.input_events(a)
        return e.offsets.copy(), e.index.copy(), e.value.copy(), e.steps, e.batch, e.largest, e.integral

    def same(p, q):
        return all(np.array_equal(u, v) for u, v in zip(p, q, strict=True))

    for name, a in (kept | copied).items():
        fresh = events(EventSim(plan), a)
        assert same(events(sim, a), fresh), name
        form = (a.dtype, a.shape, a.flags.num) if isinstance(a, np.ndarray) else None
        assert (form in sim._forms) == (name in kept), name
        assert same(events(sim, a), fresh), name  # (a kept form: read without the checks)
        assert np.array_equal(eventsim.run(plan, a).counts, ref.run(plan, np.asarray(a, dtype=np.float32)).counts), name
    monkeypatch.setattr(driver, "MAX_FORMS", 2)
    for steps in (1, 2, 3, 4):  # inputs of ever new lengths
        got = eventsim.run(plan, x[:steps].astype(np.float32))
        assert len(sim._forms) <= 2
        assert np.array_equal(got.counts, ref.run(plan, x[:steps].astype(np.float32)).counts)
    bad = x.astype(np.float32)
    bad[4, 2, 0, 7, 7] = np.nan  # the last value
    with pytest.raises(DataError, match="NaN"):
        eventsim.run(plan, bad)
    bad[4, 2, 0, 7, 7] = 0.5
    with pytest.raises(DataError, match="integer spike counts"):
        eventsim.run(plan, bad)
    with pytest.raises(DataError, match=r"input spikes must be shaped \(T, B, 1, 8, 8\), got \(5, 3, 1, 8, 7\)"):
        eventsim.run(plan, bad[..., :7].copy())


@pytest.mark.parametrize("precision", ["float", "fixed"])
@pytest.mark.parametrize("bias", [0.0, 0.2], ids=["listed", "dense"])
def test_li_readout_work_follows_events(tmp_path, precision, bias):
    """An LI readout: scores and membranes equal the reference's; without a constant input (bias) its
    neurons are listed (updated only with state or input: work follows events), with one they update
    densely every step; streaming keeps the LI membrane between calls."""
    x = (np.random.default_rng(7).random((40, 4, 1, 8, 8)) < 0.2).astype(np.float32)
    x[4:] = 0  # the input stops: the listed LI neurons decay and (fixed: truncated to 0) drop out of the list
    plan = _graph(tmp_path, "digits_csnn", (1, 8, 8), precision, x, bias=bias, readout="li")
    sim = eventsim.prepare(plan)
    row = [k for k, n in enumerate(plan.nodes, start=1) if n.kind == "li"][0]
    assert sim.compiled.table[row, kernels.K_KIND] == kernels.LI
    assert bool(sim.compiled.table[row, kernels.K_DENSE]) == (bias > 0)
    expected, got = ref.run(plan, x, record=True), eventsim.run(plan, x, record=True)
    _same(expected, got)
    assert np.array_equal(got.traces["head.3"], expected.traces["head.3"])
    assert got.counts.dtype == (np.float64 if precision == "float" else np.int64)
    updates = got.stats["head.3"]["neuron_updates"]
    n_all = 40 * 4 * 10  # steps x samples x neurons
    if bias:
        assert updates == n_all
    else:  # exactly the (step, neuron) pairs with state or input: a membrane non-zero now or one step before
        tr = expected.traces["head.3"] != 0
        assert updates == np.count_nonzero(tr | np.concatenate([tr[:1] & False, tr[:-1]])) > 0
        if precision == "fixed":  # truncation brings a membrane to rest (a float one halves toward 0 for longer)
            assert updates < n_all / 2
    stream = eventsim.stream(plan)
    parts = [stream.step(x[a:b, 0]) for a, b in ((0, 3), (3, 40))]
    whole = eventsim.run(plan, x[:, :1]).counts[0]
    per_step = np.concatenate([p.per_step[:, 0] for p in parts])
    assert np.array_equal(per_step.sum(0), whole) if precision == "fixed" else np.allclose(per_step.sum(0), whole)
    assert np.array_equal(per_step, expected.traces["head.3"][:, 0].astype(per_step.dtype))


def _dialect_plan(dialect: str, tau: float, v_leak: float, threshold: float, seed: int = 0):
    """Linear (40 -> 30) -> LIF, read in a producer's dialect (targets.plan.DIALECTS)."""
    n = 30
    w = np.random.default_rng(seed).normal(0, 3.0, (n, 40)).astype(np.float32)
    lif = nir.LIF(tau=np.full(n, tau), r=np.ones(n), v_leak=np.full(n, v_leak), v_threshold=np.full(n, threshold),
                  v_reset=np.zeros(n))  # fmt: skip
    g = nir.NIRGraph(nodes={"x": nir.Input(np.array([40])), "fc": nir.Linear(w), "l": lif, "y": nir.Output(np.array([n]))},
                     edges=[("x", "fc"), ("fc", "l"), ("l", "y")])  # fmt: skip
    return load_plan(g, dialect=dialect)


@pytest.mark.parametrize(
    "dialect,tau,v_leak,rules",
    [("norse", 1e-5, 0.3, {"norse_box", "v0"}), ("rockpool", 1e-2, 0.0, {"floor_ge"}), ("sinabs", 5.0, 0.0, {"trunc_gt0"})],
)  # fmt: skip
def test_producer_rules_exactly_and_only_where_events_arrive(dialect, tau, v_leak, rules):
    """Norse's arithmetic from its rest at v_leak, Rockpool's and Sinabs' several spikes per step
    (events carrying the count): the reference's rasters; no input, no neuron updated (the rest
    state is a fixed point); more than 255 spikes in a step is the reference's error, not a wrap."""
    plan = _dialect_plan(dialect, tau, v_leak, 0.3)
    assert plan.rules == rules
    x = (np.random.default_rng(1).random((50, 3, 40)) < 0.02).astype(np.float32) * 3
    want, got = ref.run(plan, x, record=True), eventsim.run(plan, x, record=True)
    assert want.counts.sum() > 0 and np.array_equal(got.rasters["l"], want.rasters["l"])
    assert np.array_equal(got.counts, want.counts) and np.array_equal(got.layer_counts["l"], want.layer_counts["l"])
    if dialect != "norse":
        assert want.rasters["l"].max() > 1  # several spikes in one step, counted
    assert eventsim.run(plan, np.zeros_like(x)).stats["l"]["neuron_updates"] == 0
    if dialect != "norse":
        with pytest.raises(ModelError, match="spikes in one step; at most 255"):
            eventsim.run(plan, x * 1000)


@pytest.mark.parametrize("src_dtype", [np.int32, np.int64])
def test_the_dense_fixed_lif_update_is_core_fixed_at_every_edge(src_dtype):
    """eventsim's vectorised fixed-precision LIF update (32-bit lanes, its input clamped once before the
    weight exponent's shift) against :mod:`core.fixed` on random and edge values: every exponent from
    -31 to 23, decays from none to full, thresholds beyond the membrane's range, inputs up to int32's
    (int64's: the gathered input) ends."""
    from targets.eventsim import kernels as K

    rng = np.random.default_rng(1)
    n, f32 = 1031, np.zeros(1, np.float32)
    for exp in (-31, -9, -1, 0, 1, 6, 23):
        for keep in (0, 7, 2048, 4095, 4096):
            for vth in (-(2**40), -1, 0, 1000, fixed.V_MAX, 2**40):
                if src_dtype == np.int32:
                    src = rng.integers(-(2**31), 2**31, n, dtype=np.int64).astype(np.int32)
                    src[:5] = [-(2**31), 2**31 - 1, 0, 1, -1]
                else:
                    lim = 2**50 >> max(exp, 0)  # (the build's bounds keep acc << exp within int64)
                    src = rng.integers(-lim, lim, n, dtype=np.int64)
                    src[:4] = [-lim, lim, -(2**31), 2**31]
                v = rng.integers(-fixed.V_MAX, fixed.V_MAX + 1, n).astype(np.int32)
                v[:4] = [-fixed.V_MAX, fixed.V_MAX, 0, -1]
                bias = rng.integers(-(2**29) + 1, 2**29, n).astype(np.int32)
                a = fixed.shift(src, exp)
                want = np.clip(fixed.decay(v, fixed.DECAY_UNITY - keep) + (a << fixed.ACT_SHIFT) + bias,
                               -fixed.V_MAX, fixed.V_MAX)  # fmt: skip
                spikes = want > vth
                got_v, got_s = v.copy(), np.zeros(n, np.uint8)
                K._dense_layer(src.copy(), exp, False, np.float32(1), got_v, bias, got_s, keep, vth, f32, f32, f32, f32,
                               f32, True, True)  # fmt: skip
                assert np.array_equal(got_s.astype(bool), spikes), (exp, keep, vth)
                assert np.array_equal(got_v, np.where(spikes, 0, want)), (exp, keep, vth)
