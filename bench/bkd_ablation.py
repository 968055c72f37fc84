"""BKD ablation on real N-MNIST in the low-data regime: paired k-fold runs of every distillation
mode at equal epochs, paired differences against cross-entropy alone, paired t and Wilcoxon tests.

The protocol (all choices fixed before looking at any test fold):

- The 1,000 real recordings of ``--data-root`` are cut into ``--folds`` stratified folds. For fold
  ``f``: the fold is the **test** set (never used for training or selection); ``--val-per-class``
  recordings per class of the rest are the **validation** set (best-epoch selection); from the
  remaining pool, repeat ``r`` draws ``--labelled-per-class`` recordings per class: the
  **labelled** training set. One (fold, repeat) is one *pair*: every configuration trains on
  exactly the same data, seed and teacher.
- The **teacher** of a pair is a wider ANN (``--teacher-args``) trained on the pair's labelled
  recordings plus the emulated N-MNIST digits that are paired with no real recording at all
  (``nmnist_emulated``, ``images: unpaired``: no digit of any test recording can leak in).
- The **students** (``nmnist_csnn``) train for the same epochs on the labelled recordings; the
  distillation modes also see the emulated digits as an unlabelled **transfer set** (their labels
  are never used by a student); ``none`` sees only the labelled recordings.
- Every student is selected on validation accuracy and then evaluated once on its test fold.

    python -m bench.bkd_ablation                              # 5 folds x 2 repeats, all configurations
    python -m bench.bkd_ablation --jobs 2 --configs none,mixed,bkd

Runs are resumable: a finished run's ``summary.json`` is reused, so an interrupted benchmark
continues where it stopped, and another set of configurations over the same pairs reuses the runs
they share (``--name`` keeps its summary apart). Writes ``NAME.json``, ``NAME.md`` and ``NAME.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from bench import at_least
from core.fileio import save_figure, write_json_atomic, write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "eventdata" / "nmnist" / "train"
# The emulated digits, one emulation (seed 0) shared by every run.
EMULATED = {"name": "nmnist_emulated", "split": "all", "images": "unpaired", "seed": 0}

# name -> (distill mode, extra TrainConfig fields). "none" is the baseline every other is paired with.
CONFIGS: dict[str, tuple[str, dict]] = {
    "none": ("none", {}),
    "logits": ("logits", {}),
    "feature": ("feature", {}),
    "bkd": ("bkd", {}),
    "mixed": ("mixed", {}),
    "bkd-bottleneck": ("bkd", {"bkd_generator": "bottleneck"}),
    "bkd-teacher-first": ("bkd", {"bkd_order": "teacher_first"}),
    "bkd-clip": ("bkd", {"bkd_clip": True}),
    "mixed-bottleneck": ("mixed", {"bkd_generator": "bottleneck"}),
    # not distillation: CE on the labelled recordings and on the emulated digits with their labels
    "none+emulated-labels": ("none", {"extra_train": json.dumps(EMULATED)}),
}
MAIN_CONFIGS = ("none", "logits", "feature", "bkd", "mixed")


def split_folds(labels: np.ndarray, args: argparse.Namespace) -> list[dict]:
    """Every (fold, repeat) pair's labelled / validation / test indices (stratified, fixed seeds)."""
    from sklearn.model_selection import StratifiedKFold

    pairs = []
    folds = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=0).split(np.zeros(len(labels)), labels)
    for f, (rest, test) in enumerate(folds):
        rng = np.random.default_rng([1, f])
        val, pool = [], []
        for c in np.unique(labels):
            idx = rest[labels[rest] == c]
            idx = idx[rng.permutation(len(idx))]
            val += idx[: args.val_per_class].tolist()
            pool += idx[args.val_per_class :].tolist()
        pool = np.array(pool)
        for r in range(args.repeats):
            rng_r = np.random.default_rng([2, f, r])
            labelled = []
            for c in np.unique(labels):
                idx = pool[labels[pool] == c]
                labelled += rng_r.choice(idx, size=min(args.labelled_per_class, len(idx)), replace=False).tolist()
            pairs.append({"fold": f, "repeat": r, "seed": 100 * f + r, "train": sorted(labelled),
                          "val": sorted(val), "test": sorted(test.tolist())})  # fmt: skip
    return pairs


