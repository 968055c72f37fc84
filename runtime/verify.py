"""``python -m runtime.verify model.nir --targets torch,onnx,norse``: prove that targets agree.

Every named target runs the same inputs as the reference (:mod:`targets.reference`, which defines
the semantics). Per target: accuracy, per-layer spike counts, predictions, timing; against the
reference: identical predictions, per-layer spike-count differences, identical rasters, and the
first divergence (sample, layer, time step) after aligning the target's per-layer latency (a
target that delivers spikes ``latency`` steps later per synaptic layer, as Lava's Dense and Conv
do, runs ``T + depth * latency`` steps and each layer is shifted back by its depth; see
:mod:`runtime.latency`). ``--targets all`` runs every target that supports the graph and can run
on this machine; the others are skipped with their reason, which the report records. A target
named explicitly that cannot run here is an error that gives the reason.

Tolerances (stated in the report): fixed precision must match exactly. Float precision must give
identical output counts, layer counts and rasters, except in samples whose first divergence the
report traces to float rounding at a threshold tie (the reference membrane within a few float32
ulps of the threshold); those are counted and shown, never silently absorbed. The command exits
1 on any failure and names the target, layer and sample.

An LI readout (non-spiking): its per-class scores (membrane summed over T) and membrane traces are
compared exactly in both precisions. In float precision every float32 target follows the
reference's operations and sums the same float32 membranes in step order; Lava (float64) runs
only graphs whose LI membranes are provably exact (:func:`targets.plan.li_exact_steps`; otherwise
``--targets all`` skips it with the reason). An LI has no threshold, so a divergence that starts
in its membrane is never a threshold tie; one that starts at a tie in a spiking layer below it is.

Predictions are the ``argmax`` of the class scores, a tied maximum going to the lowest class
index; per target the report counts tied maxima and samples without any output spike and names
classes that never fire or never win.

Writes ``report.json``, ``report.md`` and PNG plots (spike counts per layer and target; a spike
raster of one sample per target; agreement per layer and target) into ``--out``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.config import parse_config
from core.errors import ConfigError, SnnDeployError, error_line
from core.fileio import (
    exclusive,
    save_figure,
    writable_folder,
    write_json_atomic,
    write_text_atomic,
)
from inputs import CACHE_DIR, CACHE_DIR_HELP, SPLITS
from inputs.graph_data import command_inputs
from runtime.latency import extra_steps
from runtime.metrics import TIE_RULE
from runtime.parallel import WORKERS_RULE, open_pool, resolve_workers
from runtime.run import output_report, predictions, run_batches
from targets import DEVICES, TARGETS, require_target
from targets.plan import DIALECTS, Plan, li_exact_steps, load_plan
from targets.reference import RunResult

TIE_ULPS = 8  # a membrane within this many float32 ulps of its threshold is a tie
DECLINES = "declines this graph: "  # a skipped target's reason when it can run here but not this graph exactly


@dataclass
class VerifyConfig:
    graph: str = field(default="", metadata={"help": "the .nir file", "positional": True})
    targets: str = field(
        default="torch,onnx,norse",
        metadata={
            "help": "comma-separated targets (known: "
            + ", ".join(TARGETS)
            + "); 'all' for every one that supports the graph and can run here"
        },
    )
    data: str | None = field(
        default=None, metadata={"help": "dataset name or event file (default: the dataset the graph records)"}
    )
    data_root: str | None = field(default=None, metadata={"help": "local folder of a real dataset"})
    split: str = field(
        default="test",
        metadata={
            "help": "dataset split; all: every sample (a labelled folder verified whole)",
            "choices": list(SPLITS),
        },
    )
    samples: int | None = field(default=128, metadata={"min": 1, "help": "number of samples (None: all)"})
    dt: float | None = field(default=None, metadata={"positive": True, "help": "time step in s (default: the graph's; 1e-3 for a graph that states none)"})  # fmt: skip
    steps: int | None = field(
        default=None, metadata={"min": 1, "help": "time steps per sample (default: the graph's T)"}
    )
    dialect: str | None = field(default=None, metadata={"help": "run the graph as the library that wrote it does: " + ", ".join(DIALECTS) + " (default: nir, NIR's own semantics)"})  # fmt: skip
    bin_us: int | None = field(default=None, metadata={"min": 1, "help": "µs per time step when binning events (default: the graph's recorded binning)"})  # fmt: skip
    batch_size: int = field(default=64, metadata={"min": 1, "help": "samples per target call"})
    out: str | None = field(
        default=None, metadata={"help": "report folder (default: <graph>.verify/ beside the graph)"}
    )
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    cache_dir: str | None = field(default=CACHE_DIR, metadata={"help": CACHE_DIR_HELP})
    device: str = field(
        default="auto",
        metadata={"help": "torch target: auto (CUDA when present), cpu or cuda", "choices": list(DEVICES)},
    )
    workers: int | None = field(default=None, metadata={"min": 1, "help": "worker processes each target's batches are spread over (" + WORKERS_RULE + ")"})  # fmt: skip
    cluster: str = field(default="local", metadata={"help": "local (this machine's cores), ray (RAY_ADDRESS, else a local Ray instance) or ray://host:port"})  # fmt: skip


def first_divergence(plan: Plan, ref: RunResult, got: RunResult, sample: int) -> dict[str, Any] | None:
    """Earliest (step, layer in plan order, neuron) where the target's raster (or LI membrane trace)
    leaves the reference's."""
    best = None
    for layer in [n.name for n in plan.nodes if n.kind in ("lif", "li")]:
        li = plan.node(layer).kind == "li"
        ref_r, got_r = (ref.traces, got.traces) if li else (ref.rasters, got.rasters)
        if got_r is None or layer not in got_r:
            continue
        a, b = ref_r[layer][:, sample], got_r[layer][:, sample]
        diff = np.argwhere((a != b).reshape(a.shape[0], -1))
        if len(diff):
            t, i = int(diff[0][0]), int(diff[0][1])
            if best is None or t < best["step"]:
                best = {"sample": sample, "layer": layer, "step": t, "neuron": i}
                if li:
                    best |= {"reference_v": float(a.reshape(a.shape[0], -1)[t, i]),
                             "target_v": float(b.reshape(b.shape[0], -1)[t, i])}  # fmt: skip
                else:
                    best["reference_spiked"] = bool(a.reshape(a.shape[0], -1)[t, i])
    return best


