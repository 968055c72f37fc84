"""Tests of inputs/: encoders, binning, the event-camera emulator, the N-MNIST reader, datasets."""

from __future__ import annotations

import ast
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ConfigError, DataError
from inputs import datasets as ds_mod
from inputs.datasets import DATASETS, dataset_from_description, event_digits_events, load_dataset
from inputs.emulator import EmulatorConfig, digit_position, emulate, emulate_batch
from inputs.encode import Encoder, encode_direct, encode_regular
from inputs.events import EVENT_DTYPE, Binning, as_events, bin_events, bin_events_counted, downsample_events
from inputs.formats.nmnist import decode_nmnist, read_nmnist, write_nmnist

EVENTDATA = Path(__file__).resolve().parents[2] / "shared" / "eventdata"
NMNIST = EVENTDATA / "nmnist"
needs_eventdata = pytest.mark.skipif(
    not NMNIST.is_dir(), reason=f"real recordings not found at {EVENTDATA} (a fresh clone has no ../shared/eventdata)"
)
FAST_EMULATOR = {"substep_us": 5_000}  # coarse time steps: the dataset tests need not the finest emulation


def events(*rows: tuple[int, int, int, int]) -> np.ndarray:
    """An EVENT_DTYPE array from (t, x, y, p) rows."""
    return np.array(list(rows), dtype=EVENT_DTYPE)


# --- the package's place in the dependency graph --------------------------------------------


