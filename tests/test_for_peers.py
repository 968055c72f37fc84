"""Our graphs in other libraries: ``convert.to_nir --for LIBRARY`` writes a file that library's own
NIR import runs with our spikes. snnTorch 1.0.0 and SpikingJelly 2.0.0 ran in scratch environments
(``tests/data/for_peers/run_peers.py``, outputs recorded with a digest of the graph they read);
Norse 1.1.0 is installed here and runs live too."""

from __future__ import annotations

import json
import sys
import warnings

import nir
import numpy as np
import pytest

from convert import to_nir
from convert.peers import graph_for, integer_units
from targets import reference as ref
from targets.plan import METADATA_KEY, load_plan
from tests.conftest import DATA

FIXTURES = DATA / "for_peers"
sys.path.insert(0, str(FIXTURES))
from graphs import GRAPHS, PEERS, PRECISIONS, build, digest, raster_digest  # noqa: E402


def _stepped(net, x: np.ndarray) -> np.ndarray:
    """A library's ``(x_t, state) -> (y_t, state)`` module over ``x`` (T, B, ...): its output raster (T, B, N)."""
    import torch

    state, out = None, []
    with torch.no_grad():
        for t in range(x.shape[0]):
            y, state = net(torch.from_numpy(x[t]), state)
            out.append(y.numpy().reshape(x.shape[1], -1))
    return np.asarray(np.stack(out), dtype=np.int64)


def _same_output(raster: np.ndarray, graph: nir.NIRGraph, ours) -> bool:
    """A library's output raster against our reference's run (recorded): counts and every step."""
    (last,) = [a for a, b in graph.edges if isinstance(graph.nodes[b], nir.Output)]
    mine = ours.rasters[last].reshape(raster.shape)
    return np.array_equal(raster.sum(0), ours.counts) and np.array_equal(raster, mine)


@pytest.fixture(scope="module")
def graphs():
    return {name: build(name) for name in GRAPHS}


@pytest.fixture(scope="module")
def fixed_graphs():
    return {name: build(name, "fixed") for name in GRAPHS}


def _expected(graph: nir.NIRGraph, precision: str, x: np.ndarray):
    """Our reference's run of what a --for file computes: the graph itself (float), or the float network
    nearest the fixed graph's integers, in integer units."""
    return ref.run(load_plan(graph if precision == "float" else integer_units(graph, 1e-3)[0]), x, record=True)


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("name", list(GRAPHS))
def test_each_library_runs_our_file_with_our_spikes(graphs, fixed_graphs, name, peer, precision):
    graph, x = (graphs if precision == "float" else fixed_graphs)[name]
    recorded = np.load(FIXTURES / f"{name}{PRECISIONS[precision]}.{peer}.npz")
    written = graph_for(graph, peer, dt=1e-3, precision=precision)
    assert str(recorded["digest"]) == digest(written), "the writer changed: re-record with run_peers.py"
    ours = _expected(graph, precision, x)
    assert ours.counts.sum() > 0 and all(c.sum() > 0 for c in ours.layer_counts.values())
    assert np.array_equal(recorded["counts"], ours.counts)  # the library's own output, batch of 8
    for layer, c in ours.layer_counts.items():
        assert np.array_equal(recorded[f"spikes/{layer}"], c), layer
        assert str(recorded[f"raster/{layer}"]) == raster_digest(ours.rasters[layer]), layer  # not one spike moved
    # and our own loader, reading the file in the dialect it names, computes the same
    assert np.array_equal(ref.run(load_plan(written), x).counts, ours.counts)


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_norse_runs_our_file_live(graphs, fixed_graphs, tmp_path, precision):
    norse = pytest.importorskip("norse.torch")
    import torch

    graph, x = (graphs if precision == "float" else fixed_graphs)["digits_csnn"]
    nir.write(tmp_path / "g.nir", graph_for(graph, "norse", dt=1e-3, precision=precision))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = norse.from_nir(nir.read(tmp_path / "g.nir", type_check=False), dt=1e-3)  # its documented call
        raster = _stepped(net, x)
    assert _same_output(raster, graph, _expected(graph, precision, x))
    if precision == "fixed":
        return
    # the file as it is (NIR's semantics: r = tau/dt, Flatten without the batch) is what Norse gets
    # wrong, one sample at a time even: the rewrite is the fix
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = norse.from_nir(graph, dt=1e-3)
        state, total = None, 0
        with torch.no_grad():
            for t in range(x.shape[0]):
                y, state = raw(torch.from_numpy(x[t, :1]), state)
                total = total + y.numpy()
    ours = ref.run(load_plan(graph), x[:, :1]).counts
    assert ours.sum() > 0 and not np.array_equal(np.asarray(total, dtype=np.int64).reshape(ours.shape), ours)


def test_to_nir_for_writes_checks_and_reports(trained_digits, tmp_path, capsys):
    argv = [str(trained_digits), "--out", str(tmp_path), "--for", "snntorch,spikingjelly,norse,nir",
            "--parity-samples", "64", "--onnx", "false"]  # fmt: skip
    assert to_nir.main(argv) == 0, capsys.readouterr()
    rep = json.loads((tmp_path / "model.conversion.json").read_text())
    assert set(rep["for"]) == {"snntorch", "spikingjelly", "norse", "nir"}
    for peer, r in rep["for"].items():
        assert r["identical_output_counts_vs_graph"] == 1.0 and (tmp_path / r["file"]).is_file(), peer
    assert rep["for"]["nir"]["file"] == "model.nir" and not (tmp_path / "model.nir.nir").exists()
    # each file states the library and the dialect that reads it so: our loader runs it as that library does
    plan = load_plan(tmp_path / "model.snntorch.nir")
    assert plan.meta["for"] == "snntorch" and plan.meta["dialect"] == "snntorch-zero" and plan.meta["dt"] == 1e-4


