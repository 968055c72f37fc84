"""eventsim's kernels compiled ahead of time (:mod:`targets.eventsim.aot`): exact type keys, a stale or
foreign module refused, the same results as numba's JIT, no numba in the process, the GIL released."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from inputs.recording import make_recording
from targets import eventsim
from targets.eventsim import aot
from targets.plan import load_plan

ROOT = Path(__file__).resolve().parents[1]


def _values() -> list:
    """Arguments that numba types apart in every way the kernels' callers could pass them."""
    f4 = np.zeros(8, np.float32)
    unaligned = np.frombuffer(bytearray(33), np.float32, count=8, offset=1)
    frozen = np.zeros(8, np.float32)
    frozen.flags.writeable = False
    return [
        f4, np.zeros(8, np.float64), np.zeros(8, np.int32), np.zeros(8, np.int64),
        np.zeros(8, np.uint8), np.zeros(8, np.bool_), np.zeros(8, np.uint32), f4[::2], unaligned, frozen,
        np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float32, order="F"), np.zeros((4, 4), np.float32)[:, ::2],
        np.zeros((2, 2, 2), np.int64), np.float32(1), np.float64(1), np.int32(1),
        np.int64(1), np.uint64(1), np.bool_(True), True, 3, 2**63, 1.5,
    ]  # fmt: skip


def test_equal_type_keys_mean_equal_numba_types():
    from numba import typeof

    values = _values()
    keys = [aot.type_key(v) for v in values]
    types = [typeof(v) for v in values]
    for i in range(len(values)):
        for j in range(len(values)):
            if keys[i] == keys[j]:
                assert types[i] == types[j], (keys[i], types[i], types[j])
    # every array above differs from the others in some property numba types it by
    arrays = [k for k, v in zip(keys, values, strict=True) if isinstance(v, np.ndarray)]
    assert len(set(arrays)) == len(arrays)
    # an array both C- and F-contiguous is C to numba, as to the key
    row = np.zeros((1, 8), np.float32)
    assert aot.type_key(row) == aot.type_key(np.zeros((2, 4), np.float32)) and typeof(row).layout == "C"


@pytest.fixture
def cache_folder(tmp_path, monkeypatch):
    """An empty numba cache folder for :mod:`targets.eventsim.aot`, its loaded module forgotten before
    and after."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(aot, "_loaded", None)
    monkeypatch.setattr(aot, "ENABLED", True)
    yield tmp_path
    aot._loaded = None


def test_a_missing_stale_or_unreadable_module_is_not_used(cache_folder):
    assert aot._load() == {} and "not built" in aot.describe() and "numba's JIT" in aot.describe()
    built_from = aot.fingerprint()
    for changed, word in (("sources", "sources"), ("cpu", "cpu"), ("numpy", "numpy")):
        manifest = {"name": "x", "module": "x.so", "built_from": {**built_from, changed: "other"}, "versions": []}
        (cache_folder / aot.MANIFEST).write_text(json.dumps(manifest))
        aot._loaded = None
        assert aot._load() == {} and f"built for other {word}" in aot.describe()
    (cache_folder / aot.MANIFEST).write_text('{"name": ')
    aot._loaded = None
    assert aot._load() == {} and "unreadable manifest" in aot.describe()
    (cache_folder / aot.MANIFEST).write_text(json.dumps({"built_from": built_from}))  # matches, says nothing more
    aot._loaded = None
    assert aot._load() == {} and "unreadable manifest" in aot.describe() and "'module'" in aot.describe()
    manifest = {"name": "x", "module": "x.so", "built_from": built_from, "versions": []}  # matches, module missing
    (cache_folder / aot.MANIFEST).write_text(json.dumps(manifest))
    aot._loaded = None
    assert aot._load() == {} and "cannot load" in aot.describe()


def test_the_fingerprint_follows_the_kernels_sources(monkeypatch, tmp_path):
    before = aot.fingerprint()
    edited = tmp_path / "kernels.py"
    edited.write_bytes(aot.SOURCES[0].read_bytes() + b"\n# edited\n")
    monkeypatch.setattr(aot, "SOURCES", (edited, *aot.SOURCES[1:]))
    after = aot.fingerprint()
    assert after["sources"] != before["sources"] and {k: v for k, v in after.items() if k != "sources"} == {
        k: v for k, v in before.items() if k != "sources"
    }


# The module ``make setup`` built (python -m runtime.warm) for this checkout and CPU.
def _built() -> dict:
    aot._loaded = None
    return aot._load()


needs_module = pytest.mark.skipif(not _built(), reason=f"eventsim's ahead-of-time module: {aot._why}")


def _runs(plan, x: np.ndarray, ahead: bool):
    """A fresh simulator's batched run (recorded), streamed steps and run of float64 input (a type the
    module may lack: numba's then), with the module on or off."""
    versions = _built()
    aot._loaded = versions if ahead else {}
    try:
        sim = eventsim.EventSim(plan)
        batch = sim.run(x, record=True)
        kinds = {type(fn).__name__ for fn in sim._kernels.values()}
        stream = sim.stream()
        steps = [stream.feed(x[:, b]) for b in range(2)]
        wide = sim.run(x.astype(np.float64))
        return batch, steps, wide, kinds
    finally:
        aot._loaded = None


