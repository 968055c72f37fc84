"""``python -m convert.to_nir model.pt``: a trained checkpoint -> deployable graph files.

Writes ``<name>.nir`` (and with ``--onnx``, on by default, ``<name>.onnx`` and ``<name>.step.onnx``;
with ``--netx``, fixed precision only, ``<name>.netx.h5`` in lava-dl's netx HDF5 layout; the graph
is then quantised with its biases on netx's grid of 64, so both files hold the same integers)
plus ``<name>.conversion.json``, the parity report. Before it reports success it reads every file
back and checks it: the float checkpoint against the quantised graph (accuracy and spike-count
change, reported) and the graph files against each other (ONNX Runtime on ``<name>.onnx`` must give
the same output spike counts as the reference execution of ``<name>.nir``, or the command fails
and names the first difference; for an LI readout the same per-class scores, bit for bit). All files
appear together or not at all.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convert.build import PRECISIONS, build_nir, choice_table
from convert.netx import NETX_BIAS_SHIFT
from convert.nirgraph import write_graph
from convert.peers import refusal
from core import MAX_STEPS
from core.config import parse_config
from core.errors import ConfigError, DataError, ModelError, SnnDeployError, error_line
from core.fileio import (
    exclusive,
    move_into,
    not_an_input,
    staging_folder,
    uninterrupted,
    writable_folder,
    write_json_atomic,
)
from inputs import CACHE_DIR, CACHE_DIR_HELP
from inputs.datasets import cache_args, dataset_from_description, spike_batch
from targets import reference
from targets.plan import load_plan
from train.checkpoint import load_checkpoint, model_from_checkpoint
from train.neuron import LI, LIF


@dataclass
class ConvertConfig:
    checkpoint: str = field(
        default="", metadata={"help": "student checkpoint written by python -m train.bkd", "positional": True}
    )
    out: str | None = field(default=None, metadata={"help": "output folder (default: the checkpoint's folder)"})
    name: str | None = field(
        default=None,
        metadata={"help": "base name of the files written (default: model, or model.fixed with --precision fixed)"},
    )
    overwrite: bool = field(default=False, metadata={"help": "replace graph files of the same name already in --out"})
    precision: str = field(
        default="float",
        metadata={
            "help": "float: float state, quantised weights; fixed: Loihi-2 integer network",
            "choices": list(PRECISIONS),
        },
    )
    weight_bits: int | None = field(
        default=None,
        metadata={"min": 0, "help": "float precision: weight bits (default: the checkpoint's quantisation-aware training, "
                  "else 8); 0 keeps float32 weights"},
    )  # fmt: skip
    per_channel: bool | None = field(
        default=None,
        metadata={"help": "float precision: per-output-channel weight scales, else per layer (default: the "
                  "checkpoint's quantisation-aware training, else per channel)"},
    )  # fmt: skip
    steps: int | None = field(
        default=None,
        metadata={"min": 1, "max": MAX_STEPS, "help": "time steps T of the graph (default: the checkpoint's)"},
    )
    onnx: bool = field(
        default=True, metadata={"help": "also write <name>.onnx (whole network) and <name>.step.onnx (one step)"}
    )
    netx: bool = field(
        default=False,
        metadata={"help": "also write <name>.netx.h5, lava-dl netx HDF5 (Loihi integers: needs --precision fixed)"},
    )
    data_root: str | None = field(
        default=None, metadata={"help": "where the checkpoint's dataset lives on this machine (real datasets)"}
    )
    calibration_samples: int = field(
        default=256, metadata={"min": 1, "help": "training samples the fixed-precision scales are calibrated on"}
    )
    parity_samples: int = field(default=256, metadata={"min": 1, "help": "test samples of the parity check"})
    seed: int = field(default=0, metadata={"min": 0, "help": "seed of the parity batch"})
    peers: str | None = field(
        default=None,
        metadata={"flag": "--for", "help": "also write <name>.<library>.nir for each library named (comma-separated: "
                  "snntorch, spikingjelly, norse; nir as it is), a file that library's own NIR import runs with our "
                  "spikes (a fixed graph's: the float network nearest its integers)"},
    )  # fmt: skip
    data: str | None = field(
        default=None,
        metadata={"help": "a .nir graph another tool wrote: the inputs to calibrate and check on (a .npy spike array "
                  "(T, B, ...), an event file, or a dataset name: its train split calibrates, its test split checks)"},
    )  # fmt: skip
    dt: float | None = field(
        default=None, metadata={"positive": True, "help": "a .nir graph: the time step in s it is simulated with"}
    )
    dialect: str | None = field(default=None, metadata={"help": "a .nir graph: the library that wrote it, to run it as that library does (see runtime.run --help)"})  # fmt: skip
    bin_us: int | None = field(
        default=None, metadata={"min": 1, "help": "a .nir graph: µs per time step when binning events"}
    )
    cache_dir: str | None = field(default=CACHE_DIR, metadata={"help": CACHE_DIR_HELP})


def _batch(ds, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=min(n, len(ds)), replace=False))
    return spike_batch(ds, idx)


def _summary(counts: np.ndarray, layer_counts: dict[str, np.ndarray], labels: np.ndarray | None) -> dict[str, Any]:
    return {"accuracy": None if labels is None else float((counts.argmax(1) == labels).mean()),
            "spikes_per_sample": {k: float(v.mean()) for k, v in layer_counts.items()}}  # fmt: skip


@dataclass
class _Source:
    """What conversion starts from: the built graph, and the float network it must match."""

    graph: Any
    build_report: Any
    spikes: np.ndarray  # parity inputs
    labels: np.ndarray | None
    float_run: Any  # spikes -> (counts, per-LIF spike counts): the float network itself
    steps: int
    dt: float
    out: Path
    fields: dict[str, Any]  # what the report says about the source
    float_label: str
    cfg: Any = None  # the configuration with the source's defaults filled in


def _foreign_source(cfg: ConvertConfig) -> _Source:
    """A float ``.nir`` graph another tool wrote (see :mod:`convert.foreign`)."""
    from convert.build import build_layers
    from convert.foreign import layers_from_plan
    from inputs.graph_data import file_only, load_inputs

    path = Path(cfg.checkpoint)
    bits = 8 if cfg.weight_bits is None else cfg.weight_bits  # (no QAT recorded: 8 bits, per channel)
    cfg = replace(cfg, weight_bits=bits or None, per_channel=True if cfg.per_channel is None else cfg.per_channel)
    if cfg.data is None:
        raise ConfigError(f"{path} is a graph: name the inputs to calibrate and check it on with --data (a .npy spike "
                          "array, an event file or a dataset name)")  # fmt: skip
    plan = load_plan(str(path), dt=cfg.dt, steps=cfg.steps, dialect=cfg.dialect)
    named = _names_dataset(cfg.data)
    file_only(cfg.data, cfg.data_root)
    spikes, labels, what = load_inputs(plan, cfg.data, root=cfg.data_root, split="test" if named else "all",
                                       samples=cfg.parity_samples, bin_us=cfg.bin_us, steps=cfg.steps,
                                       cache_dir=cfg.cache_dir)  # fmt: skip
    calibration = None
    if cfg.precision == "fixed":
        if not np.array_equal(spikes, np.rint(spikes)):
            raise ConfigError(f"fixed precision needs spike (integer) inputs; {what} holds analog values")
        calibration = spikes
        if named:
            calibration, _, _ = load_inputs(plan, cfg.data, root=cfg.data_root, split="train",
                                            samples=cfg.calibration_samples, bin_us=cfg.bin_us,
                                            cache_dir=cfg.cache_dir)  # fmt: skip
    layers, outputs = layers_from_plan(plan)
    if calibration is not None:  # (before layers are quantised: the float graph's own spikes)
        float_calibration = reference.run(plan, calibration).layer_counts
    dt, steps = float(plan.meta["dt"]), int(spikes.shape[0])
    meta = {"source": {"graph": path.name, "data": what}}
    graph, build_report = build_layers(layers, outputs, plan.input_shape, precision=cfg.precision,
                                       weight_bits=cfg.weight_bits, per_channel=cfg.per_channel, steps=steps, dt=dt,
                                       meta=meta, calibration=calibration,
                                       min_bias_exp=NETX_BIAS_SHIFT if cfg.netx else 0)  # fmt: skip

    if calibration is not None:
        _check_silent(build_report, float_calibration)

    def float_run(x: np.ndarray):
        res = reference.run(plan, x)
        return res.counts, res.layer_counts

    return _Source(graph, build_report, spikes, labels, float_run, steps, dt,
                   Path(cfg.out) if cfg.out else path.parent, {"graph": str(path), "data": what},
                   "float graph (reference)", cfg)  # fmt: skip


def torch_run(model, spikes: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The float checkpoint model itself: output counts (an LI readout's scores, float64) and per-LIF
    spike counts."""

    counts: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, name=name: counts.__setitem__(name, o.flatten(2).sum((0, 2))))
             for name, m in model.named_modules() if isinstance(m, LIF)]  # fmt: skip
    scores = any(isinstance(m, LI) for m in model.modules())
    with torch.no_grad():
        out = model(torch.from_numpy(spikes)).sum(0)
    for h in hooks:
        h.remove()
    out = out.numpy().astype(np.float64) if scores else out.numpy().astype(np.int64)
    return out, {k: v.numpy().astype(np.int64) for k, v in counts.items()}


