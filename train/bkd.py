"""``python -m train.bkd``: train an ANN teacher, then a spiking student distilled from it with
blurred knowledge distillation (BKD) and/or weighted soft-label logits distillation (WSLD).

With no arguments it trains on scikit-learn's bundled 8x8 digits and writes, under ``--out``:
``teacher.pt``, ``student.pt`` (the deployable checkpoint), ``*.last.pt`` (resume points, one per
epoch), ``metrics.jsonl`` (one line per epoch), ``config.json`` (the resolved config) and
``curves.png`` (learning curves).

Distributed: ``torchrun --nproc_per_node=N -m train.bkd ...`` (gloo on CPU, nccl on CUDA); only
rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset

from core import MAX_STEPS
from core.config import json_fields, parse_config, to_dict
from core.errors import CheckpointError, ConfigError, SnnDeployError, TrainingError, error_line
from core.fileio import (
    append_line,
    exclusive,
    save_figure,
    writable_folder,
    write_json_atomic,
    write_text_atomic,
)
from inputs import CACHE_DIR, CACHE_DIR_HELP
from inputs.datasets import cache_args, load_dataset
from train.augment import Augment
from train.checkpoint import load_checkpoint, model_from_checkpoint, neuron_parameters, save_checkpoint
from train.data import (
    Batches,
    DataSpec,
    check_compatible,
    check_held_out,
    concat,
    json_object,
    materialise,
    parse_specs,
    stratified_carve,
)
from train.distill import DISTILL_MODES, GENERATORS, ORDERS, FeatureDistiller, wsld_loss
from train.models import (
    MODELS,
    build_model,
    check_model_arguments,
    model_arguments,
    model_spec,
    set_weight_quantisation,
    teacher_arguments,
)
from train.neuron import LIF

OPTIMIZERS = ("adam", "adamw", "sgd")


@dataclass
class TrainConfig:
    # --- model
    model: str = field(
        default="digits_csnn",
        metadata={"help": "student architecture: " + ", ".join(sorted(n for n, s in MODELS.items() if s.spiking))},
    )
    model_args: str = field(
        default="{}",
        metadata={"json": True, "help": "JSON object of extra architecture arguments, e.g. '{\"channels\": [32, 64]}'"},
    )
    # --- data
    dataset: str = field(
        default="digits",
        metadata={"help": "dataset name (see inputs.datasets: digits, event_digits, nmnist, nmnist_emulated, ...)"},
    )
    data_root: str | None = field(
        default=None, metadata={"help": "local folder holding the dataset (real datasets only; nothing downloads)"}
    )
    dataset_args: str = field(
        default="{}",
        metadata={"json": True, "help": "JSON object of extra dataset arguments, e.g. '{\"duration_us\": 300000}'"},
    )
    steps: int = field(default=8, metadata={"min": 1, "max": MAX_STEPS, "help": "time steps T per sample"})
    train_split: str = field(default="train", metadata={"help": "split trained on (less the validation carve-out)"})
    test_split: str = field(default="test", metadata={"help": "split evaluated once, after training and selection"})
    val_fraction: float = field(
        default=0.1,
        metadata={"help": "stratified fraction of the training split held out for model selection (0: none)"},
    )
    val_data: str = field(
        default="",
        metadata={"json": True, "help": "an explicit validation set (JSON dataset object) instead of the carve-out"},
    )
    test_data: str = field(
        default="",
        metadata={"json": True, "help": "an explicit test set (JSON dataset object) instead of --test-split"},
    )
    extra_train: str = field(
        default="",
        metadata={"json": True, "help": "more labelled training data: JSON object or list, e.g. "
                  "'{\"name\": \"nmnist_emulated\", \"split\": \"all\"}' (same T, shape and binning)"},
    )  # fmt: skip
    transfer: str = field(
        default="",
        metadata={
            "json": True,
            "help": "unlabelled transfer set for the distillation terms: a JSON dataset object (labels ignored)",
        },
    )
    transfer_batch_size: int | None = field(
        default=None, metadata={"min": 1, "help": "transfer samples added to each step's batch (None: --batch-size)"}
    )
    # --- augmentation (teacher and student see the same view)
    aug_shift: int = field(default=0, metadata={"min": 0, "help": "largest random spatial shift, pixels"})
    aug_drop: float = field(default=0.0, metadata={"help": "probability that an input event is dropped"})
    aug_stretch: float = field(default=0.0, metadata={"help": "largest relative random change of the time scale"})
    aug_erase: float = field(default=0.0, metadata={"help": "probability of erasing a random rectangle per sample"})
    # --- distillation
    distill: str = field(
        default="mixed",
        metadata={
            "help": "none: CE only; logits: +WSLD; feature: +plain feature MSE; bkd: +blurred feature KD; mixed: CE + BKD + WSLD",
            "choices": list(DISTILL_MODES),
        },
    )
    teacher: str | None = field(default=None, metadata={"help": "teacher checkpoint to use instead of training one"})
    teacher_model: str | None = field(
        default=None, metadata={"help": "teacher architecture (None: the student's registered ANN twin)"}
    )
    teacher_args: str = field(
        default="{}",
        metadata={"json": True, "help": "JSON object of teacher architecture arguments (e.g. a wider 'channels')"},
    )
    teacher_epochs: int = field(default=15, metadata={"min": 0, "help": "epochs for training the ANN teacher"})
    bkd_alpha: float = field(
        default=2e-3, metadata={"min": 0, "help": "weight alpha of the feature loss (bkd, feature, mixed)"}
    )
    bkd_lambda: float = field(
        default=0.15, metadata={"min": 0, "max": 1, "help": "probability lambda that BKD masks a (sample, channel)"}
    )
    bkd_generator: str = field(
        default="full",
        metadata={"help": "BKD generation block: full (teacher width) or bottleneck (--bkd-width)", "choices": list(GENERATORS)},
    )  # fmt: skip
    bkd_width: int | None = field(
        default=None, metadata={"min": 1, "help": "hidden channels of the bottleneck generator (None: the student's)"}
    )
    bkd_order: str = field(
        default="student_first",
        metadata={"help": "student_first: restore the student map towards the teacher's; teacher_first: the reverse "
                  "(the reference DVS scripts)", "choices": list(ORDERS)},
    )  # fmt: skip
    bkd_clip: bool = field(default=False, metadata={"help": "rescale the BKD target to the restored side's maximum"})
    wsld_tau: float = field(default=2.0, metadata={"positive": True, "help": "WSLD temperature"})
    wsld_weight: float = field(default=1.0, metadata={"min": 0, "help": "weight of the WSLD loss (logits, mixed)"})
    logit_scale: float = field(
        default=1.0,
        metadata={
            "positive": True,
            "help": "training-only scale of the student's logits inside WSLD (student temperature)",
        },
    )
    readout_aux: float = field(
        default=0.0,
        metadata={"min": 0, "help": "weight of a training-only cross-entropy on the spiking readout's input current summed "
                  "over T: a gradient that does not vanish when a readout neuron stops firing (dead classes)"},
    )  # fmt: skip
    learn_logit_scale: bool = field(
        default=False, metadata={"help": "learn the WSLD logit scale (starts at --logit-scale)"}
    )
    # --- recipe
    epochs: int = field(default=30, metadata={"min": 0, "help": "epochs for the student (0: train only the teacher)"})
    batch_size: int = field(default=64, metadata={"min": 1, "help": "batch size (per process when distributed)"})
    optimizer: str = field(default="adam", metadata={"help": "optimiser", "choices": list(OPTIMIZERS)})
    lr: float = field(
        default=3e-3, metadata={"min": 0, "help": "peak learning rate (linear warm-up, then cosine to 0)"}
    )
    momentum: float = field(default=0.9, metadata={"min": 0, "max": 1, "help": "SGD momentum (Nesterov)"})
    weight_decay: float = field(default=0.0, metadata={"min": 0, "help": "weight decay (decoupled for adamw)"})
    warmup_epochs: int = field(default=0, metadata={"min": 0, "help": "epochs of linear learning-rate warm-up"})
    label_smoothing: float = field(
        default=0.0, metadata={"min": 0, "max": 1, "help": "label smoothing of the cross-entropy"}
    )
    select: str = field(
        default="best",
        metadata={"help": "best: the epoch with the best validation accuracy (ties: lower loss); last: the final epoch",
                  "choices": ["best", "last"]},
    )  # fmt: skip
    patience: int | None = field(
        default=None,
        metadata={"min": 1, "help": "stop after this many epochs without a better validation score (None: never)"},
    )
    weight_bits: int | None = field(
        default=None,
        metadata={"min": 2, "max": 16, "help": "quantisation-aware training with this many weight bits (None: off)"},
    )
    per_channel: bool = field(
        default=True, metadata={"help": "per-output-channel weight scales (else per layer) for QAT"}
    )
    seed: int = field(
        default=0, metadata={"min": 0, "help": "seed for initialisation, shuffling, augmentation and masks"}
    )
    out: str = field(default="runs/bkd", metadata={"help": "run folder for checkpoints, metrics and plots"})
    resume: bool = field(default=False, metadata={"help": "continue the run in --out (completed phases are skipped)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing run in --out"})
    limit_train: int | None = field(
        default=None, metadata={"min": 1, "help": "use only the first N training samples (quick runs)"}
    )
    limit_test: int | None = field(default=None, metadata={"min": 1, "help": "use only the first N test samples"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present), cpu or cuda"})
    threads: int | None = field(default=None, metadata={"min": 1, "help": "torch CPU threads (None: torch's default)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    cache_dir: str | None = field(default=CACHE_DIR, metadata={"help": CACHE_DIR_HELP})


REPLACED = ("student.last.pt", "teacher.last.pt", "student.pt", "teacher.pt", "metrics.jsonl")  # --overwrite deletes

# Keys that may differ between an interrupted run and its resumption.
RESUME_FREE_KEYS = {
    "resume",
    "overwrite",
    "progress",
    "threads",
    "epochs",
    "teacher_epochs",
    "device",
    "out",
    "cache_dir",
}

# What a teacher's and a student's data must share for the teacher's view to be the student's.
TEACHER_DATA_KEYS = ("steps", "input_shape", "num_classes", "binning", "encoder")


# ---------------------------------------------------------------------------------------------
# Distributed set-up


@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Dist(dist.get_rank(), dist.get_world_size())


def all_reduce_sum(values: list[float], d: Dist, device: torch.device) -> list[float]:
    if d.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


# ---------------------------------------------------------------------------------------------
# Pieces of the loop


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def student_logits(out: torch.Tensor) -> torch.Tensor:
    """The student's logits are its readout summed over the T steps: output spike counts (a spiking
    readout) or the summed membrane (an LI readout), what every deployment target reports."""
    return out.sum(0)


def teacher_input(x: torch.Tensor) -> torch.Tensor:
    """The ANN teacher sees the student's input averaged over time, ``(T, B, ...) -> (B, ...)``."""
    return x.mean(0)