def test_inputs_imports_no_later_stage():
    forbidden = {"train", "convert", "runtime", "targets"}
    for path in sorted((Path(__file__).resolve().parents[1] / "inputs").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not {n.split(".")[0] for n in names} & forbidden, f"{path.name} imports {names}"


# --- encoders -------------------------------------------------------------------------------


def reference_regular(x: np.ndarray, steps: int) -> np.ndarray:
    """The integrate-and-fire loop exactly as documented, in float64."""
    acc = np.full(x.shape, 0.5)
    out = []
    for _ in range(steps):
        acc = acc + x
        s = acc >= 1
        acc = acc - s
        out.append(s)
    return np.stack(out).astype(np.float32)


def test_encode_regular_golden_spike_trains():
    pixels = np.array([0.0, 0.25, 0.5, 1.0, 0.1], np.float32).reshape(1, 1, 1, 5)
    spikes = encode_regular(pixels, 8)
    assert spikes.shape == (8, 1, 1, 1, 5) and spikes.dtype == np.float32
    trains = spikes[:, 0, 0, 0].T.astype(int).tolist()
    assert trains[0] == [0, 0, 0, 0, 0, 0, 0, 0]
    assert trains[1] == [0, 1, 0, 0, 0, 1, 0, 0]  # 0.25: acc 0.75, 1.0 -> spike, ...
    assert trains[2] == [1, 0, 1, 0, 1, 0, 1, 0]  # mid-grey fires at once
    assert trains[3] == [1, 1, 1, 1, 1, 1, 1, 1]
    assert trains[4] == [0, 0, 0, 0, 1, 0, 0, 0]  # floor(0.5 + 8 * 0.1) = 1 spike


def test_encode_regular_matches_the_accumulator_loop_and_is_deterministic():
    x = np.random.default_rng(3).random((4, 2, 5, 5))
    steps = 16
    got = encode_regular(x, steps)
    np.testing.assert_array_equal(got, reference_regular(x, steps))
    np.testing.assert_array_equal(got, encode_regular(x.copy(), steps))
    np.testing.assert_array_equal(got.sum(0), np.floor(0.5 + steps * x))


def test_encoders_keep_the_array_kind():
    x = np.random.default_rng(0).random((2, 1, 3, 3)).astype(np.float32)
    t = torch.from_numpy(x)
    out = encode_regular(t, 4)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (4, 2, 1, 3, 3)
    np.testing.assert_array_equal(out.numpy(), encode_regular(x, 4))
    direct = encode_direct(t, 3)
    assert isinstance(direct, torch.Tensor) and direct.shape == (3, 2, 1, 3, 3)
    assert torch.equal(direct[2], t)
    assert isinstance(encode_direct(x, 3), np.ndarray)


def test_encode_regular_rejects_values_outside_unit_range():
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        encode_regular(np.array([0.2, 1.5]), 4)
    with pytest.raises(DataError):
        encode_regular(np.array([np.nan]), 4)


def test_encoder_record_round_trip_and_errors():
    enc = Encoder("regular", 6)
    again = Encoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert again == enc
    np.testing.assert_array_equal(again(np.full((1, 1), 0.25)), encode_regular(np.full((1, 1), 0.25), 6))
    with pytest.raises(ConfigError, match="regular.*direct|direct.*regular"):
        Encoder("poisson", 6)
    with pytest.raises(ConfigError, match="bogus"):
        Encoder.from_dict({"name": "direct", "steps": 2, "bogus": 1})
    with pytest.raises(ConfigError, match="steps"):
        Encoder("direct", 0)


# --- events and binning ---------------------------------------------------------------------


def test_bin_events_counts_and_drops():
    ev = events(
        (1000, 0, 0, 1),  # bin 0, ON
        (1500, 0, 0, 1),  # bin 0 again: count 2
        (1999, 3, 1, 0),  # bin 0 (t - t0 = 999 < 1000), OFF
        (2000, 3, 1, 0),  # bin 1
        (4999, 2, 2, 1),  # last bin
        (5000, 1, 1, 1),  # t0 + duration: outside the window
        (999, 1, 1, 1),  # before t0
        (3000, 4, 0, 1),  # x == width: outside the sensor
        (3000, 0, 3, 0),  # y == height
    )
    binning = Binning(steps=4, duration_us=4000, height=3, width=4, binary=False, t0_us=1000)
    frames, dropped = bin_events_counted(ev, binning)
    assert frames.shape == (4, 2, 3, 4) and frames.dtype == np.float32
    assert dropped == {"outside_window": 2, "outside_sensor": 2}
    assert frames[0, 1, 0, 0] == 2 and frames[0, 0, 1, 3] == 1 and frames[1, 0, 1, 3] == 1
    assert frames[3, 1, 2, 2] == 1
    assert frames.sum() == 5
    binary = bin_events(ev, Binning(4, 4000, 3, 4, binary=True, t0_us=1000))
    assert binary[0, 1, 0, 0] == 1 and binary.sum() == 4


def test_bin_events_window_starts_at_earliest_event_by_default():
    ev = events((6999, 1, 0, 1), (5000, 0, 0, 0), (5999, 0, 0, 1), (6000, 1, 1, 0))
    frames, dropped = bin_events_counted(ev, Binning(2, 2000, 2, 2))
    assert dropped == {"outside_window": 0, "outside_sensor": 0}
    assert frames[0].sum() == 2 and frames[1].sum() == 2
    assert frames[0, 0, 0, 0] == 1 and frames[1, 1, 0, 1] == 1
    assert bin_events(events(), Binning(2, 2000, 2, 2)).shape == (2, 2, 2, 2)


def test_binning_record_and_validation():
    b = Binning(8, 300_000, 34, 34, binary=False, t0_us=0)
    assert Binning.from_dict(json.loads(json.dumps(b.to_dict()))) == b
    with pytest.raises(ConfigError, match="color"):
        Binning.from_dict({**b.to_dict(), "color": True})
    with pytest.raises(ConfigError, match="missing.*height"):
        Binning.from_dict({"steps": 2, "duration_us": 10, "width": 3})
    with pytest.raises(ConfigError, match="duration_us"):
        Binning(8, 0, 34, 34)


def test_as_events_converts_foreign_dtypes():
    tonic_like = np.array(
        [(3, 4, True, 10), (5, 6, False, 20)], dtype=[("x", "i2"), ("y", "i2"), ("p", "?"), ("t", "i8")]
    )
    ev = as_events(tonic_like)
    assert ev.dtype == EVENT_DTYPE and ev["p"].tolist() == [1, 0] and ev["t"].tolist() == [10, 20]
    assert downsample_events(ev, 2)[["x", "y"]].tolist() == [(1, 2), (2, 3)]
    with pytest.raises(DataError, match="fields"):
        as_events(np.zeros(3))


# --- the event-camera emulator ----------------------------------------------------------------


@pytest.fixture(scope="module")
def digit_images() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images[:6] / 16.0).astype(np.float32)