def first_difference(a: np.ndarray, b: np.ndarray) -> str:
    idx = np.argwhere(a != b)[0]
    return f"sample {idx[0]}, class {idx[1]}: {a[tuple(idx)]} vs {b[tuple(idx)]}"


def convert(cfg: ConvertConfig) -> dict[str, Any]:
    if cfg.netx and cfg.precision != "fixed":
        raise ConfigError("--netx writes lava-dl netx HDF5, a format of Loihi integers: use it with --precision fixed")
    if cfg.precision == "fixed" and (cfg.weight_bits is not None or cfg.per_channel is not None):
        raise ConfigError("--weight-bits and --per-channel choose float precision's weight grid; --precision fixed "
                          "takes Loihi's 8-bit weights with an exponent per layer")  # fmt: skip
    calibrated = cfg.precision == "fixed" and (Path(cfg.checkpoint).suffix != ".nir" or _names_dataset(cfg.data))
    if not calibrated and cfg.calibration_samples != ConvertConfig.calibration_samples:  # (it was ignored)
        why = (
            "this --data file is itself the calibration data"
            if cfg.precision == "fixed"
            else "a float graph needs none"
        )
        raise ConfigError(
            f"--calibration-samples takes training samples to calibrate a fixed-precision graph on; {why}"
        )
    for peer in _peers(cfg):  # before any work (the files' check comes last)
        if refusal(peer):
            raise ConfigError(refusal(peer))
    if cfg.name is None:
        cfg = replace(cfg, name="model.fixed" if cfg.precision == "fixed" else "model")
    if not cfg.name or "/" in cfg.name or cfg.name.startswith("."):
        raise ConfigError(f"--name must be a plain file name (no folder, not hidden), got {cfg.name!r}")
    if cfg.name.lower().endswith((".nir", ".onnx", ".h5", ".json")):  # (it wrote model.nir.nir)
        stem = cfg.name.rsplit(".", 1)[0]
        raise ConfigError(f"--name is the files' base name, without a suffix: {stem!r} writes {stem}.nir, "
                          f"{stem}.onnx and the rest; got {cfg.name!r}")  # fmt: skip
    out = writable_folder(cfg.out or Path(cfg.checkpoint).parent, "--out")
    files = output_files(cfg)
    for f in files.values():  # (a foreign graph converted into its own folder under its own name)
        not_an_input(out / f, f"--name {cfg.name}: the output",
                      {"the graph being converted": cfg.checkpoint, "the --data file": cfg.data})  # fmt: skip
    with exclusive(f"{out.resolve()}/{cfg.name}", f"{out / cfg.name}.*"):
        present = sorted(f for f in set(files.values()) if (out / f).exists())
        if present and not cfg.overwrite:
            raise ConfigError(f"{out} already holds {', '.join(present)}; pass --overwrite to replace them, or choose "
                              "another --name or --out")  # fmt: skip
        return _convert(replace(cfg, out=str(out)), files)