def is_tie(plan: Plan, ref: RunResult, div: dict[str, Any]) -> bool:
    """Whether a divergence starts at a threshold tie (float precision, a spiking layer only)."""
    if plan.precision != "float" or plan.node(div["layer"]).kind != "lif":
        return False
    margin = ref.margins[div["layer"]][div["step"], div["sample"]].reshape(-1)[div["neuron"]]
    theta = float(plan.node(div["layer"]).params["v_threshold"].reshape(-1)[div["neuron"]])
    return abs(margin) <= TIE_ULPS * np.finfo(np.float32).eps * max(1.0, abs(theta))


def compare(plan: Plan, ref: RunResult, got: RunResult, labels) -> dict[str, Any]:
    same_counts = (got.counts == ref.counts).all(axis=1)
    layer_same = {k: got.layer_counts[k] == ref.layer_counts[k] for k in ref.layer_counts}
    rec: dict[str, Any] = {
        "identical_predictions": float((predictions(got.counts) == predictions(ref.counts)).mean()),
        "identical_output_counts": float(same_counts.mean()),
        "layer_count_abs_difference": {k: int(np.abs(got.layer_counts[k] - ref.layer_counts[k]).sum()) for k in ref.layer_counts},
        "layer_identical_fraction": {k: float(v.mean()) for k, v in layer_same.items()},
    }  # fmt: skip
    bad = ~same_counts
    for v in layer_same.values():
        bad |= ~v
    if got.rasters is not None:
        raster_same = np.ones(len(same_counts), dtype=bool)
        for k in ref.rasters:
            raster_same &= (
                (got.rasters[k] == ref.rasters[k])
                .reshape(got.rasters[k].shape[0], len(same_counts), -1)
                .all(axis=(0, 2))
            )
        rec["identical_rasters"] = float(raster_same.mean())
        bad |= ~raster_same
    if got.traces is not None and ref.traces:
        trace_same = {
            k: (got.traces[k] == ref.traces[k]).reshape(got.traces[k].shape[0], len(same_counts), -1).all(axis=(0, 2))
            for k in ref.traces
        }
        rec["li_identical_traces"] = {k: float(v.mean()) for k, v in trace_same.items()}
        for v in trace_same.values():
            bad |= ~v
    ties, failures, first = [], [], None
    for s in np.flatnonzero(bad):
        div = first_divergence(plan, ref, got, int(s)) if got.rasters is not None else None
        if div is None:
            layer = next((k for k, v in layer_same.items() if not v[s]), "output")
            div = {"sample": int(s), "layer": layer, "step": None, "neuron": None}
        if first is None:
            first = div
        if got.rasters is not None and div.get("step") is not None and is_tie(plan, ref, div):
            ties.append(div)
        else:
            failures.append(div)
    rec["first_divergence"] = first
    rec["threshold_tie_samples"] = len(ties)
    rec["ties"] = ties[:20]
    rec["failed_samples"] = len(failures)
    rec["failures"] = failures[:20]
    rec["passed"] = not failures
    if labels is not None:
        rec["accuracy"] = float((predictions(got.counts) == labels).mean())
    return rec