def predict(scores: torch.Tensor) -> torch.Tensor:
    """The predicted class: the highest score; a tie goes to the lowest class index among the tied
    (``argmax``'s rule, the same in every target), so a sample with no output spike at all is class 0."""
    return scores.argmax(1)


def spiking_readout(model: nn.Module) -> bool:
    head = getattr(model, "head", None)
    last = list(head.children())[-1] if isinstance(head, nn.Sequential) and len(head) else None
    return isinstance(last, LIF)


def readout_synapse(model: nn.Module) -> nn.Module | None:
    """The synaptic layer that feeds the readout neurons (the head's last Linear)."""
    head = getattr(model, "head", None)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)] if head is not None else []
    return linears[-1] if linears else None


def make_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)  # fmt: skip
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(epoch: int, epochs: int, warmup: int) -> float:
    """Learning-rate factor of ``epoch`` (0-based): linear warm-up over ``warmup`` epochs (from
    ``1/(warmup+1)``), then a cosine from 1 towards 0 over the remaining epochs."""
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    span = max(epochs - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(epoch - warmup, span) / span))


class StudentObjective(nn.Module):
    """Student plus training-only distillation parts; ``forward`` returns the loss terms.

    One module so that DistributedDataParallel synchronises the student, the generation block and
    the WSLD logit scale together. Only ``student`` is ever saved into the deployable checkpoint.

    The batch holds ``n`` labelled samples followed by transfer samples (no labels): the
    cross-entropy sees the labelled ones, the distillation terms see all; WSLD weighs a transfer
    sample with the teacher's own prediction as its label.
    """

    def __init__(self, student: nn.Module, distiller: FeatureDistiller | None, cfg: TrainConfig) -> None:
        super().__init__()
        self.student, self.distiller, self.cfg = student, distiller, cfg
        self._current: list[torch.Tensor] = []
        if cfg.readout_aux:
            readout = readout_synapse(student)
            if readout is None or not spiking_readout(student):
                raise ConfigError("--readout-aux needs a student whose head ends in Linear -> LIF (a spiking readout)")
            readout.register_forward_hook(lambda m, i, o: self._current.append(o))
        log_scale = torch.tensor(math.log(cfg.logit_scale))
        if cfg.learn_logit_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def forward(self, x, y, n, t_feature, t_logits, generator):
        self._current.clear()
        feature, out = self.student.forward_features(x)
        logits = student_logits(out)
        terms = {"ce": F.cross_entropy(logits[:n], y, label_smoothing=self.cfg.label_smoothing)}
        if self.cfg.readout_aux:
            current = self._current[-1].reshape(out.shape).sum(0)  # (B, classes): the readout's input over T
            terms["readout_aux"] = self.cfg.readout_aux * F.cross_entropy(current[:n], y)
        mode = self.cfg.distill
        if mode in ("logits", "mixed"):
            labels = torch.cat([y, t_logits[n:].argmax(1)])
            scaled = logits * self.log_scale.exp()
            terms["wsld"] = self.cfg.wsld_weight * wsld_loss(scaled, t_logits, labels, self.cfg.wsld_tau)
        if mode in ("feature", "bkd", "mixed"):
            terms["feature"] = self.distiller(feature.mean(0), t_feature, generator)
        return terms, logits[:n]