def output_files(cfg: ConvertConfig) -> dict[str, str]:
    """``{role: file name}`` of everything a conversion writes."""
    files = {"nir": f"{cfg.name}.nir"}
    if cfg.onnx:
        files |= {"onnx": f"{cfg.name}.onnx", "step_onnx": f"{cfg.name}.step.onnx"}
    if cfg.netx:
        files["netx"] = f"{cfg.name}.netx.h5"
    for peer in _peers(cfg):  # ("nir": the graph itself)
        files[f"for_{peer}"] = files["nir"] if peer == "nir" else f"{cfg.name}.{peer}.nir"
    files["report"] = f"{cfg.name}.conversion.json"
    return files


def _peers(cfg: ConvertConfig) -> list[str]:
    return list(dict.fromkeys(p.strip() for p in (cfg.peers or "").split(",") if p.strip()))


def _names_dataset(data: str | None) -> bool:
    """Whether ``--data`` names a dataset (not a file)."""
    from inputs.datasets import DATASETS

    return data in DATASETS


def _convert(cfg: ConvertConfig, files: dict[str, str]) -> dict[str, Any]:
    if Path(cfg.checkpoint).suffix == ".nir":
        src = _foreign_source(cfg)
    else:
        for flag, value in (
            ("--data", cfg.data),
            ("--dt", cfg.dt),
            ("--bin-us", cfg.bin_us),
            ("--dialect", cfg.dialect),
        ):
            if value is not None:
                raise ConfigError(
                    f"{flag} is for a .nir graph another tool wrote; a checkpoint records its data and dt"
                )
        src = _checkpoint_source(cfg)
    return _write(src.cfg or cfg, src, files)