def write_subset(folder: Path, files: list[Path], labels: np.ndarray, idx: list[int]) -> Path:
    rows = "".join(f"{files[i].resolve()},{int(labels[i])}\n" for i in idx)
    write_text_atomic(folder / "labels.csv", "file,label\n" + rows)
    return folder


def read_folder(root: Path) -> tuple[list[Path], np.ndarray]:
    with open(root / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [root / r["file"] for r in rows], np.array([int(r["label"]) for r in rows])


def common(pair_dir: Path, args: argparse.Namespace, seed: int) -> dict:
    spec = lambda part: json.dumps({"name": "nmnist", "split": "all", "root": str(pair_dir / part)})  # noqa: E731
    return dict(
        model="nmnist_csnn", dataset="nmnist", data_root=str(pair_dir / "train"), train_split="all",
        val_data=spec("val"), test_data=spec("test"), steps=args.steps, seed=seed, threads=1, progress=False,
        batch_size=args.batch_size, optimizer="adamw", lr=args.lr, weight_decay=args.weight_decay,
        aug_shift=args.aug_shift, aug_drop=args.aug_drop, cache_dir=args.cache_dir,
        model_args=json.dumps(args.student_args), readout_aux=args.readout_aux,
    )  # fmt: skip


def train_job(kind: str, out: Path, cfg_fields: dict) -> dict:
    """One training run in a worker process; a finished run is read back, not repeated."""
    summary = out / "summary.json"
    if summary.is_file():
        return json.loads(summary.read_text())
    from train.bkd import TrainConfig, train

    t0 = time.perf_counter()
    result = train(TrainConfig(out=str(out), overwrite=True, **cfg_fields))
    result["wall_s"] = time.perf_counter() - t0
    write_json_atomic(summary, result)
    return result


def run(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    out = Path(args.out)
    files, labels = read_folder(Path(args.data_root))
    pairs = split_folds(labels, args)[: args.max_pairs]
    configs = args.configs.split(",")
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or "none" not in configs:
        raise SystemExit(f"--configs must include 'none' and name only: {', '.join(CONFIGS)} (unknown: {unknown})")
    emulated = dict(EMULATED, **({"limit": args.limit_emulated} if args.limit_emulated else {}))
    for p in pairs:
        p["dir"] = out / f"fold{p['fold']}-rep{p['repeat']}"
        for part in ("train", "val", "test"):
            write_subset(p["dir"] / part, files, labels, p[part])

    teacher_jobs = {}
    for p in pairs:
        fields = common(p["dir"], args, p["seed"]) | dict(
            epochs=0, distill="logits", teacher_model="nmnist_cnn", teacher_args=json.dumps(args.teacher_args),
            teacher_epochs=args.teacher_epochs, extra_train=json.dumps(emulated),
        )  # fmt: skip
        teacher_jobs[p["dir"].name] = (p["dir"] / "teacher", fields)
    student_jobs = {}
    for p in pairs:
        for name in configs:
            mode, extra = CONFIGS[name]
            fields = common(p["dir"], args, p["seed"]) | dict(epochs=args.epochs, distill=mode) | extra
            if "extra_train" in extra:
                fields["extra_train"] = json.dumps(emulated)
            if mode != "none":
                fields |= dict(teacher=str(p["dir"] / "teacher" / "teacher.pt"), transfer=json.dumps(emulated),
                               transfer_batch_size=args.batch_size)  # fmt: skip
            student_jobs[(p["dir"].name, name)] = (p["dir"] / name, fields)

    results: dict = {"teachers": {}, "students": {}}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for stage, jobs in (("teachers", teacher_jobs), ("students", student_jobs)):
            futures = {pool.submit(train_job, stage, path, fields): key for key, (path, fields) in jobs.items()}
            bar = tqdm(total=len(futures), desc=f"ablation {stage}", unit="run", file=sys.stderr, dynamic_ncols=True)
            for fut in as_completed(futures):
                key = futures[fut]
                res = fut.result()
                results[stage][json.dumps(key) if isinstance(key, tuple) else key] = res
                bar.update(1)
                if stage == "students":
                    bar.set_postfix(run=f"{key[0]}/{key[1]}", acc=f"{res['student']['test_acc']:.3f}")
            bar.close()
    summary = summarise(pairs, configs, results, args)
    return summary


def paired_stats(base: list[float], other: list[float]) -> dict:
    from scipy import stats

    d = np.array(other) - np.array(base)
    res = {"mean_diff": float(d.mean()), "sd_diff": float(d.std(ddof=1)) if len(d) > 1 else 0.0, "n": len(d)}
    if len(d) > 1 and np.any(d != 0):
        res["t"], res["p_t"] = (float(v) for v in stats.ttest_rel(other, base))
        res["p_wilcoxon"] = float(stats.wilcoxon(d, zero_method="zsplit").pvalue)
    else:
        res |= {"t": 0.0, "p_t": 1.0, "p_wilcoxon": 1.0}
    return res


def summarise(pairs: list[dict], configs: list[str], results: dict, args: argparse.Namespace) -> dict:
    keys = [p["dir"].name for p in pairs]
    acc = {c: [results["students"][json.dumps([k, c])]["student"]["test_acc"] for k in keys] for c in configs}
    teacher_acc = [results["teachers"][k]["teacher"]["test_acc"] for k in keys]
    summary = {
        "protocol": {k: v for k, v in vars(args).items()},
        "pairs": keys,
        "test_samples_per_pair": [len(p["test"]) for p in pairs],
        "labelled_per_pair": [len(p["train"]) for p in pairs],
        "teacher_test_acc": teacher_acc,
        "teacher_soft_label_top_median": [results["teachers"][k]["teacher"].get("soft_label_top_median") for k in keys],
        "configs": {},
    }
    for c in configs:
        runs = [results["students"][json.dumps([k, c])] for k in keys]
        entry = {
            "test_acc": acc[c],
            "mean": float(np.mean(acc[c])),
            "std": float(np.std(acc[c], ddof=1)) if len(keys) > 1 else 0.0,
            "selected_epoch": [r["student"]["selected_epoch"] for r in runs],
            "dead_classes": [r["student"].get("dead_classes", []) for r in runs],
            "wall_s": [r.get("wall_s") for r in runs],
            "step_ms": statistics.mean(r["student"]["step_ms"] for r in runs),
        }
        if c != "none":
            entry["vs_none"] = paired_stats(acc["none"], acc[c])
        summary["configs"][c] = entry
    # Holm's correction over the configurations compared with none
    compared = sorted((e["vs_none"]["p_t"], c) for c, e in summary["configs"].items() if "vs_none" in e)
    m, running = len(compared), 0.0
    for i, (p, c) in enumerate(compared):
        running = max(running, min(1.0, (m - i) * p))
        e = summary["configs"][c]["vs_none"]
        e["p_t_holm"] = running
        e["beats_none"] = bool(e["mean_diff"] > e["sd_diff"] and e["p_t"] < 0.05)
    return summary


def table(summary: dict) -> str:
    n = len(summary["pairs"])
    rows = [
        f"| configuration | test accuracy (mean ± sd over {n} pairs) | vs none: mean diff ± sd | paired t p "
        "| Wilcoxon p | Holm p | beats none (diff > sd, p < 0.05) |",
        "|---|---|---|---|---|---|---|",
    ]
    for c, e in summary["configs"].items():
        acc = f"{100 * e['mean']:.2f} ± {100 * e['std']:.2f} %"
        if "vs_none" not in e:
            rows.append(f"| {c} | {acc} | - | - | - | - | - |")
            continue
        v = e["vs_none"]
        rows.append(
            f"| {c} | {acc} | {100 * v['mean_diff']:+.2f} ± {100 * v['sd_diff']:.2f} | {v['p_t']:.3g} "
            f"| {v['p_wilcoxon']:.3g} | {v['p_t_holm']:.3g} | {'yes' if v['beats_none'] else 'no'} |"
        )
    t = summary["teacher_test_acc"]
    rows.append("")
    rows.append(
        f"Teachers: {100 * np.mean(t):.2f} ± {100 * np.std(t, ddof=1 if len(t) > 1 else 0):.2f} % on the same test folds; "
        f"median top soft-label probability on their training samples {np.median(summary['teacher_soft_label_top_median']):.3f}. "
        f"Labelled recordings per pair: {summary['labelled_per_pair'][0]}; test recordings per pair: "
        f"{summary['test_samples_per_pair'][0]}."
    )
    return "\n".join(rows) + "\n"


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = list(summary["configs"])
    fig, (ax, ax_d) = plt.subplots(1, 2, figsize=(12, 4.2))
    base = np.array(summary["configs"]["none"]["test_acc"]) * 100
    for i, c in enumerate(configs):
        acc = np.array(summary["configs"][c]["test_acc"]) * 100
        ax.bar(i, acc.mean(), yerr=acc.std(ddof=1) if len(acc) > 1 else 0, capsize=3, color="#4c72b0", alpha=0.6)
        ax.scatter(np.full(len(acc), i), acc, color="k", s=8, zorder=3)
    lo = min(min(summary["configs"][c]["test_acc"]) for c in configs) * 100
    ax.set(xticks=range(len(configs)), ylim=(max(0, lo - 3), 100), ylabel="test accuracy (%)",
           title="students on the real test folds")  # fmt: skip
    ax.set_xticklabels(configs, rotation=30, ha="right", fontsize=8)
    others = [c for c in configs if c != "none"]
    for i, c in enumerate(others):
        d = np.array(summary["configs"][c]["test_acc"]) * 100 - base
        ax_d.scatter(np.full(len(d), i), d, color="k", s=8, zorder=3)
        ax_d.errorbar(i, d.mean(), yerr=d.std(ddof=1) if len(d) > 1 else 0, fmt="o", color="#c44e52", capsize=4)
    ax_d.axhline(0, color="grey", lw=1)
    ax_d.set(xticks=range(len(others)), ylabel="paired difference to none (points)",
             title="paired differences (mean ± sd)")  # fmt: skip
    ax_d.set_xticklabels(others, rotation=30, ha="right", fontsize=8)
    for a in (ax, ax_d):
        a.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data-root", default=str(DEFAULT_DATA), help="folder of real N-MNIST recordings with labels.csv")
    p.add_argument("--folds", type=at_least(2), default=5)
    p.add_argument("--repeats", type=at_least(1), default=2, help="labelled draws per fold")
    p.add_argument("--max-pairs", type=at_least(1), default=None, help="use only the first N (fold, repeat) pairs")
    p.add_argument("--labelled-per-class", type=at_least(1), default=10)
    p.add_argument("--val-per-class", type=at_least(1), default=10)
    p.add_argument("--configs", default=",".join(MAIN_CONFIGS), help=f"comma-separated, from: {', '.join(CONFIGS)}")
    p.add_argument("--epochs", type=at_least(1), default=60, help="student epochs (passes over the labelled set)")
    p.add_argument("--teacher-epochs", type=at_least(1), default=15)
    p.add_argument("--teacher-args", type=json.loads, default={"channels": [32, 64, 128], "batch_norm": True})
    p.add_argument("--student-args", type=json.loads, default={"batch_norm": True})
    p.add_argument("--steps", type=at_least(1), default=8)
    p.add_argument("--batch-size", type=at_least(1), default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--aug-shift", type=int, default=2)
    p.add_argument("--aug-drop", type=float, default=0.1)
    p.add_argument("--readout-aux", type=float, default=0.1)
    p.add_argument("--limit-emulated", type=int, default=None, help="use only the first N emulated digits (smoke runs)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel, one thread each")
    p.add_argument("--cache-dir", default="runs/cache")
    p.add_argument("--out", default="runs/bench/bkd_ablation")
    p.add_argument("--name", default="ablation", help="file name of the summary (NAME.json, .md, .png) under --out")
    args = p.parse_args(argv)
    if not (Path(args.data_root) / "labels.csv").is_file():
        print(
            f"bkd_ablation: no labels.csv under {args.data_root}; the protocol needs real recordings", file=sys.stderr
        )
        return 2
    summary = run(args)
    out = Path(args.out)
    paths = [out / f"{args.name}.{ext}" for ext in ("json", "md", "png")]
    write_json_atomic(paths[0], summary)
    write_text_atomic(paths[1], table(summary))
    plot(summary, paths[2])
    print(table(summary))
    print(f"written: {', '.join(map(str, paths))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