@torch.no_grad()
def evaluate(model: nn.Module, data: Batches, spiking: bool, device: torch.device, detail: bool = False) -> dict:
    """Accuracy and cross-entropy of ``model`` on ``data``; spiking models also report output spikes
    per sample and the fraction of samples whose top score is tied (none spiking included).
    ``detail`` adds the per-class readout totals and prediction counts (dead-class checks)."""
    model.eval()
    correct = total = loss_sum = out_sum = tied = silent = 0.0
    per_class = None
    predicted = None
    for x, y in data.batches(256):
        x, y = x.to(device), y.to(device)
        if spiking:
            out = model(x)
            scores = student_logits(out)
            out_sum += float(out.sum())
        else:
            scores = model(teacher_input(x))
        top = scores.max(1, keepdim=True).values
        tied += float(((scores == top).sum(1) > 1).sum())
        silent += float((scores == 0).all(1).sum())
        loss_sum += float(F.cross_entropy(scores, y, reduction="sum"))
        pred = predict(scores)
        correct += float((pred == y).sum())
        total += y.numel()
        if detail:
            s = scores.sum(0).double().cpu()
            per_class = s if per_class is None else per_class + s
            c = torch.bincount(pred.cpu(), minlength=scores.shape[1])
            predicted = c if predicted is None else predicted + c
    n = max(total, 1)
    res = {"acc": correct / n, "loss": loss_sum / n, "samples": int(total)}
    if spiking:
        res |= {"output_per_sample": out_sum / n, "tied_fraction": tied / n, "no_output_fraction": silent / n}
    if detail and per_class is not None:
        res |= {"per_class_output": per_class.tolist(), "predicted_per_class": predicted.tolist()}
    return res


def prefixed(prefix: str, metrics: dict) -> dict:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit="batch", disable=not enabled, dynamic_ncols=True, leave=False, file=sys.stderr
    )


# ---------------------------------------------------------------------------------------------
# Data of one run


def _load(name: str, split: str, root: str | None, args: dict, cfg: TrainConfig):
    kwargs: dict[str, Any] = {"root": root, "steps": cfg.steps, "seed": cfg.seed} | args  # a spec may fix its seed
    return load_dataset(name, split, **(cache_args(name, cfg.cache_dir) | kwargs))


