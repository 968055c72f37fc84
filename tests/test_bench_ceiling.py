"""bench.ceiling replays exactly eventsim's synaptic adds: the same count per node and sample as
eventsim's own work counts, onto the addresses that give the synapse's product."""

from __future__ import annotations

import numpy as np
import pytest

from bench.ceiling import ScatterRuns, aligned, check_adds, replay_runs, scatter_runs
from core.errors import ModelError
from runtime.warm import tiny_graphs
from targets import eventsim
from targets.eventsim.driver import prepare
from targets.plan import load_plan


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict[str, object]:
    """The tiny event CSNNs of ``runtime.warm`` (sum pool, conv, LIF, sum pool, flatten, affine, then a
    LIF or an LI readout), both precisions, by file stem."""
    return {p.stem: load_plan(p) for p in tiny_graphs(tmp_path_factory.mktemp("ceiling"))}


def _inputs(T: int = 5, B: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    spikes = (rng.random((T, B, 2, 8, 8)) < 0.3).astype(np.float32)
    counts = rng.integers(0, 4, (T, B, 2, 8, 8)).astype(np.float32)  # weighted adds (x != 1)
    return [spikes, counts]


def _work_per_sample(plan, x: np.ndarray, names) -> dict[str, np.ndarray]:
    """eventsim's synaptic events per node, sample by sample at batch 1."""
    return {n: np.array([eventsim.run(plan, x[:, b : b + 1]).stats[n]["synaptic_events"] for b in range(x.shape[1])])
            for n in names}  # fmt: skip


@pytest.mark.parametrize("stem", ["spikes.float", "spikes.fixed", "li.float", "li.fixed"])
def test_replayed_adds_equal_eventsim_work(graphs, stem):
    plan = graphs[stem]
    sim = prepare(plan)
    for x in _inputs():
        runs = replay_runs(sim, x, eventsim.run(plan, x, record=True))
        assert set(runs.adds) == {"features.1", "head.2"}
        work = _work_per_sample(plan, x, runs.adds)
        check_adds(runs, work)  # raises on any difference
        assert all(runs.adds[n].sum() > 0 for n in runs.adds)
        # and the batch's totals, as RunResult.stats reports them
        stats = eventsim.run(plan, x).stats
        assert {n: float(runs.adds[n].sum()) for n in runs.adds} == {n: stats[n]["synaptic_events"] for n in runs.adds}


def test_check_adds_names_the_node():
    runs = ScatterRuns(*(np.zeros(0) for _ in range(5)), np.zeros(2, np.int64), {"conv": np.array([3])})
    with pytest.raises(ModelError, match="node conv: replayed adds"):
        check_adds(runs, {"conv": np.array([4])})
    with pytest.raises(ModelError, match="synaptic nodes differ"):
        check_adds(runs, {"other": np.array([3])})


def _sum_pool(x: np.ndarray, k: int) -> np.ndarray:
    C, H, W = x.shape
    return x[:, : H // k * k, : W // k * k].reshape(C, H // k, k, W // k, k).sum(axis=(2, 4))


@pytest.mark.parametrize("stem", ["spikes.float", "spikes.fixed"])
def test_runs_add_each_synapse_product(graphs, stem):
    """One step: the runs, scattered into zeroed accumulators, give each synaptic node's dense
    product of its input (the addresses and weight offsets are right, not only the count)."""
    import torch

    plan = graphs[stem]
    sim = prepare(plan)
    c = sim.compiled
    x = _inputs(T=1, B=2)[1]
    rec = eventsim.run(plan, x, record=True)
    runs = replay_runs(sim, x, rec)
    dt = np.int32 if plan.precision == "fixed" else np.float64
    row = {name: k for k, name in enumerate(sim._names)}
    for b in range(x.shape[1]):
        s = runs.sample(b)
        conv, lif, affine = plan.node("features.1"), plan.node("features.2"), plan.node("head.2")
        pooled = [_sum_pool(x[0, b], plan.node("features.0").params["kernel"][0]),
                  _sum_pool(rec.rasters["features.2"][0, b].astype(np.float64), plan.node("head.0").params["kernel"][0])]  # fmt: skip
        assert lif.sources == ["features.1"]
        for node, inp in ((conv, pooled[0]), (affine, pooled[1].reshape(-1))):
            acc = aligned(np.zeros(c.total, dt))
            mine = runs.node[s] == row[node.name]
            scatter_runs(acc, aligned(c.weights.astype(dt)), runs.a0[s][mine], runs.w0[s][mine], runs.m[s][mine],
                         runs.x[s][mine])  # fmt: skip
            w = node.fixed["weight"] if plan.precision == "fixed" else node.params["weight"]
            w = torch.as_tensor(np.asarray(w, np.float64))
            if node.kind == "conv":
                want = torch.nn.functional.conv2d(torch.as_tensor(inp[None], dtype=torch.float64), w, stride=tuple(node.params["stride"]),
                                                  padding=tuple(node.params["padding"]))[0].numpy()  # fmt: skip
            else:
                want = (w @ torch.as_tensor(inp, dtype=torch.float64)).numpy()
            off = c.table[row[node.name], 23]  # K_OFF
            got = np.empty(want.size)
            got[c.perms[node.name]] = acc[off : off + want.size]  # internal order -> the plan's
            np.testing.assert_allclose(got, want.reshape(-1), rtol=1e-6, atol=1e-9)


def test_measure_on_a_tiny_graph(graphs):
    from bench.ceiling import measure

    rec = measure(graphs["spikes.fixed"], _inputs(T=4, B=2)[0], repeats=1, log=lambda s: None)
    assert rec["adds_checked"] and rec["adds_per_sample"] > 0
    assert rec["fraction"] > 0 and rec["ceiling_gadds_per_s"] > 0 and len(rec["loadavg"]) == 2
    assert {"neuron updates", "scatter", "input scan (driver)"} <= set(rec["profile_ms"])


def test_skips_without_recordings(tmp_path, capsys):
    from bench.ceiling import main

    assert main(["--data", str(tmp_path / "absent"), "--out", str(tmp_path / "out")]) == 0
    assert "skipped" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_no_samples_or_repeats_is_one_line(tmp_path, capsys):
    """``--samples 0`` ended in a ValueError from unpacking an empty batch."""
    from bench.ceiling import main

    for flag in ("--samples", "--repeats"):
        with pytest.raises(SystemExit) as exit_:
            main([flag, "0", "--out", str(tmp_path / "out")])
        assert exit_.value.code == 2
        assert f"argument {flag}: must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_every_benchmark_refuses_counts_below_their_minimum(capsys):
    """One argparse type (bench.at_least) for every benchmark's counts and budgets: bench.startup
    --repeats 0 ended in a TypeError, bench.fuzz --seconds 0 (or --timeout 0) ran and wrote a
    report of nothing."""
    import importlib

    from bench import at_least

    assert at_least(1)("3") == 3 and at_least(0.1)("0.5") == 0.5
    for module, argv, message in [
        ("bench.startup", ["--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
        ("bench.fuzz", ["--seconds", "0"], "argument --seconds: must be at least 1.0, got 0"),
        ("bench.fuzz", ["--timeout", "nan"], "argument --timeout: must be at least 0.1, got nan"),
        ("bench.scale", ["--workers", "x"], "argument --workers: expected an integer, got 'x'"),
        ("bench.lava", ["--samples", "-1"], "argument --samples: must be at least 1, got -1"),
        ("bench.peers", ["--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            importlib.import_module(module).main(argv)
        assert exit_.value.code == 2 and message in capsys.readouterr().err, (module, argv)
