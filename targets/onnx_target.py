"""The ``onnx`` target: ONNX Runtime on the ``.onnx`` file written beside the ``.nir`` file (for a
graph that has none, or run with another ``dt``: exported from the plan on first use).

The CUDA execution provider is used when this onnxruntime has it, else the CPU. The whole-T file
(``model.onnx``) runs when its T equals the input's; otherwise the step file (``model.step.onnx``)
is stepped T times. Per-layer rasters are not exported by the ONNX files, so ``record`` yields
counts only.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DataError, first_line
from targets.plan import METADATA_KEY, Plan, check_spikes
from targets.reference import RunResult

# ---------------------------------------------------------------------------------------------
# Running a file


def onnx_session(path: str | Path, *, threads: int = 0):
    """An ONNX Runtime session on ``path``: the CUDA provider when this onnxruntime has it, else CPU.

    CUDA runs without TF32 and with cuDNN's implicit-GEMM convolution (``cudnn_conv_algo_search
    DEFAULT``): Winograd and FFT convolutions are not exact, and exactness is the point.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    providers: list = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"use_tf32": "0", "cudnn_conv_algo_search": "DEFAULT"}))
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise DataError(f"{path}: ONNX Runtime cannot load it ({type(e).__name__}: {e})") from None


def check_onnx(plan: Plan, path: str | Path, spikes: np.ndarray, *, threads: int = 0) -> dict[str, Any]:
    """Run ``spikes`` ``(T, B, *input_shape)`` through the ONNX file at ``path`` (either kind) with
    ONNX Runtime; returns ``{"counts": (B, classes) int64, "layer_counts": {lif: (B,) int64},
    "provider": name}``, to compare with :func:`targets.reference.run` (an LI readout's ``counts``
    are its scores: float64 in float precision, int64 in fixed). The step file runs ``T`` times from
    zero states, its float32 outputs added to a float64 total step by step as the reference adds them."""
    spikes = check_spikes(plan, spikes)
    x = spikes.astype(np.float32)
    sess = cached_session(path, threads)
    inputs = {i.name: i for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs()]
    lifs = plan.lif_names
    missing = sorted({f"spikes/{k}" for k in lifs} - set(names))
    if missing:
        raise DataError(f"{path} was not exported from this graph: it lacks the outputs {', '.join(missing)}")
    from convert.to_onnx import rest_states, state_names

    held = state_names(plan)
    total = "scores" if plan.scores else "counts"
    if "spikes" in inputs and inputs["spikes"].shape[:1] != [x.shape[0]]:
        raise DataError(f"{path} is unrolled for T={inputs['spikes'].shape[0]} steps; the spikes have T={x.shape[0]}")
    for name, lead in (("spikes", x.shape[:2]), ("x_t", x.shape[1:2])):
        if name in inputs:
            _check_input_shape(path, name, inputs[name].shape, (*lead, *plan.input_shape))
    if "spikes" in inputs:
        if total not in names:
            raise DataError(f"{path} was not exported from this graph: it lacks the output {total!r}")
        res = dict(zip(names, _run(sess, path, {"spikes": x})))
        counts, layers = res[total], {k: res[f"spikes/{k}"] for k in lifs}
    elif "x_t" in inputs:
        B = x.shape[1]
        feed = rest_states(plan, B)
        counts, layers = 0, dict.fromkeys(lifs, 0)
        for t in range(x.shape[0]):
            res = dict(zip(names, _run(sess, path, {"x_t": x[t], **feed})))
            counts = counts + res["out_t"].astype(np.float64)  # exact: integers below 2**53, or float32 scores
            layers = {k: layers[k] + res[f"spikes/{k}"] for k in lifs}
            feed = {f"v/{k}": res[f"v_next/{k}"] for k in held}
    else:
        raise DataError(f"{path} is not an snn-deploy ONNX file: inputs {sorted(inputs)}, expected spikes or x_t")
    if plan.scores and plan.precision == "float":
        counts = np.asarray(counts, dtype=np.float64)
    else:
        counts = np.rint(counts).astype(np.int64)
    return {"counts": counts, "layer_counts": {k: np.rint(v).astype(np.int64) for k, v in layers.items()},
            "provider": sess.get_providers()[0]}  # fmt: skip


def _check_input_shape(path: str | Path, name: str, dims: list, want: tuple[int, ...]) -> None:
    """The file's input ``name`` takes ``want``: same rank, every fixed dimension equal (named ones are free)."""
    fits = len(dims) == len(want) and all(not isinstance(d, int) or d == w for d, w in zip(dims, want))
    if not fits:
        shown = tuple(d if isinstance(d, int) else "?" for d in dims)
        raise DataError(f"{path} was not exported from this graph: its input {name!r} is shaped {shown}, the graph's "
                        f"inputs are {want}")  # fmt: skip