class Run:
    """State shared by the phases of one ``train.bkd`` invocation: the data, in memory.

    - ``train``: the training split less the validation carve-out (and ``--limit-train``), plus
      ``--extra-train``; ``val``: the carve-out (model selection only); ``test``: the test split,
      evaluated once, on the selected model; ``transfer``: unlabelled inputs for distillation.
    """

    def __init__(self, cfg: TrainConfig, d: Dist, device: torch.device) -> None:
        self.cfg, self.d, self.device = cfg, d, device
        self.out = Path(cfg.out)
        show = cfg.progress and d.main
        args = json_object(cfg.dataset_args, "dataset-args")
        val_specs, extra_specs = parse_specs(cfg.val_data, "val-data"), parse_specs(cfg.extra_train, "extra-train")
        transfer_specs, test_specs = parse_specs(cfg.transfer, "transfer"), parse_specs(cfg.test_data, "test-data")
        main = DataSpec(cfg.dataset, cfg.train_split, cfg.data_root, args)
        check_held_out(
            ("--test-data", test_specs[0]) if test_specs else ("--test-split", replace(main, split=cfg.test_split)),
            [("--val-data", s) for s in val_specs],
            [("--train-split", main), *(("--extra-train", s) for s in extra_specs),
             *(("--transfer", s) for s in transfer_specs)],
        )  # fmt: skip
        main_train = _load(cfg.dataset, cfg.train_split, cfg.data_root, args, cfg)
        self.description = main_train.describe()
        self.input_shape = tuple(main_train.input_shape)
        self.num_classes = main_train.num_classes
        data = materialise(main_train, f"{cfg.dataset}/{cfg.train_split}", show)
        kept, carved = stratified_carve(data.labels, 0.0 if val_specs else cfg.val_fraction)
        if cfg.limit_train:
            kept = kept[: cfg.limit_train]
        parts = [data.subset(kept, f"{cfg.dataset}/{cfg.train_split}")]
        self.sources = {"train": [f"{cfg.dataset}/{cfg.train_split}: {len(kept)}"]}
        if val_specs:
            self.val = self._other(val_specs, "val-data", show)
        else:
            name = f"{cfg.dataset}/{cfg.train_split} (validation carve-out)"
            self.val = data.subset(carved, name) if len(carved) else None
        for spec in extra_specs:
            parts.append(self._other([spec], "extra-train", show))
            self.sources["train"].append(f"{parts[-1].name}: {len(parts[-1])}")
        self.train = concat(parts, "training data")
        self.transfer = None
        if transfer_specs:
            self.transfer = self._other(
                transfer_specs, "transfer", show, keys=TEACHER_DATA_KEYS[:2] + TEACHER_DATA_KEYS[3:]
            )
            self.sources["transfer"] = [f"{self.transfer.name}: {len(self.transfer)}"]
        if test_specs:
            self.test = self._other(test_specs, "test-data", show, limit=cfg.limit_test)
        else:
            test_ds = _load(cfg.dataset, cfg.test_split, cfg.data_root, args, cfg)
            if cfg.limit_test:
                test_ds = Subset(test_ds, range(min(cfg.limit_test, len(test_ds))))
            self.test = materialise(test_ds, f"{cfg.dataset}/{cfg.test_split}", show)
        self.sources |= {"validation": [f"{self.val.name}: {len(self.val)}"] if self.val else [],
                         "test": [f"{self.test.name}: {len(self.test)}"]}  # fmt: skip
        if cfg.select == "best" and self.val is None:
            raise ConfigError("--select best needs a validation set: set --val-fraction > 0 (or --select last)")
        self.augment = Augment(cfg.aug_shift, cfg.aug_drop, cfg.aug_stretch, cfg.aug_erase)

    def _other(self, specs, option: str, show: bool, keys=TEACHER_DATA_KEYS, limit: int | None = None) -> Batches:
        """A dataset named by ``--val-data``, ``--test-data``, ``--extra-train`` or ``--transfer``; its samples
        must mean what the training data's mean (same T, shape, binning or encoder; classes if labelled)."""
        if len(specs) != 1:
            raise ConfigError(f"--{option} names one dataset, got {len(specs)}")
        spec = specs[0]
        ds = _load(spec.name, spec.split, spec.root, spec.args, self.cfg)
        check_compatible(self.description, ds.describe(), f"--{option} {spec.describe()}", keys)
        if limit:
            ds = Subset(ds, range(min(limit, len(ds))))
        return materialise(ds, spec.describe(), show)

    def log(self, record: dict) -> None:
        if self.d.main:
            append_line(self.out / "metrics.jsonl", json.dumps(record))

    def restore_log(self, phase: str, history: list[dict]) -> None:
        """After a resume, make ``metrics.jsonl`` hold exactly the checkpoint's history for ``phase``
        (a kill between saving and logging, or logging and saving, leaves them one epoch apart)."""
        if not self.d.main:
            return
        path = self.out / "metrics.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        kept = []
        for line in lines:
            try:
                if json.loads(line).get("phase") != phase:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
        write_text_atomic(path, "".join(f"{line}\n" for line in kept + [json.dumps(r) for r in history]))


# ---------------------------------------------------------------------------------------------
# One training phase (teacher or student), resumable per epoch


class Phase:
    """Trains one model for ``epochs``, writing ``<name>.last.pt`` every epoch and ``<name>.pt`` at the end."""

    def __init__(
        self, name: str, arch: str, arch_args: dict, model: nn.Module, cfg: TrainConfig, run: Run, epochs: int
    ) -> None:
        self.name, self.arch, self.arch_args, self.model = name, arch, arch_args, model
        self.cfg, self.run, self.epochs = cfg, run, epochs
        self.spiking = model_spec(arch).spiking

    def payload(self, kind: str, epoch: int, history: list[dict], extra: dict | None = None) -> dict:
        p = {
            "kind": kind,
            "arch": self.arch,
            "arch_args": self.arch_args,
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "neurons": neuron_parameters(self.model),
            "dataset": self.run.description,
            "data": self.run.sources,
            "config": to_dict(self.cfg),
            "weight_quantisation": {"bits": self.cfg.weight_bits, "per_channel": self.cfg.per_channel}
            if self.spiking and self.cfg.weight_bits
            else None,
            "epoch": epoch,
            "phase": self.name,
            "metrics": history[-1] if history else {},
            "history": history,
        }
        return p | (extra or {})


@dataclass
class PhaseResult:
    history: list[dict]
    selected_epoch: int  # 1-based; 0 when no epoch ran
    stopped_early: bool


JSON_KEYS = json_fields(TrainConfig)


