"""bench.peers times a library whose pins conflict with the project's in that library's own
environment: a second process (bench.peer_env) times eventsim and the library there, and the parent
checks both runners' output counts against the reference. Norse stands in for such a library here
(it is installed in the project's environment): the whole path runs for real, in a subprocess."""

from __future__ import annotations

import stat
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from bench import peers
from bench.peer_env import time_runners
from targets import reference as ref
from targets.plan import load_plan
from tests.conftest import DATA

sys.path.insert(0, str(DATA / "for_peers"))
from graphs import build  # noqa: E402


def _env(folder: Path, library: str, body: str) -> Path:
    """``folder/<library>/bin/python``: a script that stands for that environment's interpreter."""
    python = folder / library / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f"#!/bin/sh\n{body}\n")
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return python


@pytest.fixture
def mlp():
    graph, x = build("mlp")
    return graph, float(load_plan(graph).meta["dt"]), [np.ascontiguousarray(x[:, i : i + 1]) for i in range(3)]


@pytest.mark.slow
def test_own_environment_times_eventsim_and_the_library_there(tmp_path, monkeypatch, mlp):
    graph, dt, samples = mlp
    _env(tmp_path / "envs", "norse", f'exec "{sys.executable}" "$@"')
    monkeypatch.setitem(peers.OWN_ENV, "norse", "stands for a library with conflicting pins")
    args = types.SimpleNamespace(envs=str(tmp_path / "envs"), repeats=2)
    result, why = peers._in_own_env("norse", graph, dt, samples, args, tmp_path)
    assert why is None
    assert result["library"] == "norse" and result["versions"]["norse"]
    want = ref.run(load_plan(graph), np.concatenate(samples, axis=1)).counts
    for name in ("eventsim", "norse"):
        run = result["runners"][name]
        np.testing.assert_array_equal(np.asarray(run["counts"]), want)  # both ran the graph, sample by sample
        assert len(run["interleaved_s"]) == len(run["back_to_back_s"]) == 2
        assert all(t > 0 for t in run["interleaved_s"] + run["back_to_back_s"])
    rows = peers._rows(*peers._seconds(result["runners"]), {"eventsim": 1.0, "norse": 1.0})
    assert rows["eventsim"]["ratio_interleaved"] == 1.0
    b2b = {k: np.median(v["back_to_back_s"]) for k, v in result["runners"].items()}
    assert rows["norse"]["ratio_back_to_back"] == pytest.approx(b2b["norse"] / b2b["eventsim"])


def test_missing_environment_is_skipped_with_its_path(tmp_path, mlp):
    graph, dt, samples = mlp
    args = types.SimpleNamespace(envs=str(tmp_path / "nowhere"), repeats=1)
    result, why = peers._in_own_env("spikingjelly", graph, dt, samples, args, tmp_path)
    assert result is None
    assert str(tmp_path / "nowhere" / "spikingjelly" / "bin" / "python") in why
    assert peers.OWN_ENV["spikingjelly"] in why


def test_failing_environment_says_how(tmp_path, mlp):
    graph, dt, samples = mlp
    _env(tmp_path / "envs", "spikingjelly", 'echo "ModuleNotFoundError: No module named numba" >&2; exit 3')
    args = types.SimpleNamespace(envs=str(tmp_path / "envs"), repeats=1)
    result, why = peers._in_own_env("spikingjelly", graph, dt, samples, args, tmp_path)
    assert result is None
    assert "exit 3" in why and "No module named numba" in why


def test_time_runners_interleaves_and_runs_back_to_back():
    calls = []
    runners = {"a": lambda s: calls.append(("a", int(s[0]))), "b": lambda s: calls.append(("b", int(s[0])))}
    inter, b2b = time_runners(runners, [np.array([0]), np.array([1])], repeats=2)
    one_repeat = [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert calls == one_repeat * 2
    assert all(len(v) == 2 and min(v) >= 0 for v in (*inter.values(), *b2b.values()))


def test_plot_draws_every_runner_over_eventsim_as_a_png(tmp_path):
    def row(ms, agree=1.0):
        return {"interleaved_ms": ms, "back_to_back_ms": ms * 0.8, "ratio_interleaved": ms / 0.5,
                "ratio_back_to_back": ms / 0.4, "identical_output_counts": agree}  # fmt: skip

    results = [
        {
            "workload": "N-MNIST CSNN, T=8",
            "runners": {"eventsim": row(0.5), "torch target": row(5.0), "norse": row(9.0)},
        },
        {"workload": "digits student, T=8", "runners": {"eventsim": row(0.5), "norse": row(4.0, agree=0.5)}},
    ]
    path = tmp_path / "peers.png"
    peers.plot(results, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp*"))  # (written atomically: nothing left beside it)
