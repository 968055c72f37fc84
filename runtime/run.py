"""``python -m runtime.run model.nir --target NAME``: run a graph on one target and report.

Prints and writes (JSON) accuracy, per-layer spike counts (total, per sample, and per time step
with ``--per-step``), synaptic operations (NeuroBench effective accumulates), activation
sparsity, wall time and samples per second. A target with a per-layer latency (Lava) runs
``T + depth`` steps and is aligned back (:mod:`runtime.latency`), so its counts are the model's.

Predictions are the ``argmax`` of the class scores: output spike counts, or for an LI readout the
per-class membrane summed over T. A tied maximum goes to the lowest class index among the tied
classes; the report counts such samples (and samples without any output spike), and one warning
line names every class that never fires (spike readouts) or never wins on the evaluated samples.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.config import parse_config
from core.errors import ConfigError, SnnDeployError, error_line
from core.fileio import writable_file, write_json_atomic
from inputs import CACHE_DIR, CACHE_DIR_HELP, SPLITS
from inputs.graph_data import command_inputs
from runtime.metrics import TIE_RULE, activation_sparsity, prediction_stats, prediction_warning, synaptic_operations
from runtime.parallel import WORKERS_RULE, open_pool, resolve_workers
from targets import DEVICES, TARGETS, require_target
from targets.plan import DIALECTS, Plan, load_plan
from targets.reference import RunResult, join_results


@dataclass
class RunConfig:
    graph: str = field(default="", metadata={"help": "the .nir file", "positional": True})
    target: str = field(default="torch", metadata={"help": "target: " + ", ".join(TARGETS)})
    data: str | None = field(
        default=None, metadata={"help": "dataset name or event file (default: the dataset the graph records)"}
    )
    data_root: str | None = field(default=None, metadata={"help": "local folder of a real dataset"})
    split: str = field(
        default="test",
        metadata={
            "help": "dataset split; all: every sample (a labelled folder evaluated whole)",
            "choices": list(SPLITS),
        },
    )
    samples: int | None = field(default=None, metadata={"min": 1, "help": "run only the first N samples"})
    dt: float | None = field(default=None, metadata={"positive": True, "help": "time step in s (default: the graph's; 1e-3 for a graph that states none)"})  # fmt: skip
    steps: int | None = field(
        default=None, metadata={"min": 1, "help": "time steps per sample (default: the graph's T)"}
    )
    dialect: str | None = field(default=None, metadata={"help": "run the graph as the library that wrote it does: " + ", ".join(DIALECTS) + " (default: nir, NIR's own semantics)"})  # fmt: skip
    bin_us: int | None = field(default=None, metadata={"min": 1, "help": "µs per time step when binning events (default: the graph's recorded binning)"})  # fmt: skip
    batch_size: int = field(default=64, metadata={"min": 1, "help": "samples per target call"})
    per_step: bool = field(default=False, metadata={"help": "also report spike counts per time step"})
    out: str | None = field(default=None, metadata={"help": "JSON report path (default: <graph>.<target>.run.json)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    cache_dir: str | None = field(default=CACHE_DIR, metadata={"help": CACHE_DIR_HELP})
    device: str = field(
        default="auto",
        metadata={"help": "torch target: auto (CUDA when present), cpu or cuda", "choices": list(DEVICES)},
    )
    workers: int | None = field(default=None, metadata={"min": 1, "help": "worker processes the batches are spread over (" + WORKERS_RULE + ")"})  # fmt: skip
    cluster: str = field(default="local", metadata={"help": "local (this machine's cores), ray (RAY_ADDRESS, else a local Ray instance) or ray://host:port"})  # fmt: skip


def run_batches(
    info, plan: Plan, spikes: np.ndarray, batch_size: int, record: bool, progress: bool, desc: str, device: str = "auto",
    pool=None, margins: bool = False,
) -> tuple[RunResult, float]:  # fmt: skip
    """Run ``spikes`` through a target in batches, aligned to model steps when the target has a
    per-layer latency; returns the joined result and the wall time. With a ``pool``
    (:func:`runtime.parallel.open_pool`) the same batches run in its workers, which load the plan
    from ``plan.source`` with the plan's own dt, steps and dialect; results are joined in sample
    order. ``margins``: the reference with its threshold margins (``info`` is then the reference)."""
    from tqdm import tqdm

    from runtime.parallel import BatchJob, batch_name, map_ordered, run_batch, run_one

    options = {"device": device} if "device" in info.options else {}
    n = spikes.shape[1]
    starts = list(range(0, n, batch_size))
    names = [batch_name(s, min(s + batch_size, n), info.name) for s in starts]
    t0 = time.perf_counter()
    with tqdm(total=n, desc=desc, unit="sample", disable=not progress, file=sys.stderr, leave=False) as bar:
        done = lambda i, _: bar.update(min(batch_size, n - starts[i]))  # noqa: E731
        if pool is None:
            one = lambda s: run_one(info, plan, spikes[:, s : s + batch_size], record=record, margins=margins,  # noqa: E731
                                    options=options)  # fmt: skip
            parts = map_ordered(None, one, [(s,) for s in starts], names, done)
        else:
            job = BatchJob(str(Path(plan.source).resolve()), info.name, dt=plan.meta["dt"], steps=plan.meta.get("T"),
                           dialect=plan.meta.get("dialect"), record=record, margins=margins, options=options)  # fmt: skip
            parts = map_ordered(pool, run_batch, [(job, spikes[:, s : s + batch_size]) for s in starts], names, done)
    return join_results(parts), time.perf_counter() - t0


def predictions(counts: np.ndarray) -> np.ndarray:
    """The class with the highest score (most output spikes, or the largest summed LI membrane); a tied
    maximum goes to the lowest class index among the tied classes (``argmax``), deterministically."""
    return counts.argmax(axis=1)


def output_report(plan: Plan, counts: np.ndarray) -> dict[str, Any]:
    """What the output is, its mean per class, and the ties and dead classes behind the predictions."""
    kind = plan.output_kind
    stats = prediction_stats(counts, spike_readout=kind == "spike counts")
    what = {
        "scores": "per-class membrane of the LI readout summed over T",
        "spike counts": "per-class output spikes over T",
        "values": "per-class values of a layer that is not a neuron layer, each step's truncated to an integer, summed over T",
    }[kind]
    return {"kind": kind, "what": what, "mean_per_class": np.asarray(counts, dtype=np.float64).mean(axis=0).tolist(),
            "predictions": stats, "warning": prediction_warning(stats, len(counts))}  # fmt: skip


def report_run(plan: Plan, target: str, spikes: np.ndarray, labels: np.ndarray | None, result: RunResult,
               wall: float, per_step: bool) -> dict[str, Any]:  # fmt: skip
    T, n = spikes.shape[:2]
    pred = predictions(result.counts)
    rep: dict[str, Any] = {
        "graph": plan.source, "target": target, "precision": plan.precision, "T": T, "samples": n,
        "accuracy": float((pred == labels).mean()) if labels is not None else None,
        "predictions": pred.tolist(), "output": output_report(plan, result.counts),
        "layers": {k: {"total": int(v.sum()), "per_sample": float(v.mean()),
                       "rate": float(v.mean() / (T * np.prod(plan.node(k).out_shape)))} for k, v in result.layer_counts.items()},
        "activation_sparsity": activation_sparsity(plan, result.layer_counts, T),
        "wall_s": wall, "samples_per_s": n / wall if wall > 0 else None,
    }  # fmt: skip
    if result.rasters is not None:
        ops = synaptic_operations(plan, spikes, result.rasters, result.traces)
        rep["synaptic_operations"] = {"per_sample": float(sum(v.sum() for v in ops.values()) / n),
                                      "per_layer_per_sample": {k: float(v.mean()) for k, v in ops.items()}}  # fmt: skip
        if per_step:
            for k, r in result.rasters.items():
                rep["layers"][k]["per_step"] = r.reshape(T, -1).sum(axis=1).tolist()
    else:
        rep["synaptic_operations"] = None  # the target returns no rasters to count them from
        rep["note"] = f"the {target} target returns no per-layer rasters: no synaptic operations or per-step counts"
    return rep


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_config(RunConfig, argv, "python -m runtime.run", __doc__)
        info = require_target(cfg.target, ("device",) if cfg.device != "auto" else ())
        if cfg.per_step and not info.rasters:  # (it was ignored, with a note in the report only)
            raise ConfigError(f"--per-step counts each layer's spikes per step from its rasters, which the "
                              f"{cfg.target} target does not return")  # fmt: skip
        out = writable_file(cfg.out or Path(cfg.graph).with_suffix(f".{cfg.target}.run.json"), "--out",
                            {"the graph": cfg.graph, "the --data file": cfg.data})  # fmt: skip
        plan = load_plan(cfg.graph, dt=cfg.dt, steps=cfg.steps, dialect=cfg.dialect)
        if plan.precision not in info.precisions:
            raise ConfigError(
                f"target {cfg.target!r} runs {', '.join(info.precisions)} precision; {cfg.graph} is {plan.precision}"
            )
        spikes, labels, what = command_inputs(plan, cfg)
        record = info.rasters
        workers = resolve_workers(cfg.workers, spikes.shape[1], cfg.batch_size, cfg.cluster)
        with open_pool(workers, cfg.cluster, [info.module]) as pool:
            workers = pool.workers if pool is not None else 1
            result, wall = run_batches(info, plan, spikes, cfg.batch_size, record, cfg.progress, f"{cfg.target}",
                                       cfg.device, pool=pool)  # fmt: skip
        rep = report_run(plan, cfg.target, spikes, labels, result, wall, cfg.per_step) | {
            "data": what, "workers": workers, "cluster": cfg.cluster}  # fmt: skip
        write_json_atomic(out, rep)
    except (SnnDeployError, OSError, MemoryError) as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the workers were stopped and no report was written", file=sys.stderr)
        return 130
    acc = f"{100 * rep['accuracy']:.2f}%" if rep["accuracy"] is not None else "n/a (no labels)"
    print(f"{cfg.target} on {what}, {plan.precision} precision, T={rep['T']}: accuracy {acc}")
    for k, v in rep["layers"].items():
        print(f"  {k:<24} {v['per_sample']:12.1f} spikes/sample  rate {v['rate']:.4f}")
    outp, st = rep["output"], rep["output"]["predictions"]
    silent = f", {st['silent_samples']} without any output spike" if "silent_samples" in st else ""
    print(f"  output: {outp['kind']} ({outp['what']}); {st['tied_samples']} of {rep['samples']} samples with a tied "
          f"maximum{silent} ({TIE_RULE})")  # fmt: skip
    if outp["warning"]:
        print(outp["warning"])
    if rep["synaptic_operations"]:
        print(f"  synaptic operations      {rep['synaptic_operations']['per_sample']:12.0f} per sample")
    sparsity = rep["activation_sparsity"]
    print(f"  activation sparsity      {'n/a (no spiking layer)' if sparsity is None else f'{sparsity:.4f}'}")
    print(
        f"  wall {rep['wall_s']:.3f} s, {rep['samples_per_s']:.1f} samples/s, {rep['workers']} worker(s) ({rep['cluster']})"
    )
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
