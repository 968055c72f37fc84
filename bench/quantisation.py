"""Accuracy of deployment: float checkpoint vs quantised graphs, with and without QAT.

For the digits and the emulated-event-digits students, trained once without and once with
quantisation-aware training (8-bit, per channel), the full test split's accuracy of: the float
checkpoint (torch), float precision with 8/6/4-bit weights, and fixed precision (Loihi-2
integers), the graphs run by the reference. Goal: 8-bit and fixed within 0.5 points of float.
Writes ``quantisation.json``, ``quantisation.md`` and ``quantisation.png`` under ``--out``.

    python -m bench.quantisation
    python -m bench.quantisation --datasets digits --epochs 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from bench import at_least
from convert.build import build_nir
from convert.to_nir import torch_run
from core.fileio import save_figure, write_json_atomic, write_text_atomic
from inputs.datasets import dataset_from_description, spike_batch
from targets import reference
from targets.plan import load_plan
from train.bkd import TrainConfig, train
from train.checkpoint import load_checkpoint, model_from_checkpoint

SETUPS = {
    "digits": dict(model="digits_csnn", epochs=30, teacher_epochs=15),
    "event_digits": dict(model="nmnist_csnn", epochs=6, teacher_epochs=5),
}
COLUMNS = ["float checkpoint", "float 8-bit", "float 6-bit", "float 4-bit", "fixed"]


def evaluate(ckpt_path: Path, batch: int = 90) -> dict[str, float]:
    ckpt = load_checkpoint(ckpt_path, kind="student")
    model = model_from_checkpoint(ckpt).eval()
    test = dataset_from_description(ckpt["dataset"], "test")
    train_ds = dataset_from_description(ckpt["dataset"], "train")
    calibration, _ = spike_batch(train_ds, np.random.default_rng(1).choice(len(train_ds), 256, replace=False))
    shape, steps = tuple(test.input_shape), test.steps
    graphs = {
        "float 8-bit": build_nir(model, shape, weight_bits=8, steps=steps)[0],
        "float 6-bit": build_nir(model, shape, weight_bits=6, steps=steps)[0],
        "float 4-bit": build_nir(model, shape, weight_bits=4, steps=steps)[0],
        "fixed": build_nir(model, shape, precision="fixed", steps=steps, calibration=calibration)[0],
    }
    plans = {k: load_plan(g) for k, g in graphs.items()}
    correct = dict.fromkeys(COLUMNS, 0)
    for start in range(0, len(test), batch):
        x, y = spike_batch(test, range(start, min(start + batch, len(test))))
        correct["float checkpoint"] += int((torch_run(model, x)[0].argmax(1) == y).sum())
        for k, plan in plans.items():
            correct[k] += int((reference.run(plan, x).counts.argmax(1) == y).sum())
    return {k: v / len(test) for k, v in correct.items()}


def run(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    out = Path(args.out)
    results: dict = {"columns": COLUMNS, "rows": []}
    jobs = [(ds, qat) for ds in args.datasets for qat in (False, True)]
    for ds, qat in tqdm(jobs, desc="quantisation", unit="model", file=sys.stderr):
        setup = SETUPS[ds] | ({"epochs": args.epochs} if args.epochs else {})
        run_dir = out / f"{ds}{'-qat8' if qat else ''}"
        cfg = TrainConfig(dataset=ds, out=str(run_dir), resume=True, progress=False, threads=args.threads,
                          weight_bits=8 if qat else None, **setup)  # fmt: skip
        train(cfg)
        accs = evaluate(run_dir / "student.pt")
        results["rows"].append({"dataset": ds, "qat": qat, "accuracy": accs})
        write_json_atomic(out / "quantisation.json", results)
    return results


def table(results: dict) -> str:
    head = "| dataset | training | " + " | ".join(COLUMNS) + " | 8-bit - float | fixed - float |"
    rows = [head, "|" + "---|" * (len(COLUMNS) + 4)]
    for r in results["rows"]:
        a = r["accuracy"]
        cells = " | ".join(f"{100 * a[c]:.2f}" for c in COLUMNS)
        d8, dfx = 100 * (a["float 8-bit"] - a["float checkpoint"]), 100 * (a["fixed"] - a["float checkpoint"])
        rows.append(f"| {r['dataset']} | {'QAT 8-bit' if r['qat'] else 'float'} | {cells} | {d8:+.2f} | {dfx:+.2f} |")
    return "\n".join(rows) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    n = len(results["rows"])
    width = 0.8 / len(COLUMNS)
    for j, col in enumerate(COLUMNS):
        vals = [100 * r["accuracy"][col] for r in results["rows"]]
        ax.bar(np.arange(n) + j * width, vals, width, label=col)
    ax.set_xticks(np.arange(n) + 0.4 - width / 2)
    ax.set_xticklabels([f"{r['dataset']}\n{'QAT 8-bit' if r['qat'] else 'float training'}" for r in results["rows"]])
    low = min(100 * min(r["accuracy"].values()) for r in results["rows"])
    ax.set(
        ylabel="test accuracy (%)", ylim=(max(0, low - 5), 100), title="accuracy after quantisation (reference target)"
    )
    ax.legend(fontsize=8, ncol=5, loc="lower center")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--datasets", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    p.add_argument("--epochs", type=at_least(1), default=None, help="student epochs (default: per dataset)")
    p.add_argument("--threads", type=at_least(1), default=None)
    p.add_argument("--out", default="runs/bench/quantisation")
    args = p.parse_args(argv)
    results = run(args)
    out = Path(args.out)
    write_text_atomic(out / "quantisation.md", table(results))
    plot(results, out / "quantisation.png")
    print(table(results))
    print(f"written: {out / 'quantisation.json'}, {out / 'quantisation.md'}, {out / 'quantisation.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
