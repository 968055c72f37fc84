"""The ``lava`` target and the netx export (issue 6).

Tests marked ``lava`` run the worker in ``.venv-lava`` and skip with the reason when it is missing;
the others check the main-process side (errors, refusals) without Lava. The registry-parametrised
target tests (tests/test_targets.py) run the lava target on every test network and precision too.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from convert.build import build_nir
from convert.netx import NETX_BIAS_SHIFT, netx_layers, read_netx, write_netx
from convert.nirgraph import write_graph
from core.errors import ConfigError, DataError, ModelError
from runtime.latency import layer_depths, run_aligned
from runtime.verify import compare
from targets import get_target, lava_target
from targets import reference as ref
from targets.lava_target import LavaError, worker_error
from targets.plan import load_plan
from train.models import build_model

needs_lava = pytest.mark.skipif(
    lava_target.unavailable_reason() is not None, reason=f"lava target unavailable: {lava_target.unavailable_reason()}"
)


def _graph(tmp_path, name, shape, precision, scale_convs=1.0, netx=False, steps=6, batch=3, seed=1):
    """A random-weight network as a ``.nir`` file; ``netx``: with random biases (a tenth of the
    threshold), quantised onto netx's grid of 64 as ``convert.to_nir --netx`` does."""
    torch.manual_seed(0)
    model = build_model(name, **({"width": 4} if name.startswith("sew") else {})).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(8)
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(scale_convs)
            if netx and isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.bias.uniform_(-0.1, 0.1)
    x = (np.random.default_rng(seed).random((steps, batch, *shape)) < 0.3).astype(np.float32)
    graph, _ = build_nir(model, shape, precision=precision, steps=steps, calibration=x,
                         min_bias_exp=NETX_BIAS_SHIFT if netx else 0)  # fmt: skip
    path = tmp_path / f"{name}.{precision}.nir"
    write_graph(path, graph)
    return load_plan(path), x


def _aligned(plan, x):
    return run_aligned(get_target("lava"), plan, x, record=True)


def test_registered_with_latency():
    info = get_target("lava")
    assert info.latency == 1 and set(info.precisions) == {"float", "fixed"}


def test_unavailable_environment_is_a_clear_error(tmp_path, monkeypatch):
    plan, x = _graph(tmp_path, "digits_csnn", (1, 8, 8), "fixed", steps=3, batch=1)
    monkeypatch.setenv("SNN_DEPLOY_LAVA_PYTHON", str(tmp_path / "no-python"))
    monkeypatch.setattr(lava_target, "LAVA_PYTHON", tmp_path / "no-python")
    with pytest.raises(LavaError, match=r"the lava target is unavailable: .*no-python does not exist"):
        lava_target.run(plan, x)


def test_a_lava_stop_that_hangs_is_given_up(monkeypatch, capsys):
    """Lava's stop once hung after a complete run: the worker waits a bounded time, then goes on."""
    import threading
    import time

    from targets import lava_worker

    monkeypatch.setattr(lava_worker, "STOP_WAIT_S", 0.2)
    released = threading.Event()

    class Hangs:
        def stop(self):
            released.wait(30)

    class Stops:
        stopped = False

        def stop(self):
            self.stopped = True

    t0 = time.perf_counter()
    lava_worker._stop(Hangs())
    assert time.perf_counter() - t0 < 5
    assert "did not return within 0.2 s" in capsys.readouterr().err
    released.set()
    proc = Stops()
    lava_worker._stop(proc)
    assert proc.stopped and capsys.readouterr().err == ""


def test_a_python_without_lava_names_the_missing_module(tmp_path, monkeypatch):
    """SNN_DEPLOY_LAVA_PYTHON naming a Python without Lava (here: this one) printed the worker's
    traceback as a crash; it is the missing module and the command that installs it."""
    import sys

    plan, x = _graph(tmp_path, "digits_csnn", (1, 8, 8), "fixed", steps=3, batch=1)
    monkeypatch.setattr(lava_target, "LAVA_PYTHON", Path(sys.executable))
    with pytest.raises(LavaError, match=rf"the Lava worker's Python \({sys.executable}\) has no module 'lava': make "
                                        "setup-lava installs the Lava environment"):  # fmt: skip
        lava_target.run(plan, x)


