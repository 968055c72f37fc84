"""AEDAT 2.0 (jAER) event files: DVS128 and DAVIS240/346 address layouts.

A file is ``#``-comment header lines (the ``#!AER-DAT2.0`` version line, the ``AEChip`` class that
fixes the address layout and sensor size) followed by big-endian ``(int32 address, int32
timestamp in us)`` pairs. Address layouts (jAER's; ``../shared/eventdata/README.md`` notes the
traps in common readers):

- DVS128: polarity = bit 0, x = 127 - bits 1..7, y = bits 8..14.
- DAVIS240/346: a DVS event has bit 31 = 0 and bit 10 = 0 (others are APS samples, IMU samples or
  special words, skipped and counted); x = bits 12..21, y = bits 22..30, polarity = bit 11.

jAER counts rows from the bottom (its origin is the lower-left corner); we flip y for both layouts
so that row 0 is the top of the image, as in every other format here (checked by rendering the
real recordings: the walker stands upright).

Reading is chunked (:func:`iter_aedat2`) so memory stays bounded; so is the header (at most
:data:`~inputs.events.MAX_HEADER_LINES` lines of :data:`~inputs.events.MAX_HEADER_LINE` bytes,
:data:`~inputs.events.MAX_HEADER_BYTES` in all, else :class:`DataError` naming the byte offset). Documented behaviour on bad
input: a file whose event section ends in an incomplete 8-byte record (a cut download, or text
after the header as in some fixtures) loses those bytes, counted in ``skipped["truncated_tail_bytes"]``,
or raises :class:`DataError` naming the byte offset with ``strict=True``; decoded events outside
the sensor are dropped and counted in ``skipped["outside_sensor"]``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import DataError
from inputs.events import EVENT_DTYPE, header_lines

RECORD = np.dtype([("address", ">u4"), ("t", ">i4")])
SENSORS = {"DVS128": (128, 128), "DAVIS240": (240, 180), "DAVIS346": (346, 260)}  # (width, height)


@dataclass
class Aedat2Info:
    path: Path
    version: str
    chip: str  # the AEChip class name from the header
    layout: str  # "DVS128" or "DAVIS"
    width: int
    height: int
    data_offset: int  # byte offset of the first event record
    records: int
    skipped: dict[str, int] = field(default_factory=dict)  # dropped words and bytes, by reason


def read_header(path: str | os.PathLike, strict: bool = False) -> Aedat2Info:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"event file {path} does not exist")
    chip, version, offset = "", "", 0
    with open(path, "rb") as f:  # bounded reads: a hostile header is refused after at most 4 MiB
        for offset, line in header_lines(f, b"#", f"{path}: AEDAT 2.0"):  # noqa: B007 (offset: after the last line)
            text = line.decode("latin-1").strip()
            if text.startswith("#!AER-DAT"):
                version = text[len("#!AER-DAT") :]
            elif text.startswith("# AEChip:"):
                chip = text.split(":", 1)[1].strip()
    if not version.startswith("2."):
        raise DataError(f"{path} is not an AEDAT 2.0 file (header version line: {version or 'missing'!r})")
    name = chip.rsplit(".", 1)[-1].upper()
    if "DVS128" in name:
        layout, (w, h) = "DVS128", SENSORS["DVS128"]
    elif "DAVIS346" in name or "DAVIS346" in chip.upper():
        layout, (w, h) = "DAVIS", SENSORS["DAVIS346"]
    elif "DAVIS240" in name or "DAVIS240" in chip.upper():
        layout, (w, h) = "DAVIS", SENSORS["DAVIS240"]
    else:
        raise DataError(f"{path}: AEChip {chip!r} has no known address layout; known: DVS128, DAVIS240, DAVIS346")
    size = path.stat().st_size - offset
    tail = size % RECORD.itemsize
    if tail and strict:
        cut = offset + (size // RECORD.itemsize) * RECORD.itemsize
        raise DataError(
            f"{path}: truncated AEDAT 2.0 file: an incomplete 8-byte event record starts at byte offset {cut}"
        )
    info = Aedat2Info(path, version, chip, layout, w, h, offset, size // RECORD.itemsize)
    if tail:
        info.skipped["truncated_tail_bytes"] = tail
    return info


def decode(records: np.ndarray, info: Aedat2Info) -> np.ndarray:
    """Address/timestamp records -> ``EVENT_DTYPE`` events (non-DVS words dropped and counted)."""
    a = records["address"].astype(np.uint32)
    if info.layout == "DVS128":
        keep = np.ones(len(a), dtype=bool)
        x = 127 - ((a >> 1) & 0x7F)
        y = 127 - ((a >> 8) & 0x7F).astype(np.int64)
        p = a & 1
    else:
        dvs = ((a >> 31) & 1) == 0
        keep = dvs & (((a >> 10) & 1) == 0)
        info.skipped["aps_imu_special"] = info.skipped.get("aps_imu_special", 0) + int((~keep).sum())
        x = (a >> 12) & 0x3FF
        y = info.height - 1 - ((a >> 22) & 0x1FF).astype(np.int64)
        p = (a >> 11) & 1
    inside = (x < info.width) & (y >= 0) & (y < info.height)
    info.skipped["outside_sensor"] = info.skipped.get("outside_sensor", 0) + int((keep & ~inside).sum())
    keep &= inside
    ev = np.empty(int(keep.sum()), dtype=EVENT_DTYPE)
    ev["t"] = records["t"][keep].astype(np.int64)
    ev["x"] = x[keep]
    ev["y"] = y[keep]
    ev["p"] = p[keep]
    return ev


def iter_aedat2(path: str | os.PathLike, chunk_events: int = 1 << 18, strict: bool = False) -> Iterator[np.ndarray]:
    """Yield the file's DVS events in chunks of at most ``chunk_events`` records."""
    info = read_header(path, strict)
    with open(info.path, "rb") as f:
        f.seek(info.data_offset)
        left = info.records
        while left > 0:
            n = min(chunk_events, left)
            raw = f.read(n * RECORD.itemsize)
            left -= n
            yield decode(np.frombuffer(raw, dtype=RECORD), info)


def read_aedat2(path: str | os.PathLike, strict: bool = False) -> tuple[np.ndarray, Aedat2Info]:
    """All DVS events of a file, and its header information (with what was dropped and why)."""
    info = read_header(path, strict)
    raw = np.fromfile(info.path, dtype=RECORD, count=info.records, offset=info.data_offset)
    return decode(raw, info), info
