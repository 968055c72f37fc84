"""inputs.formats.readers: every format through open_events, on the real recordings in ../shared/eventdata
(README table figures), round trips through our writers, and bad input (random and mutated bytes).

Run as a script (``python tests/test_readers.py``) to render an accumulated-events PNG of each real
file into ``runs/readers/`` for a look at orientation.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import fuzz
from core.errors import ConfigError, DataError
from inputs.events import EVENT_DTYPE
from inputs.formats import aedat3, arrays
from inputs.formats.readers import FORMATS, detect_format, open_events, read_events

# path, format, sensor flag (None: from the file), sensor size, events, span in s, tolerance in s
REAL = [
    ("nmnist/single_sample.bin", "nmnist", (34, 34), (34, 34), 4_325, 0.31, 0.01),
    ("dvs128_bs2/clip_1450ms.bin", "nmnist", (128, 128), (128, 128), 63_471, 1.45, 0.01),
    ("aedat2/dvs128_walking.aedat", "aedat2", None, (128, 128), 19_182, 6.9, 0.05),
    ("aedat2/davis240c_translating_boxes.aedat", "aedat2", None, (240, 180), 162_771, 2.07, 0.01),
    ("aedat4/dvxplorer_sample.aedat4", "aedat4", None, (320, 240), 111_954, 0.59, 0.01),
    ("evt2/gen3_sample.raw", "evt2", None, (640, 480), 539_481, 0.050, 0.001),
    ("evt3/gen41_sample.raw", "evt3", None, (1280, 720), 219_596, 0.054, 0.001),
    ("dat/ncars_sample.dat", "dat", None, None, 2_009, 0.100, 0.001),
]  # fmt: skip
EVENTDATA = Path(__file__).resolve().parents[2] / "shared" / "eventdata"
IDS = [r[0].split("/")[0] for r in REAL]
SAMPLE = np.array([(10, 1, 2, 1), (20, 3, 4, 0), (20, 5, 6, 1), (35, 33, 0, 0)], EVENT_DTYPE)


def random_events(n: int, width: int = 64, height: int = 48, seed: int = 0, t0: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ev = np.empty(n, EVENT_DTYPE)
    ev["t"] = t0 + np.sort(rng.integers(0, 50 * n + 1, n))
    ev["x"], ev["y"], ev["p"] = rng.integers(0, width, n), rng.integers(0, height, n), rng.integers(0, 2, n)
    return ev


@pytest.mark.parametrize("path,fmt,flag,sensor,events,span,tol", REAL, ids=IDS)
def test_real_files(eventdata, path, fmt, flag, sensor, events, span, tol):
    stream = open_events(eventdata / path, sensor_size=flag)
    assert (stream.format, stream.sensor_size) == (fmt, sensor)
    ev = stream.read_all()
    c = stream.counters
    assert len(ev) == events == c["events"]
    assert c["outside_sensor"] == c["time_backwards"] == c["truncated_bytes"] == c["time_wraps"] == 0
    assert (ev["t"][-1] - ev["t"][0]) / 1e6 == pytest.approx(span, abs=tol)
    assert np.all(np.diff(ev["t"]) >= 0)
    on = int(ev["p"].sum())
    assert 0 < on < len(ev) and set(np.unique(ev["p"])) == {0, 1}
    if sensor:
        assert ev["x"].max() < sensor[0] and ev["y"].max() < sensor[1]


def test_nmnist_training_files(eventdata):
    for i in (1, 250, 500, 1000):
        ev = read_events(eventdata / "nmnist" / "train" / f"{i}.bin", sensor_size=(34, 34))
        assert 1_000 <= len(ev) <= 7_200 and 0.29 <= (ev["t"][-1] - ev["t"][0]) / 1e6 <= 0.32


def test_davis_and_aedat4_skip_other_words(eventdata):
    s = open_events(eventdata / "aedat2" / "davis240c_translating_boxes.aedat")
    s.read_all()
    assert s.counters["skipped_words"] == 33_837
    s = open_events(eventdata / "aedat4" / "dvxplorer_sample.aedat4")
    s.read_all()
    assert s.counters["skipped_words"] > 0  # IMU and trigger packets


def test_evt3_equals_reference_decode(eventdata):
    ev = read_events(eventdata / "evt3" / "gen41_sample.raw")
    ref = np.load(eventdata / "evt3" / "gen41_sample.reference.npy")
    assert len(ev) == len(ref)
    for key in "txyp":
        assert np.array_equal(ev[key].astype(np.int64), ref[key].astype(np.int64)), key


@pytest.mark.parametrize("path", [r[0] for r in REAL], ids=IDS)
def test_chunks_equal_one_read(eventdata, path):
    whole = open_events(eventdata / path, chunk_events=1 << 30).read_all()
    chunks = list(open_events(eventdata / path, chunk_events=777).chunks())
    assert all(len(c) == 777 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 777
    assert np.array_equal(np.concatenate(chunks), whole)


def test_detect_format_and_wrong_flags(eventdata):
    for path, fmt, *_ in REAL:
        assert detect_format(eventdata / path) == fmt
        wrong = "aedat3" if fmt != "aedat3" else "npy"
        with pytest.raises(DataError, match=f"does not look like {wrong}"):
            open_events(eventdata / path, wrong)
    for path, wrong in [("evt3/gen41_sample.raw", "evt2"), ("aedat2/dvs128_walking.aedat", "aedat4"),
                        ("aedat4/dvxplorer_sample.aedat4", "nmnist"), ("evt2/gen3_sample.raw", "hdf5")]:  # fmt: skip
        with pytest.raises(DataError, match=f"file .* does not look like {wrong}: it has"):
            open_events(eventdata / path, wrong)
    with pytest.raises(ConfigError, match="unknown event format 'mp4'; known: nmnist, aedat2"):
        open_events(eventdata / REAL[0][0], "mp4")


def test_missing_empty_directory_unknown(tmp_path):
    with pytest.raises(DataError, match=r"event file .*nope\.aedat does not exist"):
        open_events(tmp_path / "nope.aedat")
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.npy is empty \(0 bytes\)"):
        open_events(tmp_path / "empty.npy")
    with pytest.raises(DataError, match="not a regular file"):
        open_events(tmp_path)
    (tmp_path / "x.mp4").write_bytes(b"\x00\x01garbage")
    with pytest.raises(DataError, match="cannot tell its event format.*known formats: nmnist"):
        open_events(tmp_path / "x.mp4")
    (tmp_path / "x.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="promises a header"):
        open_events(tmp_path / "x.npy")
    (tmp_path / "v1.aedat").write_bytes(b"#!AER-DAT1.0\r\n" + b"\0" * 8)
    with pytest.raises(DataError, match="an AEDAT version we do not read"):
        open_events(tmp_path / "v1.aedat")


# --- our writers, read back ------------------------------------------------------------------


def test_aedat3_round_trip_with_overflow_other_packets_and_invalid_events(tmp_path):
    ev = random_events(5_000, 128, 128, t0=(1 << 31) - 100_000)  # crosses an overflow step
    path = tmp_path / "gesture.aedat"
    aedat3.write_aedat3(path, ev, packet_events=700)
    stream = open_events(path)
    assert (stream.format, stream.sensor_size) == ("aedat3", (128, 128))
    assert np.array_equal(stream.read_all(), ev)
    # a special-event packet (type 0) and an invalid polarity event are skipped and counted
    data = path.read_bytes()
    cut = data.index(b"#!END-HEADER\r\n") + 14
    special = np.array([(0, 1, 8, 4, 0, 2, 2, 2)], aedat3.PACKET_HEADER).tobytes() + b"\1" * 16
    pol = np.array([(2 << 17 | 3 << 2 | 1 << 1 | 0, 5), (2 << 17 | 3 << 2 | 1, 6)], aedat3.POLARITY_EVENT)
    head = np.array([(1, 1, 8, 4, 0, 2, 2, 1)], aedat3.PACKET_HEADER).tobytes()
    (tmp_path / "mixed.aedat").write_bytes(data[:cut] + special + head + pol.tobytes())
    s = open_events(tmp_path / "mixed.aedat")
    got = s.read_all()
    assert len(got) == 1 and (got["x"][0], got["y"][0], got["p"][0], got["t"][0]) == (2, 3, 0, 6)
    assert s.counters["skipped_words"] == 2 and s.counters["invalid_events"] == 1


def test_aedat3_writer_matches_the_dvs_gesture_readme_decode(tmp_path):
    """Decode our writer's file the way DVS128 Gesture's README (and PyAedatTools) describe it."""
    import struct

    ev = random_events(2_000, 128, 128, t0=(1 << 31) - 50_000)
    path = tmp_path / "g.aedat"
    aedat3.write_aedat3(path, ev, packet_events=512)
    data = path.read_bytes()
    pos = data.index(b"#!END-HEADER\r\n") + 14
    t, x, y, p = [], [], [], []
    while pos < len(data):
        etype, _, size, _, overflow, _, number, _ = struct.unpack_from("<HHIIIIII", data, pos)
        pos += 28
        assert (etype, size) == (1, 8)
        for k in range(number):
            word, ts = struct.unpack_from("<II", data, pos + 8 * k)
            t.append(overflow * 2**31 + ts)
            x.append((word >> 17) & 0x1FFF)
            y.append((word >> 2) & 0x1FFF)
            p.append((word >> 1) & 1)
        pos += number * size
    assert [list(ev[k]) for k in "txyp"] == [t, x, y, p]


def test_aedat3_header_and_truncation(tmp_path):
    path = tmp_path / "a.aedat"
    aedat3.write_aedat3(path, SAMPLE, source="DAVIS240C")
    assert open_events(path).sensor_size == (240, 180)
    aedat3.write_aedat3(path, SAMPLE, source="Mystery", sensor_size=(50, 40))
    assert open_events(path).sensor_size == (50, 40)
    aedat3.write_aedat3(path, SAMPLE, source="Mystery")
    assert open_events(path).sensor_size is None
    path.write_bytes(path.read_bytes()[:-3])
    s = open_events(path)
    assert len(s.read_all()) == 3 and s.counters["truncated_bytes"] == 5
    with pytest.raises(DataError, match=r"truncated AEDAT 3 file: the packet at byte offset \d+"):
        open_events(path, strict=True).read_all()
    bad = tmp_path / "bad.aedat"
    bad.write_bytes(
        b"#!AER-DAT3.1\r\n#!END-HEADER\r\n" + np.array([(1, 1, 12, 4, 0, 1, 1, 1)], aedat3.PACKET_HEADER).tobytes()
    )
    with pytest.raises(DataError, match=r"corrupt AEDAT 3 polarity packet at byte offset 28"):
        read_events(bad)


@pytest.mark.parametrize(
    "kind",
    ["npy", "npz", "npz_columns", "npz_compressed", "hdf5_columns", "hdf5_compound"],
)
def test_array_round_trips(tmp_path, kind):
    ev = random_events(3_001)
    path = tmp_path / f"ev.{kind.split('_')[0]}"
    if kind == "npy":
        arrays.write_npy(path, ev)
    elif kind.startswith("npz"):
        arrays.write_npz(path, ev, columns="columns" in kind, compressed="compressed" in kind, sensor_size=(64, 48))
    else:
        arrays.write_hdf5(path, ev, layout=kind.split("_")[1], sensor_size=(64, 48))
    stream = open_events(path, chunk_events=1000)
    assert stream.format == path.suffix[1:] and stream.sensor_size == (None if kind == "npy" else (64, 48))
    assert np.array_equal(stream.read_all(), ev)
    if kind == "npy":
        assert np.array_equal(np.load(path), ev)  # numpy reads our files too


def test_npy_writer_in_chunks_aliases_and_truncation(tmp_path):
    path = tmp_path / "big.npy"
    with arrays.NpyEventWriter(path) as w:
        for k in range(5):
            w.write(random_events(1000, seed=k, t0=k * 100_000))
    assert np.load(path, mmap_mode="r").shape == (5000,)
    assert len(read_events(path, chunk_events=999)) == 5000
    with pytest.raises(RuntimeError), arrays.NpyEventWriter(tmp_path / "half.npy") as w:
        w.write(SAMPLE)
        raise RuntimeError("stop")
    assert not (tmp_path / "half.npy").exists()  # atomic: nothing left behind
    foreign = np.zeros(3, [("timestamp", "<u4"), ("x", "<i2"), ("y", "<i2"), ("polarity", "<i1")])
    foreign["timestamp"] = [5, 6, 7]
    foreign["x"], foreign["y"], foreign["polarity"] = [1, -1, 2], [1, 1, 70000 % 32768], [1, -1, 0]
    np.save(tmp_path / "foreign.npy", foreign)
    s = open_events(tmp_path / "foreign.npy")
    got = s.read_all()
    assert list(got["p"]) == [1, 0] and s.counters["outside_sensor"] == 1  # x = -1 cannot be stored
    data = path.read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-20])
    s = open_events(tmp_path / "cut.npy")
    assert len(s.read_all()) == 4998 and s.counters["truncated_bytes"] == 20
    with pytest.raises(DataError, match=r"truncated \.npy file.*byte offset \d+"):
        open_events(tmp_path / "cut.npy", strict=True)
    np.save(tmp_path / "float.npy", np.zeros(2, [("t", "f8"), ("x", "u2"), ("y", "u2"), ("p", "u1")]))
    with pytest.raises(DataError, match="field 't' has dtype float64.*integer microseconds"):
        open_events(tmp_path / "float.npy")


def test_npz_and_hdf5_choose_the_events(tmp_path):
    import h5py

    ev = random_events(100)
    np.savez(tmp_path / "two.npz", a=ev, b=ev[:10])
    with pytest.raises(DataError, match="several members hold events"):
        open_events(tmp_path / "two.npz")
    assert len(read_events(tmp_path / "two.npz", dataset="b")) == 10
    np.savez(tmp_path / "none.npz", image=np.zeros(3))
    with pytest.raises(DataError, match="no member holds events.*members: image"):
        open_events(tmp_path / "none.npz")
    with h5py.File(tmp_path / "dsec.h5", "w") as f:
        g = f.create_group("events")
        for k, name in zip("txyp", ("t", "x", "y", "p")):
            g[name] = ev[k].astype(np.uint32 if k == "t" else np.uint16)
        f["ms_to_idx"] = np.arange(3)
    assert np.array_equal(read_events(tmp_path / "dsec.h5"), ev)
    with pytest.raises(DataError, match="no HDF5 object 'cd'; top level: events, ms_to_idx"):
        open_events(tmp_path / "dsec.h5", dataset="cd")


def test_sensor_backwards_and_wrap_policies(tmp_path):
    ev = np.array([(10, 1, 1, 1), (30, 100, 1, 1), (20, 2, 2, 0), (40, 3, 60, 1), (50, 4, 4, 0)], EVENT_DTYPE)
    arrays.write_npy(tmp_path / "e.npy", ev)
    s = open_events(tmp_path / "e.npy", sensor_size=(64, 48))
    assert list(s.read_all()["t"]) == [10, 20, 50]  # x=100 and y=60 outside; then nothing goes back
    assert s.counters["outside_sensor"] == 2 and s.counters["time_backwards"] == 0
    s = open_events(tmp_path / "e.npy")
    assert list(s.read_all()["t"]) == [10, 30, 40, 50] and s.counters["time_backwards"] == 1
    s = open_events(tmp_path / "e.npy", time_order="keep")
    assert list(s.read_all()["t"]) == [10, 30, 20, 40, 50] and s.counters["time_backwards"] == 1
    # 32-bit times that wrap: unwrapped and counted, across chunk boundaries
    t32 = (np.arange(10, dtype=np.int64) * (1 << 30) + 5) % (1 << 32)
    cols = {
        "t": t32.astype(np.uint32),
        "x": np.ones(10, np.uint16),
        "y": np.ones(10, np.uint16),
        "p": np.ones(10, np.uint8),
    }
    np.savez(tmp_path / "wrap.npz", **cols)
    s = open_events(tmp_path / "wrap.npz", chunk_events=3)
    assert np.array_equal(s.read_all()["t"], np.arange(10) * (1 << 30) + 5) and s.counters["time_wraps"] == 2
    with pytest.raises(ConfigError, match="time_order"):
        open_events(tmp_path / "e.npy", time_order="sort")
    with pytest.raises(ConfigError, match="sensor_size"):
        open_events(tmp_path / "e.npy", sensor_size=(0, 3))


def test_truncated_real_files(eventdata, tmp_path):
    for path, cut, lost in [("nmnist/single_sample.bin", 2, 3), ("evt3/gen41_sample.raw", 1, 1),
                            ("aedat4/dvxplorer_sample.aedat4", 20_000, None)]:  # fmt: skip
        data = (eventdata / path).read_bytes()
        f = tmp_path / Path(path).name
        f.write_bytes(data[:-cut])
        s = open_events(f)
        assert len(s.read_all()) > 0 and s.counters["truncated_bytes"] == (lost or s.counters["truncated_bytes"]) > 0
        with pytest.raises(DataError, match=r"truncated .*byte offset \d+"):
            open_events(f, strict=True).read_all()


# --- bad input: random and mutated bytes for every reader --------------------------------------

# READERS_FUZZ_EXAMPLES=500 for a deeper (random) search; the default is a quick, repeatable one
_DEEP = int(os.environ.get("READERS_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_DEEP or 30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=not _DEEP)


def _read_or_data_error(path: Path, fmt: str) -> None:
    """Allowed outcomes: our DataError, or sane events (bench.fuzz.read_checked: EVENT_DTYPE, polarity
    0/1, inside the sensor, in time order)."""
    with contextlib.suppress(DataError):
        fuzz.read_checked(path, fmt)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    """A small valid file of every format: bench.fuzz's seeds (a shortened real recording where there is one)."""
    if not EVENTDATA.is_dir():
        pytest.skip(f"real event recordings not found at {EVENTDATA}")
    d = tmp_path_factory.mktemp("seeds")
    out = {fmt: fuzz.CASES[fmt].seeds(EVENTDATA, d)[-1] for fmt in FORMATS}
    assert all(out.values())
    return out


