"""``--workers N`` and ``--cluster ray`` (runtime.parallel): the same batches in worker processes give
reports identical to the one-process run, failures name their samples, Ctrl-C writes nothing.

Lava tests run the worker in ``.venv-lava`` and skip with the reason when it is missing; the Ray
tests start a local Ray instance and skip with the reason when Ray (the ``ray`` extra) is absent.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.errors import ConfigError, DataError
from inputs.recording import make_recording
from runtime import parallel, verify
from runtime import run as run_cmd
from runtime import stream as stream_cmd
from runtime.parallel import WorkerError, map_ordered, open_pool, resolve_workers
from targets import lava_target

needs_lava = pytest.mark.skipif(
    lava_target.unavailable_reason() is not None, reason=f"lava target unavailable: {lava_target.unavailable_reason()}"
)
needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="Ray is not installed (the optional extra: pip install '.[ray]')"
)
TIMING = ("wall_s", "samples_per_s")


def _without_timing(rep: dict) -> dict:
    """A report less what a second run may change: wall times, the worker count, the output folder."""
    rep = {k: v for k, v in rep.items() if k not in (*TIMING, "workers", "cluster", "plots")}
    if "targets" in rep:
        rep["targets"] = {t: {k: v for k, v in e.items() if k not in TIMING} for t, e in rep["targets"].items()}
    return rep


def _verify(graph, out, targets: str, *extra: str) -> dict:
    argv = [str(graph), "--targets", targets, "--samples", "48", "--batch-size", "16", "--progress", "false",
            "--out", str(out), *extra]  # fmt: skip
    assert verify.main(argv) == 0
    return json.loads((out / "report.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float", "fixed"])
def test_verify_with_workers_is_identical(digits_graphs, tmp_path, precision):
    """Every target (reference, torch, onnx, eventsim, and norse in float) over 2 workers: the report
    equals the one-process report bit for bit, apart from wall times and the stated worker count."""
    targets = "torch,onnx,eventsim" + (",norse" if precision == "float" else "")
    one = _verify(digits_graphs / f"{precision}.nir", tmp_path / "one", targets, "--workers", "1")
    two = _verify(digits_graphs / f"{precision}.nir", tmp_path / "two", targets, "--workers", "2")
    assert one["workers"] == 1 and two["workers"] == 2 and two["cluster"] == "local"
    assert _without_timing(one) == _without_timing(two)
    assert "Ran on 2 worker process(es)" in (tmp_path / "two" / "report.md").read_text()


def test_run_with_workers_is_identical(digits_graphs, tmp_path, capsys):
    common = [str(digits_graphs / "fixed.nir"), "--target", "eventsim", "--samples", "48", "--batch-size", "16",
              "--progress", "false", "--per-step"]  # fmt: skip
    assert run_cmd.main([*common, "--workers", "1", "--out", str(tmp_path / "one.json")]) == 0
    assert run_cmd.main([*common, "--workers", "2", "--out", str(tmp_path / "two.json")]) == 0
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert two["workers"] == 2 and _without_timing(one) == _without_timing(two)
    assert "2 worker(s) (local)" in capsys.readouterr().out


@pytest.mark.lava
@needs_lava
def test_lava_with_workers_is_identical(digits_graphs, tmp_path):
    """Lava's worker processes, two at a time: the same rasters as one after the other."""
    argv = ["--samples", "8", "--batch-size", "4"]
    one = _verify(digits_graphs / "fixed.nir", tmp_path / "one", "lava", *argv, "--workers", "1")
    two = _verify(digits_graphs / "fixed.nir", tmp_path / "two", "lava", *argv, "--workers", "2")
    assert two["workers"] == 2 and two["passed"] and _without_timing(one) == _without_timing(two)


def test_default_worker_rule(monkeypatch):
    monkeypatch.setattr(parallel, "cores", lambda: 2)
    assert resolve_workers(None, 40, 64) == 1  # one batch
    assert resolve_workers(None, 48, 16) == 1  # a worker would get fewer than MIN_SAMPLES_PER_WORKER samples
    assert resolve_workers(None, 1000, 64) == 2  # one per core
    assert resolve_workers(None, 100, 50) == 2
    assert resolve_workers(8, 100, 50) == 2  # never more workers than batches
    assert resolve_workers(1, 1000, 64) == 1