def test_worker_messages_become_our_errors():
    err = worker_error(3, "noise\nlava-worker-error: ModelError: node x: not supported\n")
    assert isinstance(err, ModelError) and str(err) == "lava worker: node x: not supported"
    err = worker_error(3, "Traceback ...\n  File lava.py\nlava-worker-error: LavaError: ValueError: bad shape\n")
    assert isinstance(err, LavaError) and "Lava failed: ValueError: bad shape" in str(err) and "lava.py" in str(err)
    err = worker_error(1, "Traceback ...\n  File plan.py\nModuleNotFoundError: No module named 'nir'\n")
    assert isinstance(err, LavaError) and "has no module 'nir': make setup-lava" in str(err)
    err = worker_error(-11, "something\nSegmentation fault\n")
    assert isinstance(err, LavaError) and "status -11 (crashed?)" in str(err) and "Segmentation fault" in str(err)


def test_input_checked_before_the_worker(tmp_path):
    plan, x = _graph(tmp_path, "digits_csnn", (1, 8, 8), "fixed", steps=3, batch=1)
    with pytest.raises(DataError, match=r"input spikes must be shaped \(T, B, 1, 8, 8\)"):
        lava_target.run(plan, x[..., :4])
    with pytest.raises(DataError, match="integer spike counts"):
        lava_target.run(plan, x * 0.5)


def test_netx_refuses_what_it_cannot_hold(tmp_path):
    plan, _ = _graph(tmp_path, "sew_resnet18", (3, 16, 16), "fixed", steps=3, batch=1)
    with pytest.raises(ModelError, match=r"sums 2 inputs \(a residual ADD\); netx networks are sequential"):
        netx_layers(plan)
    plan, _ = _graph(tmp_path, "nmnist_csnn", (2, 34, 34), "fixed", steps=3, batch=1)
    with pytest.raises(ModelError, match=r"pool features.5 .* does not tile its input"):
        netx_layers(plan)
    plan, _ = _graph(tmp_path, "digits_csnn", (1, 8, 8), "float", steps=3, batch=1)
    with pytest.raises(ModelError, match="convert with --precision fixed"):
        netx_layers(plan)


def test_netx_flag_needs_fixed_precision(capsys):
    from convert import to_nir

    assert to_nir.main(["missing.pt", "--netx", "true"]) == 2
    assert "--netx writes lava-dl netx HDF5" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        to_nir.convert(to_nir.ConvertConfig(checkpoint="missing.pt", netx=True))


def test_netx_file_layout(tmp_path):
    plan, _ = _graph(tmp_path, "digits_csnn", (1, 8, 8), "fixed", netx=True, steps=3, batch=1)
    written = write_netx(plan, tmp_path / "m.netx.h5")
    layers = read_netx(tmp_path / "m.netx.h5", written["layers"])
    assert [la["type"] for la in layers] == ["input", "conv", "conv", "flatten", "dense"]
    conv2 = layers[2]  # the 2x2 sum pool folded: 3x3 kernel -> 6x6, stride 2, padding 2
    assert (
        conv2["weight"].shape == (64, 32, 6, 6) and list(conv2["stride"]) == [2, 2] and list(conv2["padding"]) == [2, 2]
    )
    assert layers[1]["neuron"]["iDecay"] == 4096 and written["rounded_biases"] == {}
    assert all(np.abs(la["bias"]).max() > 0 for la in layers if "bias" in la), "biases on the grid, not all zero"


def test_netx_biases_exact_only_when_built_for_netx(tmp_path):
    """A graph built for netx (min_bias_exp 6) has biases on the grid and needs no rounding: the .nir
    and the file hold the same integers; one off the grid is then an error. A graph built without
    it is rounded, and the rounding is reported."""
    plan, _ = _graph(tmp_path, "digits_csnn", (1, 8, 8), "fixed", netx=True, steps=3, batch=1)
    assert plan.meta["min_bias_exp"] == NETX_BIAS_SHIFT
    for n in plan.nodes:
        if n.kind in ("conv", "affine"):
            assert not (n.fixed["bias"] % 64).any(), n.name
    assert netx_layers(plan)[1] == {}
    syn = next(n for n in plan.nodes if n.kind == "conv")
    lif = next(n for n in plan.nodes if n.sources == [syn.name])
    syn.fixed["bias"] += 5  # (in place: the membrane's bias is its synapse's, one array)
    assert lif.fixed["bias"] is syn.fixed["bias"]
    with pytest.raises(ModelError, match=rf"bias of {lif.name} is not a multiple of 64 .* built for netx"):
        netx_layers(plan)
    plan.meta["min_bias_exp"] = 0  # as a graph converted without --netx
    assert netx_layers(plan)[1] == {syn.name: 5.0}
    with pytest.raises(ModelError, match="applies to fixed precision only"):
        _graph(tmp_path, "digits_csnn", (1, 8, 8), "float", netx=True, steps=3, batch=1)


