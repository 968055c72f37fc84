"""Prophesee EVT2 / EVT3 / DAT readers on the real samples in ../shared/eventdata."""

import numpy as np
import pytest

from core.errors import DataError
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