def _checkpoint_source(cfg: ConvertConfig) -> _Source:
    ckpt_path = Path(cfg.checkpoint)
    ckpt = load_checkpoint(ckpt_path, kind="student")
    model = model_from_checkpoint(ckpt, source=str(ckpt_path)).eval()
    # Unless told otherwise, write exactly the grid the student was trained on (same quantiser as QAT).
    qat = ckpt.get("weight_quantisation") or {}
    bits = cfg.weight_bits if cfg.weight_bits is not None else qat.get("bits", 8)
    cfg = replace(cfg, weight_bits=bits or None,
                  per_channel=cfg.per_channel if cfg.per_channel is not None else qat.get("per_channel", True))  # fmt: skip
    desc = dict(ckpt.get("dataset") or {})
    if not desc:
        raise DataError(f"{ckpt_path} records no dataset; conversion needs it for calibration and the parity check")
    overrides = ({"root": cfg.data_root} if cfg.data_root else {}) | cache_args(desc.get("name"), cfg.cache_dir)
    steps = cfg.steps or desc.get("steps")
    if cfg.steps and cfg.steps != desc.get("steps"):
        overrides["steps"] = cfg.steps
    test = dataset_from_description(desc, "test", **overrides)
    input_shape = tuple(test.input_shape)
    # (the model's own dt, checked when it was loaded; the file's "neurons" table is a description)
    dt = next((m.params.dt for m in model.modules() if isinstance(m, (LIF, LI))), 1e-3)
    meta = {"dataset": test.describe(), "num_classes": test.num_classes,
            "source": {"checkpoint": ckpt_path.name, "arch": ckpt["arch"], "arch_args": ckpt["arch_args"]}}  # fmt: skip
    spikes, labels = _batch(test, cfg.parity_samples, cfg.seed)
    calibration = None
    if cfg.precision == "fixed":
        if not np.array_equal(spikes, np.rint(spikes)):
            raise ConfigError(
                f"fixed precision needs spike (integer) inputs; dataset {desc.get('name')!r} encodes analog values"
            )
        train_ds = dataset_from_description(desc, "train", **overrides)
        calibration, _ = _batch(train_ds, cfg.calibration_samples, cfg.seed + 1)
    # netx runs every bias with bias_exp = 6: a graph written as netx too gets its biases on that grid
    min_bias_exp = NETX_BIAS_SHIFT if cfg.netx else 0
    graph, build_report = build_nir(model, input_shape, precision=cfg.precision, weight_bits=cfg.weight_bits,
                                    per_channel=cfg.per_channel, steps=steps, dt=dt, meta=meta, calibration=calibration,
                                    min_bias_exp=min_bias_exp)  # fmt: skip

    if cfg.precision == "fixed":
        _check_silent(build_report, torch_run(model, calibration)[1])  # LIF modules carry the traced layer names
    return _Source(graph, build_report, spikes, labels, lambda x: torch_run(model, x), steps, dt,
                   Path(cfg.out) if cfg.out else ckpt_path.parent, {"checkpoint": str(ckpt_path)},
                   "float checkpoint (torch)", cfg)  # fmt: skip