def _same(saved: Any, now: Any, json_text: bool) -> bool:
    """Equal settings; JSON text compared as the values it holds (``{"a":1}`` is ``{"a": 1}``)."""
    if json_text and isinstance(saved, str) and isinstance(now, str):
        try:
            return json.loads(saved or "null") == json.loads(now or "null")
        except ValueError:
            pass
    return saved == now


def check_resumable(saved: dict, cfg: TrainConfig, path: Path) -> None:
    now = to_dict(cfg)
    missing = sorted(k for k in now if k not in saved)
    if missing:
        raise ConfigError(
            f"cannot resume from {path}: it was written by an older snn-deploy whose config had no "
            f"{', '.join(missing)}; start again with --overwrite (or use another --out)"
        )
    differ = sorted(k for k in now if k not in RESUME_FREE_KEYS and not _same(saved.get(k), now[k], k in JSON_KEYS))
    if differ:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in differ)
        raise ConfigError(f"cannot resume from {path}: the config differs ({detail}); use another --out or --overwrite")


def _score(record: dict) -> tuple[float, float]:
    return (record["val_acc"], -record["val_loss"])


def train_phase(phase: Phase, objective: nn.Module, step_fn) -> PhaseResult:
    """The epoch loop shared by teacher and student. After it, ``phase.model`` holds the selected
    epoch's weights (``--select``)."""
    cfg, run, d, device = phase.cfg, phase.run, phase.run.d, phase.run.device
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg, params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: lr_factor(e, phase.epochs, min(cfg.warmup_epochs, max(phase.epochs - 1, 0)))
    )
    history: list[dict] = []
    best: dict[str, Any] = {"epoch": 0, "state": None, "score": None}
    start, stopped = 0, False
    last_path = run.out / f"{phase.name}.last.pt"
    if cfg.resume and last_path.is_file():
        ckpt = load_checkpoint(last_path, kind="resume")
        check_resumable(ckpt["config"], cfg, last_path)
        objective.load_state_dict(ckpt["objective"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        history, start, stopped = ckpt["history"], ckpt["epoch"], bool(ckpt.get("stopped_early"))
        best = {"epoch": ckpt["best_epoch"], "state": ckpt["best_state_dict"], "score": None}
        if best["epoch"]:
            best["score"] = _score(history[best["epoch"] - 1]) if run.val is not None else None
        run.restore_log(phase.name, history)
        if d.main:
            print(f"[{phase.name}] resuming from {last_path} after epoch {start}", file=sys.stderr)

    model_for_ddp = objective
    if d.world > 1:
        model_for_ddp = nn.parallel.DistributedDataParallel(objective)

    transfer_bs = cfg.transfer_batch_size or cfg.batch_size
    for epoch in range(start, phase.epochs):
        if stopped:
            break
        objective.train()
        order_gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        gen = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + epoch * 7919 + d.rank)
        transfer = None
        if run.transfer is not None and phase.name == "student" and cfg.distill != "none":
            t_gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch + 500_000)
            transfer = _cycle(run.transfer, transfer_bs, t_gen, d)
        sums: dict[str, float] = {}
        correct = total = 0.0
        t0 = time.perf_counter()
        n_batches = run.train.num_batches(cfg.batch_size, d.world)
        bar = progress_bar(n_batches, f"{phase.name} {epoch + 1}/{phase.epochs}", cfg.progress and d.main)
        for step, (x, y) in enumerate(run.train.batches(cfg.batch_size, order_gen, d.rank, d.world)):
            x, y = x.to(device), y.to(device)
            xt = next(transfer)[0].to(device) if transfer is not None else None
            terms, logits = step_fn(model_for_ddp, x, y, xt, gen)
            loss = sum(terms.values())
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"[{phase.name}] loss became {float(loss)} at epoch {epoch + 1}, step {step + 1} "
                    f"(terms: {', '.join(f'{k}={float(v):.4g}' for k, v in terms.items())}); lower --lr or check the data"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n = y.numel()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * n
            correct += float((predict(logits) == y).sum())
            total += n
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", acc=f"{correct / total:.3f}")
        bar.close()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        elapsed = time.perf_counter() - t0
        keys = sorted(sums)
        red = all_reduce_sum([sums[k] for k in keys] + [correct, total], d, device)
        total_all = red[-1]
        record = {
            "phase": phase.name,
            "epoch": epoch + 1,
            "train_loss": sum(red[: len(keys)]) / total_all,
            **{f"train_{k}": red[i] / total_all for i, k in enumerate(keys)},
            "train_acc": red[-2] / total_all,
            **(prefixed("val", evaluate(phase.model, run.val, phase.spiking, device)) if run.val is not None else {}),
            "lr": lr,
            "epoch_seconds": elapsed,
            "step_ms": 1000 * elapsed / max(n_batches, 1),
            "world_size": d.world,
        }
        if hasattr(objective, "log_scale"):
            record["logit_scale"] = float(objective.log_scale.detach().exp())
        history.append(record)
        improved = run.val is None or best["score"] is None or _score(record) > best["score"]
        if improved:
            best = {"epoch": epoch + 1, "state": _copy_state(phase.model), "score": _score(record) if run.val else None}
        since = epoch + 1 - best["epoch"]
        stopped = bool(cfg.patience and run.val is not None and since >= cfg.patience and epoch + 1 < phase.epochs)
        if d.main:
            val = f"  val acc {record['val_acc']:.4f}" if run.val is not None else ""
            mark = " *" if improved and run.val is not None else ""
            print(
                f"[{phase.name}] epoch {epoch + 1}/{phase.epochs}  loss {record['train_loss']:.4f}  "
                f"train acc {record['train_acc']:.4f}{val}{mark}  ({elapsed:.1f} s)",
                file=sys.stderr,
            )
            if stopped:
                print(f"[{phase.name}] early stop: no better validation score for {since} epochs", file=sys.stderr)
            extra = {
                "objective": objective.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "best_epoch": best["epoch"],
                "best_state_dict": best["state"],
                "stopped_early": stopped,
            }
            save_checkpoint(last_path, phase.payload("resume", epoch + 1, history, extra))
        run.log(record)
    selected = len(history)
    if cfg.select == "best" and best["state"] is not None:
        phase.model.load_state_dict(best["state"])
        selected = best["epoch"]
    return PhaseResult(history, selected, stopped)


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _cycle(data: Batches, batch_size: int, generator: torch.Generator, d: Dist):
    """Transfer batches without end: one shuffled pass after another."""
    while True:
        yield from data.batches(batch_size, generator, d.rank, d.world)


