"""AEDAT 3.1 (cAER / libcaer) event files: polarity packets, as in DVS128 Gesture.

A file is ASCII header lines that start with ``#`` (``#!AER-DAT3.1``, ``#Format: RAW``,
``#Source <id>: <name>``, ``#Start-Time: ...``), ended by ``#!END-HEADER``, then packets. Each packet
is a 28-byte little-endian header (:data:`PACKET_HEADER`: ``eventType`` int16, ``eventSource``
int16, ``eventSize`` int32 bytes per event, ``eventTSOffset`` int32, ``eventTSOverflow`` int32,
``eventCapacity`` int32, ``eventNumber`` int32, ``eventValid`` int32) followed by
``eventNumber * eventSize`` bytes of events (capacity equals number in files: packets are compacted
before writing). Polarity events (type 1) are 8 bytes (:data:`POLARITY_EVENT`): ``data`` uint32
with bit 0 = valid mark, bit 1 = polarity, bits 2..16 = y, bits 17..31 = x, then the int32
timestamp in µs; the full time is ``eventTSOverflow << 31 | timestamp`` (the 32-bit timestamp is
kept positive, so it wraps after 31 bits). libcaer puts (0, 0) at the top left (its
``polarity.h``: "like in OpenCV/computer graphics"), as our :data:`EVENT_DTYPE` does, so x and y
are taken as stored. Packets of other types (special, frame, IMU, ...) are skipped and counted.

Sensor size: from ``sizeX``/``sizeY`` values in the header where present, else from the source
name (``#Source 1: DVS128`` -> 128x128, see :data:`SOURCE_SENSORS`), else None.

Bad input (documented, tested): a header without ``#!AER-DAT3`` raises :class:`DataError`; a
packet header with impossible fields (negative sizes, a polarity packet whose events are not 8
bytes) raises :class:`DataError` naming its byte offset; a file that ends inside a packet keeps the
complete events and counts the missing tail in ``counters["truncated_bytes"]`` (or raises with
``strict=True``); events whose valid bit is 0, or whose timestamp is negative, are dropped and
counted in ``counters["invalid_events"]``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import DataError
from core.fileio import write_atomic
from inputs.events import EVENT_DTYPE, as_events, check_sensor_size, header_lines

MAGIC = b"#!AER-DAT3"
END_HEADER = b"#!END-HEADER"
PACKET_HEADER = np.dtype(
    [
        ("type", "<i2"),
        ("source", "<i2"),
        ("size", "<i4"),  # bytes per event
        ("ts_offset", "<i4"),  # byte offset of the timestamp inside an event
        ("ts_overflow", "<i4"),  # full time = ts_overflow << 31 | timestamp
        ("capacity", "<i4"),
        ("number", "<i4"),
        ("valid", "<i4"),
    ]
)
POLARITY_EVENT = np.dtype([("data", "<u4"), ("t", "<i4")])
POLARITY_TYPE = 1
TS_OVERFLOW_SHIFT = 31
# (width, height) by source name; longer names first so "DAVIS346" is not read as "DAVIS"
SOURCE_SENSORS = {
    "DVXPLORER_LITE": (320, 240),
    "DVXPLORER": (640, 480),
    "DAVIS346": (346, 260),
    "DAVIS240": (240, 180),
    "DAVIS208": (208, 192),
    "DAVIS640": (640, 480),
    "DAVIS128": (128, 128),
    "DVS132S": (132, 104),
    "DVS128": (128, 128),
}


@dataclass
class Aedat3Info:
    path: Path
    version: str  # "3.1"
    sources: dict[int, str]  # source id -> name, from '#Source <id>: <name>' lines
    width: int | None
    height: int | None
    data_offset: int  # byte offset of the first packet header
    counters: dict[str, int] = field(default_factory=dict)  # skipped and dropped things, by reason


def _count(info: Aedat3Info, key: str, n: int) -> None:
    if n:
        info.counters[key] = info.counters.get(key, 0) + int(n)


def read_header(path: str | os.PathLike) -> Aedat3Info:
    """Parse the ``#`` header lines (bounded reads, see :func:`inputs.events.header_lines`: a garbage
    file cannot make it read much); a ``sizeX``/``sizeY`` outside ``1..65536`` is a :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"event file {path} does not exist")
    lines: list[bytes] = []
    offset = 0
    with open(path, "rb") as f:
        for offset, line in header_lines(f, b"#", f"{path}: AEDAT 3"):  # noqa: B007 (offset: after the last line)
            lines.append(line.strip())
            if line.startswith(END_HEADER):
                break
    if not lines or not lines[0].startswith(MAGIC):
        first = lines[0][:16] if lines else b""
        raise DataError(f"{path} is not an AEDAT 3 file (header version line: {first!r})")
    version = lines[0][len(b"#!AER-DAT") :].decode("latin-1")
    text = "\n".join(line.decode("latin-1") for line in lines)
    sources = {int(m.group(1)): m.group(2).strip() for m in re.finditer(r"^#-?Source (\d+):\s*(.*)$", text, re.M)}
    width = height = None
    if (w := re.search(r"sizeX[^\d-]{0,40}?(-?\d+)", text)) and (h := re.search(r"sizeY[^\d-]{0,40}?(-?\d+)", text)):
        line = next((raw for raw in lines if b"sizeX" in raw), b"")
        where = f"{path}: AEDAT 3 header line {line.decode('latin-1')[:200]!r}"
        width, height = check_sensor_size(int(w.group(1)), int(h.group(1)), where)
    else:
        names = " ".join(sources.values()).upper().replace(" ", "_")
        for name, size in SOURCE_SENSORS.items():
            if name in names:
                width, height = size
                break
    return Aedat3Info(path, version, sources, width, height, offset)