def _check_silent(build_report, float_layers: dict[str, np.ndarray]) -> None:
    """No layer may go silent in integers where the float network spikes."""
    for name, cal in build_report.calibration.items():
        float_rate = float(float_layers[name].mean()) if name in float_layers else 0.0
        if cal.get("spikes_per_sample") == 0 and float_rate > 0:  # (an LI readout has no spikes to lose)
            raise ModelError(f"fixed precision: layer {name} is silent on the calibration data, where the float model "
                             f"spikes {float_rate:.1f} times per sample")  # fmt: skip


def _write(cfg: ConvertConfig, src: _Source, files: dict[str, str]) -> dict[str, Any]:
    """Write the files in a staging folder outside ``--out``, read each back and check it, then move them all in."""
    out, peers = src.out, _peers(cfg)
    with staging_folder() as staging:
        try:
            report = _write_staged(cfg, src, files, staging, peers)
        except SnnDeployError as e:  # name the file it concerns in --out, not the staging folder
            raise type(e)(f"{str(e).replace(str(staging), str(out))} (nothing was written)") from None
    try:
        print_report(report, src.build_report)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"the conversion was written, {out / files['report']} last") from None
    return report


def _write_staged(
    cfg: ConvertConfig, src: _Source, files: dict[str, str], staging: Path, peers: list[str]
) -> dict[str, Any]:
    """:func:`_write`'s work inside ``staging``: the report, with every file written and checked there."""
    graph, build_report, spikes, labels, steps, dt = (
        src.graph,
        src.build_report,
        src.spikes,
        src.labels,
        src.steps,
        src.dt,
    )
    out = src.out
    write_graph(staging / files["nir"], graph)
    plan = load_plan(staging / files["nir"])  # run what the file says, not the object in memory
    ref = reference.run(plan, spikes)
    t_counts, t_layers = src.float_run(spikes)
    report: dict[str, Any] = {
        **src.fields, "precision": cfg.precision, "T": steps, "dt": dt,
        "weight_bits": cfg.weight_bits if cfg.precision == "float" else 8, "per_channel": cfg.per_channel,
        "parity_samples": int(spikes.shape[1]), "files": {k: str(out / v) for k, v in files.items()},
        "output": plan.output_kind, "float_label": src.float_label,
        "float_checkpoint": _summary(t_counts, t_layers, labels),
        "graph_reference": _summary(ref.counts, ref.layer_counts, labels),
    }  # fmt: skip
    if labels is None:  # no labels: agreement of the predictions instead
        report["graph_reference"]["same_prediction_as_float"] = float(
            (ref.counts.argmax(1) == t_counts.argmax(1)).mean()
        )
    report["graph_reference"]["identical_output_counts_vs_checkpoint"] = float((ref.counts == t_counts).all(1).mean())
    if labels is not None:
        report["accuracy_change"] = report["graph_reference"]["accuracy"] - report["float_checkpoint"]["accuracy"]
    if cfg.precision == "fixed":
        report["fixed"] = {"choices": build_report.fixed_choices, "calibration": build_report.calibration,
                           "calibration_rounds": build_report.calibration_rounds}  # fmt: skip
    if cfg.onnx:
        from convert.to_onnx import export_onnx, export_step_onnx
        from targets.onnx_target import check_onnx

        export_onnx(plan, staging / files["onnx"], steps=steps)
        export_step_onnx(plan, staging / files["step_onnx"])
        ort = check_onnx(plan, staging / files["onnx"], spikes)
        same = ort["counts"] == ref.counts
        report["onnx"] = {"accuracy": _summary(ort["counts"], {}, labels)["accuracy"],
                          "identical_output_counts_vs_reference": float(same.all(1).mean()),
                          "provider": ort.get("provider")}  # fmt: skip
        if not same.all():
            raise ModelError(f"ONNX Runtime and the reference disagree on {files['onnx']}: first difference at "
                             f"{first_difference(ort['counts'], ref.counts)}")  # fmt: skip
        step = check_onnx(plan, staging / files["step_onnx"], spikes)
        report["onnx"]["step_identical_output_counts_vs_reference"] = float(
            (step["counts"] == ref.counts).all(1).mean()
        )
        if not (step["counts"] == ref.counts).all():
            raise ModelError(f"ONNX Runtime on {files['step_onnx']} (stepped T times) and the reference disagree: first "
                             f"difference at {first_difference(step['counts'], ref.counts)}")  # fmt: skip
    if cfg.netx:
        from convert.netx import netx_plan, read_netx, write_netx

        written = write_netx(plan, staging / files["netx"])
        read_netx(staging / files["netx"], written["layers"])  # reads itself back before success
        # the integer network the file holds, run by the reference: the .nir's own, as its biases were
        # quantised onto netx's grid (write_netx refuses a bias off it in such a graph)
        twin = reference.run(netx_plan(plan), spikes)
        same = (twin.counts == ref.counts).all(1)
        report["netx"] = {"layers": [x["type"] for x in written["layers"]],
                          "rounded_biases_max_change": written["rounded_biases"],
                          "accuracy": _summary(twin.counts, {}, labels)["accuracy"],
                          "identical_output_counts_vs_reference": float(same.mean())}  # fmt: skip
    if peers:
        report["for"] = _write_peers(graph, plan, peers, staging, files, spikes, ref)
    write_json_atomic(staging / files["report"], report)
    out.mkdir(parents=True, exist_ok=True)
    with uninterrupted():  # (Ctrl-C: all of them, or none)
        for f in sorted(set(files.values()) - {files["report"]}) + [files["report"]]:  # the report last
            move_into(staging / f, out / f)
    return report