def final_metrics(phase: Phase, result: PhaseResult) -> dict:
    """The selected model on validation and test (evaluated once, here), with the selection."""
    run = phase.run
    out = {"selected_epoch": result.selected_epoch, "epochs_run": len(result.history),
           "stopped_early": result.stopped_early, "select": phase.cfg.select,
           "step_ms": sum(r["step_ms"] for r in result.history) / max(len(result.history), 1)}  # fmt: skip
    if run.val is not None:
        out |= prefixed("val", evaluate(phase.model, run.val, phase.spiking, run.device))
    test = evaluate(phase.model, run.test, phase.spiking, run.device, detail=True)
    out |= prefixed("test", {k: v for k, v in test.items() if k not in ("per_class_output", "predicted_per_class")})
    out["test_predicted_per_class"] = test.get("predicted_per_class")
    if phase.spiking:
        out["dead_classes"] = dead_classes(phase.model, run, test)
    return out


def dead_classes(model: nn.Module, run: Run, test: dict) -> list[int]:
    """Classes whose spiking readout neuron never fires on the validation and test samples."""
    if not spiking_readout(model):
        return []
    totals = torch.tensor(test["per_class_output"], dtype=torch.float64)
    if run.val is not None:
        val = evaluate(model, run.val, True, run.device, detail=True)
        totals = totals + torch.tensor(val["per_class_output"], dtype=torch.float64)
    return [int(c) for c in torch.nonzero(totals == 0).flatten()]


def report_dead(name: str, metrics: dict, run: Run, class_names: list[str] | None) -> None:
    dead = metrics.get("dead_classes") or []
    if dead and run.d.main:
        names = ", ".join(class_names[c] if class_names else str(c) for c in dead)
        n = metrics.get("test_samples", 0) + metrics.get("val_samples", 0)
        print(
            f"warning: [{name}] the readout neuron of class(es) {names} never fired on the {n} validation and test "
            "samples (a dead output): those classes are never predicted; train longer, lower --lr, or use the LI readout",
            file=sys.stderr,
        )


# ---------------------------------------------------------------------------------------------
# Teacher and student


def check_teacher_data(ckpt: dict, run: Run, source: str) -> None:
    """A teacher must have been trained on inputs that mean what the student's mean: same T, input
    shape, classes, binning (window, binary) or encoder."""
    recorded = ckpt.get("dataset") or {}
    for key in TEACHER_DATA_KEYS:
        if key in recorded and recorded.get(key) != run.description.get(key):
            raise CheckpointError(
                f"teacher {source} was trained with {key} {recorded.get(key)!r}, the student's data has "
                f"{run.description.get(key)!r}; train a teacher on the same T and binning (or omit --teacher)"
            )
    if "steps" not in recorded:
        raise CheckpointError(f"teacher {source} records no T and binning of its data; it cannot be checked")


def teacher_summary(ckpt_metrics: dict) -> str:
    parts = [f"{k.replace('_', ' ')} {ckpt_metrics[k]:.4f}" for k in ("test_acc", "val_acc", "train_ce_eval")
             if isinstance(ckpt_metrics.get(k), float)]  # fmt: skip
    return ", ".join(parts) or "no recorded metrics"


def obtain_teacher(cfg: TrainConfig, run: Run, student_arch: str, student_args: dict) -> tuple[nn.Module, dict]:
    """Load ``--teacher`` or the run's finished teacher, else train one; returns it and its metrics."""
    if cfg.teacher:
        ckpt = load_checkpoint(cfg.teacher, kind="teacher")
        check_teacher_data(ckpt, run, cfg.teacher)
        teacher = model_from_checkpoint(ckpt, source=cfg.teacher)
        metrics = ckpt.get("final_metrics") or ckpt.get("metrics") or {}
        if run.d.main:
            print(f"[teacher] {cfg.teacher} ({ckpt['arch']}): {teacher_summary(metrics)}", file=sys.stderr)
        return teacher, metrics
    name = cfg.teacher_model or model_spec(student_arch).teacher
    spec = model_spec(name)
    if spec.spiking:
        raise ConfigError(f"--teacher-model {name!r} is a spiking model; teachers are ANNs")
    base = {"in_channels": run.input_shape[0], "num_classes": run.num_classes}
    if "input_size" in model_arguments(name):
        base["input_size"] = run.input_shape[1]
    twin = teacher_arguments(student_arch, student_args) if cfg.teacher_model is None else {}
    args = (
        {k: v for k, v in base.items() if k in model_arguments(name)}
        | twin
        | json_object(cfg.teacher_args, "teacher-args")
    )
    final = run.out / "teacher.pt"
    if cfg.resume and final.is_file():
        ckpt = load_checkpoint(final, kind="teacher")
        check_resumable(ckpt["config"], cfg, final)
        if ckpt["epoch"] >= cfg.teacher_epochs:
            if run.d.main:
                print(f"[teacher] using the finished teacher in {final}", file=sys.stderr)
            return model_from_checkpoint(ckpt, source=str(final)), ckpt.get("final_metrics", {})
    torch.manual_seed(cfg.seed + 1)
    teacher = build_model(name, **args).to(run.device)
    phase = Phase("teacher", name, args, teacher, cfg, run, cfg.teacher_epochs)

    def step(m, x, y, xt, gen):
        logits = m(teacher_input(run.augment(x, gen)))
        return {"ce": F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)}, logits

    result = train_phase(phase, teacher, step)
    metrics = final_metrics(phase, result) | teacher_certainty(teacher, run, cfg.wsld_tau)
    if run.d.main:
        save_checkpoint(final, phase.payload("teacher", cfg.teacher_epochs, result.history, {"final_metrics": metrics}))
        print(f"[teacher] {name}, epoch {result.selected_epoch} selected: {teacher_summary(metrics)}", file=sys.stderr)
    return teacher, metrics


