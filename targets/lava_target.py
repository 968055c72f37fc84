"""The ``lava`` target: the graph on Lava's CPU simulation of Loihi 2 (``fixed_pt`` bit-accurate, or
``floating_pt``), run by :mod:`targets.lava_worker` in the Python 3.10 environment ``.venv-lava``.

lava-nc 0.10 runs on Python 3.10 only, so this process never imports Lava: it writes the graph path
and the spikes to a request ``.npz``, runs ``.venv-lava/bin/python -m targets.lava_worker`` with a
timeout, and reads the per-layer rasters back. A worker that crashes, hangs past the timeout or
reports an error becomes a :class:`LavaError` (or the project error class the worker raised) that
carries the worker's message.

Timing: Lava's Dense and Conv deliver one step later per synaptic layer (``TargetInfo.latency =
1``); results are in Lava steps, and :func:`runtime.latency.run_aligned` pads the input and shifts
them back. :func:`unavailable_reason` is the registry's availability check (``TargetInfo.available``).

LI readouts: Lava's ``floating_pt`` LIF computes in float64, the float targets in float32; their
membranes agree bit for bit only where both are exact. :func:`refusal` (``TargetInfo.refuses``)
declines a float graph whose LI membranes are not provably exact for the steps a run compares
(:func:`targets.plan.li_exact_steps`), with the reason, instead of giving a near-miss.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from core import errors
from core.errors import DataError, ModelError, SnnDeployError
from targets.plan import Plan, check_spikes, li_exact_steps, lower_convolutions
from targets.reference import RunResult, output_total

ROOT = Path(__file__).resolve().parents[1]
LAVA_PYTHON = Path(os.environ.get("SNN_DEPLOY_LAVA_PYTHON", ROOT / ".venv-lava" / "bin" / "python"))
STAMP = ROOT / ".venv-lava" / ".installed"
MISSING_NOTE = ROOT / ".venv-lava" / "missing.txt"  # written by `make setup-lava` when no Python 3.10 exists
TIMEOUT_S = float(os.environ.get("SNN_DEPLOY_LAVA_TIMEOUT", 1800))
ERROR_TAG = "lava-worker-error: "


class LavaError(SnnDeployError):
    """The Lava worker failed: the environment is missing, it crashed, hung or reported an error."""


def unavailable_reason() -> str | None:
    """Why the lava target cannot run here, or None when ``.venv-lava`` is ready."""
    if "SNN_DEPLOY_LAVA_PYTHON" in os.environ:
        return None if LAVA_PYTHON.is_file() else f"SNN_DEPLOY_LAVA_PYTHON={LAVA_PYTHON} does not exist"
    if LAVA_PYTHON.is_file() and STAMP.is_file():
        return None
    if MISSING_NOTE.is_file():
        return MISSING_NOTE.read_text().strip()
    return f"{ROOT / '.venv-lava'} is not set up: run `make setup-lava` (needs Python 3.10, as lava-nc 0.10 does)"


def run_worker(args: list[str], *, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run ``python -m <args>`` in ``.venv-lava`` from the repository root; errors become ours."""
    reason = unavailable_reason()
    if reason:
        raise LavaError(f"the lava target is unavailable: {reason}")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = str(ROOT)
    # output into files, not pipes: Lava's own processes inherit them and may outlive a failed worker,
    # which would hold a pipe open to the timeout; the worker's session is ended with it
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        worker = subprocess.Popen([str(LAVA_PYTHON), "-m", *args], cwd=ROOT, env=env, stdout=out, stderr=err,
                                  start_new_session=True)  # fmt: skip
        try:
            code = worker.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            _end_session(worker)
        out.seek(0)
        err.seek(0)
        stdout, stderr = (f.read().decode(errors="replace") for f in (out, err))
    if code is None:
        raise LavaError(f"the Lava worker ({' '.join(args[:1])}) ran past its timeout of {timeout:g} s; stderr: "
                        f"{stderr[-2000:].strip()}")  # fmt: skip
    if code != 0:
        raise worker_error(code, stderr)
    return subprocess.CompletedProcess(worker.args, code, stdout, stderr)


def _end_session(worker: subprocess.Popen) -> None:
    """Kill whatever of the worker's session is left (the worker, Lava's processes)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()


def worker_error(code: int, stderr: str) -> SnnDeployError:
    """The worker's own error line as the same project error class; a module its Python lacks, named;
    else its output's tail."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    tagged = [ln[len(ERROR_TAG) :] for ln in lines if ln.startswith(ERROR_TAG)]
    cls_name, _, msg = tagged[-1].partition(": ") if tagged else ("", "", lines[-1] if lines else "")
    missing = re.fullmatch(r"ModuleNotFoundError: No module named '([\w.]+)'", msg)
    if missing:  # (an import at the worker's start, or Lava's own import inside a run)
        return LavaError(f"the Lava worker's Python ({LAVA_PYTHON}) has no module {missing[1]!r}: make setup-lava installs "
                         "the Lava environment (or SNN_DEPLOY_LAVA_PYTHON names a Python that has it)")  # fmt: skip
    if tagged:
        cls = getattr(errors, cls_name, None)
        if isinstance(cls, type) and issubclass(cls, SnnDeployError):
            return cls(f"lava worker: {msg}")
        detail = "\n".join(ln for ln in lines if not ln.startswith(ERROR_TAG))[-3000:]
        return LavaError(f"Lava failed: {msg}" + (f"\n{detail}" if detail else ""))
    return LavaError(
        f"the Lava worker exited with status {code} (crashed?); its last output:\n" + "\n".join(lines[-15:])
    )