def _write_peers(graph, plan, peers: list[str], staging: Path, files: dict[str, str], spikes, ref) -> dict[str, Any]:
    """Each library's file (:mod:`convert.peers`), written and read back: the library's semantics, run
    by our reference in its dialect (what its import computes), must give the graph's own output counts.
    A fixed-precision graph's files are the float network nearest its integers
    (:func:`convert.peers.integer_units`): they must give that network's counts, and how far they are
    from the integer network is measured and reported."""
    import nir

    from convert.peers import IMPORT_CALLS, graph_for, integer_units
    from core.fileio import atomic_path

    dt = float(plan.meta["dt"])
    target, against = ref, "graph"
    if plan.precision == "fixed":
        units, _ = integer_units(graph, dt)
        target, against = reference.run(load_plan(units), spikes), "float network in integer units"
    out = {}
    for peer in peers:
        written = graph_for(graph, peer, dt=dt, precision=plan.precision)
        path = staging / files[f"for_{peer}"]
        if peer != "nir":
            with atomic_path(path) as tmp:
                nir.write(tmp, written)
        read = load_plan(path)  # as the library computes it: the file names its dialect and dt
        dialect = read.meta["dialect"]
        again = reference.run(read, spikes)
        same = (again.counts == target.counts).all(1)
        for k, v in target.layer_counts.items():  # every layer's spike count, sample by sample
            same &= again.layer_counts[k] == v
        if peer != "nir" and not same.all():
            raise ModelError(f"{files[f'for_{peer}']}: read as {peer} computes it, the output or layer spike counts "
                             f"differ from the {against}'s on {int((~same).sum())} of {len(same)} samples")  # fmt: skip
        out[peer] = {"file": files[f"for_{peer}"], "import": IMPORT_CALLS[peer], "read_as": dialect,
                     "identical_output_counts_vs_graph": float((again.counts == ref.counts).all(1).mean())}  # fmt: skip
        if plan.precision == "fixed" and peer != "nir":  # the float file against Loihi's integers: measured
            out[peer] |= {"precision": "float (nearest to the fixed graph)",
                          "identical_output_counts_vs_float_units": float(same.mean()),
                          "layer_spikes_differing_vs_graph": {
                              k: int(np.abs(again.layer_counts[k] - v).sum()) for k, v in ref.layer_counts.items()},
                          "layer_spikes_of_graph": {k: int(v.sum()) for k, v in ref.layer_counts.items()}}  # fmt: skip
    return out


