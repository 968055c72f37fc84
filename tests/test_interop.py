"""Our NIR files in Norse 1.1.0 and nirtorch 2.6, Norse's NIR files in our runtime, and unsupported
nodes. Spikes are compared exactly, raster by raster; where a library cannot match, the test pins
down how many spikes differ and why, instead of loosening the comparison."""

from __future__ import annotations

import json

import nir
import numpy as np
import pytest
import torch

from convert.build import build_nir
from convert.nirgraph import write_graph
from core.errors import ModelError
from targets import norse_target as interop
from targets import reference
from targets.plan import SUPPORTED, load_plan
from train.models import build_model

norse = pytest.importorskip("norse.torch")
nirtorch = pytest.importorskip("nirtorch")

READERS = {"norse": interop.run_norse, "nirtorch": interop.run_nirtorch}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors, many calls: one thread is several times faster on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _spikes(shape: tuple[int, ...], p: float = 0.3, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) < p).astype(np.float32)


def _model_graph(tmp_path, name: str, input_shape, *, steps: int, dt: float = 1e-3, beta: float = 0.5):
    """A converted model (float precision, 8-bit power-of-two weights) with non-zero biases, as a file."""
    model = build_model(name, tau=dt / (1 - beta), dt=dt)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.normal_(0.0, 0.3)
    graph, _ = build_nir(model, input_shape, steps=steps, dt=dt)
    path = tmp_path / f"{name}.nir"
    write_graph(path, graph)
    return path


def _lif(n: int, beta: float, dt: float, dtype=np.float32) -> nir.LIF:
    """A LIF node as convert/nirgraph.py writes it: tau = dt/(1-beta), r = tau/dt, per neuron."""
    tau = dt / (1 - beta)
    return nir.LIF(tau=np.full(n, tau, dtype), r=np.full(n, tau / dt, dtype), v_leak=np.zeros(n, np.float32),
                   v_threshold=np.ones(n, np.float32), v_reset=np.zeros(n, np.float32))  # fmt: skip


def _affine(rng, n_out: int, n_in: int) -> nir.Affine:
    # Weights and biases on a 1/4 grid with a unit threshold: the membrane often lands exactly on
    # the threshold, which is where two implementations' rounding can disagree.
    return nir.Affine((rng.integers(-4, 6, (n_out, n_in)) * 0.25).astype(np.float32),
                      (rng.integers(-2, 3, n_out) * 0.25).astype(np.float32))  # fmt: skip


def _tiny_graph(beta: float, *, dt: float = 1e-3, dtype=np.float32, seed: int = 0) -> nir.NIRGraph:
    """Affine 20->10, LIF, Affine 10->4, LIF, with our metadata's dt."""
    rng = np.random.default_rng(seed)
    nodes = {"input": nir.Input({"input": np.array([20])}), "fc1": _affine(rng, 10, 20), "lif1": _lif(10, beta, dt, dtype),
             "fc2": _affine(rng, 4, 10), "lif2": _lif(4, beta, dt, dtype), "output": nir.Output({"output": np.array([4])})}  # fmt: skip
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"snn_deploy": json.dumps({"dt": dt})}, type_check=True)


def _assert_same(ref, other):
    assert interop.raster_mismatch(ref.rasters, other.rasters) == dict.fromkeys(ref.rasters, 0)
    np.testing.assert_array_equal(other.counts, ref.counts)
    for name, counts in ref.layer_counts.items():
        np.testing.assert_array_equal(other.layer_counts[name], counts)


def _lif1_membrane(plan, spikes: np.ndarray) -> np.ndarray:
    """The reference's first-layer membrane before reset, ``(T, B, n)`` (its input is exact)."""
    fc, lif = plan.nodes[0], plan.nodes[1]
    v = np.zeros((spikes.shape[1], fc.out_shape[0]), np.float32)
    out = []
    for x in spikes:
        current = (x.astype(np.float64) @ fc.params["weight"].T.astype(np.float64)).astype(np.float32) + fc.params[
            "bias"
        ]
        v = lif.params["beta"] * v + lif.params["gain"] * current + lif.params["leak"]
        out.append(v)
        v = np.where(v > lif.params["v_threshold"], lif.params["v_reset"], v).astype(np.float32)
    return np.stack(out)


