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

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset

from core.config import parse_config, to_dict
from core.errors import CheckpointError, ConfigError, SnnDeployError, TrainingError
from core.fileio import append_line, save_figure, write_json_atomic, write_text_atomic
from inputs.datasets import load_dataset
from train.checkpoint import load_checkpoint, model_from_checkpoint, neuron_parameters, save_checkpoint
from train.distill import DISTILL_MODES, FeatureDistiller, wsld_loss
from train.models import (
    MODELS,
    build_model,
    model_arguments,
    model_spec,
    set_weight_quantisation,
    teacher_arguments,
)


@dataclass
class TrainConfig:
    model: str = field(
        default="digits_csnn",
        metadata={"help": "student architecture: " + ", ".join(sorted(n for n, s in MODELS.items() if s.spiking))},
    )
    model_args: str = field(
        default="{}", metadata={"help": "JSON object of extra architecture arguments, e.g. '{\"width\": 32}'"}
    )
    dataset: str = field(
        default="digits",
        metadata={
            "help": "dataset name (digits, event_digits, nmnist, dvs_gesture, cifar10_dvs, cifar10, cifar100, imagenet)"
        },
    )
    data_root: str | None = field(
        default=None, metadata={"help": "local folder holding the dataset (real datasets only; nothing downloads)"}
    )
    steps: int = field(default=8, metadata={"help": "time steps T per sample"})
    distill: str = field(
        default="mixed",
        metadata={
            "help": "none: CE only; logits: +WSLD; feature: +plain feature MSE; bkd: +blurred feature KD; mixed: CE + BKD + WSLD",
            "choices": list(DISTILL_MODES),
        },
    )
    teacher: str | None = field(default=None, metadata={"help": "teacher checkpoint to use instead of training one"})
    teacher_epochs: int = field(default=15, metadata={"help": "epochs for training the ANN teacher"})
    epochs: int = field(default=30, metadata={"help": "epochs for the student"})
    batch_size: int = field(default=64, metadata={"help": "batch size (per process when distributed)"})
    lr: float = field(default=3e-3, metadata={"help": "Adam learning rate, cosine-annealed to 0"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay"})
    bkd_alpha: float = field(default=2e-3, metadata={"help": "weight alpha of the feature loss (bkd, feature, mixed)"})
    bkd_lambda: float = field(default=0.15, metadata={"help": "probability lambda that BKD masks a (sample, channel)"})
    wsld_tau: float = field(default=2.0, metadata={"help": "WSLD temperature"})
    wsld_weight: float = field(default=1.0, metadata={"help": "weight of the WSLD loss (logits, mixed)"})
    weight_bits: int | None = field(
        default=None, metadata={"help": "quantisation-aware training with this many weight bits (None: off)"}
    )
    per_channel: bool = field(
        default=True, metadata={"help": "per-output-channel weight scales (else per layer) for QAT"}
    )
    seed: int = field(default=0, metadata={"help": "seed for data split, initialisation, shuffling and masks"})
    out: str = field(default="runs/bkd", metadata={"help": "run folder for checkpoints, metrics and plots"})
    resume: bool = field(default=False, metadata={"help": "continue the run in --out (completed phases are skipped)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing run in --out"})
    limit_train: int | None = field(
        default=None, metadata={"help": "use only the first N training samples (quick runs)"}
    )
    limit_test: int | None = field(default=None, metadata={"help": "use only the first N test samples"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present), cpu or cuda"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (None: torch's default)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    cache_dir: str | None = field(
        default="runs/cache", metadata={"help": "folder for cached emulated event data (None: no disk cache)"}
    )


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


def student_logits(out_spikes: torch.Tensor) -> torch.Tensor:
    """The student's logits are its output spike counts over the T steps: what deployment reports."""
    return out_spikes.sum(0)


def teacher_input(x: torch.Tensor) -> torch.Tensor:
    """The ANN teacher sees the student's input averaged over time, ``(T, B, ...) -> (B, ...)``."""
    return x.mean(0)


class StudentObjective(nn.Module):
    """Student plus training-only distillation parts; ``forward`` returns the loss terms.

    One module so that DistributedDataParallel synchronises the student and the generation block
    together. Only ``student`` is ever saved into the deployable checkpoint.
    """

    def __init__(self, student: nn.Module, distiller: FeatureDistiller | None, cfg: TrainConfig) -> None:
        super().__init__()
        self.student, self.distiller, self.cfg = student, distiller, cfg

    def forward(self, x, y, t_feature, t_logits, generator):
        feature, out = self.student.forward_features(x)
        logits = student_logits(out)
        terms = {"ce": F.cross_entropy(logits, y)}
        mode = self.cfg.distill
        if mode in ("logits", "mixed"):
            terms["wsld"] = self.cfg.wsld_weight * wsld_loss(logits, t_logits, y, self.cfg.wsld_tau)
        if mode in ("feature", "bkd", "mixed"):
            terms["feature"] = self.distiller(feature.mean(0), t_feature, generator)
        return terms, logits


def make_loader(ds, cfg: TrainConfig, d: Dist, epoch: int, train: bool) -> DataLoader:
    if not train:
        # Every rank evaluates the whole test set: a DistributedSampler would pad it with repeats
        # and miscount; test sets here are small next to training.
        return DataLoader(ds, batch_size=256)
    if d.world > 1:
        sampler = DistributedSampler(ds, d.world, d.rank, shuffle=True, seed=cfg.seed)
        sampler.set_epoch(epoch)
    else:
        # A generator seeded by (seed, epoch): a resumed run sees exactly the batches it would have.
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
    return DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=False)


def to_time_first(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(0, 1).contiguous()  # (B, T, ...) -> (T, B, ...)


@torch.no_grad()
def evaluate(model: nn.Module, ds, spiking: bool, cfg: TrainConfig, d: Dist, device: torch.device) -> dict[str, float]:
    model.eval()
    correct = total = loss_sum = spikes = 0.0
    for x, y in make_loader(ds, cfg, d, 0, train=False):
        x, y = to_time_first(x).to(device), y.to(device)
        if spiking:
            out = model(x)
            logits = student_logits(out)
            spikes += float(out.sum())
        else:
            logits = model(teacher_input(x))
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += float((logits.argmax(1) == y).sum())
        total += y.numel()
    res = {"test_acc": correct / max(total, 1), "test_loss": loss_sum / max(total, 1)}
    if spiking:
        res["test_output_spikes_per_sample"] = spikes / max(total, 1)
    return res


def progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit="batch", disable=not enabled, dynamic_ncols=True, leave=False, file=sys.stderr
    )


# ---------------------------------------------------------------------------------------------
# One training phase (teacher or student), resumable per epoch


class Phase:
    """Trains one model for ``epochs``, writing ``<name>.last.pt`` every epoch and ``<name>.pt`` at the end."""

    def __init__(
        self, name: str, arch: str, arch_args: dict, model: nn.Module, cfg: TrainConfig, run: Run, epochs: int
    ) -> None:
        self.name, self.arch, self.arch_args, self.model, self.cfg, self.run, self.epochs = (
            name,
            arch,
            arch_args,
            model,
            cfg,
            run,
            epochs,
        )
        self.spiking = model_spec(arch).spiking

    def payload(self, kind: str, epoch: int, history: list[dict], extra: dict | None = None) -> dict:
        p = {
            "kind": kind,
            "arch": self.arch,
            "arch_args": self.arch_args,
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "neurons": neuron_parameters(self.model),
            "dataset": self.run.train_ds.describe(),
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


class Run:
    """State shared by the phases of one ``train.bkd`` invocation."""

    def __init__(self, cfg: TrainConfig, d: Dist, device: torch.device) -> None:
        self.cfg, self.d, self.device = cfg, d, device
        self.out = Path(cfg.out)
        kwargs: dict[str, Any] = {"root": cfg.data_root, "steps": cfg.steps, "seed": cfg.seed}
        if cfg.dataset == "event_digits" and cfg.cache_dir:
            kwargs["cache_dir"] = cfg.cache_dir
        self.train_ds = load_dataset(cfg.dataset, "train", **kwargs)
        self.test_ds = load_dataset(cfg.dataset, "test", **kwargs)
        if cfg.limit_train:
            self.train_ds_used = Subset(self.train_ds, range(min(cfg.limit_train, len(self.train_ds))))
        else:
            self.train_ds_used = self.train_ds
        self.test_ds_used = (
            Subset(self.test_ds, range(min(cfg.limit_test, len(self.test_ds)))) if cfg.limit_test else self.test_ds
        )

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


def check_resumable(saved: dict, cfg: TrainConfig, path: Path) -> None:
    now = to_dict(cfg)
    differ = sorted(k for k in now if k not in RESUME_FREE_KEYS and saved.get(k) != now[k])
    if differ:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in differ)
        raise ConfigError(f"cannot resume from {path}: the config differs ({detail}); use another --out or --overwrite")


def train_phase(
    phase: Phase, objective: nn.Module, params: list[nn.Parameter], step_fn, extra_state: dict[str, nn.Module]
) -> list[dict]:
    """The epoch loop shared by teacher and student; returns the per-epoch history."""
    cfg, run, d, device = phase.cfg, phase.run, phase.run.d, phase.run.device
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(phase.epochs, 1))
    history: list[dict] = []
    start = 0
    last_path = run.out / f"{phase.name}.last.pt"
    if cfg.resume and last_path.is_file():
        ckpt = load_checkpoint(last_path, kind="resume")
        check_resumable(ckpt["config"], cfg, last_path)
        phase.model.load_state_dict(ckpt["state_dict"])
        for key, module in extra_state.items():
            module.load_state_dict(ckpt[key])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        history, start = ckpt["history"], ckpt["epoch"]
        run.restore_log(phase.name, history)
        if d.main:
            print(f"[{phase.name}] resuming from {last_path} after epoch {start}", file=sys.stderr)
    if phase.epochs != scheduler.T_max:
        scheduler.T_max = max(phase.epochs, 1)

    model_for_ddp = objective
    if d.world > 1:
        model_for_ddp = nn.parallel.DistributedDataParallel(objective)

    for epoch in range(start, phase.epochs):
        objective.train()
        loader = make_loader(run.train_ds_used, cfg, d, epoch, train=True)
        gen = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + epoch * 7919 + d.rank)
        sums: dict[str, float] = {}
        correct = total = 0.0
        t0 = time.perf_counter()
        bar = progress_bar(len(loader), f"{phase.name} {epoch + 1}/{phase.epochs}", cfg.progress and d.main)
        for step, (x, y) in enumerate(loader):
            x, y = to_time_first(x).to(device), y.to(device)
            terms, logits = step_fn(model_for_ddp, x, y, gen)
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
            correct += float((logits.argmax(1) == y).sum())
            total += n
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", acc=f"{correct / total:.3f}")
        bar.close()
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
            **evaluate(phase.model, run.test_ds_used, phase.spiking, cfg, d, device),
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_seconds": elapsed,
            "step_ms": 1000 * elapsed / max(len(loader), 1),
            "world_size": d.world,
        }
        history.append(record)
        if d.main:
            print(
                f"[{phase.name}] epoch {epoch + 1}/{phase.epochs}  loss {record['train_loss']:.4f}  "
                f"train acc {record['train_acc']:.4f}  test acc {record['test_acc']:.4f}  ({elapsed:.1f} s)",
                file=sys.stderr,
            )
            extra = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
            extra |= {k: m.state_dict() for k, m in extra_state.items()}
            save_checkpoint(last_path, phase.payload("resume", epoch + 1, history, extra))
        run.log(record)
    return history


