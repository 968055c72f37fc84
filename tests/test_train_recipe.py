"""The training recipe: augmentation, validation carve-out and selection, early stopping, transfer
set, optimisers and warm-up, teacher checks, dead readout classes."""

import json

import numpy as np
import pytest
import torch

import train.bkd as bkd
from core.errors import ConfigError
from tests.conftest import tiny_train_args
from train.augment import Augment, drop_events, erase_rectangle, shift_space, stretch_time
from train.checkpoint import load_checkpoint
from train.data import MemoryBatches, parse_specs, stratified_carve
from train.distill import FeatureDistiller


def _frames(t=6, b=5, c=2, h=10, w=10, p=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((t, b, c, h, w), generator=g) < p).float()


# --- augmentation -----------------------------------------------------------------------------


def test_shift_moves_whole_frames_and_loses_only_the_border():
    x = torch.zeros(3, 4, 1, 9, 9)
    x[:, :, :, 3:6, 3:6] = 1.0  # a block well inside the frame: a shift of 2 keeps it whole
    y = shift_space(x, 2, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and torch.equal(y.sum((2, 3, 4)), x.sum((2, 3, 4)))
    moved = [tuple(torch.nonzero(y[0, b, 0])[0].tolist()) for b in range(4)]
    assert all(abs(r - 3) <= 2 and abs(c - 3) <= 2 for r, c in moved) and len(set(moved)) > 1
    for b in range(4):  # every step of a sample moves by the same offset
        assert all(torch.equal(y[t, b], y[0, b]) for t in range(3))
    edge = torch.ones(1, 64, 1, 5, 5)
    assert shift_space(edge, 2, torch.Generator().manual_seed(0)).sum() < edge.sum(), "what leaves the frame is lost"


def test_drop_removes_the_stated_fraction_and_keeps_binary_frames_binary():
    x = _frames(t=8, b=64, p=0.5)
    y = drop_events(x, 0.25, torch.Generator().manual_seed(2))
    assert set(y.unique().tolist()) <= {0.0, 1.0} and bool((y <= x).all())
    kept = float(y.sum() / x.sum())
    assert abs(kept - 0.75) < 0.02  # ~40k events: 0.02 is > 8 sigma
    counts = torch.full((4, 16, 1, 4, 4), 6.0)
    thinned = drop_events(counts, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(thinned, thinned.round()) and bool((thinned <= 6).all())
    assert abs(float(thinned.mean()) - 3.0) < 0.2


def test_stretch_plays_the_window_slower_or_faster():
    t = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1, 1).expand(8, 32, 1, 2, 2).clone() + 1
    y = stretch_time(t, 0.5, torch.Generator().manual_seed(4))
    for b in range(32):
        seq = y[:, b, 0, 0, 0].tolist()
        nz = [v for v in seq if v]
        assert nz == sorted(nz) and nz[0] == 1, "bins stay in order, starting with the first"
        assert all(v == 0 for v in seq[len(nz) :]), "a faster recording ends early: empty bins after it"
    assert not torch.equal(y, t)


def test_erase_empties_one_rectangle_over_the_whole_window():
    x = torch.ones(4, 8, 2, 12, 12)
    y = erase_rectangle(x, 1.0, torch.Generator().manual_seed(5))
    for b in range(8):
        hole = y[0, b, 0] == 0
        assert hole.any() and bool((y[:, b] == 0).eq(hole).all()), "the same pixels in every step and channel"
        rows, cols = torch.nonzero(hole, as_tuple=True)
        assert int(hole.sum()) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert rows.max() - rows.min() + 1 <= 6 and cols.max() - cols.min() + 1 <= 6
    assert torch.equal(erase_rectangle(x, 0.0, torch.Generator().manual_seed(5)), x)


def test_augment_is_reproducible_and_checks_its_arguments():
    a = Augment(shift=2, drop=0.1, stretch=0.2, erase=0.5)
    x = _frames()
    assert torch.equal(a(x, torch.Generator().manual_seed(7)), a(x, torch.Generator().manual_seed(7)))
    assert not torch.equal(a(x, torch.Generator().manual_seed(7)), a(x, torch.Generator().manual_seed(8)))
    assert Augment()(x) is x
    for bad, match in (({"shift": -1}, "aug_shift"), ({"drop": 1.0}, "aug_drop"), ({"erase": 1.5}, "aug_erase")):
        with pytest.raises(ConfigError, match=match):
            Augment(**bad)


def test_teacher_and_student_see_the_same_augmented_view(tmp_path, monkeypatch):
    seen = {}
    real_features = bkd.StudentObjective.forward

    def spy(self, x, y, n, t_feature, t_logits, generator):
        seen["student"] = x.detach().clone()
        return real_features(self, x, y, n, t_feature, t_logits, generator)

    monkeypatch.setattr(bkd.StudentObjective, "forward", spy)
    real_input = bkd.teacher_input

    def teacher_spy(x):
        seen["teacher"] = x.detach().clone()
        return real_input(x)

    monkeypatch.setattr(bkd, "teacher_input", teacher_spy)
    args = tiny_train_args(
        tmp_path / "a", "--epochs", "1", "--distill", "logits", "--aug-shift", "2", "--aug-drop", "0.2"
    )
    assert bkd.main(args) == 0
    assert torch.equal(seen["teacher"], seen["student"]), "the teacher's input is the student's augmented batch"


# --- data, validation and selection ------------------------------------------------------------


def test_stratified_carve_is_disjoint_complete_and_fixed():
    labels = np.repeat(np.arange(10), [30, 2, 5, 10, 10, 10, 10, 10, 10, 1])
    kept, carved = stratified_carve(labels, 0.2)
    assert len(np.intersect1d(kept, carved)) == 0 and len(kept) + len(carved) == len(labels)
    assert set(labels[carved]) == set(range(9)), "every class with two samples or more is validated"
    assert set(labels[kept]) == set(range(10)), "every class keeps a training sample"
    assert np.array_equal(carved, stratified_carve(labels, 0.2)[1])
    assert abs(len(carved) - 0.2 * len(labels)) <= 10
    with pytest.raises(ConfigError, match="val_fraction"):
        stratified_carve(labels, 1.0)


def test_dataset_specs_are_checked():
    (spec,) = parse_specs('{"name": "nmnist_emulated", "split": "all", "images": "unpaired"}', "transfer")
    assert (spec.name, spec.split, spec.args) == ("nmnist_emulated", "all", {"images": "unpaired"})
    assert [s.split for s in parse_specs('[{"name": "digits"}, {"name": "digits", "split": "test"}]', "x")] == [
        "train",
        "test",
    ]
    with pytest.raises(ConfigError, match="--transfer entry 0 must be a JSON object with a 'name'"):
        parse_specs('["digits"]', "transfer")
    with pytest.raises(ConfigError, match="--extra-train is not valid JSON"):
        parse_specs("{name: digits}", "extra-train")


def test_memory_batches_cover_every_sample_once_per_epoch_and_split_by_rank():
    data = MemoryBatches(torch.arange(10, dtype=torch.uint8).view(10, 1, 1), np.arange(10), "x")
    seen = torch.cat([y for _, y in data.batches(3, torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(10))
    ranks = [torch.cat([y for _, y in data.batches(2, torch.Generator().manual_seed(0), r, 3)]) for r in range(3)]
    assert all(len(r) == 4 for r in ranks), "ranks take equal shares (padded by wrapping)"
    assert set(torch.cat(ranks).tolist()) == set(range(10))


def test_best_epoch_is_selected_on_validation_and_test_is_seen_once(tmp_path):
    out = tmp_path / "sel"
    assert bkd.main(tiny_train_args(out, "--epochs", "4", "--distill", "none", "--lr", "0.02")) == 0
    ckpt = load_checkpoint(out / "student.pt")
    hist = ckpt["history"]
    best = max(range(len(hist)), key=lambda i: (hist[i]["val_acc"], -hist[i]["val_loss"]))
    assert ckpt["final_metrics"]["selected_epoch"] == best + 1
    last = load_checkpoint(out / "student.last.pt")
    assert last["best_epoch"] == best + 1
    for k, v in last["best_state_dict"].items():
        assert torch.equal(ckpt["state_dict"][k], v), k
    assert ckpt["final_metrics"]["val_acc"] == pytest.approx(hist[best]["val_acc"])


def test_early_stopping(tmp_path):
    out = tmp_path / "stop"
    # lr 0: the validation score never improves after the first epoch
    argv = tiny_train_args(out, "--epochs", "10", "--distill", "none", "--lr", "0", "--patience", "2")
    assert bkd.main(argv) == 0
    ckpt = load_checkpoint(out / "student.pt")
    assert len(ckpt["history"]) == 3 and ckpt["final_metrics"]["stopped_early"]
    assert ckpt["final_metrics"]["selected_epoch"] == 1


def test_select_best_needs_validation(tmp_path, capsys):
    assert bkd.main(tiny_train_args(tmp_path / "v", "--val-fraction", "0")) == 2
    assert "--select best needs a validation set" in capsys.readouterr().err
    assert bkd.main(tiny_train_args(tmp_path / "w", "--val-fraction", "0", "--select", "last", "--epochs", "1")) == 0


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_optimisers_and_warmup(tmp_path, optimizer):
    out = tmp_path / optimizer
    argv = tiny_train_args(out, "--epochs", "3", "--distill", "none", "--optimizer", optimizer, "--warmup-epochs", "2",
                           "--weight-decay", "0.01", "--label-smoothing", "0.1")  # fmt: skip
    assert bkd.main(argv) == 0
    lrs = [r["lr"] for r in load_checkpoint(out / "student.pt")["history"]]
    assert lrs == pytest.approx([3e-3 / 3, 3e-3 * 2 / 3, 3e-3])
    assert bkd.lr_factor(9, 10, 0) == pytest.approx(0.5 * (1 + np.cos(np.pi * 0.9)))


def test_transfer_samples_reach_the_distillation_terms_only(tmp_path, monkeypatch):
    sizes = {}
    real = bkd.wsld_loss

    def spy(student_logits, teacher_logits, labels, tau):
        sizes.setdefault("wsld", student_logits.shape[0])
        return real(student_logits, teacher_logits, labels, tau)

    monkeypatch.setattr(bkd, "wsld_loss", spy)
    real_ce = torch.nn.functional.cross_entropy

    def ce_spy(logits, y, **kw):
        sizes.setdefault("ce", logits.shape[0])
        return real_ce(logits, y, **kw)

    monkeypatch.setattr(bkd.F, "cross_entropy", ce_spy)
    transfer = json.dumps({"name": "digits", "split": "train", "limit": 300})  # (not the test split: below)
    argv = tiny_train_args(tmp_path / "t", "--epochs", "1", "--distill", "logits", "--transfer", transfer,
                           "--transfer-batch-size", "16")  # fmt: skip
    assert bkd.main(argv) == 0
    assert sizes["wsld"] == 64 + 16
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["student"]["test_samples"] == 96


def test_learned_logit_scale(tmp_path):
    out = tmp_path / "scale"
    argv = tiny_train_args(out, "--epochs", "2", "--distill", "logits", "--logit-scale", "2", "--learn-logit-scale",
                           "true")  # fmt: skip
    assert bkd.main(argv) == 0
    scales = [r["logit_scale"] for r in load_checkpoint(out / "student.pt")["history"]]
    assert scales[0] != 2.0 and all(s > 0 for s in scales)
    assert not any("log_scale" in k for k in load_checkpoint(out / "student.pt")["state_dict"])


def test_extra_training_data_must_bin_alike(tmp_path, capsys):
    extra = json.dumps({"name": "event_digits", "split": "train"})
    assert bkd.main(tiny_train_args(tmp_path / "e", "--extra-train", extra)) == 2
    assert "--extra-train event_digits/train differs from the training data in input_shape" in capsys.readouterr().err
    same = json.dumps({"name": "digits", "split": "train", "limit": 100})
    assert bkd.main(tiny_train_args(tmp_path / "f", "--extra-train", same, "--epochs", "1", "--distill", "none")) == 0
    data = load_checkpoint(tmp_path / "f" / "student.pt")["data"]
    assert data["train"] == ["digits/train: 192", "digits/train, limit=100: 100"]


@pytest.mark.parametrize("flags,message", [
    (["--extra-train", '{"name": "digits", "split": "test"}'],
     "--extra-train digits/test shares samples with the test data (--test-split digits/test): the test accuracy"),
    (["--transfer", '{"name": "digits", "split": "all"}'], "--transfer digits/all shares samples with the test data"),
    (["--train-split", "all"], "--train-split digits/all shares samples with the test data"),
    (["--test-data", '{"name": "digits", "split": "train"}'],
     "--train-split digits/train shares samples with the test data (--test-data digits/train)"),
    (["--val-data", '{"name": "digits"}'],
     "--val-data digits/train shares samples with the training data (--train-split digits/train): the model would "
     "be selected on samples it trained on"),
])  # fmt: skip
def test_the_test_data_is_held_out_from_training_distillation_and_selection(tmp_path, capsys, flags, message):
    """Each trained on (or selected with) the test split and reported its accuracy as a test accuracy; now
    refused before any data is read. Another split, folder or dataset is fine (above)."""
    assert bkd.main(tiny_train_args(tmp_path / "r", *flags)) == 2
    err = capsys.readouterr().err
    assert message in err and "data:" not in err and not (tmp_path / "r").exists()


def test_model_arguments_are_checked_before_the_teacher_trains(tmp_path, capsys):
    """An unknown student argument failed only after the teacher's training; a key given twice in a JSON
    flag kept the last value without a word."""
    assert bkd.main(tiny_train_args(tmp_path / "r", "--model-args", '{"depth": 3}')) == 2
    err = capsys.readouterr().err
    assert "model 'digits_csnn' takes no argument(s) depth" in err and "[teacher]" not in err
    assert bkd.main(tiny_train_args(tmp_path / "r", "--teacher-args", '{"width": 3}')) == 2
    assert "model 'digits_cnn' takes no argument(s) width" in capsys.readouterr().err
    assert bkd.main(tiny_train_args(tmp_path / "r", "--model-args", '{"channels": [4], "channels": [8]}')) == 2
    assert "--model-args is not valid JSON: key 'channels' is given twice" in capsys.readouterr().err


# --- teachers --------------------------------------------------------------------------------


def test_teacher_trained_alone_then_reused_with_its_data_checked(tmp_path, capsys):
    first = tmp_path / "teacher"
    argv = tiny_train_args(first, "--epochs", "0", "--teacher-args", '{"channels": [48, 96]}')
    assert bkd.main(argv) == 0
    assert (first / "teacher.pt").is_file() and not (first / "student.pt").exists()
    ckpt = load_checkpoint(first / "teacher.pt")
    assert ckpt["arch_args"]["channels"] == [48, 96]
    assert ckpt["dataset"]["steps"] == 4 and ckpt["dataset"]["encoder"]["steps"] == 4
    assert {"test_acc", "train_ce_eval", "soft_label_top_median"} <= set(ckpt["final_metrics"])
    capsys.readouterr()
    teacher = str(first / "teacher.pt")
    assert bkd.main(tiny_train_args(tmp_path / "s", "--epochs", "1", "--teacher", teacher)) == 0
    assert "test acc" in capsys.readouterr().err
    # a teacher trained with another T is refused by name
    assert bkd.main(tiny_train_args(tmp_path / "t", "--epochs", "1", "--teacher", teacher, "--steps", "6")) == 2
    assert "was trained with steps 4, the student's data has 6" in capsys.readouterr().err


def test_a_spiking_teacher_model_is_refused(tmp_path, capsys):
    assert bkd.main(tiny_train_args(tmp_path / "x", "--teacher-model", "digits_csnn")) == 2
    assert "is a spiking model; teachers are ANNs" in capsys.readouterr().err


# --- BKD head options ---------------------------------------------------------------------------


def test_bottleneck_generator_is_sized_to_the_student():
    full = FeatureDistiller(16, 256)
    small = FeatureDistiller(16, 256, generator="bottleneck")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert small.generation[0].out_channels == 16 and count(small) < count(full) / 10
    assert FeatureDistiller(16, 256, generator="bottleneck", width=32).generation[0].out_channels == 32


def test_teacher_first_restores_the_teacher_map_towards_the_student():
    d = FeatureDistiller(8, 32, order="teacher_first", lam=0.0)
    assert d.align.in_channels == 32 and d.align.out_channels == 8
    s = torch.rand(4, 8, 3, 3, requires_grad=True)
    t = torch.rand(4, 32, 6, 6)
    loss = d(s, t, torch.Generator().manual_seed(0))
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0, "the student learns through the target"
    with pytest.raises(ValueError, match="teacher feature map"):
        d(s, torch.rand(4, 32))


def test_clip_rescales_the_target_to_the_source_maximum():
    d = FeatureDistiller(4, 4, "feature", alpha=1.0, clip=True)
    s = torch.rand(3, 4, 2, 2)
    t = 10 * torch.rand(3, 4, 2, 2)
    expected = ((s - t / t.max() * s.max()) ** 2).sum() / 3
    assert float(d(s, t)) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("options", [["--bkd-generator", "bottleneck"], ["--bkd-order", "teacher_first"],
                                     ["--bkd-clip", "true"]])  # fmt: skip
def test_bkd_options_train(tmp_path, options):
    assert bkd.main(tiny_train_args(tmp_path / "b", "--epochs", "1", "--distill", "bkd", *options)) == 0


# --- dead readout classes ----------------------------------------------------------------------


def test_a_dead_readout_class_is_reported(tmp_path, monkeypatch, capsys):
    real_build = bkd.build_model

    def build_with_dead_class_2(name, **kwargs):
        model = real_build(name, **kwargs)
        if name == "digits_csnn":
            readout = model.head[-2]
            with torch.no_grad():
                readout.weight[2] = -1.0
                readout.bias[2] = -50.0
        return model

    monkeypatch.setattr(bkd, "build_model", build_with_dead_class_2)
    out = tmp_path / "dead"
    assert bkd.main(tiny_train_args(out, "--epochs", "1", "--distill", "none")) == 0
    err = capsys.readouterr().err
    assert "the readout neuron of class(es) 2" in err and "never fired" in err
    summary = json.loads((out / "summary.json").read_text())
    assert 2 in summary["student"]["dead_classes"]
    assert summary["student"]["test_predicted_per_class"][2] == 0


def test_ties_go_to_the_lowest_class_and_are_counted():
    scores = torch.tensor([[0.0, 0.0, 0.0], [1.0, 3.0, 3.0], [2.0, 1.0, 0.0]])
    assert bkd.predict(scores).tolist() == [0, 1, 0]


@pytest.mark.parametrize("flags,message", [
    (["--distill", "none", "--bkd-alpha", "0.5"], "--bkd-alpha 0.5 takes effect only with --distill feature, bkd or mixed"),
    (["--distill", "logits", "--bkd-lambda", "0.3"], "--bkd-lambda 0.3 takes effect only with --distill bkd or mixed"),
    (["--distill", "feature", "--wsld-weight", "2"], "--wsld-weight 2.0 takes effect only with --distill logits or mixed"),
    (["--bkd-width", "3"], "--bkd-width 3 takes effect only with --bkd-generator bottleneck"),
    (["--distill", "none", "--transfer", '{"name": "digits", "limit": 9}'], "--transfer '{\"name\": \"digits\", "),
    (["--distill", "none", "--teacher", "t.pt"], "--teacher 't.pt' takes effect only with distillation"),
    (["--teacher", "t.pt", "--teacher-epochs", "3"], "--teacher-epochs 3 takes effect only with a teacher trained"),
    (["--per-channel", "false"], "--per-channel False takes effect only with --weight-bits"),
    (["--momentum", "0.5"], "--momentum 0.5 takes effect only with --optimizer sgd"),
    (["--val-fraction", "0", "--select", "last", "--patience", "2"], "--patience 2 takes effect only with a validation"),
    (["--val-data", '{"name": "digits", "split": "test"}', "--val-fraction", "0.2"],
     "--val-fraction 0.2 takes effect only with the validation carve-out (not --val-data)"),
    (["--test-data", '{"name": "event_digits"}', "--test-split", "all"], "--test-split 'all' takes effect only with"),
])  # fmt: skip
def test_a_setting_the_run_would_not_use_is_refused(tmp_path, capsys, flags, message):
    """Each trained without a word of what it asked for; refused before any data is read."""
    assert bkd.main(["--out", str(tmp_path / "r"), "--progress", "false", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "this run would ignore it" in err and "data:" not in err


def test_settings_that_apply_are_kept(tmp_path):
    """The same settings where they take effect: a teacher trained for --epochs 0 with --distill none, a
    bottleneck width, SGD's momentum, per-layer scales under QAT."""
    from train.bkd import TrainConfig, check_flags_apply

    for fields in [dict(distill="none", epochs=0, teacher_epochs=3), dict(bkd_generator="bottleneck", bkd_width=3),
                   dict(optimizer="sgd", momentum=0.5), dict(weight_bits=6, per_channel=False),
                   dict(distill="logits", transfer='{"name": "digits"}', transfer_batch_size=8)]:  # fmt: skip
        check_flags_apply(TrainConfig(out=str(tmp_path), **fields))
