"""The deployable N-MNIST student, end to end: trained on real recordings plus emulated digits,
converted to float and fixed-precision graphs, verified on every target on real recordings that
neither training nor model selection saw.

Data: the shared folder's stratified 80/20 hold-out (``nmnist`` dataset, fixed seed). Training
uses the 800 ``train`` recordings less a 10% validation carve-out (model selection only) plus the
4,000 emulated MNIST digits paired with no real recording (``nmnist_emulated``, ``unpaired``: no
digit of a test recording can be among them); the 200 ``test`` recordings are seen once, by the
selected checkpoint and by every target. The recipe: ``nmnist_csnn`` without BatchNorm, 8-bit
per-layer quantisation-aware training (the fixed-precision grid), AdamW, shifts and event dropout,
the readout's auxiliary cross-entropy.

    python -m bench.nmnist_student                                 # train (resumable), convert, verify
    python -m bench.nmnist_student --checkpoint runs/nmnist_student/student.pt --targets reference,eventsim
    python -m bench.nmnist_student --fresh-test --out runs/nmnist_student_fresh   # a test set no recipe choice saw

Writes ``nmnist_student.json`` and ``nmnist_student.md`` under ``--out``; the verification
reports and plots are beside the graphs (``model.verify/``, ``model.fixed.verify/``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.fileio import write_json_atomic, write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "eventdata" / "nmnist" / "train"
EMULATED = {"name": "nmnist_emulated", "split": "all", "images": "unpaired", "seed": 0}
RECIPE = dict(
    model="nmnist_csnn", dataset="nmnist", distill="none", epochs=30, optimizer="adamw", weight_decay=0.01,
    aug_shift=2, aug_drop=0.1, readout_aux=0.1, batch_size=32, weight_bits=8, per_channel=False,
    extra_train=json.dumps(EMULATED),
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data-root", default=str(DEFAULT_DATA), help="folder of real N-MNIST recordings with labels.csv")
    p.add_argument("--checkpoint", default=None, help="a trained student (default: train one with the recipe)")
    p.add_argument("--targets", default="all", help="targets to verify on (runtime.verify --targets)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/nmnist_student")
    p.add_argument(
        "--fresh-test",
        action="store_true",
        help="test on 200 recordings drawn (stratified, seed 1) from the hold-out's TRAIN split instead, and train on "
        "the other 800: recordings that no choice of the recipe was ever scored on",
    )
    args = p.parse_args(argv)
    if not (Path(args.data_root) / "labels.csv").is_file():
        print(f"nmnist_student: no labels.csv under {args.data_root}; this needs real recordings", file=sys.stderr)
        return 2
    from convert import to_nir
    from runtime import verify
    from train.bkd import TrainConfig, train
    from train.checkpoint import load_checkpoint

    out = Path(args.out)
    ckpt_path = Path(args.checkpoint) if args.checkpoint else out / "student.pt"
    data_root, split, extra = args.data_root, "test", {}
    if args.fresh_test:
        train_dir, test_dir = fresh_split(Path(args.data_root), out)
        data_root, split = str(test_dir), "all"
        test_spec = json.dumps({"name": "nmnist", "split": "all", "root": str(test_dir)})
        extra = {"data_root": str(train_dir), "train_split": "all", "test_data": test_spec}
    if args.checkpoint is None:
        fields = {"data_root": args.data_root} | extra
        train(TrainConfig(out=str(out), resume=True, threads=args.threads, progress=False, **fields, **RECIPE))
    ckpt = load_checkpoint(ckpt_path, kind="student")
    result = {"checkpoint": str(ckpt_path), "data": ckpt.get("data"), "final_metrics": ckpt.get("final_metrics"),
              "test_set": "200 of the hold-out's train split (--fresh-test)" if args.fresh_test
              else "the hold-out's test split", "graphs": {}}  # fmt: skip
    for name, precision in (("model", "float"), ("model.fixed", "fixed")):
        if to_nir.main(
            [str(ckpt_path), "--name", name, "--precision", precision, "--out", str(ckpt_path.parent), "--overwrite"]
        ):
            return 2
        graph = ckpt_path.parent / f"{name}.nir"
        argv = [str(graph), "--targets", args.targets, "--data", "nmnist", "--data-root", data_root,
                "--split", split, "--samples", "None", "--progress", "false"]  # fmt: skip
        code = verify.main(argv)
        rep = json.loads((graph.with_suffix(".verify") / "report.json").read_text())
        result["graphs"][precision] = {
            "graph": str(graph), "samples": rep["samples"], "verify_passed": rep["passed"], "verify_exit": code,
            "accuracy": {t: r["accuracy"] for t, r in rep["targets"].items()}, "skipped": rep["skipped"],
        }  # fmt: skip
    write_json_atomic(out / "nmnist_student.json", result)
    md = table(result)
    write_text_atomic(out / "nmnist_student.md", md)
    print(md)
    print(f"written: {out / 'nmnist_student.json'}, {out / 'nmnist_student.md'}")
    return 0 if all(g["verify_passed"] for g in result["graphs"].values()) else 1


def fresh_split(root: Path, out: Path) -> tuple[Path, Path]:
    """Folders ``out/fresh/train`` and ``out/fresh/test`` (labels.csv with absolute paths): 200 recordings
    of the hold-out's train split as the test set, everything else for training."""
    import numpy as np

    from inputs.datasets import nmnist_files
    from train.data import stratified_carve

    files, labels = nmnist_files(root, "all")
    old_test = {f.resolve() for f in nmnist_files(root, "test")[0]}
    candidates = np.array([i for i, f in enumerate(files) if f.resolve() not in old_test])
    _, picked = stratified_carve(labels[candidates], 200 / len(candidates), seed=1)
    test = set(candidates[picked].tolist())
    folders = []
    for name, keep in (("train", lambda i: i not in test), ("test", lambda i: i in test)):
        rows = "".join(f"{files[i].resolve()},{int(labels[i])}\n" for i in range(len(files)) if keep(i))
        write_text_atomic(out / "fresh" / name / "labels.csv", "file,label\n" + rows)
        folders.append(out / "fresh" / name)
    return folders[0], folders[1]


def table(result: dict) -> str:
    fm = result["final_metrics"] or {}
    targets = sorted({t for g in result["graphs"].values() for t in g["accuracy"]}, key=lambda t: (t != "reference", t))
    rows = ["| graph | " + " | ".join(targets) + " | every target identical to the reference |",
            "|---|" + "---|" * (len(targets) + 1)]  # fmt: skip
    for precision, g in result["graphs"].items():
        cells = [f"{100 * g['accuracy'][t]:.2f} %" if t in g["accuracy"] else "-" for t in targets]
        rows.append(f"| {precision} | " + " | ".join(cells) + f" | {'yes' if g['verify_passed'] else 'NO'} |")
    n = next(iter(result["graphs"].values()))["samples"]
    rows += ["", f"{n} real N-MNIST test recordings ({result['test_set']}), never seen in training or selection; the checkpoint itself: "
             f"{100 * fm.get('test_acc', float('nan')):.2f} % (selected epoch {fm.get('selected_epoch')}, validation "
             f"{100 * fm.get('val_acc', float('nan')):.2f} % on {fm.get('val_samples')} recordings)."]  # fmt: skip
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.exit(main())
