"""Prophesee EVT2 / EVT3 / DAT readers on the real samples in ../shared/eventdata."""

import numpy as np
import pytest

from core.errors import DataError
from inputs.events import EVENT_DTYPE
from inputs.formats.prophesee import iter_prophesee, read_prophesee


@pytest.mark.parametrize("path,encoding,size,events,span_ms", [
    ("evt3/gen41_sample.raw", "evt3", (1280, 720), 219_596, 54),
    ("evt2/gen3_sample.raw", "evt2", (640, 480), 539_481, 50),
    ("dat/ncars_sample.dat", "dat", (None, None), 2_009, 100),
])  # fmt: skip
def test_real_samples(eventdata, path, encoding, size, events, span_ms):
    ev, info = read_prophesee(eventdata / path)
    assert info.encoding == encoding and (info.width, info.height) == size
    assert len(ev) == events
    assert (ev["t"].max() - ev["t"].min()) / 1e3 == pytest.approx(span_ms, abs=1)
    if size[0]:
        assert ev["x"].max() < size[0] and ev["y"].max() < size[1]
    chunks = list(iter_prophesee(eventdata / path, chunk_events=50_000))
    assert np.array_equal(np.concatenate(chunks), ev)


def test_evt3_equals_reference_decode(eventdata):
    ev, _ = read_prophesee(eventdata / "evt3" / "gen41_sample.raw")
    ref = np.load(eventdata / "evt3" / "gen41_sample.reference.npy")
    for key in ("t", "x", "y", "p"):
        assert np.array_equal(ev[key].astype(np.int64), ref[key].astype(np.int64)), key


def test_unknown_encoding_and_missing_file(tmp_path):
    f = tmp_path / "x.raw"
    f.write_bytes(b"% Date today\n" + b"\x00" * 64)
    with pytest.raises(DataError, match="cannot tell the Prophesee encoding"):
        read_prophesee(f)
    with pytest.raises(DataError, match="does not exist"):
        read_prophesee(tmp_path / "nope.raw")


# --- EVT 2.0 through the numba decoder (inputs.formats.evt2) -------------------------------------

EVT2_HEADER = b"% evt 2.0\n% geometry 640x480\n"


def evt2_word(p: int, t: int, x: int, y: int) -> int:
    """One CD word: polarity type, the time's low 6 bits, x, y."""
    return (p << 28) | ((t & 0x3F) << 22) | (x << 11) | y


