import argparse
import json

import numpy as np
import pytest

from bench import bkd_ablation


def _args(**kw):
    base = dict(folds=5, repeats=2, val_per_class=10, labelled_per_class=10)
    return argparse.Namespace(**(base | kw))


def test_folds_keep_test_validation_and_labelled_recordings_apart():
    labels = np.repeat(np.arange(10), 100)
    pairs = bkd_ablation.split_folds(labels, _args())
    assert len(pairs) == 10
    tests = [set(p["test"]) for p in pairs if p["repeat"] == 0]
    assert set().union(*tests) == set(range(1000)) and sum(map(len, tests)) == 1000, "the folds partition the data"
    for p in pairs:
        train, val, test = set(p["train"]), set(p["val"]), set(p["test"])
        assert not (train & val or train & test or val & test)
        assert np.bincount(labels[p["train"]], minlength=10).tolist() == [10] * 10
        assert np.bincount(labels[p["val"]], minlength=10).tolist() == [10] * 10
    a, b = pairs[0], pairs[1]  # same fold, two repeats: same validation and test, other labelled draws
    assert a["val"] == b["val"] and a["test"] == b["test"] and a["train"] != b["train"]
    assert bkd_ablation.split_folds(labels, _args()) == pairs, "the protocol is fixed"


def test_paired_statistics_match_scipy():
    from scipy import stats

    base = [0.80, 0.82, 0.79, 0.85, 0.81, 0.80]
    other = [0.84, 0.85, 0.80, 0.88, 0.86, 0.83]
    s = bkd_ablation.paired_stats(base, other)
    d = np.subtract(other, base)
    assert s["mean_diff"] == pytest.approx(d.mean()) and s["sd_diff"] == pytest.approx(d.std(ddof=1))
    assert s["p_t"] == pytest.approx(stats.ttest_rel(other, base).pvalue)
    assert s["p_wilcoxon"] == pytest.approx(stats.wilcoxon(d, zero_method="zsplit").pvalue)
    assert bkd_ablation.paired_stats(base, base)["p_t"] == 1.0


@pytest.mark.slow
def test_ablation_protocol_smoke(tmp_path, eventdata):
    out = tmp_path / "abl"
    argv = ["--data-root", str(eventdata / "nmnist" / "train"), "--max-pairs", "2", "--labelled-per-class", "2",
            "--val-per-class", "2", "--epochs", "1", "--teacher-epochs", "1", "--limit-emulated", "40",
            "--configs", "none,mixed,bkd-bottleneck", "--jobs", "1", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    assert bkd_ablation.main(argv) == 0
    res = json.loads((out / "ablation.json").read_text())
    assert list(res["configs"]) == ["none", "mixed", "bkd-bottleneck"] and len(res["pairs"]) == 2
    assert res["labelled_per_pair"] == [20, 20] and res["test_samples_per_pair"] == [200, 200]
    for c in ("mixed", "bkd-bottleneck"):
        v = res["configs"][c]["vs_none"]
        assert {"mean_diff", "sd_diff", "p_t", "p_wilcoxon", "p_t_holm", "beats_none"} <= set(v)
    assert "| mixed |" in (out / "ablation.md").read_text()
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    # the runs saw the intended data: labelled recordings, then validation and test of the fold
    student = json.loads((out / "fold0-rep0" / "mixed" / "summary.json").read_text())["student"]
    assert student["test_samples"] == 200 and student["val_samples"] == 20
    # a second call reuses every finished run
    assert bkd_ablation.main(argv) == 0
    assert (
        json.loads((out / "ablation.json").read_text())["configs"]["none"]["test_acc"]
        == res["configs"]["none"]["test_acc"]
    )


def test_step_time_smoke():
    from bench import step_time

    r = step_time.measure("digits", rounds=2, batch_size=8, steps=2)
    assert set(r["relative_to_none"]) == {"none", "logits", "feature", "bkd", "mixed"}
    assert r["relative_to_none"]["none"] == 1.0 and all(v > 0 for v in r["median_step_ms"].values())