def decode_polarity(raw: np.ndarray, ts_overflow: int, info: Aedat3Info) -> np.ndarray:
    """:data:`POLARITY_EVENT` records of one packet -> :data:`EVENT_DTYPE` (invalid ones dropped, counted)."""
    data = raw["data"]
    keep = ((data & 1) == 1) & (raw["t"] >= 0)
    _count(info, "invalid_events", len(raw) - int(keep.sum()))
    data = data[keep]
    ev = np.empty(len(data), EVENT_DTYPE)
    ev["t"] = (np.int64(ts_overflow) << TS_OVERFLOW_SHIFT) | raw["t"][keep].astype(np.int64)
    ev["x"] = (data >> 17) & 0x7FFF
    ev["y"] = (data >> 2) & 0x7FFF
    ev["p"] = (data >> 1) & 1
    return ev


def iter_aedat3(
    path: str | os.PathLike, chunk_events: int = 1 << 17, strict: bool = False, info: Aedat3Info | None = None
) -> Iterator[np.ndarray]:
    """Yield the polarity events in file order, at most ``chunk_events`` per array (bounded memory).

    ``info`` (from :func:`read_header`) collects the counters; pass your own to read them after.
    """
    info = info or read_header(path)
    size = info.path.stat().st_size
    with open(info.path, "rb") as f:
        pos = info.data_offset
        while pos < size:
            f.seek(pos)
            raw = f.read(PACKET_HEADER.itemsize)
            if len(raw) < PACKET_HEADER.itemsize:
                if strict:
                    raise DataError(
                        f"{info.path}: truncated AEDAT 3 file: incomplete packet header at byte offset {pos}"
                    )
                _count(info, "truncated_bytes", len(raw))
                return
            h = np.frombuffer(raw, PACKET_HEADER)[0]
            etype, esize, number, overflow = int(h["type"]), int(h["size"]), int(h["number"]), int(h["ts_overflow"])
            if esize <= 0 or number < 0 or overflow < 0:
                raise DataError(
                    f"{info.path}: corrupt AEDAT 3 packet header at byte offset {pos}: "
                    f"eventSize {esize}, eventNumber {number}, eventTSOverflow {overflow}"
                )
            if etype == POLARITY_TYPE and (esize != POLARITY_EVENT.itemsize or int(h["ts_offset"]) != 4):
                raise DataError(
                    f"{info.path}: corrupt AEDAT 3 polarity packet at byte offset {pos}: eventSize {esize} "
                    f"and eventTSOffset {int(h['ts_offset'])} (expected 8 and 4)"
                )
            body = pos + PACKET_HEADER.itemsize
            end = body + number * esize
            if end > size:
                if strict:
                    raise DataError(
                        f"{info.path}: truncated AEDAT 3 file: the packet at byte offset {pos} needs "
                        f"{end - body} bytes of events but the file ends at byte {size}"
                    )
                complete = (size - body) // esize
                _count(info, "truncated_bytes", size - body - complete * esize)
                number, end = complete, size  # the rest of the file is this packet's (counted) tail
            if etype != POLARITY_TYPE:
                _count(info, "skipped_words", number)
            else:
                done = 0
                while done < number:
                    n = min(chunk_events, number - done)
                    buf = f.read(n * esize)
                    yield decode_polarity(np.frombuffer(buf, POLARITY_EVENT), overflow, info)
                    done += n
            pos = end