@pytest.fixture(scope="module")
def emulated(digit_images) -> list[np.ndarray]:
    return emulate_batch(digit_images, EmulatorConfig(), seed=0)


def test_emulator_events_are_plausible(emulated):
    cfg = EmulatorConfig()
    for ev in emulated:
        assert ev.dtype == EVENT_DTYPE
        assert 1000 < len(ev) < 20_000
        assert np.all(np.diff(ev["t"]) >= 0), "not sorted by t"
        assert ev["t"].min() >= 0 and ev["t"].max() < cfg.duration_us == 300_000
        assert ev["x"].max() < 34 and ev["y"].max() < 34
        n_on = int(ev["p"].sum())
        assert 0.25 < n_on / len(ev) < 0.75, "ON and OFF events should both be common"
        # all three saccades produce events
        assert np.all(np.bincount(ev["t"] // 100_000, minlength=3) > 100)


def test_emulator_is_deterministic_per_seed(digit_images, emulated):
    again = emulate_batch(digit_images[:2], EmulatorConfig(), seed=0)
    for a, b in zip(again, emulated[:2]):
        np.testing.assert_array_equal(a, b)
    single = emulate(digit_images[1], EmulatorConfig(), seed=0)
    np.testing.assert_array_equal(single, emulated[1])  # independent of the rest of the batch
    other = emulate(digit_images[1], EmulatorConfig(), seed=1)
    assert len(other) != len(single) or not np.array_equal(other, single)


def test_emulator_orientation_and_polarity():
    # A bright square in the image's top right must give events at the top right of the canvas
    # (not mirrored or transposed), and a moving edge gives ON events in front, OFF behind.
    cfg = EmulatorConfig()
    image = np.zeros((8, 8), np.float32)
    image[1:3, 5:7] = 1.0  # rows 1-2, columns 5-6: centre (6, 18) in the 24-pixel digit
    ev = emulate(image, cfg, seed=0)
    x0, y0 = digit_position(cfg, np.arange(0, 300_000, 1000))
    assert abs(ev["y"].mean() - (6 + y0.mean() - 0.5)) < 1.5
    assert abs(ev["x"].mean() - (18 + x0.mean() - 0.5)) < 1.5
    first = ev[ev["t"] < cfg.saccade_us]  # the first saccade moves the digit down and right
    assert first["y"][first["p"] == 1].mean() > first["y"][first["p"] == 0].mean() + 2
    assert first["x"][first["p"] == 1].mean() > first["x"][first["p"] == 0].mean() + 1


def test_emulator_options(digit_images):
    image = digit_images[0]
    base = emulate(image, EmulatorConfig(substep_us=5000), seed=0)
    noisy = emulate(image, EmulatorConfig(substep_us=5000, noise_rate_hz=20.0), seed=0)
    assert len(noisy) > len(base) + 300  # about 20 Hz * 34 * 34 * 0.3 s = 694 noise events
    assert np.all(np.diff(noisy["t"]) >= 0)
    refr = 5000
    slow = emulate(image, EmulatorConfig(substep_us=5000, refractory_us=refr), seed=0)
    assert 0 < len(slow) < len(base)
    pix = slow["y"].astype(np.int64) * 34 + slow["x"]
    order = np.lexsort((slow["t"], pix))
    same = np.diff(pix[order]) == 0
    assert np.all(np.diff(slow["t"][order])[same] >= refr)


def test_emulator_config_validation():
    cfg = EmulatorConfig(threshold=0.3)
    assert EmulatorConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="threshold"):
        EmulatorConfig(threshold=0.0)
    with pytest.raises(ConfigError, match="substep_us"):
        EmulatorConfig(substep_us=3000)
    with pytest.raises(ConfigError, match="speed"):
        EmulatorConfig.from_dict({"speed": 2})
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        emulate(np.full((8, 8), 2.0))


# --- N-MNIST files --------------------------------------------------------------------------


@needs_eventdata
def test_read_nmnist_real_sample():
    ev = read_nmnist(NMNIST / "single_sample.bin")
    assert ev.dtype == EVENT_DTYPE and len(ev) == 4325
    assert ev["x"].max() == 33 and ev["y"].max() == 33
    span = (ev["t"].max() - ev["t"].min()) * 1e-6
    assert 0.30 < span < 0.32
    assert np.all(np.diff(ev["t"]) >= 0)
    assert 0 < ev["p"].sum() < len(ev)


def test_read_nmnist_errors(tmp_path):
    with pytest.raises(DataError, match="missing.bin.*does not exist"):
        read_nmnist(tmp_path / "missing.bin")
    raw = bytes(range(5)) * 3 + b"\x01\x02"
    bad = tmp_path / "truncated.bin"
    bad.write_bytes(raw)
    with pytest.raises(DataError, match=r"truncated\.bin.*byte offset 15"):
        read_nmnist(bad)


def test_nmnist_folder_with_a_file_listed_twice_or_an_event_off_the_frame_is_refused(tmp_path):
    """Both were read silently: a file listed twice counted twice (or landed in both splits), and an
    event at x = 200 in a 34 x 34 recording was dropped without a word."""
    for i in range(4):
        write_nmnist(tmp_path / f"{i}.bin", events((1000 * i, i, 5, 1), (2000 * i + 10, 33, 33, 0)))
    rows = ["file,label", "0.bin,0", "1.bin,1", "2.bin,2", "3.bin,3"]
    (tmp_path / "labels.csv").write_text("\n".join([*rows, "1.bin,1"]) + "\n")
    with pytest.raises(DataError, match=r"labels\.csv, line 6: 1\.bin is listed again \(first on line 3\)"):
        load_dataset("nmnist", "all", root=tmp_path)
    (tmp_path / "labels.csv").write_bytes(b"file,label\n\x89\xff,1\n")  # (a UnicodeDecodeError traceback)
    with pytest.raises(DataError, match=r"labels\.csv is not CSV text \(byte 11 is not UTF-8\)"):
        load_dataset("nmnist", "all", root=tmp_path)
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    ds = load_dataset("nmnist", "all", root=tmp_path)
    assert len(ds) == 4 and float(ds[3][0].sum()) == 2
    write_nmnist(tmp_path / "2.bin", events((10, 3, 5, 1), (20, 200, 7, 0)))
    with pytest.raises(DataError, match=r"2\.bin: 1 event\(s\) lie outside N-MNIST's 34 x 34 frame \(x up to 200"):
        load_dataset("nmnist", "all", root=tmp_path)[2]


@needs_eventdata
def test_read_nmnist_truncated_real_file(tmp_path):
    raw = (NMNIST / "single_sample.bin").read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(raw[: 5 * 1000 + 3])
    with pytest.raises(DataError, match=r"cut\.bin.*byte offset 5000"):
        read_nmnist(cut)


def test_nmnist_write_read_round_trip_and_overflow_marker(tmp_path):
    ev = events((0, 0, 0, 1), (70_000, 33, 12, 0), (2**23 - 1, 255, 239, 1))
    write_nmnist(tmp_path / "a.bin", ev)
    np.testing.assert_array_equal(read_nmnist(tmp_path / "a.bin"), ev)
    # byte layout: x, y, p<<7 | t[22:16], t[15:8], t[7:0]
    assert (tmp_path / "a.bin").read_bytes()[5:10] == bytes([33, 12, 0x01, 0x11, 0x70])
    marker = bytes([0, 240, 0, 0, 0])
    got = decode_nmnist(bytes([1, 2, 0x80, 0, 5]) + marker + bytes([3, 4, 0, 0, 6]))
    assert got.tolist() == [(5, 1, 2, 1), (6 + 2**13, 3, 4, 0)]
    with pytest.raises(DataError, match="23|t must"):
        write_nmnist(tmp_path / "b.bin", events((2**23, 0, 0, 1)))


# --- the dataset registry -------------------------------------------------------------------


def test_registry_names_and_errors():
    assert {"digits", "event_digits", "nmnist", "dvs_gesture", "cifar10_dvs", "cifar10", "cifar100", "imagenet"} <= set(
        DATASETS
    )
    with pytest.raises(ConfigError, match="mnistt.*digits.*event_digits.*nmnist"):
        load_dataset("mnistt", "train")
    with pytest.raises(ConfigError, match="valid.*train, test"):
        load_dataset("digits", "valid")
    with pytest.raises(ConfigError, match="colour.*encoder"):
        load_dataset("digits", "train", colour=True)
    with pytest.raises(ConfigError, match="poisson.*regular"):
        load_dataset("digits", "train", encoder="poisson")
    # a folder named for a generated dataset was ignored: runtime.run --data-root on the demo's
    # nmnist_emulated graph evaluated the emulated digits, not the recordings in the folder
    for name in ("digits", "event_digits", "nmnist_emulated"):
        with pytest.raises(ConfigError, match=f"dataset '{name}' is generated, not read from a folder: the folder "
                                              r"rec \(--data-root, root=\) would not be read; .* nmnist"):  # fmt: skip
            load_dataset(name, "train", root="rec")


def test_digits_split_and_samples():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.input_shape == (1, 8, 8) and train.num_classes == 10 and train.steps == 8
    # stratified: every class holds 20% +- 1 of its samples in test
    counts_train, counts_test = np.bincount(train.labels), np.bincount(test.labels)
    assert np.all(np.abs(counts_test - 0.2 * (counts_train + counts_test)) <= 1)
    x, y = train[5]
    assert x.shape == (8, 1, 8, 8) and x.dtype == torch.float32 and isinstance(y, int)
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    again = load_dataset("digits", "train")
    assert torch.equal(again[5][0], x) and np.array_equal(again.labels, train.labels)
    # the split is fixed, whatever the run's seed
    assert np.array_equal(load_dataset("digits", "test", seed=7).labels, test.labels)
    direct = load_dataset("digits", "test", encoder="direct", steps=3, limit=10)
    assert len(direct) == 10 and direct[0][0].shape == (3, 1, 8, 8)
    assert direct.describe()["encoder"] == {"name": "direct", "steps": 3}


def test_describe_round_trip():
    ds = load_dataset("digits", "train", steps=5, encoder="direct")
    desc = json.loads(json.dumps(ds.describe()))
    assert desc["input_shape"] == [1, 8, 8] and desc["num_classes"] == 10
    assert desc["class_names"] == [str(d) for d in range(10)]
    rebuilt = dataset_from_description(desc, "test")
    assert rebuilt.steps == 5 and rebuilt.describe() == desc
    assert torch.equal(rebuilt[3][0], load_dataset("digits", "test", steps=5, encoder="direct")[3][0])
    with pytest.raises(ConfigError, match="encoder"):
        dataset_from_description({**desc, "encoder": {"name": "regular", "steps": 5}}, "test")


@pytest.fixture(scope="module")
def event_digits_cache(tmp_path_factory) -> Path:
    """A folder holding the (fast) emulation of every digit, written once for this module."""
    folder = tmp_path_factory.mktemp("event_cache")
    ds_mod._EMULATED.clear()
    event_digits_events("test", 0, config=EmulatorConfig(**FAST_EMULATOR), cache_dir=folder)
    return folder


def test_a_graphs_emulated_data_is_read_from_the_cache(event_digits_cache, monkeypatch):
    """runtime.run, verify and convert emulated a graph's recorded dataset again in every process (27 s
    of a 64-sample run of the demo's N-MNIST graph, 9 s from the cache): they take --cache-dir, by
    default train.bkd's runs/cache."""
    import types

    from convert.to_nir import ConvertConfig
    from inputs import CACHE_DIR
    from inputs.graph_data import load_inputs
    from runtime.run import RunConfig
    from runtime.verify import VerifyConfig

    assert RunConfig().cache_dir == VerifyConfig().cache_dir == ConvertConfig().cache_dir == CACHE_DIR
    test = load_dataset("event_digits", "test", emulator=FAST_EMULATOR, cache_dir=event_digits_cache, steps=6)
    desc = json.loads(json.dumps(test.describe()))
    graph = types.SimpleNamespace(input_shape=(2, 34, 34), steps=6, meta={"dataset": desc}, source="g.nir")
    ds_mod._EMULATED.clear()
    monkeypatch.setattr(ds_mod, "emulate_batch", lambda *a, **k: pytest.fail("emulated again despite the cache"))
    spikes, labels, what = load_inputs(graph, samples=3, cache_dir=str(event_digits_cache))
    assert spikes.shape == (6, 3, 2, 34, 34) and np.array_equal(spikes[:, 0], test[0][0].numpy())
    assert labels.tolist() == test.labels[:3].tolist() and what == "event_digits/test (3 samples)"


def test_a_cache_that_cannot_be_written_is_a_warning(tmp_path, capsys):
    """A command run where the cache folder cannot be written (a read-only working folder) still runs."""
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder would be")
    ds_mod._EMULATED.clear()
    ds = load_dataset("event_digits", "test", emulator=FAST_EMULATOR, cache_dir=blocked / "cache", limit=2)
    assert len(ds) == 2 and ds[0][0].sum() > 0
    assert "warning: could not keep the emulated events in" in capsys.readouterr().err


def test_event_digits_dataset(event_digits_cache, monkeypatch):
    train = load_dataset("event_digits", "train", emulator=FAST_EMULATOR, cache_dir=event_digits_cache, steps=6)
    test = load_dataset("event_digits", "test", emulator=FAST_EMULATOR, cache_dir=event_digits_cache, steps=6)
    assert (len(train), len(test)) == (1437, 360)
    assert np.array_equal(train.labels, load_dataset("digits", "train").labels)
    x, y = test[0]
    assert x.shape == (6, 2, 34, 34) and x.dtype == torch.float32 and train.input_shape == (2, 34, 34)
    assert x.max() == 1 and x[:, 0].sum() > 0 and x[:, 1].sum() > 0
    assert all(x[t].sum() > 0 for t in range(6))

    # from the disk cache in a "new process", then rebuilt from its description
    files = list(event_digits_cache.glob("event_digits-*.npz"))
    assert len(files) == 1
    in_memory = event_digits_events("test", 0, config=EmulatorConfig(**FAST_EMULATOR))[0]
    ds_mod._EMULATED.clear()
    monkeypatch.setattr(ds_mod, "emulate_batch", lambda *a, **k: pytest.fail("emulated again despite the cache"))
    desc = json.loads(json.dumps(test.describe()))
    assert "cache_dir" not in desc["args"] and desc["emulator"]["substep_us"] == 5000
    rebuilt = dataset_from_description(desc, "test", cache_dir=event_digits_cache)
    assert torch.equal(rebuilt[0][0], x) and rebuilt.describe() == desc
    events_test, labels = event_digits_events(
        "test", 0, config=EmulatorConfig(**FAST_EMULATOR), cache_dir=event_digits_cache
    )
    assert len(events_test) == 360 and np.array_equal(labels, test.labels)
    assert all(np.array_equal(a, b) for a, b in zip(events_test, in_memory))
    images = ds_mod._digits_data()[0][ds_mod.digits_split("test")[:2]]
    fresh = emulate_batch(images, EmulatorConfig(**FAST_EMULATOR), seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(fresh, events_test[:2]))
    assert torch.equal(torch.from_numpy(bin_events(events_test[0], Binning.from_dict(desc["binning"]))), x)


def test_event_cache_corruption_is_an_error(event_digits_cache, tmp_path):
    bad = tmp_path / "cache"
    bad.mkdir()
    for f in event_digits_cache.glob("event_digits-*.npz"):
        (bad / f.name).write_bytes(b"not a zip")
    ds_mod._EMULATED.clear()
    with pytest.raises(DataError, match="unreadable"):
        load_dataset("event_digits", "test", emulator=FAST_EMULATOR, cache_dir=bad)


@needs_eventdata
def test_nmnist_flat_folder_holds_out_a_test_split():
    root = NMNIST / "train"
    train, test = load_dataset("nmnist", "train", root=root), load_dataset("nmnist", "test", root=root)
    assert (len(train), len(test)) == (800, 200)
    assert set(np.bincount(test.labels)) <= {18, 19, 20, 21, 22, 23, 24}
    x, y = test[0]
    assert x.shape == (8, 2, 34, 34) and 0 <= y <= 9 and x.sum() > 100
    rebuilt = dataset_from_description(json.loads(json.dumps(test.describe())), "test")
    assert torch.equal(rebuilt[0][0], x)


def test_nmnist_official_layout(tmp_path):
    for split in ("Train", "Test"):
        for digit in (3, 7):
            (tmp_path / split / str(digit)).mkdir(parents=True)
            write_nmnist(tmp_path / split / str(digit) / "00001.bin", events((10, 1, 2, 1), (299_999, 33, 33, 0)))
    ds = load_dataset("nmnist", "test", root=tmp_path, steps=3)
    assert ds.labels.tolist() == [3, 7]
    x, _ = ds[1]
    assert x.shape == (3, 2, 34, 34) and x[0, 1, 2, 1] == 1 and x[2, 0, 33, 33] == 1 and x.sum() == 2


def test_missing_folders_are_data_errors(tmp_path):
    absent = tmp_path / "absent"
    with pytest.raises(DataError, match=r"absent.*Train/<digit>.*labels\.csv"):
        load_dataset("nmnist", "train", root=absent)
    with pytest.raises(DataError, match="root="):
        load_dataset("nmnist", "train")
    with pytest.raises(DataError, match=r"absent.*cifar-10-batches-py"):
        load_dataset("cifar10", "train", root=absent)
    with pytest.raises(DataError, match=r"cifar-100-python"):
        load_dataset("cifar100", "test", root=absent)
    with pytest.raises(DataError, match=r"absent.*DVSGesture.*ibmGestureTrain"):
        load_dataset("dvs_gesture", "train", root=absent)
    with pytest.raises(DataError, match=r"absent.*CIFAR10DVS"):
        load_dataset("cifar10_dvs", "train", root=absent)
    with pytest.raises(DataError, match=r"absent.*train"):
        load_dataset("imagenet", "train", root=absent)


def test_dvs_gesture_reads_local_files_without_downloading(tmp_path, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    folder = tmp_path / "DVSGesture" / "ibmGestureTrain" / "user01_fluorescent"
    folder.mkdir(parents=True)
    # tonic's preprocessed layout: rows (x, y, p, t in ms), file name = label
    np.save(folder / "4.npy", np.array([[10, 20, 1, 0], [127, 127, 0, 5], [64, 3, 1, 1499], [5, 5, 1, 2000]]))
    ds = load_dataset("dvs_gesture", "train", root=tmp_path)
    assert len(ds) == 1 and ds.num_classes == 11 and ds.input_shape == (2, 64, 64)
    x, y = ds[0]
    assert y == 4 and x.shape == (8, 2, 64, 64)
    assert x.nonzero().tolist() == [[0, 0, 63, 63], [0, 1, 10, 5], [7, 1, 1, 32]]  # t = 2 s is outside 1.5 s
    assert torch.equal(pickle.loads(pickle.dumps(ds))[0][0], x)  # DataLoader workers get a copy


def test_imagenet_folders_share_the_train_class_index(tmp_path):
    from PIL import Image

    for split, cls, colour in (("train", "n01", 0), ("train", "n02", 255), ("val", "n02", 128)):
        (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (300, 260), (colour, 0, 0)).save(tmp_path / split / cls / "a.png")
    val = load_dataset("imagenet", "test", root=tmp_path, steps=2)
    assert len(val) == 1 and val.labels.tolist() == [1] and val.class_names == ["n01", "n02"]
    x, y = pickle.loads(pickle.dumps(val))[0]
    assert x.shape == (2, 3, 224, 224) and y == 1
    assert torch.allclose(x[:, 0], torch.full((2, 224, 224), 128 / 255)) and x[:, 1:].abs().max() == 0


def test_datasets_pickle_for_dataloader_workers(event_digits_cache):
    for ds in (
        load_dataset("digits", "test", limit=5),
        load_dataset("event_digits", "test", emulator=FAST_EMULATOR, cache_dir=event_digits_cache, limit=5),
    ):
        copy = pickle.loads(pickle.dumps(ds))
        assert len(copy) == 5 and torch.equal(copy[4][0], ds[4][0]) and copy.describe() == ds.describe()