def evt2_words(seed: int = 0, events: int = 6000, span_us: int = 40_000, t0_us: int = 1_000_000, width: int = 640,
               height: int = 480, extras: bool = True) -> np.ndarray:  # fmt: skip
    """A synthetic EVT 2.0 word stream: sorted random events with an EVT_TIME_HIGH word at every change of the
    time's upper bits; with ``extras`` also two events before the first EVT_TIME_HIGH, EXT_TRIGGER / OTHERS /
    CONTINUED words, one jump of the time backwards (an earlier EVT_TIME_HIGH) and events right of or below a
    ``width`` x ``height`` sensor."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(t0_us, t0_us + span_us, events))
    x, y, p = rng.integers(0, width, events), rng.integers(0, height, events), rng.integers(0, 2, events)
    if extras:
        x[rng.choice(events, 20, replace=False)] = rng.integers(width, 2048, 20)
        y[rng.choice(events, 20, replace=False)] = rng.integers(height, 2048, 20)
    words = [evt2_word(1, 5, 3, 4), evt2_word(0, 9, 600, 7)] if extras else []
    high = None
    back = events // 2
    for i in range(events):
        if extras and i == back:  # 300 µs back in time for 50 events, then on
            words.append((0x8 << 28) | ((int(t[i]) - 300) >> 6))
            words += [evt2_word(int(p[j]), int(t[i]) - 300, int(x[j]), int(y[j])) for j in range(i, i + 50)]
        if int(t[i]) >> 6 != high:
            high = int(t[i]) >> 6
            words.append((0x8 << 28) | high)
        if extras and i % 500 == 7:
            words += [(0xA << 28) | 0x21, (0xE << 28) | 0x123, (0xF << 28) | 0x456]
        words.append(evt2_word(int(p[i]), int(t[i]), int(x[i]), int(y[i])))
    return np.array(words, "<u4")


def write_evt2(path, words: np.ndarray, header: bytes = EVT2_HEADER, tail: bytes = b"") -> str:
    path.write_bytes(header + words.astype("<u4").tobytes() + tail)
    return str(path)


def _expelliarmus(path) -> np.ndarray:
    from expelliarmus import Wizard

    return Wizard(encoding="evt2", fpath=str(path)).read()


def _same_events(ev: np.ndarray, ref: np.ndarray) -> None:
    assert len(ev) == len(ref)
    for key in ("t", "x", "y", "p"):
        assert np.array_equal(ev[key].astype(np.int64), ref[key].astype(np.int64)), key


def test_evt2_decoder_equals_expelliarmus_on_the_gen3_recording(eventdata):
    from inputs.formats.evt2 import iter_evt2, read_evt2

    path = eventdata / "evt2" / "gen3_sample.raw"
    ev = read_evt2(path)
    assert ev.dtype == EVENT_DTYPE and len(ev) == 539_481
    _same_events(ev, _expelliarmus(path))
    chunks = list(iter_evt2(path, chunk_words=50_001))  # chunk boundaries between a TIME_HIGH and its events
    assert len(chunks) == 11
    _same_events(np.concatenate(chunks), ev)


def test_evt2_decoder_equals_expelliarmus_on_odd_words(tmp_path):
    """Events before the first EVT_TIME_HIGH (time = the low 6 bits), skipped trigger / other / continued
    words, time going backwards (kept in file order, as expelliarmus does): every event as expelliarmus
    gives it. (No sensor size in the header: no coordinate is outside it.)"""
    from inputs.formats.evt2 import iter_evt2, read_evt2

    path = write_evt2(tmp_path / "odd.raw", evt2_words(seed=1), header=b"% evt 2.0\n")
    ev = read_evt2(path)
    assert ev["t"][:2].tolist() == [5, 9] and (np.diff(ev["t"]) < 0).any()
    _same_events(ev, _expelliarmus(path))
    for chunk_words in (1, 97, 4096):
        _same_events(np.concatenate(list(iter_evt2(path, chunk_words))), ev)


def test_evt2_decoder_bad_input_names_the_byte_offset(tmp_path):
    from inputs.formats.evt2 import read_evt2

    header_bytes = len(EVT2_HEADER)
    good = [0x8 << 28 | 100, evt2_word(1, 3, 10, 20), evt2_word(0, 4, 639, 479)]
    cases = [
        (
            [*good, evt2_word(1, 5, 640, 0)],
            b"",
            f"byte offset {header_bytes + 12} is at x=640, y=0, outside the 640x480",
        ),
        ([*good, evt2_word(1, 5, 0, 2047)], b"", f"byte offset {header_bytes + 12} is at x=0, y=2047"),
        ([*good, 0x5 << 28], b"", f"word type 0x5 .* at byte offset {header_bytes + 12}; EVT 2.0 word types: CD_OFF"),
        (
            good,
            b"\x01\x02\x03",
            f"truncated EVT 2.0 file: the 4-byte word at byte offset {header_bytes + 12} is incomplete",
        ),
    ]
    for i, (words, tail, message) in enumerate(cases):
        path = write_evt2(tmp_path / f"bad{i}.raw", np.array(words, "<u4"), tail=tail)
        with pytest.raises(DataError, match=f"bad{i}.raw: .*{message}"):
            read_evt2(path)
    assert len(read_evt2(write_evt2(tmp_path / "good.raw", np.array(good, "<u4")))) == 2
    evt3 = tmp_path / "evt3.raw"
    evt3.write_bytes(b"% evt 3.0\n% end\n" + b"\x00" * 8)
    with pytest.raises(DataError, match="'% evt 3.0': not EVT 2.0"):
        read_evt2(evt3)


# --- EVT 3.0 through the numba decoder (inputs.formats.evt3) -------------------------------------

EVT3_HEADER = b"% evt 3.0\n% format EVT3;height=720;width=1280\n% end\n"


def test_evt3_decoder_equals_expelliarmus_on_the_gen41_recording(eventdata):
    """The reference .npy is expelliarmus's decode of the file: every event, in order, in any chunking."""
    from inputs.formats.evt3 import iter_evt3, read_evt3

    path = eventdata / "evt3" / "gen41_sample.raw"
    ref = np.load(eventdata / "evt3" / "gen41_sample.reference.npy")
    ev = read_evt3(path)
    assert ev.dtype == EVENT_DTYPE and len(ev) == 219_596
    _same_events(ev, ref)
    for chunk_words in (1, 50_001):  # chunk boundaries between time words, vectors and their base
        _same_events(np.concatenate(list(iter_evt3(path, chunk_words))), ref)