def _input_max(spikes: np.ndarray) -> float | None:
    """The largest input count when the inputs are integers (the grid the exactness proof needs)."""
    return float(np.abs(spikes).max(initial=0)) if np.array_equal(spikes, np.rint(spikes)) else None


def plots(out: Path, plan: Plan, results: dict[str, RunResult], comparisons: dict[str, dict], sample: int) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    layers = plan.lif_names
    names = list(results)
    if layers:
        written += _spike_plots(out, layers, results, sample)
    # 3. agreement per layer and target (LI layers: identical membrane traces)
    targets = [t for t in names if t != "reference"]
    layers = layers + plan.li_names
    if layers:
        written.append(_agreement_plot(out, plan, layers, targets, comparisons))
    # 4. an LI readout's scores: mean per class and target
    if plan.scores:
        fig, ax = plt.subplots(figsize=(1.6 + 0.6 * results["reference"].counts.shape[1], 3.4))
        classes = np.arange(results["reference"].counts.shape[1])
        width = 0.8 / len(names)
        for j, t in enumerate(names):
            ax.bar(classes + j * width, np.asarray(results[t].counts, dtype=np.float64).mean(axis=0), width, label=t)
        ax.set_xticks(classes + 0.4 - width / 2, [str(c) for c in classes], fontsize=8)
        ax.set(xlabel="class", ylabel="mean score", title="LI readout scores (membrane summed over T) per class")
        ax.axhline(0, color="k", lw=0.5)
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, out / "scores.png"))
    return written


def _spike_plots(out: Path, layers: list[str], results: dict[str, RunResult], sample: int) -> list[str]:
    """1. spike counts per layer and target; 2. a raster of one sample per target that returns rasters."""
    import matplotlib.pyplot as plt

    written = []
    names = list(results)
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(layers), 3.6))
    width = 0.8 / len(names)
    for j, t in enumerate(names):
        vals = [results[t].layer_counts[k].mean() for k in layers]
        ax.bar(np.arange(len(layers)) + j * width, vals, width, label=t)
    ax.set_xticks(np.arange(len(layers)) + 0.4 - width / 2)
    ax.set_xticklabels(layers, fontsize=8)
    ax.set(ylabel="spikes per sample", yscale="log", title="spike counts per layer and target")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    written.append(_save(fig, out / "spike_counts.png"))
    # 2. raster of one sample per target (targets that return rasters)
    with_r = [t for t in names if results[t].rasters is not None]
    fig, axes = plt.subplots(len(with_r), len(layers), figsize=(3.2 * len(layers), 2.0 * len(with_r)), squeeze=False)
    for i, t in enumerate(with_r):
        for j, k in enumerate(layers):
            r = results[t].rasters[k][:, sample].reshape(results[t].rasters[k].shape[0], -1)
            ts, ns = np.nonzero(r)
            axes[i, j].scatter(ts, ns, s=1.5, marker="|", color="k")
            axes[i, j].set(xlim=(-0.5, r.shape[0] - 0.5), ylim=(-0.5, r.shape[1] - 0.5))
            axes[i, j].tick_params(labelsize=6)
            if i == 0:
                axes[i, j].set_title(k, fontsize=8)
            if j == 0:
                axes[i, j].set_ylabel(f"{t}\nneuron", fontsize=8)
            if i == len(with_r) - 1:
                axes[i, j].set_xlabel("time step", fontsize=8)
    fig.suptitle(f"spike raster of sample {sample}", fontsize=9)
    fig.tight_layout()
    written.append(_save(fig, out / "rasters.png"))
    return written