@pytest.fixture(params=["sparse", "conv"])
def lava_convs(request, monkeypatch):
    """Convolutions as Lava's Sparse matrices (the default for small ones) or Lava's Conv (large ones)."""
    if request.param == "conv":
        monkeypatch.setenv("SNN_DEPLOY_LAVA_SPARSE_MAX", "0")
    return request.param


@pytest.mark.lava
@needs_lava
@pytest.mark.parametrize("precision", ["fixed", "float"])
def test_residual_graph_with_active_deep_layers(tmp_path, precision, lava_convs):
    """SEW-ResNet with every layer spiking: the residual ADDs need the relay delays to line up."""
    plan, x = _graph(tmp_path, "sew_resnet18", (3, 16, 16), precision, scale_convs=5.0, steps=4, batch=2)
    expected = ref.run(plan, x, record=True, margins=True)
    assert all(c.sum() > 0 for c in expected.layer_counts.values()), "every layer must spike"
    got = _aligned(plan, x)
    rec = compare(plan, expected, got, None)
    assert rec["passed"], rec["failures"][:3]
    if precision == "fixed":
        assert rec["identical_rasters"] == 1.0


@pytest.mark.lava
@needs_lava
def test_real_nmnist_fixed_bit_exact_with_torch(eventdata, tmp_path, lava_convs):
    """Real N-MNIST recordings: Lava fixed_pt equals the torch target's fixed precision bit for bit."""
    from inputs.graph_data import load_inputs

    torch.manual_seed(0)
    model = build_model("nmnist_csnn").eval()
    with torch.no_grad():
        model.head[2].weight.mul_(8)
    plan0 = load_plan(build_nir(model, (2, 34, 34), steps=8)[0])
    plan0.meta["T"] = 8
    spikes, _, _ = load_inputs(plan0, "nmnist", root=str(eventdata / "nmnist" / "train"), samples=4)
    graph, _ = build_nir(model, (2, 34, 34), precision="fixed", steps=8, calibration=spikes)
    write_graph(tmp_path / "m.nir", graph)
    plan = load_plan(tmp_path / "m.nir")
    expected = get_target("torch").runner()(plan, spikes, record=True)
    assert all(expected.layer_counts[k].sum() > 0 for k in plan.lif_names)
    got = _aligned(plan, spikes)
    assert np.array_equal(got.counts, expected.counts)
    for k in plan.lif_names:
        assert np.array_equal(got.rasters[k], expected.rasters[k]), k


@pytest.mark.lava
@needs_lava
def test_netx_file_runs_in_lava_dl_like_our_graph(tmp_path):
    """lava-dl's own netx loader on our file, our Lava process graph on the .nir and the reference
    give the same output spikes, step for step (the graph was built for netx: no bias rounding)."""
    plan, x = _graph(tmp_path, "digits_csnn", (1, 8, 8), "fixed", netx=True)
    assert write_netx(plan, tmp_path / "m.netx.h5")["rounded_biases"] == {}
    depth = max(layer_depths(plan).values())
    padded = np.concatenate([x, np.zeros((depth, *x.shape[1:]), x.dtype)])
    net = lava_target.run_netx(tmp_path / "m.netx.h5", padded)
    ours = lava_target.run(plan, padded, record=True).rasters[plan.outputs[0]]
    assert net.sum() > 0 and np.array_equal(net, ours)
    # both are the reference's raster once Lava's latency (one step per layer) is aligned
    expected = ref.run(plan, x, record=True).rasters[plan.outputs[0]]
    assert np.array_equal(net[depth:], expected) and not net[:depth].any()


@pytest.mark.lava
@needs_lava
def test_worker_failures_carry_the_workers_message(tmp_path):
    with pytest.raises(DataError, match=r"lava worker: netx file .* does not exist|does not exist"):
        lava_target.run_netx(tmp_path / "none.netx.h5", np.zeros((2, 1, 1, 8, 8)))
    (tmp_path / "bad.netx.h5").write_bytes(b"not hdf5")
    with pytest.raises(LavaError, match=r"Lava failed: .*"):
        lava_target.run_netx(tmp_path / "bad.netx.h5", np.zeros((2, 1, 1, 8, 8)))
    with pytest.raises(LavaError, match=r"ran past its timeout of 0.5 s"):
        lava_target.run_worker(["timeit", "-n", "1", "-s", "import time", "time.sleep(30)"], timeout=0.5)


