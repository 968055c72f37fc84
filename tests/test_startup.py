"""Start-up: commands that need no torch never import it, the stream summary times its start-up in
stages, ``python -m runtime.warm`` compiles every numba version the commands then use, and ``make
setup`` the bytecode of every module they import."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inputs.recording import make_recording
from runtime.stream import process_age_s
from tests.conftest import ROOT

HEAVY = ("torch", "torchvision", "matplotlib", "sklearn")  # what none of these paths needs

# A fresh interpreter runs ``main`` of a command, then prints the heavy packages it imported.
CHILD = """
import importlib, json, sys
heavy, module, *argv = sys.argv[1:]
code = importlib.import_module(module).main(argv)
print(json.dumps({"code": code, "heavy": sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(heavy)))}))
"""


def _child(module: str, *argv: str) -> tuple[dict, list[str], float]:
    """Run ``module.main(argv)`` in a fresh process: its last JSON line, the lines before, its wall time."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(HEAVY), module, *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    wall = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]), lines[:-1], wall


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("startup") / "digits.h5"
    make_recording(path, samples=3)
    return path


def test_imports_of_the_commands_leave_torch_out():
    code = (
        "import sys, json, inputs, inputs.graph_data, runtime.stream, runtime.run, runtime.metrics, runtime.warm, "
        "targets.eventsim, targets.onnx_target, targets.reference; "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


@pytest.mark.parametrize("target", ["eventsim", "onnx", "reference"])
def test_stream_imports_no_torch_and_times_its_start_up(event_model, recording, target):
    argv = [str(recording), "--model", str(event_model["fixed"]), "--target", target, "--reset-per-window", "true",
            "--bin-us", "25000", "--window-steps", "12"]  # fmt: skip
    got, lines, wall = _child("runtime.stream", *argv)
    assert got == {"code": 0, "heavy": []}
    windows, summary = lines[:-1], json.loads(lines[-1])["summary"]
    assert len(windows) == summary["windows"] == 3
    st = summary["startup"]
    stages = [st[k] for k in ("graph_s", "open_s", "target_s", "first_call_s", "first_window_s")]
    stages.append(st["process_to_imports_s"])
    assert all(s >= 0 for s in stages), st
    assert st["first_call_s"] == summary["startup_s"]
    # the stages follow one another: together they fit in the time to the first output, which fits in the
    # process's life as seen from here (the kernel's start time has 10 ms ticks)
    assert sum(stages) <= st["process_to_first_output_s"] + 0.02, st
    assert st["process_to_imports_s"] < st["process_to_first_output_s"] < wall + 0.02, (st, wall)
    assert st["steady_window_ms"] > 0


def test_run_on_an_event_file_imports_no_torch(event_model, recording, tmp_path):
    for target in ("eventsim", "reference"):
        out = tmp_path / f"{target}.json"
        got, _, _ = _child("runtime.run", str(event_model["float"]), "--target", target, "--data", str(recording),
                           "--out", str(out), "--progress", "false")  # fmt: skip
        assert got == {"code": 0, "heavy": []}, target
        assert json.loads(out.read_text())["synaptic_operations"]["per_sample"] > 0


def test_inputs_loads_its_names_on_first_use():
    code = (
        "import sys, inputs; assert 'torch' not in sys.modules; from inputs import Binning, SPLITS; "
        "assert 'torch' not in sys.modules and SPLITS == ('train', 'test', 'all'); "
        "from inputs import load_dataset; import inputs.datasets as d; assert load_dataset is d.load_dataset; "
        "assert 'torch' in sys.modules; print(sorted(set(inputs.__all__) - set(dir(inputs))))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]
    import inputs

    with pytest.raises(AttributeError, match="no attribute 'Binnig'; it exports Binning, "):
        inputs.Binnig  # noqa: B018


def test_process_age_counts_from_the_process_start():
    age = process_age_s()
    assert age is not None and age > 0
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "from runtime.stream import process_age_s; print(process_age_s())"],
                          cwd=ROOT, capture_output=True, text=True, check=True)  # fmt: skip
    child = float(done.stdout)
    assert 0 < child < time.perf_counter() - t0 + 0.02
    assert process_age_s() >= age + child - 0.02  # this process is older than its child's whole life


