"""End-to-end tests of ``python -m train.bkd`` through ``main(argv)``."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import train.bkd as bkd
from tests.conftest import ROOT, tiny_train_args
from train.checkpoint import load_checkpoint, model_from_checkpoint


def test_end_to_end_tiny_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert bkd.main(tiny_train_args(out)) == 0
    for name in (
        "teacher.pt",
        "student.pt",
        "student.last.pt",
        "config.json",
        "metrics.jsonl",
        "curves.png",
        "summary.json",
    ):
        assert (out / name).is_file(), name
    ckpt = torch.load(out / "student.pt", weights_only=True)
    assert ckpt["arch"] == "digits_csnn" and ckpt["kind"] == "student"
    assert ckpt["dataset"]["name"] == "digits"
    assert ckpt["config"]["distill"] == "mixed" and ckpt["config"]["steps"] == 4
    assert set(ckpt["neurons"]) and all(v["tau"] == 2e-3 for v in ckpt["neurons"].values())
    assert not any(k.startswith(("distiller", "teacher", "generation")) for k in ckpt["state_dict"])
    model = model_from_checkpoint(load_checkpoint(out / "student.pt"))
    assert sum(p.numel() for p in model.parameters()) > 0
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["epoch"]) for r in lines] == [("teacher", 1), ("student", 1), ("student", 2)]
    student = lines[-1]
    assert {"train_ce", "train_wsld", "train_feature", "val_acc", "step_ms"} <= set(student)
    assert not any(k.startswith("test_") for r in lines for k in r), "the test split is never looked at per epoch"
    final = ckpt["final_metrics"]
    assert final["test_samples"] == 96 and 0 <= final["test_acc"] <= 1 and final["selected_epoch"] in (1, 2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["student"]["test_acc"] == final["test_acc"] and "train_ce_eval" in summary["teacher"]
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("mode,terms", [
    ("none", {"train_ce"}), ("logits", {"train_ce", "train_wsld"}), ("feature", {"train_ce", "train_feature"}),
    ("bkd", {"train_ce", "train_feature"}),
])  # fmt: skip
def test_distill_modes(tmp_path, mode, terms):
    out = tmp_path / mode
    assert bkd.main(tiny_train_args(out, "--distill", mode, "--epochs", "1")) == 0
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert {k for k in last if k.startswith("train_") and k not in ("train_loss", "train_acc")} == terms
    assert (out / "teacher.pt").exists() == (mode != "none")


def test_teacher_checkpoint_is_reused(tmp_path):
    first = tmp_path / "a"
    assert bkd.main(tiny_train_args(first, "--epochs", "1")) == 0
    second = tmp_path / "b"
    assert bkd.main(tiny_train_args(second, "--epochs", "1", "--teacher", str(first / "teacher.pt"))) == 0
    assert not (second / "teacher.pt").exists()
    assert bkd.main(tiny_train_args(tmp_path / "c", "--teacher", str(first / "student.pt"))) == 2


def test_resume_is_equivalent_to_an_uninterrupted_run(tmp_path, monkeypatch):
    full = tmp_path / "full"
    assert bkd.main(tiny_train_args(full, "--epochs", "3")) == 0

    # Interrupt the second run right after its first student epoch is saved.
    real_save = bkd.save_checkpoint

    def save_then_stop(path, payload):
        real_save(path, payload)
        if payload["kind"] == "resume" and payload["phase"] == "student" and payload["epoch"] == 1:
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    monkeypatch.setattr(bkd, "save_checkpoint", save_then_stop)
    assert bkd.main(tiny_train_args(cut, "--epochs", "3")) == 130
    monkeypatch.setattr(bkd, "save_checkpoint", real_save)
    assert not (cut / "student.pt").exists()
    assert bkd.main(tiny_train_args(cut, "--epochs", "3")) == 2, "a second start without --resume must refuse"
    assert bkd.main(tiny_train_args(cut, "--epochs", "3", "--resume")) == 0

    a = torch.load(full / "student.pt", weights_only=True)
    b = torch.load(cut / "student.pt", weights_only=True)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert [r["val_acc"] for r in a["history"]] == [r["val_acc"] for r in b["history"]]
    assert a["final_metrics"]["test_acc"] == b["final_metrics"]["test_acc"]
    epochs = [(r["phase"], r["epoch"]) for r in map(json.loads, (cut / "metrics.jsonl").read_text().splitlines())]
    assert epochs == [("teacher", 1), ("student", 1), ("student", 2), ("student", 3)]


def test_resume_refuses_a_changed_config(tmp_path, capsys):
    out = tmp_path / "r"
    assert bkd.main(tiny_train_args(out, "--epochs", "1")) == 0
    assert bkd.main(tiny_train_args(out, "--epochs", "1", "--resume", "--lr", "0.5")) == 2
    assert "config differs (lr: 0.003 -> 0.5)" in capsys.readouterr().err


def test_json_settings_may_be_tables_in_a_config_file_and_resume_compares_their_values(tmp_path, capsys):
    """``model_args`` written as a TOML table (it had to be a string of JSON), then resumed with the
    same JSON typed differently on the command line: the same run, not a 'changed config'."""
    out, config = tmp_path / "r", tmp_path / "c.toml"
    config.write_text("model_args = {channels = [4, 8]}\n")
    assert bkd.main(["--config", str(config), *tiny_train_args(out, "--epochs", "1")]) == 0
    assert json.loads(json.loads((out / "config.json").read_text())["model_args"]) == {"channels": [4, 8]}
    assert "digits_csnn: 666 parameters" in capsys.readouterr().err
    assert bkd.main(tiny_train_args(out, "--epochs", "1", "--resume", "--model-args", '{"channels":[4,8]}')) == 0
    assert bkd.main(tiny_train_args(out, "--epochs", "1", "--resume", "--model-args", '{"channels":[4,9]}')) == 2
    assert "config differs (model_args: " in capsys.readouterr().err


@pytest.mark.slow
def test_kill_minus_nine_then_resume(tmp_path):
    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "train.bkd",
        *tiny_train_args(out, "--epochs", "40", "--distill", "none", "--threads", "1"),
    ]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / "student.last.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "no epoch finished in time"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = load_checkpoint(out / "student.last.pt")["epoch"]
    assert 1 <= saved < 40
    done = subprocess.run(args + ["--resume"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"resuming from {out / 'student.last.pt'} after epoch" in done.stderr
    final = load_checkpoint(out / "student.pt")
    assert final["epoch"] == 40 and [r["epoch"] for r in final["history"]] == list(range(1, 41))
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == list(range(1, 41))


@pytest.mark.slow
def test_distributed_two_processes(tmp_path):
    out = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517"]
    cmd = torchrun + ["-m", "train.bkd", *tiny_train_args(out, "--epochs", "1", "--threads", "1")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = load_checkpoint(out / "student.pt")
    assert ckpt["metrics"]["world_size"] == 2
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2, "only rank 0 writes: one line per epoch and phase"
    assert done.stderr.count("student checkpoint:") == 1


def test_bad_inputs(tmp_path, capsys):
    assert bkd.main(tiny_train_args(tmp_path / "x", "--model", "lenet")) == 2
    assert "unknown model 'lenet'; known models:" in capsys.readouterr().err
    assert (
        bkd.main(tiny_train_args(tmp_path / "y", "--dataset", "nmnist", "--data-root", str(tmp_path / "nowhere"))) == 2
    )
    assert "nowhere" in capsys.readouterr().err
    assert bkd.main(tiny_train_args(tmp_path / "v", "--dataset", "nmnist")) == 2  # no folder named
    assert "name it with --data-root" in capsys.readouterr().err
    cfg = tmp_path / "c.json"
    cfg.write_text('{"epochs": 1, "lr_max": 3}')
    assert bkd.main(["--config", str(cfg)]) == 2
    assert "unknown key 'lr_max'" in capsys.readouterr().err
    corrupt = tmp_path / "t.pt"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    assert bkd.main(tiny_train_args(tmp_path / "z", "--teacher", str(corrupt))) == 2
    assert "t.pt is corrupt or truncated" in capsys.readouterr().err
    assert bkd.main(tiny_train_args(tmp_path / "w", "--model-args", "[1, 2]")) == 2
    assert "--model-args must be a JSON object" in capsys.readouterr().err
    for flag, args, message in (  # tracebacks from torch's layers, at build or at the first forward pass
        ("--model-args", '{"channels": [-1, 4]}', "channels must be a list of positive integers, got [-1, 4]"),
        ("--teacher-args", '{"channels": [0]}', "channels must be a list of positive integers, got [0]"),
        ("--model-args", '{"tau": "x"}', "model 'digits_csnn' cannot be built with in_channels=1"),
    ):
        assert bkd.main(tiny_train_args(tmp_path / "m", flag, args)) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--bkd-alpha", "-1", "--bkd-alpha must be at least 0"),  # trained, pushing the features apart
        ("--bkd-lambda", "2", "--bkd-lambda must be at most 1"),  # a probability: trained as if 1
        ("--wsld-tau", "0", "--wsld-tau must be above 0"),  # NaN loss at the first step
        ("--wsld-weight", "-1", "--wsld-weight must be at least 0"),
        ("--logit-scale", "0", "--logit-scale must be above 0"),  # ValueError traceback
        ("--readout-aux", "-1", "--readout-aux must be at least 0"),
        ("--momentum", "1.5", "--momentum must be at most 1"),
        ("--weight-decay", "-1", "--weight-decay must be at least 0"),  # PyTorch's traceback
        ("--label-smoothing", "2", "--label-smoothing must be at most 1"),  # PyTorch's traceback
        ("--weight-bits", "1", "--weight-bits must be at least 2"),  # refused only after the teacher trained
        ("--seed", "-1", "--seed must be at least 0"),  # "dataset argument 'seed'"
        ("--steps", "10000000", "--steps must be at most 1000000"),  # no graph could hold the model it trained
    ],
)
def test_a_value_out_of_range_is_refused_before_any_training(tmp_path, capsys, flag, value, message):
    assert bkd.main(tiny_train_args(tmp_path / "run", flag, value)) == 2
    err = capsys.readouterr().err
    assert message in err and "[teacher]" not in err, err
    assert not (tmp_path / "run").exists()


def test_overwrite_does_not_delete_the_teacher_it_is_given(tmp_path, capsys):
    """``--teacher OUT/teacher.pt --out OUT --overwrite`` deleted the teacher with the old run, then
    failed: "checkpoint OUT/teacher.pt does not exist" (the user's teacher lost)."""
    out = tmp_path / "r"
    assert bkd.main(tiny_train_args(out, "--epochs", "0")) == 0  # a run whose teacher.pt is then reused
    teacher = (out / "teacher.pt").read_bytes()
    argv = tiny_train_args(out, "--epochs", "1", "--teacher", str(out / "teacher.pt"), "--overwrite", "true")
    assert bkd.main(argv) == 2
    assert "is the run's teacher.pt, which --overwrite deletes" in capsys.readouterr().err
    assert (out / "teacher.pt").read_bytes() == teacher


def test_a_second_training_into_the_same_folder_is_refused(tmp_path, capsys):
    """Two trainings into one --out both ran, appending their epochs to one metrics.jsonl and
    racing for its checkpoints; the second is now refused, and leaves the folder alone."""
    import os

    out = tmp_path / "r"
    with bkd.run_lock(out):  # as a first training holds it
        assert bkd.main(tiny_train_args(out, "--epochs", "1")) == 2
    assert f"the run in {out} is being written by process {os.getpid()}" in capsys.readouterr().err
    assert not out.exists()
    assert bkd.main(tiny_train_args(out, "--epochs", "1")) == 0  # released: free again