EXT = {"nmnist": ".bin", "aedat2": ".aedat", "aedat3": ".aedat", "aedat4": ".aedat4", "evt2": ".raw",
       "evt3": ".raw", "dat": ".dat", "hdf5": ".h5", "npy": ".npy", "npz": ".npz"}  # fmt: skip


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_random_bytes_give_events_or_our_error(tmp_path, seeds, fmt):
    """Random bytes, bare and after the format's own header: only DataError or sane events."""
    head = seeds[fmt][: {"aedat4": 2334, "hdf5": 96, "npy": 256, "npz": 40}.get(fmt, 200)]

    @FUZZ
    @given(body=st.binary(max_size=600), keep_header=st.booleans(), named=st.booleans())
    def check(body, keep_header, named):
        f = tmp_path / f"fuzz{EXT[fmt]}"
        f.write_bytes((head if keep_header else b"") + body)
        _read_or_data_error(f, fmt if named else None)

    check()


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_mutated_files_give_events_or_our_error(tmp_path, seeds, fmt):
    """Valid files cut short or with flipped bits: only DataError or sane events."""
    data = seeds[fmt]

    @FUZZ
    @given(
        cut=st.integers(1, len(data)),
        flips=st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 7)), max_size=8),
    )
    def check(cut, flips):
        b = bytearray(data)
        for at, bit in flips:
            b[at] ^= 1 << bit
        f = tmp_path / f"mut{EXT[fmt]}"
        f.write_bytes(bytes(b[:cut]) if cut < len(data) and not flips else bytes(b))
        _read_or_data_error(f, fmt)

    check()


