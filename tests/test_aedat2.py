"""AEDAT 2.0 reader on the real jAER recordings in ../shared/eventdata (README table figures)."""

import numpy as np
import pytest

from core.errors import DataError
from inputs.formats.aedat2 import iter_aedat2, read_aedat2


def test_dvs128_walking(eventdata):
    ev, info = read_aedat2(eventdata / "aedat2" / "dvs128_walking.aedat")
    assert (info.layout, info.width, info.height) == ("DVS128", 128, 128)
    assert len(ev) == 19_182
    assert (ev["t"][-1] - ev["t"][0]) / 1e6 == pytest.approx(6.9, abs=0.05)
    assert ev["x"].max() < 128 and ev["y"].max() < 128 and set(np.unique(ev["p"])) == {0, 1}
    assert np.all(np.diff(ev["t"]) >= 0)


def test_davis240_skips_aps_and_imu_words(eventdata):
    ev, info = read_aedat2(eventdata / "aedat2" / "davis240c_translating_boxes.aedat")
    assert (info.layout, info.width, info.height) == ("DAVIS", 240, 180)
    assert len(ev) == 162_771 and info.skipped["aps_imu_special"] == 33_837
    assert (ev["t"].max() - ev["t"].min()) / 1e6 == pytest.approx(2.07, abs=0.01)
    assert ev["x"].max() < 240 and ev["y"].max() < 180 and info.skipped["outside_sensor"] == 0


def test_chunked_reading_equals_whole_file(eventdata):
    path = eventdata / "aedat2" / "davis240c_translating_boxes.aedat"
    whole, _ = read_aedat2(path)
    chunks = list(iter_aedat2(path, chunk_events=10_000))
    assert len(chunks) > 10 and np.array_equal(np.concatenate(chunks), whole)


@pytest.mark.parametrize(
    "name,events",
    [
        ("mibblez_header_test_128.aedat", 4),
        ("mibblez_header_test_240.aedat", 0),
        ("tonic_sample_aedat_header.aedat", 0),
    ],
)
def test_header_fixtures(eventdata, name, events):
    ev, info = read_aedat2(eventdata / "aedat2" / "header_only" / name)
    assert len(ev) == events


def test_truncated_and_foreign_files(eventdata, tmp_path):
    data = (eventdata / "aedat2" / "dvs128_walking.aedat").read_bytes()
    cut = tmp_path / "cut.aedat"
    cut.write_bytes(data[:-3])
    ev, info = read_aedat2(cut)
    assert len(ev) == 19_181 and info.skipped["truncated_tail_bytes"] == 5
    with pytest.raises(DataError, match=r"incomplete 8-byte event record starts at byte offset \d+"):
        read_aedat2(cut, strict=True)
    other = tmp_path / "x.aedat"
    other.write_bytes(b"#!AER-DAT3.1\r\n" + b"\0" * 16)
    with pytest.raises(DataError, match="not an AEDAT 2.0 file"):
        read_aedat2(other)
    with pytest.raises(DataError, match="does not exist"):
        read_aedat2(tmp_path / "none.aedat")


HEADER = b"#!AER-DAT2.0\r\n# AEChip: ch.unizh.ini.jaer.chip.retina.DVS128\r\n"
DAVIS_HEADER = b"#!AER-DAT2.0\r\n# AEChip: eu.seebetter.ini.chips.davis.DAVIS240C\r\n"


@pytest.mark.parametrize("header", [HEADER, DAVIS_HEADER, b"", b"#!AER-DAT2.0\r\n"])
def test_random_bytes_give_events_or_our_error(tmp_path, header):
    """Property: any bytes after any header either decode to in-sensor events or raise DataError."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.binary(max_size=400))
    def check(body):
        f = tmp_path / "fuzz.aedat"
        f.write_bytes(header + body)
        try:
            ev, info = read_aedat2(f)
        except DataError:
            return
        assert ev["x"].max(initial=0) < info.width and ev["y"].max(initial=0) < info.height
        assert len(ev) <= len(body) // 8

    check()
