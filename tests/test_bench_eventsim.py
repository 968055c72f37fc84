"""bench.eventsim's two-thread ratio: batches split over threads, and whole batches side by side."""

import numpy as np
import pytest
import torch

from bench import eventsim as bench
from convert.build import build_nir
from convert.nirgraph import write_graph
from targets.plan import load_plan
from train.models import build_model


def test_threads_ratio_checks_the_split_and_runs_whole_batches_side_by_side(tmp_path, monkeypatch):
    x = (np.random.default_rng(4).random((4, 40, 1, 8, 8)) < 0.3).astype(np.float32)
    torch.manual_seed(0)
    graph, _ = build_nir(build_model("digits_csnn").eval(), (1, 8, 8), precision="float", steps=4, calibration=x)
    write_graph(tmp_path / "m.nir", graph)
    plan = load_plan(tmp_path / "m.nir")
    twins = bench.eventsim.prepare(plan).twins(2)
    runs = {id(t): [] for t in twins}
    for t in twins:
        own = t.run
        monkeypatch.setattr(
            t, "run", lambda xb, record=False, own=own, t=t: runs[id(t)].append(xb.shape[1]) or own(xb, record)
        )
    r = bench.threads_ratio(plan, x, repeats=1)
    assert r["identical"] and r["samples"] == 2 * bench.BATCH  # (40 samples repeated up to two batches)
    assert r["speedup"] > 0 and r["side_by_side"] > 0
    # the second thread's simulator ran whole batches of 64 (side by side), and only those: a split
    # batch's threads call the kernel, not a run
    assert runs[id(twins[1])] and set(runs[id(twins[1])]) == {bench.BATCH}


def test_no_samples_or_repeats_is_one_line(tmp_path, capsys):
    """``--samples 0`` ended in a ValueError from unpacking an empty batch."""
    from bench.eventsim import main

    for flag in ("--samples", "--repeats"):
        with pytest.raises(SystemExit) as exit_:
            main([flag, "0", "--out", str(tmp_path / "out")])
        assert exit_.value.code == 2
        assert f"argument {flag}: must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
