"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EVENTDATA = ROOT.parent / "shared" / "eventdata"
DATA = ROOT / "tests" / "data"  # committed test data (graphs, recorded outputs) with the scripts that made them


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture
def eventdata() -> Path:
    """``../shared/eventdata``: real recordings; skip when a fresh clone has no such folder."""
    if not EVENTDATA.is_dir():
        pytest.skip(f"real event recordings not found at {EVENTDATA} (present in CI and dev machines)")
    return EVENTDATA


def tiny_train_args(out: Path, *extra: str) -> list[str]:
    """Arguments of a train.bkd run that finishes in seconds."""
    return [
        "--out", str(out), "--epochs", "2", "--teacher-epochs", "1", "--limit-train", "192",
        "--limit-test", "96", "--batch-size", "64", "--progress", "false", "--steps", "4", *extra,
    ]  # fmt: skip


@pytest.fixture
def tiny_args():
    return tiny_train_args


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory) -> Path:
    """A small digits student trained once per session (CE only, T=4): a checkpoint that spikes."""
    from train import bkd

    out = tmp_path_factory.mktemp("trained_digits")
    argv = ["--out", str(out), "--epochs", "6", "--distill", "none", "--steps", "4", "--progress", "false",
            "--limit-test", "200"]  # fmt: skip
    assert bkd.main(argv) == 0
    return out / "student.pt"