@needs_module
@pytest.mark.parametrize("precision", ["float", "fixed"])
def test_ahead_of_time_versions_give_the_jits_results(event_model, precision):
    plan = load_plan(event_model[precision])
    x = (np.random.default_rng(3).random((12, 4, *plan.input_shape)) < 0.08).astype(np.float32)
    for scale in (1, 2**20):  # binary spikes (narrow accumulators), then counts that need the wide ones
        got, want = _runs(plan, x * np.float32(scale), True), _runs(plan, x * np.float32(scale), False)
        assert got[3] == {"builtin_function_or_method"} and want[3] == {"CPUDispatcher"}  # (ran what was asked)
        for a, b in ((got[0], want[0]), (got[2], want[2])):
            np.testing.assert_array_equal(a.counts, b.counts)
            assert a.stats == b.stats
        for name in want[0].rasters:
            np.testing.assert_array_equal(got[0].rasters[name], want[0].rasters[name])
        for a, b in zip(got[1], want[1], strict=True):
            np.testing.assert_array_equal(a, b)


@needs_module
def test_a_stream_on_eventsim_never_imports_numba(event_model, tmp_path):
    recording = tmp_path / "digits.h5"
    make_recording(recording, samples=2)
    code = """
import json, sys
from runtime import stream
code = stream.main(sys.argv[1:])
print(json.dumps({"code": code, "numba": "numba" in sys.modules}))
"""
    argv = [str(recording), "--model", str(event_model["fixed"]), "--target", "eventsim", "--bin-us", "25000",
            "--window-steps", "12", "--out", str(tmp_path / "w.jsonl")]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"code": 0, "numba": False}
    summary = json.loads((tmp_path / "w.jsonl.summary.json").read_text())
    assert summary["startup"]["kernels"].startswith("compiled ahead of time")
    assert "eventsim's kernels: compiled ahead of time" in done.stderr


@needs_module
def test_an_ahead_of_time_call_lets_other_threads_run(event_model):
    """While one thread is in the compiled simulation, Python code runs in another (nogil, as the JIT)."""
    plan = load_plan(event_model["float"])
    x = (np.random.default_rng(4).random((12, 512, *plan.input_shape)) < 0.08).astype(np.float32)
    sim = eventsim.EventSim(plan)
    aot._loaded = _built()
    sim.run(x[:, :1])
    assert {type(fn).__name__ for fn in sim._kernels.values()} == {"builtin_function_or_method"}
    inside, done, turns = threading.Event(), threading.Event(), []
    events = sim.input_events(x)
    state = sim.new_state()

    def simulate():
        inside.set()
        sim.execute(events, state, reset=True, record=False)
        done.set()

    worker = threading.Thread(target=simulate)
    worker.start()
    inside.wait()
    while not done.is_set():  # counted only while the worker is inside the call (or about to enter it)
        turns.append(1)
    worker.join()
    aot._loaded = None
    # with the GIL held for the whole call (~0.2 s) this loop would get a switch interval's turns (5 ms)
    assert len(turns) > 500_000, len(turns)