def _request(
    spikes: np.ndarray, fixed: bool, **paths: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float]]:
    """One worker call: the request written, the worker run, the rasters and LI membrane traces read
    back by name, and Lava's own stepping time (``seconds`` for ``steps`` steps; worker start and
    compile excluded)."""
    with tempfile.TemporaryDirectory(prefix="snn-lava-") as tmp:
        req, res = Path(tmp) / "request.npz", Path(tmp) / "result.npz"
        np.savez(req, spikes=spikes.astype(np.int32 if fixed else np.float64),
                 **{k: np.array(v) for k, v in paths.items()})  # fmt: skip
        run_worker(["targets.lava_worker", str(req), str(res)])
        if not res.is_file():
            raise LavaError(f"the Lava worker exited normally but wrote no result file {res.name}")
        with np.load(res, allow_pickle=False) as out:
            names = json.loads(str(out["names"]))
            trace_names = json.loads(str(out["trace_names"]))
            return ({k: out[f"r{i}"] for i, k in enumerate(names)}, {k: out[f"v{i}"] for i, k in enumerate(trace_names)},
                    json.loads(str(out["simulation"])))  # fmt: skip


def run_netx(path: str | Path, spikes, *, membrane: bool = False) -> np.ndarray:
    """A lava-dl netx HDF5 file run by lava-dl's ``hdf5.Network`` under ``fixed_pt``: the output
    layer's raster ``(T, B, *shape)`` in Lava steps (rows as :func:`run` returns them); with
    ``membrane`` (an LI readout) its membrane trace, int64."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"netx file {path} does not exist")
    rasters, traces, _ = _request(np.asarray(spikes), True, netx=str(path.resolve()), graph="",
                                  membrane="1" if membrane else "0")  # fmt: skip
    return (traces if membrane else rasters)["netx"]


def refusal(plan: Plan, spikes) -> str | None:
    """Why Lava would not reproduce ``plan`` bit for bit on ``spikes`` (as ``run`` receives them,
    padded by ``depth`` steps), or None: a float LI layer whose membrane is not provably exact in
    float32 for the ``T`` compared steps (Lava computes it in float64), or a graph shape that Lava's
    processes cannot express (:func:`targets.lava_worker.layers_of` names it; a Conv1d or a dilated or
    grouped Conv2d is built as a plain 2-D one, :func:`targets.plan.lower_convolutions`)."""
    from targets import get_target
    from targets.lava_worker import layers_of

    try:
        plan.require_rules(get_target("lava").rules, "lava")
        layers_of(lower_convolutions(plan))  # (as the worker builds it: plain 2-D convolutions)
    except ModelError as e:
        return str(e)
    if plan.precision != "float" or not plan.li_names:
        return None
    spikes = np.asarray(spikes)
    integral = spikes.dtype.kind in "biu" or bool(np.array_equal(spikes, np.rint(spikes)))
    steps = spikes.shape[0] - max(plan.depths().values(), default=0)
    proved = li_exact_steps(plan, float(np.abs(spikes).max(initial=0)) if integral else None)
    short = {k: v for k, v in proved.items() if v < steps}
    if not short:
        return None
    return (
        "Lava's floating_pt computes membranes in float64, the float targets in float32; LI layer(s) "
        + ", ".join(f"{k} (exact for {v} steps)" for k, v in short.items())
        + f" are not provably exact in float32 for the {steps} steps compared, so Lava could differ in the last bit; "
        "use fixed precision for Lava, or fewer steps"
    )


def run(plan: Plan, spikes, *, record: bool = False) -> RunResult:
    """``spikes (T, B, *input_shape)`` through Lava in the plan's precision; rows are Lava steps.

    Per-layer counts and output counts are over all ``T`` steps run (a layer ``d`` synaptic layers
    deep shows model step ``t`` at step ``t + d``; :func:`runtime.latency.run_aligned` feeds
    ``T + depth`` steps and aligns them, to compare with a target without latency)."""
    spikes = check_spikes(plan, spikes)
    src = Path(plan.source)
    if src.suffix != ".nir" or not src.is_file():
        raise DataError("the lava target runs a .nir file in its worker process; this plan was not loaded from a file")
    reason = refusal(plan, spikes)  # its dialect rules and the graph's shape, before any worker starts
    if reason:
        raise ModelError(f"the lava target refuses {src.name}: {reason}")
    rasters, traces, simulation = _request(spikes, plan.precision == "fixed", graph=str(src.resolve()),
                                           dt=repr(float(plan.meta["dt"])), dialect=plan.meta.get("dialect", "nir"))  # fmt: skip
    if set(rasters) != set(plan.lif_names) or set(traces) != set(plan.li_names):
        raise LavaError(f"the Lava worker returned layers {list(rasters) + list(traces)}; the graph has "
                        f"{plan.lif_names + plan.li_names}")  # fmt: skip
    T, B = spikes.shape[:2]
    layer_counts = {k: r.reshape(T, B, -1).sum(axis=(0, 2)).astype(np.int64) for k, r in rasters.items()}
    counts = output_total(plan, rasters | traces)
    return RunResult(counts, layer_counts, rasters if record else None, {"lava": simulation} if simulation else {},
                     traces=traces if record and plan.li_names else None)  # fmt: skip