def print_report(report: dict[str, Any], build_report) -> None:
    rows = [
        (report.get("float_label", "float checkpoint (torch)"), report["float_checkpoint"]),
        (f"{report['precision']} graph (reference)", report["graph_reference"]),
    ]
    if "onnx" in report:
        rows.append(("onnx (onnxruntime)", report["onnx"]))
    print(f"parity on {report['parity_samples']} samples, T={report['T']}:")
    what = "scores" if report.get("output") == "scores" else "counts"
    base = report["float_checkpoint"]["spikes_per_sample"]
    for label, r in rows:
        spikes = r.get("spikes_per_sample")
        change = ""
        if spikes:
            tot, tot0 = sum(spikes.values()), sum(base.values())
            change = f"  spikes/sample {tot:9.1f} ({100 * (tot - tot0) / max(tot0, 1):+.2f}%)"
        acc = "n/a (no labels)" if r["accuracy"] is None else f"{100 * r['accuracy']:6.2f}%"
        same = (
            f", same prediction as float on {100 * r['same_prediction_as_float']:.1f}%"
            if "same_prediction_as_float" in r
            else ""
        )
        print(f"  {label:<28} accuracy {acc}{change}{same}")
    if "onnx" in report:
        print(
            f"  onnx output {what} identical to the reference on {100 * report['onnx']['identical_output_counts_vs_reference']:.1f}% of samples"
        )
    if "netx" in report:
        nx = report["netx"]
        note = (f"biases rounded to netx's grid of 64 in {', '.join(nx['rounded_biases_max_change'])}; "
                if nx["rounded_biases_max_change"] else "exact; ")  # fmt: skip
        acc = "n/a" if nx["accuracy"] is None else f"{100 * nx['accuracy']:.2f}%"
        print(f"  netx file: {note}accuracy {acc}, output {what} identical to the .nir on "
              f"{100 * nx['identical_output_counts_vs_reference']:.1f}% of samples")  # fmt: skip
    if build_report.fixed_choices:
        print("fixed-precision choices per layer:")
        print(choice_table(build_report.fixed_choices))
    for k, v in report["files"].items():
        print(f"  {k:<10} {v}")


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_config(ConvertConfig, argv, "python -m convert.to_nir", __doc__)
        convert(cfg)
    except (SnnDeployError, OSError, MemoryError) as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"interrupted: {str(e) or 'nothing was written'}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