def evt3_words(seed: int = 0, events: int = 4000, t0_us: int = 16_770_000, span_us: int = 30_000,
               early: bool = True) -> np.ndarray:  # fmt: skip
    """A synthetic EVT 3.0 word stream (sensor 1280x720): single events, 12- and 8-bit vectors (one
    reaching past x = 1279), skipped CONTINUED / OTHERS / EXT_TRIGGER words, events before the first time
    word (``early``), a time that crosses the high part's 12-bit wrap (t0 near 2**24) and one y outside
    the sensor."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(t0_us, t0_us + span_us, events))
    words = [0x0 << 12 | 5, 0x2 << 12 | 1 << 11 | 7] if early else []  # an event at t = 0
    for i in range(events):
        if i == 0 or t[i] != t[i - 1]:
            words += [0x8 << 12 | (int(t[i]) >> 12) & 0xFFF, 0x6 << 12 | int(t[i]) & 0xFFF]
        y = int(rng.integers(0, 720)) if i != 1000 else 721
        words.append(0x0 << 12 | y)
        kind = i % 4
        if kind == 0:
            words.append(0x2 << 12 | int(rng.integers(0, 2)) << 11 | int(rng.integers(0, 1280)))
        else:
            base = 1270 if i == 2001 else int(rng.integers(0, 1200))
            words.append(0x3 << 12 | int(rng.integers(0, 2)) << 11 | base)
            words.append(0x4 << 12 | int(rng.integers(1, 1 << 12)))
            words.append(0x5 << 12 | int(rng.integers(0, 1 << 8)))
        if i % 300 == 5:
            words += [0x7 << 12 | 3, 0xE << 12 | 0x123, 0xF << 12 | 0x456]
    return np.array(words, "<u2")


def write_evt3(path, words: np.ndarray, header: bytes = EVT3_HEADER, tail: bytes = b"") -> str:
    path.write_bytes(header + words.astype("<u2").tobytes() + tail)
    return str(path)


def test_evt3_decoder_equals_expelliarmus_on_odd_words(tmp_path):
    """Vectors, skipped words, events before the first time word, the high part's wrap-around, x past
    2047 from a vector (no sensor size in the header): every event as expelliarmus gives it."""
    from expelliarmus import Wizard

    from inputs.formats.evt3 import iter_evt3, read_evt3

    words = evt3_words(seed=1)
    words = np.concatenate([words[:50], np.array([0x3 << 12 | 2040, 0x4 << 12 | 0xFFF], "<u2"), words[50:]])
    path = write_evt3(tmp_path / "odd.raw", words, header=b"% evt 3.0\n% end\n")
    ev = read_evt3(path)
    assert ev["t"][0] == 0 and ev["x"].max() > 2047 and ev["t"].max() > 1 << 24
    _same_events(ev, Wizard(encoding="evt3", fpath=str(path)).read())
    for chunk_words in (1, 97, 4096):
        _same_events(np.concatenate(list(iter_evt3(path, chunk_words))), ev)


def test_evt3_decoder_bad_input_names_the_byte_offset(tmp_path):
    from inputs.formats.evt3 import read_evt3

    n = len(EVT3_HEADER)
    good = [0x8 << 12 | 1, 0x6 << 12 | 2, 0x0 << 12 | 719, 0x2 << 12 | 1279, 0x3 << 12 | 1260, 0x5 << 12 | 0x81]
    cases = [
        ([*good, 0x2 << 12 | 1280], b"", f"word at byte offset {n + 12} is at x=1280, y=719, outside the 1280x720"),
        ([*good, 0x0 << 12 | 720, 0x2 << 12 | 3], b"", f"byte offset {n + 14} is at x=3, y=720"),
        ([*good, 0x3 << 12 | 1270, 0x4 << 12 | 0x400], b"", f"byte offset {n + 14} is at x=1280, y=719"),
        ([*good, 0xC << 12], b"", f"word type 0xc .* at byte offset {n + 12}; EVT 3.0 word types: EVT_ADDR_Y"),
        (good, b"\x01", f"truncated EVT 3.0 file: the 2-byte word at byte offset {n + 12} is incomplete"),
    ]
    for i, (words, tail, message) in enumerate(cases):
        path = write_evt3(tmp_path / f"bad{i}.raw", np.array(words, "<u2"), tail=tail)
        with pytest.raises(DataError, match=f"bad{i}.raw: .*{message}"):
            read_evt3(path)
    ev = read_evt3(write_evt3(tmp_path / "good.raw", np.array([*good, 0xA << 12 | 1], "<u2")))
    assert ev[["t", "x", "y", "p"]].tolist() == [(4098, 1279, 719, 0), (4098, 1260, 719, 0), (4098, 1267, 719, 0)]
    evt2 = tmp_path / "evt2.raw"
    evt2.write_bytes(b"% evt 2.0\n" + b"\x00" * 8)
    with pytest.raises(DataError, match="'% evt 2.0': not EVT 3.0"):
        read_evt3(evt2)
