"""AEDAT 4.0 (iniVation DV) event files, decoded packet by packet with the ``aedat`` package.

A file is the line ``#!AER-DAT4.0\\r\\n``, a uint32 little-endian length and that many bytes of an
``IOHeader`` flatbuffer (compression, the byte position of the trailing file data table, and an
XML description of the streams with each event stream's ``sizeX``/``sizeY``), then packets: int32
stream id, int32 byte size, and a (usually LZ4- or Zstd-compressed) flatbuffer of events, frames,
IMU samples or triggers. We keep only event packets (:class:`aedat.Decoder` gives them as
``(t µs, x, y, on)`` records; DV puts (0, 0) at the top left) of the first event stream and count
the other packets in ``counters["skipped_words"]``. Sensor size: the (first) event stream's ``width``/``height``.

Why the extra checks: ``aedat`` reads the IOHeader flatbuffer without verification and allocates
whatever size a packet header states, so before handing the file to it we check the IOHeader's
offsets and every packet's size against the file size ourselves. Bad input (documented, tested):
a corrupt header or packet raises :class:`DataError` naming the file and the packet's byte offset
(never a raw ``RuntimeError``/``PanicException`` from the library, and no Rust panic text on
stderr: :func:`_quiet_stderr`); a sensor size outside ``1..65536`` per side is a :class:`DataError`; a file that ends inside a packet
(a cut download) keeps the complete packets and counts the missing tail in
``counters["truncated_bytes"]``, or raises with ``strict=True``.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from core.errors import DataError
from inputs.events import EVENT_DTYPE, check_sensor_size

MAGIC = b"#!AER-DAT4.0\r\n"
MAX_IOHEADER_BYTES = 1 << 24


@dataclass
class Aedat4Info:
    path: Path
    width: int | None
    height: int | None
    event_streams: list[int]  # ids of the streams that carry events
    data_offset: int  # byte offset of the first packet
    data_table_position: int  # byte offset of the trailing file data table, -1 when absent
    counters: dict[str, int] = field(default_factory=dict)


def _count(info: Aedat4Info, key: str, n: int) -> None:
    if n:
        info.counters[key] = info.counters.get(key, 0) + int(n)


def _check_ioheader(buf: bytes, path: Path) -> int:
    """Bounds-check the IOHeader flatbuffer (root table, vtable, description string); return dataTablePosition."""
    n = len(buf)

    def u32(at: int) -> int:
        if at < 0 or at + 4 > n:
            raise DataError(f"{path}: corrupt AEDAT 4 IOHeader (offset {at} outside its {n} bytes)")
        return struct.unpack_from("<I", buf, at)[0]

    table = u32(0)
    vtable = table - struct.unpack("<i", struct.pack("<I", u32(table)))[0]
    if vtable < 0 or vtable + 4 > n:
        raise DataError(f"{path}: corrupt AEDAT 4 IOHeader (vtable at {vtable} outside its {n} bytes)")
    vt_len, table_len = struct.unpack_from("<HH", buf, vtable)
    if vt_len < 4 or vt_len % 2 or vtable + vt_len > n or table + table_len > n:
        raise DataError(f"{path}: corrupt AEDAT 4 IOHeader (vtable size {vt_len}, table size {table_len})")
    fields = struct.unpack_from(f"<{(vt_len - 4) // 2}H", buf, vtable + 4)
    sizes = (4, 8, 4)  # compression int32, dataTablePosition int64, description string offset
    for i, off in enumerate(fields[:3]):
        if off and off + sizes[i] > table_len:
            raise DataError(f"{path}: corrupt AEDAT 4 IOHeader (field {i} outside its table)")
    if len(fields) < 3 or not fields[2]:
        raise DataError(f"{path}: AEDAT 4 IOHeader has no stream description")
    at = table + fields[2]
    start = at + u32(at)
    length = u32(start)
    if start + 4 + length > n:
        raise DataError(f"{path}: corrupt AEDAT 4 IOHeader (description string runs past its end)")
    try:
        buf[start + 4 : start + 4 + length].decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: corrupt AEDAT 4 IOHeader (description is not UTF-8)") from None
    if len(fields) > 1 and fields[1]:
        return struct.unpack_from("<q", buf, table + fields[1])[0]
    return -1


def _library_error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


@contextlib.contextmanager
def _quiet_stderr(held: IO[bytes] | None = None) -> Iterator[None]:
    """Hold back what native code writes to file descriptor 2 while the block runs.

    ``aedat`` is Rust: on a corrupt packet it panics, and Rust's panic hook prints the panic and a
    backtrace on fd 2 before pyo3 turns it into an exception (which we turn into one DataError line).
    So the block's fd-2 output goes to ``held`` (a temporary file; pass one to reuse it across many
    calls): dropped when the block raises (the message is in the exception), written back to stderr
    when it succeeds. (Another thread writing to fd 2 during the block is held back with it.)
    """
    if held is None:
        with tempfile.TemporaryFile() as own, _quiet_stderr(own):
            yield
        return
    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all: nothing to hide
        yield
        return
    held.seek(0)
    held.truncate()
    os.dup2(held.fileno(), 2)
    ok = False
    try:
        yield
        ok = True
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        if ok and held.seek(0, os.SEEK_END):
            held.seek(0)
            data = held.read()
            with contextlib.suppress(OSError):
                while data:
                    data = data[os.write(2, data) :]


def _decoder(path: Path):
    import aedat

    try:
        with _quiet_stderr():
            return aedat.Decoder(str(path))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - RuntimeError, or pyo3's PanicException (a BaseException)
        raise DataError(f"{path}: cannot read the AEDAT 4 header ({_library_error(e)})") from None


def read_header(path: str | os.PathLike) -> Aedat4Info:
    """Check and read the file's header: sensor size and event stream ids."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"event file {path} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(len(MAGIC) + 4)
        if not head.startswith(MAGIC):
            raise DataError(f"{path} is not an AEDAT 4 file (it starts with {head[:14]!r})")
        if len(head) < len(MAGIC) + 4:
            raise DataError(f"{path}: truncated AEDAT 4 file: the IOHeader length at byte offset {len(MAGIC)} is cut")
        (length,) = struct.unpack_from("<I", head, len(MAGIC))
        data_offset = len(MAGIC) + 4 + length
        if length > MAX_IOHEADER_BYTES or data_offset > size:
            raise DataError(
                f"{path}: corrupt or truncated AEDAT 4 file: the IOHeader at byte offset {len(MAGIC) + 4} "
                f"claims {length} bytes, the file has {size - len(MAGIC) - 4} left"
            )
        dtp = _check_ioheader(f.read(length), path)
    streams = _decoder(path).id_to_stream()
    events = sorted(i for i, s in streams.items() if s.get("type") == "events")
    width = height = None
    if events:
        width, height = check_sensor_size(
            int(streams[events[0]]["width"]),
            int(streams[events[0]]["height"]),
            f"{path}: the IOHeader's description (byte offset {len(MAGIC) + 4}) of event stream {events[0]}",
        )
    return Aedat4Info(path, width, height, events, data_offset, dtp)


