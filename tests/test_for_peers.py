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
from convert.peers import graph_for
from core.errors import ModelError
from targets import reference as ref
from targets.plan import load_plan
from tests.conftest import DATA

FIXTURES = DATA / "for_peers"
sys.path.insert(0, str(FIXTURES))
from graphs import GRAPHS, PEERS, build, digest  # noqa: E402


def _stepped(net, x: np.ndarray) -> np.ndarray:
    """A library's ``(x_t, state) -> (y_t, state)`` module over ``x`` (T, B, ...): output counts."""
    import torch

    state, total = None, 0
    with torch.no_grad():
        for t in range(x.shape[0]):
            y, state = net(torch.from_numpy(x[t]), state)
            total = total + y.numpy()
    return np.asarray(total, dtype=np.int64).reshape(x.shape[1], -1)


@pytest.fixture(scope="module")
def graphs():
    return {name: build(name) for name in GRAPHS}


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("name", list(GRAPHS))
def test_each_library_runs_our_file_with_our_spikes(graphs, name, peer):
    graph, x = graphs[name]
    recorded = np.load(FIXTURES / f"{name}.{peer}.npz")
    written = graph_for(graph, peer, dt=1e-3)
    assert str(recorded["digest"]) == digest(written), "the writer changed: re-record with run_peers.py"
    ours = ref.run(load_plan(graph), x)
    assert ours.counts.sum() > 0 and all(c.sum() > 0 for c in ours.layer_counts.values())
    assert np.array_equal(recorded["counts"], ours.counts)  # the library's own output, batch of 8
    for layer, c in ours.layer_counts.items():
        assert np.array_equal(recorded[f"spikes/{layer}"], c), layer


def test_norse_runs_our_file_live(graphs, tmp_path):
    norse = pytest.importorskip("norse.torch")
    import torch

    graph, x = graphs["digits_csnn"]
    nir.write(tmp_path / "g.nir", graph_for(graph, "norse", dt=1e-3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = norse.from_nir(nir.read(tmp_path / "g.nir", type_check=False), dt=1e-3)  # its documented call
        total = _stepped(net, x)
    assert np.array_equal(total, ref.run(load_plan(graph), x).counts)
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


@pytest.mark.parametrize("peer,message", [("nirtorch", "maps no LIF"), ("sinabs", "pins nir <= 1.0.4"),
                                          ("rockpool", "imports no Conv2d"), ("brian2", "unknown library")])  # fmt: skip
def test_libraries_that_cannot_run_the_graph_are_refused_with_the_reason(
    trained_digits, tmp_path, capsys, peer, message
):
    argv = [str(trained_digits), "--out", str(tmp_path), "--for", peer, "--parity-samples", "16", "--onnx", "false"]
    assert to_nir.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.nir"))  # nothing written


def test_fixed_precision_is_not_written_for_float_readers(graphs):
    graph, _ = graphs["digits_csnn"]
    with pytest.raises(ModelError, match="Loihi's integer network"):
        graph_for(graph, "snntorch", dt=1e-3, precision="fixed")


@pytest.mark.parametrize("name", list(GRAPHS))
def test_snntorch_runs_our_file_live(graphs, name, tmp_path):
    """The interop extra installs snnTorch: its own import_from_nir on our --for file, in this process."""
    pytest.importorskip("snntorch", reason="snnTorch is the interop extra (pip install -e '.[interop]')")
    import contextlib
    import io

    from snntorch.import_nir import import_from_nir

    graph, x = graphs[name]
    nir.write(tmp_path / "g.nir", graph_for(graph, "snntorch", dt=1e-3))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        net = import_from_nir(nir.read(tmp_path / "g.nir", type_check=False))  # its documented call
    assert np.array_equal(_stepped(net, x), ref.run(load_plan(graph), x).counts)