# ---------------------------------------------------------------------------------------------
# 1. our files in Norse and nirtorch


@pytest.mark.slow
@pytest.mark.parametrize("reader", sorted(READERS))
def test_digits_csnn_file_runs_identically_in_norse_and_nirtorch(tmp_path, reader):
    path = _model_graph(tmp_path, "digits_csnn", (1, 8, 8), steps=16)
    x = _spikes((16, 8, 1, 8, 8))
    ref = reference.run(load_plan(path), x, record=True)
    assert all(c.sum() > 0 for c in ref.layer_counts.values()), "a silent layer would prove nothing"
    _assert_same(ref, READERS[reader](path, x, record=True))


@pytest.mark.slow
def test_nmnist_csnn_file_runs_identically_in_norse_and_nirtorch(tmp_path):
    path = _model_graph(tmp_path, "nmnist_csnn", (2, 34, 34), steps=8)
    x = _spikes((8, 2, 2, 34, 34), p=0.2)
    ref = reference.run(load_plan(path), x, record=True)
    assert all(c.sum() > 0 for c in ref.layer_counts.values())
    for run in READERS.values():
        _assert_same(ref, run(path, x, record=True))


@pytest.mark.parametrize("beta", [0.5, 0.75, 0.9])
def test_tie_heavy_linear_network_is_exact_in_both_readers(beta):
    graph = _tiny_graph(beta)
    x = _spikes((32, 64, 20), seed=1)
    plan = load_plan(graph)
    ref = reference.run(plan, x, record=True)
    assert (_lif1_membrane(plan, x) == 1.0).sum() > 100, "the test needs membranes exactly at threshold"
    for run in READERS.values():
        _assert_same(ref, run(graph, x, record=True))


@pytest.mark.slow
def test_norse_needs_the_graphs_dt(tmp_path):
    """Norse's from_nir assumes dt = 1 ms; a graph at dt = 0.5 ms (tau = 1 ms, beta = 0.5) only
    matches when the dt from our metadata is passed."""
    path = _model_graph(tmp_path, "digits_csnn", (1, 8, 8), steps=8, dt=5e-4, beta=0.5)
    x = _spikes((8, 4, 1, 8, 8))
    ref = reference.run(load_plan(path), x, record=True)
    _assert_same(ref, interop.run_norse(path, x, record=True))
    wrong = interop.run_norse(path, x, dt=1e-3, record=True)  # beta would be 0
    assert sum(interop.raster_mismatch(ref.rasters, wrong.rasters).values()) > 0


def test_norse_ignores_r_which_we_restore():
    """Our LIF nodes state r = tau/dt (input gain 1); Norse's LIF uses unit resistance, so plain
    ``norse.torch.from_nir`` integrates (1 - beta) * I instead of I."""
    graph = _tiny_graph(0.5)
    x = _spikes((16, 32, 20), seed=2)
    ref = reference.run(load_plan(graph), x, record=True)
    plain = interop.run_norse(graph, x, honour_r=False, legacy=True, record=True)  # norse.torch.from_nir as is
    assert sum(interop.raster_mismatch(ref.rasters, plain.rasters).values()) > 0
    _assert_same(ref, interop.run_norse(graph, x, record=True))


