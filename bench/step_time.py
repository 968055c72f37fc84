"""Training step time of each distillation mode relative to ``none``, measured interleaved.

One full training step (teacher forward where needed, student forward, losses, backward,
optimizer step) on the same batch, mode after mode in round-robin, so that a busy machine slows
every mode alike; the median of the rounds is reported. Writes ``step_time.json`` under ``--out``.

    python -m bench.step_time --dataset digits
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from bench import at_least
from core.fileio import write_json_atomic
from inputs.datasets import load_dataset, spike_batch
from train.bkd import StudentObjective, TrainConfig, feature_channels, teacher_input
from train.distill import DISTILL_MODES, FeatureDistiller
from train.models import build_model, model_spec, teacher_arguments

MODELS = {"digits": "digits_csnn", "event_digits": "nmnist_csnn"}


def measure(dataset: str, rounds: int, batch_size: int, steps: int) -> dict:
    ds = load_dataset(
        dataset, "train", steps=steps, **({"cache_dir": "runs/cache"} if dataset == "event_digits" else {})
    )
    spikes, labels = spike_batch(ds, range(batch_size))
    x, y = torch.from_numpy(spikes), torch.from_numpy(labels)
    arch = MODELS[dataset]
    c, h, w = ds.input_shape
    args = {"in_channels": c, "input_size": h, "num_classes": ds.num_classes}
    teacher = build_model(model_spec(arch).teacher, **teacher_arguments(arch, args)).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    setups = {}
    for mode in DISTILL_MODES:
        torch.manual_seed(0)
        student = build_model(arch, **args)
        distiller = None
        if mode in ("feature", "bkd", "mixed"):
            s_ch = feature_channels(student, x[:, :1])
            t_ch = feature_channels(teacher, teacher_input(x[:, :1]))
            distiller = FeatureDistiller(s_ch, t_ch, "feature" if mode == "feature" else "bkd")
        objective = StudentObjective(student, distiller, TrainConfig(distill=mode))
        setups[mode] = (objective, torch.optim.Adam(objective.parameters(), lr=1e-3))
    gen = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {m: [] for m in DISTILL_MODES}
    for r in range(rounds + 2):  # two warm-up rounds
        for mode, (objective, opt) in setups.items():
            t0 = time.perf_counter()
            t_feature = t_logits = None
            if mode != "none":
                with torch.no_grad():
                    t_feature, t_logits = teacher.forward_features(teacher_input(x))
            terms, _ = objective(x, y, y.numel(), t_feature, t_logits, gen)
            opt.zero_grad(set_to_none=True)
            sum(terms.values()).backward()
            opt.step()
            if r >= 2:
                times[mode].append(time.perf_counter() - t0)
    med = {m: statistics.median(v) for m, v in times.items()}
    return {"dataset": dataset, "batch_size": batch_size, "steps": steps, "rounds": rounds,
            "median_step_ms": {m: 1000 * v for m, v in med.items()},
            "relative_to_none": {m: v / med["none"] for m, v in med.items()}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--datasets", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--rounds", type=at_least(1), default=30)
    p.add_argument("--batch-size", type=at_least(1), default=64)
    p.add_argument("--steps", type=at_least(1), default=8)
    p.add_argument("--out", default="runs/bench/step_time")
    args = p.parse_args(argv)
    results = [measure(ds, args.rounds, args.batch_size, args.steps) for ds in args.datasets]
    write_json_atomic(Path(args.out) / "step_time.json", results)
    for r in results:
        print(
            f"{r['dataset']}: "
            + ", ".join(f"{m} {r['median_step_ms'][m]:.1f} ms ({r['relative_to_none'][m]:.2f}x)" for m in DISTILL_MODES)
        )
    print(json.dumps({"written": str(Path(args.out) / "step_time.json")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