def test_to_nir_for_writes_the_fixed_graphs_nearest_float_files(trained_digits, tmp_path, capsys):
    """``--precision fixed --for``: each library's file is the float network nearest the integers,
    checked against that network and measured against the integer graph (trained, with biases)."""
    argv = [str(trained_digits), "--out", str(tmp_path), "--precision", "fixed", "--for", "snntorch,norse,nir",
            "--parity-samples", "64", "--onnx", "false"]  # fmt: skip
    assert to_nir.main(argv) == 0, capsys.readouterr()
    rep = json.loads((tmp_path / "model.fixed.conversion.json").read_text())
    assert rep["for"]["nir"]["file"] == "model.fixed.nir"
    for peer in ("snntorch", "norse"):
        r = rep["for"][peer]
        assert r["identical_output_counts_vs_float_units"] == 1.0 and r["file"] == f"model.fixed.{peer}.nir"
        assert set(r["layer_spikes_differing_vs_graph"]) == set(r["layer_spikes_of_graph"])
        assert 0.5 <= r["identical_output_counts_vs_graph"] <= 1.0  # nearest, not equal: measured and reported
        plan = load_plan(tmp_path / r["file"])
        assert plan.precision == "float" and plan.meta["fixed_source"]
    plan = load_plan(tmp_path / "model.fixed.nir")
    biased = [n for n in plan.nodes if n.kind in ("conv", "affine") and np.any(n.fixed["bias"] != 0)]
    assert biased  # the trained model's biases are in the integer units too


@pytest.mark.parametrize("peer,message", [("nirtorch", "maps no LIF"), ("sinabs", "pins nir <= 1.0.4"),
                                          ("rockpool", "imports no Conv2d"), ("brian2", "unknown library")])  # fmt: skip
def test_libraries_that_cannot_run_the_graph_are_refused_with_the_reason(
    trained_digits, tmp_path, capsys, peer, message, monkeypatch
):
    def work(*_):
        raise AssertionError("the conversion ran before --for was checked")

    monkeypatch.setattr(to_nir, "_convert", work)  # refused before any work (it came after the parity run)
    argv = [str(trained_digits), "--out", str(tmp_path), "--for", peer, "--parity-samples", "16", "--onnx", "false"]
    assert to_nir.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.nir"))  # nothing written


@pytest.mark.parametrize("peer", PEERS)
def test_fixed_graph_files_keep_the_integers(fixed_graphs, peer):
    """A fixed graph's --for file holds the integer network: every mantissa is ``weight / weight_scale``
    exactly (the scales follow the pool areas moved into the weights), thresholds and decays as in the graph."""
    graph, _ = fixed_graphs["nmnist_csnn"]
    plan = load_plan(graph)
    written = graph_for(graph, peer, dt=1e-3, precision="fixed")
    meta = json.loads(written.metadata[METADATA_KEY])
    assert meta["precision"] == "float" and "layers" not in meta
    src = meta["fixed_source"]
    for n in plan.nodes:
        if n.kind in ("conv", "affine"):
            w = np.asarray(written.nodes[n.name].weight, np.float64)
            scale = np.asarray(src[n.name]["weight_scale"], np.float64)  # (one, or one per output row)
            mant = w / scale.reshape((-1,) + (1,) * (w.ndim - 1)) if scale.ndim else w / scale
            assert np.array_equal(mant, n.fixed["weight"] / 2), n.name  # (the plan stores them doubled)
            assert src[n.name]["weight_exp"] == n.fixed["weight_exp"]
            assert np.array_equal(np.asarray(src[n.name]["bias_mant"]) << src[n.name]["bias_exp"], n.fixed["bias"])
        elif n.kind == "lif":
            assert (src[n.name]["vth"], src[n.name]["dv"]) == (n.fixed["vth"], n.fixed["dv"])
    scales = [s["weight_scale"] for s in src.values() if "weight_scale" in s]
    if peer in ("snntorch", "spikingjelly"):  # the sum pools became average pools: their areas went into the weights
        assert 4.0 in scales
    else:  # Norse ignores r (here 2, a power of two): it went into the weight rows
        assert 2.0 in scales


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("name", list(GRAPHS))
def test_snntorch_runs_our_file_live(graphs, fixed_graphs, name, tmp_path, precision):
    """The interop extra installs snnTorch: its own import_from_nir on our --for file, in this process."""
    pytest.importorskip("snntorch", reason="snnTorch is the interop extra (pip install -e '.[interop]')")
    import contextlib
    import io

    from snntorch.import_nir import import_from_nir

    graph, x = (graphs if precision == "float" else fixed_graphs)[name]
    nir.write(tmp_path / "g.nir", graph_for(graph, "snntorch", dt=1e-3, precision=precision))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        net = import_from_nir(nir.read(tmp_path / "g.nir", type_check=False))  # its documented call
    assert _same_output(_stepped(net, x), graph, _expected(graph, precision, x))
