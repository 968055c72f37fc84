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
    """Arguments of a train.bkd run that finishes in seconds (a teacher it trains: one epoch)."""
    argv = ["--out", str(out), "--epochs", "2", "--limit-train", "192", "--limit-test", "96", "--batch-size", "64",
            "--progress", "false", "--steps", "4", *extra]  # fmt: skip

    def last(flag: str, default: str) -> str:
        return next((argv[i + 1] for i in range(len(argv) - 2, -1, -1) if argv[i] == flag), default)

    if "--teacher" not in argv and (last("--distill", "mixed") != "none" or last("--epochs", "2") == "0"):
        argv[2:2] = ["--teacher-epochs", "1"]  # (train.bkd refuses it where no teacher is trained)
    return argv


@pytest.fixture
def tiny_args():
    return tiny_train_args


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory) -> Path:
    """A small digits student trained once per session (CE only, T=4): a checkpoint that spikes. Its
    torch threads are fixed: a test before it may have set the process's (a streaming run), and the
    float sums, and so the trained weights, depend on them."""
    from train import bkd

    out = tmp_path_factory.mktemp("trained_digits")
    argv = ["--out", str(out), "--epochs", "6", "--distill", "none", "--steps", "4", "--progress", "false",
            "--limit-test", "200", "--threads", "2"]  # fmt: skip
    assert bkd.main(argv) == 0
    return out / "student.pt"


@pytest.fixture(scope="session")
def digits_graphs(trained_digits, tmp_path_factory) -> Path:
    """The trained digits student as ``float.nir`` and ``fixed.nir`` (with their ONNX files), converted once."""
    from convert import to_nir

    out = tmp_path_factory.mktemp("digits_graphs")
    for precision in ("float", "fixed"):
        argv = [str(trained_digits), "--out", str(out), "--name", precision, "--precision", precision,
                "--parity-samples", "32", *(["--calibration-samples", "64"] if precision == "fixed" else [])]  # fmt: skip
        assert to_nir.main(argv) == 0
    return out


def build_event_model(out: Path, readout: str = "spikes") -> dict[str, Path]:
    """An untrained 2x34x34 event CSNN in both precisions, with its step ONNX; a spike readout is
    scaled so that it answers."""
    import numpy as np
    import torch

    from convert.build import build_nir
    from convert.nirgraph import write_graph
    from convert.to_onnx import export_step_onnx
    from targets.plan import load_plan
    from train.models import build_model

    torch.manual_seed(0)
    model = build_model("dvs_csnn", input_size=34, input_pool=2, channels=(8, 16), num_classes=10, readout=readout)
    if readout == "spikes":
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.Linear):
                    m.weight.mul_(8)
    x = (np.random.default_rng(0).random((12, 8, 2, 34, 34)) < 0.05).astype(np.float32)
    paths = {}
    for precision in ("float", "fixed"):
        graph, _ = build_nir(model.eval(), (2, 34, 34), precision=precision, steps=12, calibration=x)
        path = out / f"{precision}.nir"
        write_graph(path, graph)
        export_step_onnx(load_plan(path), path.with_suffix(".step.onnx"))
        paths[precision] = path
    return paths


@pytest.fixture(scope="session")
def event_model(tmp_path_factory) -> dict[str, Path]:
    """The event CSNN with a spike readout (:func:`build_event_model`)."""
    return build_event_model(tmp_path_factory.mktemp("event_model"))


def assert_targets_agree(plan, x, targets, expected=None):
    """Each of ``targets`` (names) runs ``plan`` on ``x`` (aligned to the reference's steps) with the
    reference's output counts, per-layer spike counts and, where the target records them, rasters;
    returns the reference's result."""
    import numpy as np

    from runtime.latency import run_aligned
    from targets import get_target
    from targets import reference as ref

    expected = ref.run(plan, x, record=True) if expected is None else expected
    for target in targets:
        info = get_target(target)
        got = run_aligned(info, plan, x, record=True)
        assert np.array_equal(got.counts, expected.counts), target
        assert all(np.array_equal(got.layer_counts[k], c) for k, c in expected.layer_counts.items()), target
        for k, r in expected.rasters.items() if info.rasters else ():
            assert np.array_equal(got.rasters[k], r), (target, k)
    return expected


@pytest.fixture(autouse=True, scope="session")
def _eventsim_types_checked():
    """Every eventsim kernel call's argument types checked against the version the driver reuses."""
    from targets.eventsim import aot

    aot.CHECK = True