# ---------------------------------------------------------------------------------------------
# Teacher and student


def obtain_teacher(cfg: TrainConfig, run: Run, student_arch: str, student_args: dict) -> tuple[nn.Module, list[dict]]:
    """Load ``--teacher`` or the run's finished teacher, else train the matching ANN."""
    in_shape = tuple(run.train_ds.input_shape)
    if cfg.teacher:
        ckpt = load_checkpoint(cfg.teacher, kind="teacher")
        teacher = model_from_checkpoint(ckpt, source=cfg.teacher)
        t_shape = tuple(ckpt.get("dataset", {}).get("input_shape", in_shape))
        if t_shape != in_shape:
            raise CheckpointError(
                f"teacher {cfg.teacher} was trained on inputs {t_shape}, the student's data is {in_shape}"
            )
        return teacher, ckpt.get("history", [])
    name = model_spec(student_arch).teacher
    args = teacher_arguments(student_arch, student_args)
    final = run.out / "teacher.pt"
    if cfg.resume and final.is_file():
        ckpt = load_checkpoint(final, kind="teacher")
        check_resumable(ckpt["config"], cfg, final)
        if ckpt["epoch"] >= cfg.teacher_epochs:
            if run.d.main:
                print(f"[teacher] using the finished teacher in {final}", file=sys.stderr)
            return model_from_checkpoint(ckpt, source=str(final)), ckpt["history"]
    torch.manual_seed(cfg.seed + 1)
    teacher = build_model(name, **args).to(run.device)
    phase = Phase("teacher", name, args, teacher, cfg, run, cfg.teacher_epochs)

    def step(m, x, y, gen):
        logits = m(teacher_input(x))
        return {"ce": F.cross_entropy(logits, y)}, logits

    history = train_phase(phase, teacher, list(teacher.parameters()), step, {})
    if run.d.main:
        save_checkpoint(final, phase.payload("teacher", cfg.teacher_epochs, history))
    return teacher, history