def _agreement_plot(out: Path, plan: Plan, layers: list[str], targets: list[str], comparisons: dict[str, dict]) -> str:
    import matplotlib.pyplot as plt

    def agreement(c: dict, k: str) -> float:
        if k in c["layer_identical_fraction"]:
            return c["layer_identical_fraction"][k]
        return c.get("li_identical_traces", {}).get(k, c["identical_output_counts"])

    grid = np.array([[agreement(comparisons[t], k) for k in layers] for t in targets])
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(layers), 0.8 + 0.5 * len(targets)))
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    for i in range(len(targets)):
        for j in range(len(layers)):
            ax.text(j, i, f"{100 * grid[i, j]:.1f}%", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(layers)), layers, fontsize=8)
    ax.set_yticks(range(len(targets)), targets, fontsize=8)
    title = "samples with layer spike counts identical to the reference"
    ax.set_title(title + (" (LI: membrane traces)" if plan.li_names else ""), fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    return _save(fig, out / "agreement.png")


def _save(fig, path: Path) -> str:
    return save_figure(fig, path)


def markdown(rep: dict[str, Any]) -> str:
    lines = [f"# Verification of `{rep['graph']}`", "",
             f"{rep['precision']} precision, T={rep['T']}, {rep['samples']} samples of {rep['data']}.", "",
             f"Tolerance: {rep['tolerance']}", "",
             f"Ran on {rep['workers']} worker process(es) ({rep['cluster']}); batches and results do not depend on it.", "",
             f"| target | accuracy | identical predictions | identical output {'scores' if rep['output'] == 'scores' else 'counts'} | identical rasters | tie samples | failed samples | samples/s | result |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for t, r in rep["targets"].items():
        c = r.get("comparison", {})
        acc = f"{100 * r['accuracy']:.2f}%" if r.get("accuracy") is not None else "-"
        rast = f"{100 * c['identical_rasters']:.1f}%" if "identical_rasters" in c else "n/a"
        res = "reference" if t == "reference" else ("PASS" if c["passed"] else "FAIL")
        lines.append(
            f"| {t} | {acc} | {100 * c.get('identical_predictions', 1):.1f}% | {100 * c.get('identical_output_counts', 1):.1f}% | "
            f"{rast if t != 'reference' else '-'} | {c.get('threshold_tie_samples', 0)} | {c.get('failed_samples', 0)} | "
            f"{r['samples_per_s']:.1f} | {res} |"
        )
    if rep["layers"]:
        lines += [
            "",
            "Spikes per sample by layer:",
            "",
            "| target | " + " | ".join(rep["layers"]) + " |",
            "|---" * (len(rep["layers"]) + 1) + "|",
        ]
    for t, r in rep["targets"].items() if rep["layers"] else ():
        lines.append(f"| {t} | " + " | ".join(f"{r['spikes_per_sample'][k]:.1f}" for k in rep["layers"]) + " |")
    lines += ["", f"Predictions ({rep['output']}): {rep['tie_rule']}.", ""]
    for t, r in rep["targets"].items():
        st = r["prediction_stats"]
        silent = f", {st['silent_samples']} without any output spike" if "silent_samples" in st else ""
        dead = [f"never fire: {st['never_firing_classes']}"] if st.get("never_firing_classes") else []
        dead += [f"never win: {st['never_winning_classes']}"] if st["never_winning_classes"] else []
        lines.append(f"- {t}: {st['tied_samples']} samples with a tied maximum{silent}"
                     + (f"; classes that {'; '.join(dead)}" if dead else ""))  # fmt: skip
    for t, reason in rep.get("skipped", {}).items():
        why = reason if reason.startswith(DECLINES) else f"unavailable on this machine ({reason})"
        lines.append(f"\nSkipped {t}: {why}.")
    for t, r in rep["targets"].items():
        div = r.get("comparison", {}).get("first_divergence")
        if div:
            lines.append(
                f"\nFirst divergence of {t}: sample {div['sample']}, layer {div['layer']}, step {div['step']}, neuron {div['neuron']}."
            )
    if rep["plots"]:
        lines += ["", "Plots: " + ", ".join(f"`{Path(p).name}`" for p in rep["plots"]), ""]
    return "\n".join(lines)


def _required(names: list[str], plan: Plan, cfg: VerifyConfig) -> dict[str, Any]:
    """The named targets' registry entries; an unknown name, a precision a target does not run, no
    target to compare with the reference, or a ``--device`` none of them takes is a :class:`ConfigError`."""
    infos = {t: require_target(t) for t in names}
    for t, info in infos.items():
        if plan.precision not in info.precisions:
            raise ConfigError(
                f"target {t!r} runs {', '.join(info.precisions)} precision; {cfg.graph} is {plan.precision}"
            )
    if not infos:
        others = ", ".join(t for t in TARGETS if t != "reference")
        raise ConfigError(f"--targets names no target to compare with the reference, which always runs: name one or "
                          f"more of {others}, or all")  # fmt: skip
    if cfg.device != "auto" and not any("device" in info.options for info in infos.values()):
        raise ConfigError(
            f"--device does not apply to target(s) {', '.join(infos)}: it chooses the torch target's device"
        )
    return infos


def report_folder(cfg: VerifyConfig) -> Path:
    """Where the report goes: ``--out``, else ``<graph>.verify`` beside the graph."""
    return Path(cfg.out or Path(cfg.graph).with_suffix(".verify"))


def verify(cfg: VerifyConfig) -> dict[str, Any]:
    out = writable_folder(report_folder(cfg), "--out")
    # a second verification into the folder would leave one run's report.md beside another's report.json
    with exclusive(f"{out.resolve()}/runtime.verify", f"the report in {out}"):
        return _verify(cfg, out)


def _verify(cfg: VerifyConfig, out: Path) -> dict[str, Any]:
    plan = load_plan(cfg.graph, dt=cfg.dt, steps=cfg.steps, dialect=cfg.dialect)
    # each target once; the reference is always run, as what the others are compared with
    names = [t for t in dict.fromkeys(t.strip() for t in cfg.targets.split(",")) if t and t != "reference"]
    if names != ["all"]:  # a wrong name or precision is told before any input is read (or emulated)
        _required(names, plan, cfg)
    skipped: dict[str, str] = {}  # target -> why it did not run here
    spikes, labels, what = command_inputs(plan, cfg)
    if names == ["all"]:
        names = []
        for t, i in TARGETS.items():
            if t == "reference":
                continue
            reason = i.unsupported(plan)
            reason = reason and f"{DECLINES}{reason}"
            if reason:
                skipped[t] = reason
                print(f"skipping target {t}: {reason}", file=sys.stderr)
                continue
            reason = i.unavailable_reason()
            if not reason:  # a target may decline this graph (Lava: float LI membranes it cannot match bit for bit)
                pad = np.zeros((extra_steps(plan, i.latency), *spikes.shape[1:]), spikes.dtype)
                declined = i.refusal(plan, np.concatenate([spikes, pad]))
                reason = declined and f"{DECLINES}{declined}"
            if reason:
                skipped[t] = reason
                print(f"skipping target {t}: {reason}", file=sys.stderr)
            else:
                names.append(t)
    if not names:
        raise ConfigError("no target but the reference can run this graph here: " +
                          "; ".join(f"{t}: {why}" for t, why in skipped.items()))  # fmt: skip
    infos = _required(names, plan, cfg)
    results: dict[str, RunResult] = {}
    timing: dict[str, float] = {}
    workers = resolve_workers(cfg.workers, spikes.shape[1], cfg.batch_size, cfg.cluster)
    with open_pool(workers, cfg.cluster, [i.module for i in infos.values()]) as pool:
        workers = pool.workers if pool is not None else 1
        # the reference with margins and rasters kept: slower than a plain run
        ref, timing["reference"] = run_batches(TARGETS["reference"], plan, spikes, cfg.batch_size, True, cfg.progress,
                                               "reference", pool=pool, margins=True)  # fmt: skip
        for t, info in infos.items():
            results[t], timing[t] = run_batches(info, plan, spikes, cfg.batch_size, info.rasters, cfg.progress, t,
                                                cfg.device, pool=pool)  # fmt: skip
    results = {"reference": ref} | results
    li_note = ""
    if plan.li_names:
        li_note = ("; LI readout scores and membrane traces exact too" + (
            f" (float: every target sums the same float32 membranes in step order; provably exact in float32 for "
            f"{min(li_exact_steps(plan, _input_max(spikes)).values())} steps from rest, {spikes.shape[0]} compared)"
            if plan.precision == "float" else ""))  # fmt: skip
    rep: dict[str, Any] = {
        "graph": cfg.graph, "precision": plan.precision, "T": int(spikes.shape[0]), "samples": int(spikes.shape[1]), "data": what,
        "layers": plan.lif_names, "li_layers": plan.li_names, "output": plan.output_kind,
        "tie_rule": TIE_RULE,
        "tolerance": ("exact: every output count, layer count and raster equal to the reference" if plan.precision == "fixed" else
                      f"exact, except samples whose first divergence is a threshold tie (reference membrane within {TIE_ULPS} float32 ulps of the threshold), which are counted and listed") + li_note,
        "targets": {}, "skipped": skipped, "workers": workers, "cluster": cfg.cluster,
    }  # fmt: skip
    comparisons = {t: compare(plan, ref, results[t], labels) for t in infos}
    sample = int(np.argmax(sum(v for v in ref.layer_counts.values())))  # the busiest sample shows most
    for t, r in results.items():
        outp = output_report(plan, r.counts)
        entry = {"accuracy": float((predictions(r.counts) == labels).mean()) if labels is not None else None,
                 "spikes_per_sample": {k: float(v.mean()) for k, v in r.layer_counts.items()},
                 "predictions": predictions(r.counts).tolist(), "prediction_stats": outp["predictions"],
                 "prediction_warning": outp["warning"], "mean_output_per_class": outp["mean_per_class"],
                 "wall_s": timing.get(t), "samples_per_s": spikes.shape[1] / max(timing.get(t, 0), 1e-9)}  # fmt: skip
        if t in comparisons:
            entry["comparison"] = comparisons[t]
        rep["targets"][t] = entry
    rep["plots"] = plots(out, plan, results, comparisons, sample)
    rep["passed"] = all(c["passed"] for c in comparisons.values())
    write_json_atomic(out / "report.json", rep)
    write_text_atomic(out / "report.md", markdown(rep))
    return rep


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_config(VerifyConfig, argv, "python -m runtime.verify", __doc__)
        rep = verify(cfg)
    except (SnnDeployError, OSError, MemoryError) as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the workers were stopped and no report was written", file=sys.stderr)
        return 130
    out = report_folder(cfg)
    print((out / "report.md").read_text())
    plotted = f"; plots: {', '.join(rep['plots'])}" if rep["plots"] else " (no plots: the graph has no neuron layer)"
    print(f"report: {out / 'report.md'} (and report.json){plotted}")
    if not rep["passed"]:
        for t, r in rep["targets"].items():
            c = r.get("comparison")
            if c and not c["passed"]:
                f = c["failures"][0]
                print(f"FAIL: target {t} disagrees with the reference in {c['failed_samples']} sample(s); first: "
                      f"sample {f['sample']}, layer {f['layer']}, step {f['step']}", file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