def iter_aedat4(path: str | os.PathLike, strict: bool = False, info: Aedat4Info | None = None) -> Iterator[np.ndarray]:
    """Yield the events of each event packet in file order (one array per packet)."""
    info = info or read_header(path)
    size = info.path.stat().st_size
    decoder = _decoder(info.path)
    pos = info.data_offset
    with open(info.path, "rb") as f, tempfile.TemporaryFile() as held:
        while True:
            if pos == info.data_table_position or (pos == size and info.data_table_position < 0):
                return
            f.seek(pos)
            head = f.read(8)
            stream_id, length = struct.unpack("<iI", head) if len(head) == 8 else (0, 0)
            if len(head) < 8 or pos + 8 + length > size:
                if strict:
                    raise DataError(
                        f"{info.path}: truncated AEDAT 4 file: the packet at byte offset {pos} is cut at byte {size}"
                    )
                _count(info, "truncated_bytes", size - pos)
                return
            try:
                with _quiet_stderr(held):
                    packet = next(decoder)
            except StopIteration:
                return
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:  # noqa: BLE001 - RuntimeError, or pyo3's PanicException
                raise DataError(
                    f"{info.path}: corrupt AEDAT 4 packet at byte offset {pos} ({_library_error(e)})"
                ) from None
            pos += 8 + length
            raw = packet.get("events")
            if raw is None or packet.get("stream_id") != info.event_streams[0]:  # one camera per stream
                _count(info, "skipped_words", 1)
                continue
            ev = np.empty(len(raw), EVENT_DTYPE)
            ev["t"] = raw["t"].astype(np.int64)
            ev["x"], ev["y"], ev["p"] = raw["x"], raw["y"], raw["on"]
            yield ev
