import json

import pytest

from bench import bkd_ablation


@pytest.mark.slow
def test_ablation_smoke(tmp_path):
    out = tmp_path / "abl"
    argv = [
        "--datasets",
        "digits",
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--teacher-epochs",
        "1",
        "--limit-train",
        "128",
        "--out",
        str(out),
    ]
    assert bkd_ablation.main(argv) == 0
    res = json.loads((out / "ablation.json").read_text())
    modes = res["datasets"]["digits"]
    assert list(modes) == ["none", "logits", "feature", "bkd", "mixed"]
    for e in modes.values():
        assert len(e["test_acc"]) == 2 and 0 <= e["mean"] <= 1 and e["step_time_vs_none"] > 0
    assert modes["none"]["step_time_vs_none"] == 1.0
    assert "| digits | mixed |" in (out / "ablation.md").read_text()
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    # one teacher per seed, shared by the students
    assert (out / "digits" / "seed1" / "teacher" / "teacher.pt").is_file()


def test_step_time_smoke():
    from bench import step_time

    r = step_time.measure("digits", rounds=2, batch_size=8, steps=2)
    assert set(r["relative_to_none"]) == {"none", "logits", "feature", "bkd", "mixed"}
    assert r["relative_to_none"]["none"] == 1.0 and all(v > 0 for v in r["median_step_ms"].values())