@pytest.mark.slow
def test_warm_up_compiles_every_version_the_commands_use(event_model, recording, tmp_path):
    """After ``runtime.warm``, streaming and running both precisions on eventsim compile nothing more,
    and call the kernels with no argument types the warm-up did not (which the module compiled ahead
    of time from its calls then holds). Quick where ``make setup`` has filled numba's cache; a minute
    or more where it has not."""
    models = [str(event_model[p]) for p in ("float", "fixed")]
    code = """
import json, sys
from runtime import run, stream, warm
from targets.eventsim import aot
recording, out, *models = sys.argv[1:]
keys = lambda calls: {(e, str([aot.type_key(a) for a in args])) for e, seen in calls.items() for args in seen}
warmed = keys(warm.warm_eventsim()["calls"])
before = warm.kernel_signatures()
with aot.recording() as calls:
    for model in models:
        assert stream.main([recording, "--model", model, "--target", "eventsim", "--out", out + "/w.jsonl",
                            "--progress", "false", "--bin-us", "25000", "--window-steps", "12"]) == 0
        assert run.main([model, "--target", "eventsim", "--data", recording, "--out", out + "/r.json", "--progress",
                         "false"]) == 0
print(json.dumps([sorted(warm.kernel_signatures() - before), sorted(keys(calls) - warmed), len(keys(calls))]))
"""
    done = subprocess.run([sys.executable, "-c", code, str(recording), str(tmp_path), *models], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    compiled, unwarmed, used = json.loads(done.stdout.strip().splitlines()[-1])
    assert compiled == [] and unwarmed == [] and used >= 4


# A fresh interpreter imports the commands' modules and prints, per module loaded from a file, its
# source and the bytecode file the import system reads for it.
IMPORTS = """
import json, sys, runtime.stream, runtime.run, runtime.verify, targets.eventsim  # (a target is imported when used)
print(json.dumps([[m.__file__, m.__spec__.cached] for m in list(sys.modules.values())
                  if getattr(m, "__file__", None) and getattr(m, "__spec__", None) and m.__spec__.cached]))
"""


def test_set_up_compiles_the_bytecode_of_every_module_the_commands_import(tmp_path):
    """``make setup`` compiles the packages its ``PACKAGES`` names to bytecode, which a process reads
    even where it may not write its own (``PYTHONDONTWRITEBYTECODE``): every project module that the
    stream, run and verify commands and the eventsim target import lies in those packages and gets
    bytecode of its current source (written under a ``PYTHONPYCACHEPREFIX`` here, so that the
    checkout is not touched)."""
    packages = re.search(r"^PACKAGES := (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1).split()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPYCACHEPREFIX": str(tmp_path / "pyc"),
           "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    subprocess.run([sys.executable, "-m", "compileall", "-q", *packages], cwd=ROOT, env=env, check=True, timeout=300)
    done = subprocess.run([sys.executable, "-c", IMPORTS], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    root = ROOT.resolve()
    ours = []  # (source, bytecode) of the project's modules (not the virtual environment's)
    for src, pyc in json.loads(done.stdout.strip().splitlines()[-1]):
        src = Path(src).resolve()
        if src.is_relative_to(root) and ".venv" not in src.relative_to(root).parts:
            ours.append((src, Path(pyc)))
    names = {src.relative_to(root).as_posix() for src, _ in ours}
    assert {"runtime/stream.py", "targets/plan.py", "targets/eventsim/driver.py", "inputs/formats/readers.py"} <= names
    for src, pyc in ours:
        assert pyc.is_relative_to(tmp_path / "pyc") and pyc.exists(), f"{src}: no bytecode (not in PACKAGES?)"
        head, stat = pyc.read_bytes()[:16], src.stat()
        flags, mtime, size = (int.from_bytes(head[i : i + 4], "little") for i in (4, 8, 12))
        assert (flags, mtime, size) == (0, int(stat.st_mtime) & 0xFFFFFFFF, stat.st_size & 0xFFFFFFFF), src