@torch.no_grad()
def teacher_certainty(teacher: nn.Module, run: Run, tau: float) -> dict:
    """How soft the teacher's labels are on its own (unaugmented) training samples: eval-mode
    cross-entropy and the median top probability at the WSLD temperature."""
    teacher.eval()
    ce, tops, n = 0.0, [], 0
    for x, y in run.train.batches(256):
        logits = teacher(teacher_input(x.to(run.device)))
        ce += float(F.cross_entropy(logits, y.to(run.device), reduction="sum"))
        tops.append(F.softmax(logits / tau, 1).max(1).values.cpu())
        n += y.numel()
    return {"train_ce_eval": ce / max(n, 1), "soft_label_top_median": float(torch.cat(tops).median())}


def feature_channels(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return model.forward_features(x)[0].shape[-3 if x.dim() > 2 else -1]


def check_flags_apply(cfg: TrainConfig) -> None:
    """A setting changed from its default that this run would not use is refused, naming what it needs
    (``--distill none --bkd-alpha 0.5`` trained without a word of the feature loss it asked for)."""
    default = TrainConfig()
    trains_teacher = cfg.teacher is None and (cfg.distill != "none" or cfg.epochs == 0)
    needs = [  # (used?, settings, what they need)
        (cfg.distill in ("logits", "mixed"), ("wsld_weight", "logit_scale", "learn_logit_scale"),
         "--distill logits or mixed (WSLD)"),
        (cfg.distill in ("feature", "bkd", "mixed"), ("bkd_alpha", "bkd_order", "bkd_clip"),
         "--distill feature, bkd or mixed (a feature loss)"),
        (cfg.distill in ("bkd", "mixed"), ("bkd_lambda", "bkd_generator"), "--distill bkd or mixed (BKD's blur)"),
        (cfg.distill in ("bkd", "mixed") and cfg.bkd_generator == "bottleneck", ("bkd_width",),
         "--bkd-generator bottleneck"),
        (cfg.distill != "none", ("transfer",), "distillation (a --distill other than none)"),
        (cfg.distill != "none" and bool(cfg.transfer), ("transfer_batch_size",), "--transfer"),
        (cfg.distill != "none" or cfg.epochs == 0, ("teacher",),
         "distillation (a --distill other than none), or --epochs 0"),
        (trains_teacher, ("teacher_model", "teacher_args", "teacher_epochs"),
         "a teacher trained by this run (not --teacher; with --distill none only at --epochs 0)"),
        (not cfg.val_data, ("val_fraction",), "the validation carve-out (not --val-data)"),
        (cfg.val_fraction > 0 or bool(cfg.val_data), ("patience",), "a validation set (--val-fraction or --val-data)"),
        (not cfg.test_data, ("test_split",), "the test split of --dataset (not --test-data)"),
        (cfg.weight_bits is not None, ("per_channel",), "--weight-bits (quantisation-aware training)"),
        (cfg.optimizer == "sgd", ("momentum",), "--optimizer sgd"),
    ]  # fmt: skip
    for used, names, what in needs:
        for name in names:
            if not used and getattr(cfg, name) != getattr(default, name):
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(cfg, name)!r} takes effect only with {what}; "
                                  "this run would ignore it")  # fmt: skip


