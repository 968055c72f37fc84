"""A real N-MNIST CNN trained and exported by snnTorch 1.0.0 itself (tests/data/foreign_nmnist),
run at 1 ms steps (T = 300) on the 200 held-out real recordings: snnTorch's own output counts,
per-layer spike counts and accuracy (90.0%), identically on every target that runs it."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from inputs.graph_data import load_inputs
from runtime import verify
from runtime.latency import run_aligned
from targets import get_target, unavailable_reason
from targets.plan import load_plan
from tests.conftest import DATA, EVENTDATA

FIXTURE = DATA / "foreign_nmnist"
SNNTORCH = json.loads((FIXTURE / "snntorch_nmnist_test.json").read_text())


@pytest.fixture(scope="module")
def recordings():
    if not EVENTDATA.is_dir():
        pytest.skip(f"real event recordings not found at {EVENTDATA} (present in CI and dev machines)")
    plan = load_plan(FIXTURE / "snntorch_nmnist.nir", dialect="snntorch-zero", steps=300)
    x, labels, _ = load_inputs(plan, "nmnist", root=str(EVENTDATA / "nmnist" / "train"), split="test")
    return plan, x, labels


def test_we_bin_the_recordings_as_snntorch_saw_them(recordings):
    plan, x, labels = recordings
    assert plan.meta["dt"] == 1e-4 and x.shape == (300, 200, 2, 34, 34)
    assert [hashlib.sha256(np.ascontiguousarray(x[:, i]).tobytes()).hexdigest() for i in range(200)] == SNNTORCH[
        "input_sha256"
    ]
    assert labels.tolist() == SNNTORCH["labels"]


@pytest.mark.parametrize(
    "target,n", [("reference", 200), ("torch", 200), ("eventsim", 200), ("onnx", 40), pytest.param("lava", 4, marks=pytest.mark.lava)]
)  # fmt: skip
def test_every_target_gives_snntorchs_own_output(recordings, target, n):
    plan, x, labels = recordings
    if unavailable_reason(target):
        pytest.skip(f"{target} is unavailable: {unavailable_reason(target)}")
    got = run_aligned(get_target(target), plan, x[:, :n])
    want = np.array(SNNTORCH["output_counts"])[:n]
    assert np.array_equal(got.counts, want)
    for layer, counts in got.layer_counts.items():
        assert np.array_equal(counts, np.array(SNNTORCH["layer_spikes"][layer])[:n]), layer
    if n == 200:  # snnTorch's own accuracy, ties to the lowest class as everywhere here
        assert (got.counts.argmax(1) == labels).mean() == SNNTORCH["accuracy"] == 0.9


def test_verify_reports_it_and_says_what_it_skipped(recordings, eventdata, tmp_path, capsys):
    out = tmp_path / "v"
    argv = [str(FIXTURE / "snntorch_nmnist.nir"), "--dialect", "snntorch-zero", "--steps", "300", "--data", "nmnist",
            "--data-root", str(eventdata / "nmnist" / "train"), "--samples", "12", "--targets", "torch,onnx,eventsim",
            "--progress", "false", "--out", str(out)]  # fmt: skip
    assert verify.main(argv) == 0, capsys.readouterr()
    rep = json.loads((out / "report.json").read_text())
    assert rep["passed"] and rep["T"] == 300 and set(rep["targets"]) == {"reference", "torch", "onnx", "eventsim"}


@pytest.mark.parametrize("target", ["eventsim", "torch"])
def test_streaming_a_recording_through_the_snntorch_cnn(recordings, target):
    """The recording streamed as it arrives (1 ms steps, one 300 ms window from t = 0): the window's
    output counts are snnTorch's for that recording."""
    from inputs.datasets import nmnist_files
    from runtime.stream import StreamConfig, stream
    from runtime.stream import parse_config as parse

    files, _ = nmnist_files(EVENTDATA / "nmnist" / "train", "test")
    i = 3
    argv = [str(files[i]), "--model", str(FIXTURE / "snntorch_nmnist.nir"), "--dialect", "snntorch-zero",
            "--target", target, "--bin-us", "1000", "--window-steps", "300", "--t0-us", "0",
            "--reset-per-window", "true", "--sensor-size", "34x34", "--progress", "false"]  # fmt: skip
    got = stream(parse(StreamConfig, argv, "t", "t"))
    assert got["windows"][0]["counts"] == SNNTORCH["output_counts"][i]