def feature_channels(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return model.forward_features(x)[0].shape[-3 if x.dim() > 2 else -1]


def train(cfg: TrainConfig) -> dict:
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        arch_args = json.loads(cfg.model_args)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--model-args is not valid JSON: {e}") from None
    if not isinstance(arch_args, dict):
        raise ConfigError("--model-args must be a JSON object")
    model_spec(cfg.model)  # unknown names fail before any data is read
    d = setup_distributed(device)
    run = Run(cfg, d, device)
    out = run.out
    if d.main:
        existing = [
            p.name for p in (out / "student.last.pt", out / "teacher.last.pt", out / "student.pt") if p.exists()
        ]
        if existing and not (cfg.resume or cfg.overwrite):
            raise ConfigError(
                f"{out} already holds a run ({', '.join(existing)}); pass --resume to continue it or --overwrite to replace it"
            )
        if cfg.overwrite and not cfg.resume:
            for name in ("student.last.pt", "teacher.last.pt", "student.pt", "teacher.pt", "metrics.jsonl"):
                (out / name).unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "config.json", to_dict(cfg))
    if d.world > 1:
        dist.barrier()

    c, h, w = run.train_ds.input_shape
    arch_args = (
        {"in_channels": c, "num_classes": run.train_ds.num_classes}
        | ({"input_size": h} if "input_size" in model_arguments(cfg.model) else {})
        | arch_args
    )

    teacher, teacher_history = None, []
    if cfg.distill != "none":
        teacher, teacher_history = obtain_teacher(cfg, run, cfg.model, arch_args)
        teacher = teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    torch.manual_seed(cfg.seed)
    student = build_model(cfg.model, **arch_args).to(device)
    set_weight_quantisation(student, cfg.weight_bits, cfg.per_channel)
    distiller = None
    if cfg.distill in ("feature", "bkd", "mixed"):
        probe = torch.zeros(cfg.steps, 1, c, h, w, device=device)
        s_ch = feature_channels(student, probe)
        t_ch = feature_channels(teacher, teacher_input(probe))
        distiller = FeatureDistiller(
            s_ch, t_ch, "feature" if cfg.distill == "feature" else "bkd", cfg.bkd_alpha, cfg.bkd_lambda
        ).to(device)
    objective = StudentObjective(student, distiller, cfg)
    phase = Phase("student", cfg.model, arch_args, student, cfg, run, cfg.epochs)

    def step(m, x, y, gen):
        t_feature = t_logits = None
        if teacher is not None:
            with torch.no_grad():
                t_feature, t_logits = teacher.forward_features(teacher_input(x))
        return m(x, y, t_feature, t_logits, gen)

    extra = {"distiller": distiller} if distiller is not None else {}
    history = train_phase(phase, objective, list(objective.parameters()), step, extra)
    result = {"student": history[-1] if history else {}, "teacher": teacher_history[-1] if teacher_history else {}}
    if d.main:
        save_checkpoint(
            out / "student.pt", phase.payload("student", cfg.epochs, history, {"teacher_metrics": result["teacher"]})
        )
        plot_curves(out / "curves.png", teacher_history, history, cfg)
        write_json_atomic(out / "summary.json", result)
        print(
            f"student checkpoint: {out / 'student.pt'}  test acc {result['student'].get('test_acc', float('nan')):.4f}",
            file=sys.stderr,
        )
        print(f"learning curves:    {out / 'curves.png'}", file=sys.stderr)
    if d.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


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
        ax_acc.plot(ep, [r["test_acc"] for r in hist], style, marker="o", ms=3, label=f"{label} test")
        ax_loss.plot(ep, [r["train_loss"] for r in hist], style, label=f"{label} train")
        ax_loss.plot(ep, [r["test_loss"] for r in hist], style, marker="o", ms=3, label=f"{label} test CE")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title=f"{cfg.model} on {cfg.dataset}, T={cfg.steps}")
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_config(TrainConfig, argv, "python -m train.bkd", __doc__.strip().splitlines()[0])
        result = train(cfg)
    except SnnDeployError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last finished epoch is saved, continue with --resume", file=sys.stderr)
        return 130
    return 0 if result else 1


if __name__ == "__main__":
    sys.exit(main())