# --- pictures --------------------------------------------------------------------------------


def render(events: np.ndarray, sensor: tuple[int, int], title: str, path: Path) -> None:
    """Accumulated events as an image (ON red, OFF blue; row 0 at the top), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from core.fileio import save_figure

    w, h = sensor
    img = np.zeros((h, w, 3))
    for p, ch in ((1, 0), (0, 2)):
        sel = events[events["p"] == p]
        np.add.at(img[..., ch], (sel["y"].astype(int), sel["x"].astype(int)), 1.0)
    img /= max(np.percentile(img[img > 0], 99), 1) if img.any() else 1
    fig, ax = plt.subplots(figsize=(4, 4 * h / w + 0.4))
    ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
    ax.set_title(title, fontsize=8)
    save_figure(fig, path)


def test_render(eventdata, tmp_path):
    ev = read_events(eventdata / REAL[0][0])
    render(ev, (34, 34), "n-mnist", tmp_path / "x.png")
    assert (tmp_path / "x.png").stat().st_size > 1000


def main() -> int:
    out = Path(__file__).resolve().parents[1] / "runs" / "readers"
    for path, _, flag, *_ in REAL + [
        ("nmnist/train/1.bin", "nmnist", (34, 34)),
        ("nmnist/train/2.bin", "nmnist", (34, 34)),
    ]:
        s = open_events(EVENTDATA / path, sensor_size=flag)
        ev = s.read_all()
        if "walking" in path or "aedat4" in path or "bs2" in path:  # a moving scene: a short window reads best
            ev = ev[(ev["t"] >= ev["t"][len(ev) // 2]) & (ev["t"] < ev["t"][len(ev) // 2] + 100_000)]
        sensor = s.sensor_size or (int(ev["x"].max()) + 1, int(ev["y"].max()) + 1)
        name = path.replace("/", "_").rsplit(".", 1)[0]
        render(ev, sensor, f"{path} ({s.format}, {len(ev)} events)", out / f"{name}.png")
        print(out / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