# ---------------------------------------------------------------------------------------------
# The LI readout on Lava (the registry-parametrised target tests run it on digits/N-MNIST in both precisions)


def _li_graph(tmp_path, precision, steps, netx=False, batch=3):
    return _graph_kw(tmp_path, "digits_csnn", (1, 8, 8), precision, netx=netx, steps=steps, batch=batch, readout="li")


def _graph_kw(tmp_path, name, shape, precision, netx=False, steps=6, batch=3, seed=1, **kw):
    torch.manual_seed(0)
    model = build_model(name, **kw).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(8)
            if netx and isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.bias.uniform_(-0.1, 0.1)
    x = (np.random.default_rng(seed).random((steps, batch, *shape)) < 0.3).astype(np.float32)
    graph, _ = build_nir(model, shape, precision=precision, steps=steps, calibration=x,
                         min_bias_exp=NETX_BIAS_SHIFT if netx else 0)  # fmt: skip
    path = tmp_path / f"{name}-li.{precision}.nir"
    write_graph(path, graph)
    return load_plan(path), x


def test_float_li_that_lava_cannot_match_is_refused(tmp_path):
    """Lava's floating_pt computes in float64: a float LI membrane that is not provably exact in float32
    for the steps compared is refused with the reason (before any worker starts), not run to a near miss."""
    from targets.plan import li_exact_steps

    plan, x = _li_graph(tmp_path, "float", steps=30, batch=1)
    proved = li_exact_steps(plan)["head.3"]
    assert 0 < proved < 30
    depth = max(layer_depths(plan).values())
    assert lava_target.refusal(plan, np.zeros((proved + depth, 1, 1, 8, 8))) is None
    with pytest.raises(
        ModelError, match=rf"refuses .* LI layer\(s\) head.3 \(exact for {proved} steps\) are not provably"
    ):
        _aligned(plan, x)
    assert lava_target.refusal(_li_graph(tmp_path, "fixed", steps=30, batch=1)[0], x) is None  # integers: always


def test_netx_li_layout(tmp_path):
    plan, _ = _li_graph(tmp_path, "fixed", steps=3, netx=True)
    layers = read_netx(tmp_path / "m.netx.h5", write_netx(plan, tmp_path / "m.netx.h5")["layers"])
    last = layers[-1]
    assert last["type"] == "dense" and last["neuron"]["vThMant"] == 2**17 - 1 and last["neuron"]["iDecay"] == 4096
    assert last["neuron"]["vDecay"] == 2048 and np.abs(last["weight"]).max() <= 254


@pytest.mark.lava
@needs_lava
def test_netx_li_file_runs_in_lava_dl_like_our_graph(tmp_path):
    """The LI readout written as netx (a CUBA neuron whose threshold is never reached): lava-dl's own
    loader, our Lava graph and the reference give the same membrane at every step."""
    plan, x = _li_graph(tmp_path, "fixed", steps=6, netx=True)
    write_netx(plan, tmp_path / "m.netx.h5")
    depth = max(layer_depths(plan).values())
    padded = np.concatenate([x, np.zeros((depth, *x.shape[1:]), x.dtype)])
    net = lava_target.run_netx(tmp_path / "m.netx.h5", padded, membrane=True)
    ours = lava_target.run(plan, padded, record=True).traces["head.3"]
    assert np.abs(net).sum() > 0 and np.array_equal(net, ours)
    expected = ref.run(plan, x, record=True).traces["head.3"]
    assert np.array_equal(net[depth : depth + 6], expected)


def test_a_failed_worker_returns_at_once_and_leaves_no_process(monkeypatch):
    """Lava's own processes may outlive a worker that failed, holding its output open: the error comes
    back when the worker exits, and its session (what it started) is ended with it. (The worker here
    runs in the project's interpreter: .venv-lava holds another package named ``tests``.)"""
    import subprocess
    import sys
    import time

    from targets.lava_target import run_worker

    monkeypatch.setattr(lava_target, "LAVA_PYTHON", Path(sys.executable))
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match="failed on purpose"):
        run_worker(["tests.lava_orphan"], timeout=50)
    assert time.perf_counter() - t0 < 20
    left = subprocess.run(["pgrep", "-f", "time.sleep\\(60\\)"], capture_output=True, text=True).stdout.split()
    assert not left