def _run(sess, path: str | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return sess.run(None, feeds)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise DataError(
            f"{path}: ONNX Runtime cannot run it on this graph's inputs ({type(e).__name__}: {first_line(e)})"
        ) from None


@functools.lru_cache(maxsize=8)
def _session(path: str, mtime_ns: int, threads: int):
    return onnx_session(path, threads=threads)


def cached_session(path: str | Path, threads: int = 0):
    """One ONNX Runtime session per file for all the batches a run feeds it (keyed by
    modification time, so a rewritten file is loaded again)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"ONNX file {path} does not exist")
    return _session(str(path), path.stat().st_mtime_ns, threads)


def _recorded_dt(path: Path, threads: int) -> float | None:
    meta = cached_session(path, threads).get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    try:
        return None if meta is None else json.loads(meta).get("dt")
    except (ValueError, AttributeError):
        raise DataError(f"{path}: its '{METADATA_KEY}' metadata is not a JSON object") from None


def onnx_files(plan: Plan, threads: int = 0) -> tuple[Path, Path]:
    """The whole-T and step files to run: those written beside the ``.nir`` file when they were
    exported with the plan's ``dt``; else (a graph another library wrote, or ``--dt`` changed) both
    exported from the plan once into a temporary folder that lives as long as the process."""
    src = Path(plan.source)
    whole, step = src.with_suffix(".onnx"), src.with_suffix(".step.onnx")
    if src.suffix == ".nir" and src.is_file():
        written = [p for p in (whole, step) if p.is_file()]
        if written and all(_recorded_dt(p, threads) == plan.meta.get("dt") for p in written):
            return whole, step
    if "onnx_files" not in plan.prepared:
        from convert.to_onnx import export_onnx, export_step_onnx

        folder = Path(tempfile.mkdtemp(prefix="snn-onnx-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        name = src.stem if src.suffix == ".nir" else "graph"
        whole, step = folder / f"{name}.onnx", folder / f"{name}.step.onnx"
        export_step_onnx(plan, step)
        if plan.steps:
            export_onnx(plan, whole)
        plan.prepared["onnx_files"] = (whole, step)
    return plan.prepared["onnx_files"]


def run(plan: Plan, spikes, *, record: bool = False, threads: int = 0) -> RunResult:
    whole, step = onnx_files(plan, threads)
    path = step
    if whole.is_file() and cached_session(whole, threads).get_inputs()[0].shape[0] == np.asarray(spikes).shape[0]:
        path = whole
    if not path.is_file():
        raise DataError(f"the onnx target needs {whole.name} or {step.name} beside {Path(plan.source).name}; "
                        "convert with python -m convert.to_nir ... --onnx true")  # fmt: skip
    res = check_onnx(plan, path, spikes, threads=threads)
    return RunResult(res["counts"], res["layer_counts"], None)


class Stream:
    """``model.step.onnx`` stepped one time step at a time, membranes kept between calls (streaming)."""

    def __init__(self, plan: Plan, threads: int = 0) -> None:
        _, step = onnx_files(plan, threads)
        self.plan, self.sess, self.path = plan, cached_session(step, threads), step
        inputs = {i.name: i.shape for i in self.sess.get_inputs()}
        if "x_t" not in inputs:
            raise DataError(f"{step} is not an snn-deploy step file: inputs {sorted(inputs)}, expected x_t")
        _check_input_shape(step, "x_t", inputs["x_t"], (1, *plan.input_shape))
        self.names = [o.name for o in self.sess.get_outputs()]
        from convert.to_onnx import state_names

        self.held = state_names(plan)  # the membranes and delay memories the step file carries
        self.reset()

    def reset(self) -> None:
        from convert.to_onnx import rest_states

        self.feed_state = rest_states(self.plan, 1)

    def feed(self, spikes: np.ndarray) -> np.ndarray:
        """Advance by ``spikes`` shaped ``(t, *input_shape)``; returns the output spike counts (classes,),
        or an LI readout's scores over these steps (float64 in float precision)."""
        x = np.asarray(spikes, dtype=np.float32)
        counts = np.zeros(1)
        for t in range(x.shape[0]):
            res = dict(zip(self.names, _run(self.sess, self.path, {"x_t": x[t][None], **self.feed_state})))
            counts = counts + res["out_t"].astype(np.float64)
            self.feed_state = {f"v/{k}": res[f"v_next/{k}"] for k in self.held}
        counts = np.asarray(counts).reshape(-1)
        return counts if self.plan.scores and self.plan.precision == "float" else np.rint(counts).astype(np.int64)


def stream(plan: Plan, *, threads: int = 0) -> Stream:
    return Stream(plan, threads)