# Functions the workers run (module level: they travel by name)
def _slow_square(i: int) -> int:
    time.sleep(0.05 * (3 - i % 3))  # finish out of order
    return i * i


def _fail_on_two(i: int) -> int:
    if i == 2:
        raise DataError("bad recording")
    return i


def _die_on_one(i: int) -> int:
    if i == 1:
        os._exit(3)
    time.sleep(0.5)
    return i


def _value_error(i: int) -> int:
    raise ValueError(f"cannot do {i}\nsecond line")


def _pid_sleep(i: int) -> int:
    time.sleep(30)
    return os.getpid()


def test_results_come_back_in_submission_order():
    done = []
    with open_pool(2) as pool:
        got = map_ordered(pool, _slow_square, [(i,) for i in range(6)], [str(i) for i in range(6)],
                          lambda i, r: done.append((i, r)))  # fmt: skip
    assert got == [i * i for i in range(6)] and sorted(done) == [(i, i * i) for i in range(6)]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failed_batch_names_its_samples(workers):
    names = [f"samples {4 * i}-{4 * i + 3} on test" for i in range(4)]
    with pytest.raises(DataError, match=r"^samples 8-11 on test: bad recording$"), open_pool(workers) as pool:
        map_ordered(pool, _fail_on_two, [(i,) for i in range(4)], names)
    with (
        pytest.raises(WorkerError, match=r"^samples 0-3 on test failed: ValueError: cannot do 0$"),
        open_pool(2) as pool,
    ):
        map_ordered(pool, _value_error, [(0,)], names)


def test_a_dead_worker_stops_the_run():
    with pytest.raises(WorkerError, match="a worker process died .* no report was written"), open_pool(2) as pool:
        map_ordered(pool, _die_on_one, [(i,) for i in range(4)], [f"batch {i}" for i in range(4)])


def test_interrupt_ends_the_workers():
    with pytest.raises(KeyboardInterrupt), open_pool(2) as pool:
        futures = [pool.submit(_pid_sleep, i) for i in range(2)]
        time.sleep(1.0)  # both workers started and sleeping
        procs = list(pool._ex._processes.values())
        assert len(procs) == 2
        raise KeyboardInterrupt
    # (the pool's management thread marks the killed workers' futures as it notices: wait for it)
    done, _ = concurrent.futures.wait(futures, timeout=30)
    assert all(not p.is_alive() for p in procs) and len(done) == len(futures)


def test_interrupt_writes_no_report(digits_graphs, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_cmd, "run_batches", interrupted)
    monkeypatch.setattr(verify, "run_batches", interrupted)
    out = tmp_path / "r.json"
    assert run_cmd.main([str(digits_graphs / "float.nir"), "--progress", "false", "--out", str(out)]) == 130
    assert not out.exists() and "no report was written" in capsys.readouterr().err
    assert verify.main([str(digits_graphs / "float.nir"), "--progress", "false", "--out", str(tmp_path / "v")]) == 130
    assert not (tmp_path / "v" / "report.json").exists()


def test_cluster_ray_without_ray_says_how_to_install(digits_graphs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    argv = [
        str(digits_graphs / "float.nir"),
        "--cluster",
        "ray",
        "--progress",
        "false",
        "--out",
        str(tmp_path / "r.json"),
    ]
    assert run_cmd.main(argv) == 2
    assert "pip install 'snn-deploy[ray]'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--cluster must be local, ray or ray://host:port"), open_pool(2, "dask"):
        pass