def test_norse_rounding_turns_threshold_ties_into_spikes():
    """Where exact equality is impossible: at beta = 0.99 Norse computes v + a*(r*I - v) with
    a = fl32(dt * fl32(1/tau)) and r = fl32(tau/dt), whose product rounds above 1, so a membrane
    that our float semantics puts exactly on the threshold (no spike, strict >) spikes in Norse.
    Every first divergence is such a tie; nirtorch with our node map stays exact."""
    graph = _tiny_graph(0.99)
    x = _spikes((32, 64, 20), seed=3)
    plan = load_plan(graph)
    ref = reference.run(plan, x, record=True)
    _assert_same(ref, interop.run_nirtorch(graph, x, record=True))

    module = interop.norse_module(graph)
    a = (module.lif1.cell.dt * module.lif1.cell.p.tau_mem_inv[0]).item()
    assert a * module.lif1.r[0].item() > 1.0
    norse_run = interop.run_norse(graph, x, record=True)
    diff = norse_run.rasters["lif1"] != ref.rasters["lif1"]
    assert diff.any()
    v = _lif1_membrane(plan, x)
    for b in range(x.shape[1]):
        steps = np.flatnonzero(diff[:, b].any(axis=1))
        if steps.size:
            t = steps[0]
            assert (v[t, b][diff[t, b]] == 1.0).all()
            assert (norse_run.rasters["lif1"][t, b][diff[t, b]] == 1).all()


@pytest.mark.parametrize("beta", [0.05, 0.15])
def test_float32_tau_misleads_float64_readers_float64_does_not(beta):
    """Why convert/nirgraph.py should store LIF tau and r in float64: from float32 tau a reader
    that computes r*dt/tau in float64 gets an input gain of 1.0000001 at these betas (our plan
    snaps it to 1), and threshold ties spike. From float64 values the gain is exactly 1. (Norse
    reads every parameter as float32, so the storage type does not change its rounding.)"""
    x = _spikes((32, 64, 20), seed=4)
    f32, f64 = _tiny_graph(beta, dtype=np.float32), _tiny_graph(beta, dtype=np.float64)
    assert interop.nirtorch_module(f32).lif1.gain[0].item() > 1.0
    assert interop.nirtorch_module(f64).lif1.gain[0].item() == 1.0
    ref32 = reference.run(load_plan(f32), x, record=True)
    assert sum(interop.raster_mismatch(ref32.rasters, interop.run_nirtorch(f32, x, record=True).rasters).values()) > 0
    plan64 = load_plan(f64)
    assert plan64.nodes[1].params["beta"][0] == np.float32(beta)  # the value training multiplies by
    _assert_same(reference.run(plan64, x, record=True), interop.run_nirtorch(f64, x, record=True))


def test_residual_join_needs_topological_order():
    """Two edges into one node (a residual ADD). Norse's from_nir wires with nirtorch's deprecated
    GraphExecutor, whose depth-first order runs the join before one branch and so feeds that
    branch one step late; our run (nir_to_torch wiring) is exact."""
    rng = np.random.default_rng(5)
    nodes = {"input": nir.Input({"input": np.array([20])}), "a.fc": _affine(rng, 10, 20), "a.lif": _lif(10, 0.5, 1e-3),
             "b.fc": _affine(rng, 10, 20), "b.lif": _lif(10, 0.5, 1e-3), "c.fc": _affine(rng, 4, 10),
             "c.lif": _lif(4, 0.5, 1e-3), "output": nir.Output({"output": np.array([4])})}  # fmt: skip
    edges = [("input", "a.fc"), ("a.fc", "a.lif"), ("input", "b.fc"), ("b.fc", "b.lif"), ("a.lif", "c.fc"),
             ("b.lif", "c.fc"), ("c.fc", "c.lif"), ("c.lif", "output")]  # fmt: skip
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    x = _spikes((16, 32, 20), seed=6)
    plan = load_plan(graph)
    ref = reference.run(plan, x, record=True)
    for run in READERS.values():
        _assert_same(ref, run(graph, x, record=True))

    legacy = interop.run_norse(graph, x, legacy=True, record=True)
    order = [n.name for n in interop.norse_module(graph, legacy=True).execution_order]
    late = "b.lif" if order.index("b_lif") > order.index("c_fc") else "a.lif"
    early = "a.lif" if late == "b.lif" else "b.lif"
    delayed = np.concatenate([np.zeros_like(ref.rasters[late][:1]), ref.rasters[late][:-1]])
    fc, lif = plan.node("c.fc"), plan.node("c.lif")
    v, expect = np.zeros((32, 4), np.float32), []
    for t in range(16):
        s_in = (ref.rasters[early][t] + delayed[t]).astype(np.float64)
        current = (s_in @ fc.params["weight"].T.astype(np.float64)).astype(np.float32) + fc.params["bias"]
        v = lif.params["beta"] * v + lif.params["gain"] * current
        expect.append(v > 1.0)
        v = np.where(v > 1.0, 0.0, v).astype(np.float32)
    assert not np.array_equal(legacy.rasters["c.lif"], ref.rasters["c.lif"])
    np.testing.assert_array_equal(legacy.rasters["c.lif"], np.stack(expect))


