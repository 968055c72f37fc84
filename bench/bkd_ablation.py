"""BKD ablation: test accuracy of every distillation mode over several seeds, at equal epochs.

For each dataset and seed, one ANN teacher is trained and shared by the five students
(``none``, ``logits``, ``feature``, ``bkd``, ``mixed``), so the modes differ only in their loss.
Step time is each mode's mean training step time relative to ``none`` measured in the same
process. Writes ``ablation.json``, ``ablation.md`` and ``ablation.png`` under ``--out``.

    python -m bench.bkd_ablation                       # digits and event_digits, 5 seeds
    python -m bench.bkd_ablation --datasets digits --seeds 2 --epochs 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from core.fileio import save_figure, write_json_atomic, write_text_atomic
from train.bkd import TrainConfig, train
from train.distill import DISTILL_MODES

DEFAULTS = {
    "digits": dict(model="digits_csnn", steps=8, epochs=30, teacher_epochs=15),
    "event_digits": dict(model="nmnist_csnn", steps=8, epochs=5, teacher_epochs=5),
}


def run(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    out = Path(args.out)
    results: dict = {"config": vars(args), "datasets": {}}
    jobs = [(ds, seed) for ds in args.datasets for seed in range(args.seeds)]
    bar = tqdm(total=len(jobs) * len(DISTILL_MODES), desc="ablation", unit="run", file=sys.stderr)
    for ds, seed in jobs:
        base = DEFAULTS[ds] | {"limit_train": args.limit_train, "threads": args.threads, "progress": False}
        base |= {k: v for k, v in (("epochs", args.epochs), ("teacher_epochs", args.teacher_epochs)) if v is not None}
        run_dir = out / ds / f"seed{seed}"
        teacher_only = base | {"epochs": 0}
        teacher_cfg = TrainConfig(
            dataset=ds, seed=seed, distill="logits", out=str(run_dir / "teacher"), resume=True, **teacher_only
        )
        train(teacher_cfg)  # epochs=0: trains (or reuses) the teacher only
        teacher = str(run_dir / "teacher" / "teacher.pt")
        for mode in DISTILL_MODES:
            cfg = TrainConfig(dataset=ds, seed=seed, distill=mode, teacher=None if mode == "none" else teacher,
                              out=str(run_dir / mode), overwrite=True, **base)  # fmt: skip
            t0 = time.perf_counter()
            res = train(cfg)["student"]
            entry = (
                results["datasets"].setdefault(ds, {}).setdefault(mode, {"test_acc": [], "step_ms": [], "wall_s": []})
            )
            entry["test_acc"].append(res["test_acc"])
            entry["step_ms"].append(res["step_ms"])
            entry["wall_s"].append(time.perf_counter() - t0)
            bar.update(1)
            bar.set_postfix(ds=ds, seed=seed, mode=mode, acc=f"{res['test_acc']:.3f}")
        write_json_atomic(out / "ablation.json", summarise(results))
    bar.close()
    return summarise(results)


def summarise(results: dict) -> dict:
    for modes in results["datasets"].values():
        none_ms = statistics.mean(modes["none"]["step_ms"]) if "none" in modes else None
        for entry in modes.values():
            accs = entry["test_acc"]
            entry["mean"] = statistics.mean(accs)
            entry["std"] = statistics.stdev(accs) if len(accs) > 1 else 0.0
            entry["step_time_vs_none"] = statistics.mean(entry["step_ms"]) / none_ms if none_ms else None
    return results


def table(results: dict) -> str:
    rows = ["| dataset | mode | test accuracy (mean ± std) | seeds | step time vs none |", "|---|---|---|---|---|"]
    for ds, modes in results["datasets"].items():
        for mode, e in modes.items():
            ratio = f"{e['step_time_vs_none']:.2f}x" if e["step_time_vs_none"] else "-"
            rows.append(
                f"| {ds} | {mode} | {100 * e['mean']:.2f} ± {100 * e['std']:.2f} % | {len(e['test_acc'])} | {ratio} |"
            )
    return "\n".join(rows) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(results["datasets"])
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.6), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        modes = results["datasets"][ds]
        names = list(modes)
        ax.bar(
            names,
            [100 * modes[m]["mean"] for m in names],
            yerr=[100 * modes[m]["std"] for m in names],
            capsize=4,
            color="#4c72b0",
        )
        for i, m in enumerate(names):
            ax.scatter(
                [i] * len(modes[m]["test_acc"]), [100 * a for a in modes[m]["test_acc"]], color="k", s=8, zorder=3
            )
        lo = min(100 * min(modes[m]["test_acc"]) for m in names)
        ax.set(ylim=(max(0, lo - 3), 100), ylabel="test accuracy (%)", title=f"{ds}: student by distillation mode")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--datasets", nargs="+", default=list(DEFAULTS), choices=list(DEFAULTS))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=None, help="student epochs (default: per dataset)")
    p.add_argument("--teacher-epochs", type=int, default=None, help="teacher epochs (default: per dataset)")
    p.add_argument("--limit-train", type=int, default=None, help="train on the first N samples only (smoke runs)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="runs/bench/bkd_ablation")
    args = p.parse_args(argv)
    results = run(args)
    out = Path(args.out)
    write_json_atomic(out / "ablation.json", results)
    write_text_atomic(out / "ablation.md", table(results))
    plot(results, out / "ablation.png")
    print(table(results))
    print(f"written: {out / 'ablation.json'}, {out / 'ablation.md'}, {out / 'ablation.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