@needs_ray
@pytest.mark.slow
def test_ray_local_instance_is_identical(digits_graphs, tmp_path, monkeypatch):
    """A local Ray instance (RAY_ADDRESS unset): batches as Ray tasks, the same report."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    targets = "torch,onnx,eventsim"
    one = _verify(digits_graphs / "fixed.nir", tmp_path / "one", targets, "--workers", "1")
    ray = _verify(digits_graphs / "fixed.nir", tmp_path / "ray", targets, "--workers", "2", "--cluster", "ray")
    assert ray["cluster"] == "ray" and ray["workers"] >= 1
    assert _without_timing(one) == _without_timing(ray)


def test_join_keeps_sample_order():
    from runtime.run import join_results
    from targets.reference import RunResult

    parts = [RunResult(np.full((2, 3), i), {"a": np.full(2, i)}) for i in range(3)]
    joined = join_results(parts)
    assert joined.counts[:, 0].tolist() == [0, 0, 1, 1, 2, 2] and joined.layer_counts["a"].tolist() == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]


# ---------------------------------------------------------------------------------------------
# Many recordings at once (a folder or a glob), in parallel


def _lines(path):
    """A JSON-lines file's records less their latency (a time measurement)."""
    return [{k: v for k, v in json.loads(x).items() if k != "latency_ms"} for x in path.read_text().splitlines()]


STREAM_TIMING = ["--bin-us", "25000", "--window-steps", "12"]  # 300 ms windows, as the emulated digits


@pytest.mark.parametrize("workers", ["1", "2"])
def test_many_recordings_equal_single_runs(event_model, tmp_path, workers, capsys):
    """A folder of recordings over 1 or 2 workers: per recording the same lines and summary as its own
    single-file run (less timing), plus a summary across them scored against labels.csv."""
    folder = tmp_path / "recs"
    folder.mkdir()
    for i, n in enumerate((3, 4, 2)):
        make_recording(folder / f"r{i}.h5", samples=n, seed=i)
    (folder / "labels.csv").write_text("file,label\nr0.h5,1\nr1.h5,7\n")
    model = str(event_model["fixed"])
    out = tmp_path / "out"
    argv = [
        str(folder),
        "--model",
        model,
        "--out",
        str(out),
        "--workers",
        workers,
        *STREAM_TIMING,
        "--progress",
        "false",
    ]
    assert stream_cmd.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["files"] == 3 and summary["workers"] == int(workers) and summary["scored"]["recordings"] == 2
    assert [Path(r["file"]).name for r in summary["recordings"]] == ["r0.h5", "r1.h5", "r2.h5"]
    for i in range(3):
        single = tmp_path / f"single{i}.jsonl"
        one = [str(folder / f"r{i}.h5"), "--model", model, "--out", str(single), *STREAM_TIMING, "--progress", "false"]
        assert stream_cmd.main(one) == 0
        assert _lines(out / f"r{i}.h5.jsonl") == _lines(single)
        timing = ("startup_s", "startup", "wall_s", "events_per_s", "real_time_factor", "latency_ms")
        a, b = (
            json.loads(p.read_text()) for p in (out / f"r{i}.h5.jsonl.summary.json", Path(f"{single}.summary.json"))
        )
        assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
    err = capsys.readouterr().err
    assert "3 recordings" in err
    assert "2 labelled recordings correct" in err and "; 1 recording(s) without a label, not scored: r2.h5" in err


def test_labels_that_label_none_of_the_recordings_say_so(event_model, tmp_path, capsys):
    """0 of 0 scored read as "0.0%" correct; it is n/a, with the recordings that had no label."""
    folder = tmp_path / "recs"
    folder.mkdir()
    make_recording(folder / "r0.h5", samples=2)
    (tmp_path / "other.csv").write_text("file,label\nzz.h5,3\n")
    argv = [str(folder), "--model", str(event_model["fixed"]), "--out", str(tmp_path / "out"), "--file-labels",
            str(tmp_path / "other.csv"), "--workers", "1", *STREAM_TIMING, "--progress", "false"]  # fmt: skip
    assert stream_cmd.main(argv) == 0
    err = capsys.readouterr().err
    assert "0/0 labelled recordings correct (n/a: none has a label); 1 recording(s) without a label" in err, err