def encode_aedat3(
    events: np.ndarray, *, source: str = "DVS128", packet_events: int = 4096, sensor_size: tuple[int, int] | None = None
) -> bytes:
    """Encode events as an AEDAT 3.1 file: header, then polarity packets (split where the overflow changes)."""
    ev = as_events(events)
    if ev.size and (ev["t"].min() < 0 or ev["x"].max() > 0x7FFF or ev["y"].max() > 0x7FFF):
        raise DataError("events cannot be written as AEDAT 3.1: t must be >= 0 and x, y < 32768")
    header = f"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: {source}\r\n"
    if sensor_size:
        header += f"#-Source 1: sizeX {sensor_size[0]} sizeY {sensor_size[1]}\r\n"
    header += "#Start-Time: 2017-01-01 00:00:00 (TZ+0000)\r\n#!END-HEADER\r\n"
    parts = [header.encode("ascii")]
    t = ev["t"].astype(np.int64)
    overflow = t >> TS_OVERFLOW_SHIFT
    cuts = np.flatnonzero(np.diff(overflow)) + 1
    for seg in np.split(np.arange(ev.size), cuts):
        for start in range(0, len(seg), packet_events):
            idx = seg[start : start + packet_events]
            rec = np.empty(len(idx), POLARITY_EVENT)
            rec["data"] = (
                (ev["x"][idx].astype(np.uint32) << 17)
                | (ev["y"][idx].astype(np.uint32) << 2)
                | ((ev["p"][idx] != 0).astype(np.uint32) << 1)
                | 1
            )
            rec["t"] = t[idx] & 0x7FFFFFFF
            h = np.array([(POLARITY_TYPE, 1, 8, 4, int(overflow[idx[0]]), len(idx), len(idx), len(idx))], PACKET_HEADER)
            parts += [h.tobytes(), rec.tobytes()]
    return b"".join(parts)


def write_aedat3(path: str | os.PathLike, events: np.ndarray, **kwargs) -> None:
    """Write events as AEDAT 3.1, atomically (keyword arguments as :func:`encode_aedat3`)."""
    data = encode_aedat3(events, **kwargs)
    write_atomic(path, lambda f: f.write(data))


def read_aedat3(path: str | os.PathLike, strict: bool = False) -> tuple[np.ndarray, Aedat3Info]:
    """All polarity events of a file (file order) and its header information with counters."""
    info = read_header(path)
    chunks = list(iter_aedat3(path, strict=strict, info=info))
    return (np.concatenate(chunks) if chunks else np.empty(0, EVENT_DTYPE)), info