def test_nirtorch_default_affine_map_loses_the_bias():
    graph = _tiny_graph(0.5)
    default = nirtorch.nir_to_torch(graph, {nir.LIF: lambda node: interop.NIRLIF(node, 1e-3)})
    ours = interop.nirtorch_module(graph)
    bias = torch.from_numpy(graph.nodes["fc1"].bias)
    assert not torch.equal(default.fc1.bias.data, bias)  # nn.Linear's random initial bias
    assert torch.equal(ours.fc1.bias.data, bias)


def test_norse_silently_drops_nodes_it_cannot_map_we_refuse():
    nodes = {"input": nir.Input({"input": np.array([1, 4, 4])}),
             "pool": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
             "flat": nir.Flatten({"input": np.array([1, 2, 2])}, 0, -1), "output": nir.Output({"output": np.array([4])})}  # fmt: skip
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "pool"), ("pool", "flat"), ("flat", "output")], type_check=False)
    with pytest.warns(DeprecationWarning):
        dropped = norse.from_nir(graph)
    assert not hasattr(dropped, "pool")
    assert dropped(torch.ones(1, 4, 4))[0].shape == (16,)  # the pool's input passed through
    with pytest.raises(ModelError, match=r"pool \(AvgPool2d\)"):
        interop.norse_module(graph)
    assert interop.run_nirtorch(graph, np.ones((2, 3, 1, 4, 4), np.float32)).counts.shape == (3, 4)


def test_norse_refuses_a_reset_it_would_ignore():
    graph = _tiny_graph(0.5)
    graph.nodes["lif2"].v_reset = np.full(4, -0.5, np.float32)
    with pytest.raises(ModelError, match="lif2"):
        interop.norse_module(graph)


# ---------------------------------------------------------------------------------------------
# 2. Norse's files in our runtime


def _norse_net(inv: float, *, per_neuron: bool, grid: float | None = None):
    """Linear 20->10, LIFBox, Linear 10->4, LIFBox, weights scaled so that every layer spikes."""
    l1, l2 = torch.nn.Linear(20, 10), torch.nn.Linear(10, 4)
    with torch.no_grad():
        for layer in (l1, l2):
            for p in layer.parameters():
                p.mul_(2000.0 / inv)
                if grid:
                    p.copy_(torch.round(p / grid) * grid)

    def cell(n):
        if not per_neuron:
            return norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=torch.tensor(inv)))
        return norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=torch.full((n,), inv), v_leak=torch.zeros(n),
                                                       v_th=torch.ones(n)))  # fmt: skip

    return norse.SequentialState(l1, cell(10), l2, cell(4))


@pytest.mark.parametrize(
    ("inv", "per_neuron", "grid"), [(500.0, True, None), (100.0, False, 2**-6), (250.0, True, 2**-6)]
)
def test_norse_export_runs_identically_in_our_runtime(tmp_path, inv, per_neuron, grid):
    module = _norse_net(inv, per_neuron=per_neuron, grid=grid)
    x = _spikes((32, 64, 20), seed=7)
    own = interop.run_norse_module(module, x, record=True)
    assert all(c.sum() > 0 for c in own.layer_counts.values())
    path = tmp_path / "norse.nir"
    nir.write(path, interop.norse_export(module, (20,)))
    plan = load_plan(path)  # no metadata: dt = 1 ms, Norse's default
    assert plan.input_shape == (20,) and plan.lif_names == ["1", "3"]
    _assert_same(own, reference.run(plan, x, record=True))
    _assert_same(own, interop.run_norse(path, x, record=True))  # and back into Norse