def test_many_recordings_errors(event_model, tmp_path, capsys):
    model = str(event_model["fixed"])
    labels = tmp_path / "labels.csv"  # a file labelled twice: the later label replaced the earlier
    labels.write_text("file,label\nr0.h5,1\nr1.h5,7\nr0.h5,3\n")
    with pytest.raises(DataError, match=r"labels\.csv, line 4: r0\.h5 is listed again \(first on line 2\)"):
        stream_cmd.read_file_labels(labels)
    labels.write_text("r0.h5,1\nr1.h5,7\n")  # no header: allowed here; one with other columns' names: too
    assert stream_cmd.read_file_labels(labels) == {"r0.h5": 1, "r1.h5": 7}
    labels.write_text("label,file\n3,r0.h5\n")
    assert stream_cmd.read_file_labels(labels) == {"r0.h5": 3}
    labels.write_bytes(b"r0.h5,1\n\x89PNG\n")  # (a UnicodeDecodeError traceback)
    with pytest.raises(DataError, match=r"labels\.csv is not CSV text \(byte 8 is not UTF-8\)"):
        stream_cmd.read_file_labels(labels)
    assert stream_cmd.main([str(tmp_path / "*.h5"), "--model", model, "--out", str(tmp_path / "o")]) == 2
    assert "matches no file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()  # (without --out it asked for --out first, then said the folder was empty)
    assert stream_cmd.main([str(tmp_path / "empty"), "--model", model]) == 2
    assert f"folder {tmp_path / 'empty'} holds no event file" in capsys.readouterr().err
    make_recording(tmp_path / "a.h5", samples=2)
    assert stream_cmd.main([str(tmp_path / "*.h5"), "--model", model]) == 2
    assert "need --out FOLDER" in capsys.readouterr().err
    (tmp_path / "bad.h5").write_bytes(b"not an event file")
    argv = [str(tmp_path / "*.h5"), "--model", model, "--out", str(tmp_path / "o"), "--workers", "2", *STREAM_TIMING,
            "--progress", "false"]  # fmt: skip
    assert stream_cmd.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'bad.h5'}") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "summary.json").exists()


def test_many_recordings_keep_each_finished_recording_when_a_later_one_fails(
    event_model, tmp_path, monkeypatch, capsys
):
    """Each recording's output is written as soon as it is done: a failure or Ctrl-C at a later
    recording keeps the earlier ones (the same lines as their single runs), and no summary."""
    model = str(event_model["fixed"])
    for name in ("a", "c"):
        make_recording(tmp_path / f"{name}.h5", samples=2, seed=ord(name))
    (tmp_path / "b.h5").write_bytes(b"not an event file")  # (in name order: a, b, c, one worker)
    single = tmp_path / "single.jsonl"
    assert stream_cmd.main([str(tmp_path / "a.h5"), "--model", model, "--out", str(single), *STREAM_TIMING,
                            "--progress", "false"]) == 0  # fmt: skip
    capsys.readouterr()
    argv = [str(tmp_path / "*.h5"), "--model", model, "--out", str(tmp_path / "o"), "--workers", "1", *STREAM_TIMING,
            "--progress", "false"]  # fmt: skip
    assert stream_cmd.main(argv) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'b.h5'}")
    assert _lines(tmp_path / "o" / "a.h5.jsonl") == _lines(single)
    assert (tmp_path / "o" / "a.h5.jsonl.summary.json").is_file()
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.h5.jsonl", "a.h5.jsonl.summary.json"]

    (tmp_path / "b.h5").unlink()
    own = stream_cmd.stream_one

    def interrupted_at_c(cfg, file):
        if file.endswith("c.h5"):
            raise KeyboardInterrupt
        return own(cfg, file)

    monkeypatch.setattr(stream_cmd, "stream_one", interrupted_at_c)
    argv[argv.index(str(tmp_path / "o"))] = str(tmp_path / "o2")
    assert stream_cmd.main(argv) == 130
    assert f"the recordings finished before it are in {tmp_path / 'o2'}" in capsys.readouterr().err
    assert _lines(tmp_path / "o2" / "a.h5.jsonl") == _lines(single)
    assert not (tmp_path / "o2" / "c.h5.jsonl").exists() and not (tmp_path / "o2" / "summary.json").exists()