def train(cfg: TrainConfig) -> dict:
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    arch_args = json_object(cfg.model_args, "model-args")
    check_flags_apply(cfg)
    check_model_arguments(cfg.model, arch_args)  # unknown names and arguments fail before any data is read
    teacher_model = model_spec(cfg.teacher_model).name if cfg.teacher_model else model_spec(cfg.model).teacher
    if not cfg.teacher and teacher_model is not None:  # (or a teacher trained first)
        check_model_arguments(teacher_model, json_object(cfg.teacher_args, "teacher-args"))
    if cfg.epochs < 0 or cfg.teacher_epochs < 0:
        raise ConfigError("--epochs and --teacher-epochs must be >= 0")
    d = setup_distributed(device)
    out = Path(cfg.out)
    if d.main:
        writable_folder(out, "--out")
        existing = [
            p.name for p in (out / "student.last.pt", out / "teacher.last.pt", out / "student.pt") if p.exists()
        ]
        if existing and not (cfg.resume or cfg.overwrite):
            raise ConfigError(
                f"{out} already holds a run ({', '.join(existing)}); pass --resume to continue it or --overwrite to replace it"
            )
        teacher = Path(cfg.teacher) if cfg.teacher else None
        for name in REPLACED if cfg.overwrite and not cfg.resume and teacher and teacher.exists() else ():
            if (out / name).exists() and os.path.samefile(out / name, teacher):  # (it was deleted, then not found)
                raise ConfigError(f"--teacher {teacher} is the run's {name}, which --overwrite deletes: copy it out of "
                                  f"{out} first, or train into another --out")  # fmt: skip
    run = Run(cfg, d, device)
    if d.main:
        if cfg.overwrite and not cfg.resume:
            for name in REPLACED:
                (out / name).unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "config.json", to_dict(cfg))
        sizes = ", ".join(f"{k} {sum(int(s.rsplit(': ', 1)[1]) for s in v)}" for k, v in run.sources.items() if v)
        print(f"data: {sizes} samples; augmentation {run.augment.to_dict() if run.augment.active else 'off'}",
              file=sys.stderr)  # fmt: skip
    if d.world > 1:
        dist.barrier()

    c = run.input_shape[0]
    arch_args = (
        {"in_channels": c, "num_classes": run.num_classes}
        | ({"input_size": run.input_shape[1]} if "input_size" in model_arguments(cfg.model) else {})
        | arch_args
    )

    teacher, teacher_metrics = None, {}
    if cfg.distill != "none" or cfg.epochs == 0:
        teacher, teacher_metrics = obtain_teacher(cfg, run, cfg.model, arch_args)
        teacher = teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    if cfg.epochs == 0:
        result = {"student": {}, "teacher": teacher_metrics}
        if d.main:
            write_json_atomic(out / "summary.json", result)
        return result

    torch.manual_seed(cfg.seed)
    student = build_model(cfg.model, **arch_args).to(device)
    set_weight_quantisation(student, cfg.weight_bits, cfg.per_channel)
    distiller = None
    if cfg.distill in ("feature", "bkd", "mixed"):
        probe = torch.zeros(cfg.steps, 1, *run.input_shape, device=device)
        s_ch = feature_channels(student, probe)
        t_ch = feature_channels(teacher, teacher_input(probe))
        distiller = FeatureDistiller(
            s_ch, t_ch, "feature" if cfg.distill == "feature" else "bkd", cfg.bkd_alpha, cfg.bkd_lambda,
            generator=cfg.bkd_generator, width=cfg.bkd_width, order=cfg.bkd_order, clip=cfg.bkd_clip,
        ).to(device)  # fmt: skip
    objective = StudentObjective(student, distiller, cfg).to(device)
    phase = Phase("student", cfg.model, arch_args, student, cfg, run, cfg.epochs)
    if d.main:
        n_student = sum(p.numel() for p in student.parameters())
        n_head = sum(p.numel() for p in distiller.parameters()) if distiller is not None else 0
        print(f"[student] {cfg.model}: {n_student} parameters; distillation head {n_head} (training only)",
              file=sys.stderr)  # fmt: skip

    def step(m, x, y, xt, gen):
        n = x.shape[1]
        x = run.augment(x if xt is None else torch.cat([x, xt], dim=1), gen)
        t_feature = t_logits = None
        if teacher is not None:
            with torch.no_grad():
                t_feature, t_logits = teacher.forward_features(teacher_input(x))
        return m(x, y, n, t_feature, t_logits, gen)

    res = train_phase(phase, objective, step)
    metrics = final_metrics(phase, res)
    report_dead("student", metrics, run, run.description.get("class_names"))
    result = {"student": metrics, "teacher": teacher_metrics}
    if d.main:
        save_checkpoint(
            out / "student.pt",
            phase.payload(
                "student", cfg.epochs, res.history, {"final_metrics": metrics, "teacher_metrics": teacher_metrics}
            ),
        )
        plot_curves(out / "curves.png", _history(out / "teacher.pt"), res.history, cfg)
        write_json_atomic(out / "summary.json", result)
        val = f", val acc {metrics['val_acc']:.4f}" if "val_acc" in metrics else ""
        print(
            f"student checkpoint: {out / 'student.pt'}  epoch {res.selected_epoch} selected{val}, "
            f"test acc {metrics['test_acc']:.4f} on {metrics['test_samples']} {cfg.dataset}/{cfg.test_split} samples",
            file=sys.stderr,
        )
        print(f"learning curves:    {out / 'curves.png'}", file=sys.stderr)
    if d.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


def _history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    try:
        return load_checkpoint(path, kind="teacher").get("history", [])
    except CheckpointError:
        return []


def plot_curves(path: Path, teacher: list[dict], student: list[dict], cfg: TrainConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for hist, label, style in ((teacher, "teacher (ANN)", "--"), (student, f"student ({cfg.distill})", "-")):
        if not hist:
            continue
        ep = [r["epoch"] for r in hist]
        ax_acc.plot(ep, [r["train_acc"] for r in hist], style, label=f"{label} train")
        ax_loss.plot(ep, [r["train_loss"] for r in hist], style, label=f"{label} train")
        if "val_acc" in hist[0]:
            ax_acc.plot(ep, [r["val_acc"] for r in hist], style, marker="o", ms=3, label=f"{label} validation")
            ax_loss.plot(ep, [r["val_loss"] for r in hist], style, marker="o", ms=3, label=f"{label} validation CE")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title=f"{cfg.model} on {cfg.dataset}, T={cfg.steps}")
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def run_lock(out: str | Path):
    """Held by the process that trains into ``out`` (rank 0 under torchrun): a second training into
    the same folder would interleave its metrics and race for its checkpoints; it is refused."""
    return exclusive(f"{Path(out).resolve()}/train.bkd", f"the run in {out}")


def main(argv: list[str] | None = None) -> int:
    cfg: TrainConfig | None = None
    try:
        cfg = parse_config(TrainConfig, argv, "python -m train.bkd", __doc__)
        with run_lock(cfg.out) if os.environ.get("RANK", "0") == "0" else contextlib.nullcontext():
            result = train(cfg)
    except (SnnDeployError, OSError, MemoryError) as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        saved = cfg is not None and any((Path(cfg.out) / f).is_file() for f in ("teacher.last.pt", "student.last.pt"))
        print("interrupted; the last finished epoch is saved, continue with --resume" if saved
              else "interrupted before the first epoch finished: nothing to resume", file=sys.stderr)  # fmt: skip
        return 130
    return 0 if result else 1


if __name__ == "__main__":
    sys.exit(main())