def test_norse_raw_export_quirks(tmp_path):
    """What Norse 1.1.0's to_nir writes without our repairs."""
    module = _norse_net(500.0, per_neuron=True)
    raw = interop.norse_export(module, (20,), repair=False)
    tau = raw.nodes["1"].tau
    assert isinstance(tau, torch.Tensor)  # torch tensors, not numpy arrays
    np.testing.assert_allclose(tau.numpy(), 1e-3 / 500.0, rtol=1e-6)  # dt/tau_mem_inv: 2 us, not 2 ms
    with pytest.raises(ModelError, match="tau"):
        load_plan(raw)  # tau < dt: refused, not run as a wildly unstable network
    with pytest.warns(DeprecationWarning):
        batched = norse.to_nir(module, torch.zeros(1, 20))
    assert list(batched.nodes["input"].input_type["input"]) == [1, 20]  # the sample's batch dimension
    scalar = interop.norse_export(_norse_net(500.0, per_neuron=False), (20,), repair=False)
    with pytest.raises(TypeError, match="Scalar datasets"):
        nir.write(tmp_path / "scalar.nir", scalar)  # 0-d tau, r, v_leak, v_threshold


# ---------------------------------------------------------------------------------------------
# 3. unsupported nodes


def test_unsupported_nodes_are_named_together(tmp_path):
    """Every NIR 1.0.8 node type runs; a node type from elsewhere (a newer NIR, a library's own) is
    refused, every such node named at once with the list of supported types."""
    from dataclasses import dataclass

    @dataclass(eq=False)
    class Spiral(nir.NIRNode):  # (a node type no target knows)
        turns: np.ndarray

        def __post_init__(self):
            self.input_type = {"input": np.array([4])}
            self.output_type = {"output": np.array([4])}

    n = 4
    nodes = {"input": nir.Input({"input": np.array([n])}), "syn": Spiral(np.ones(n)), "wait": Spiral(np.ones(n)),
             "output": nir.Output({"output": np.array([n])})}  # fmt: skip
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "syn"), ("syn", "wait"), ("wait", "output")], type_check=False)
    with pytest.raises(ModelError) as err:
        load_plan(graph)
    message = str(err.value)
    assert "syn (Spiral)" in message and "wait (Spiral)" in message
    assert all(kind in message.split("supported node types:")[1] for kind in SUPPORTED)
    # Norse's importer maps no Conv1d: its module is refused by name before Norse sees the graph
    conv = {"input": nir.Input({"input": np.array([n, 3])}),
            "wait": nir.Conv1d(input_shape=3, weight=np.ones((n, n, 1)), stride=1, padding=0, dilation=1, groups=1,
                               bias=np.zeros(n)),
            "output": nir.Output({"output": np.array([n, 3])})}  # fmt: skip
    path = tmp_path / "conv1d.nir"
    nir.write(path, nir.NIRGraph(nodes=conv, edges=[("input", "wait"), ("wait", "output")], type_check=False))
    with pytest.raises(ModelError, match=r"wait \(Conv1d\)"):
        interop.norse_module(path)


def test_norse_is_imported_without_torchs_jit_warning():
    """Norse decorates functions with ``torch.jit.script`` at import, which the pinned PyTorch
    answers with a ``FutureWarning`` in every process that runs the ``norse`` target."""
    import subprocess
    import sys

    def stderr(code: str) -> str:
        return subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True,
                              check=True).stderr  # fmt: skip

    if "torch.jit.script" not in stderr("import norse.torch"):
        pytest.skip("this PyTorch gives no warning for torch.jit.script: nothing to hide")
    assert "torch.jit.script" not in stderr("from targets.norse_target import _norse; _norse()")
