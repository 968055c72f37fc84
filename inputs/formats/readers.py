"""One way in for event files: :func:`open_events` detects the format, reads it in chunks and
returns an :class:`EventStream` of :data:`~inputs.events.EVENT_DTYPE` arrays in time order.

Formats (:data:`FORMATS`): ``nmnist`` (N-MNIST / N-Caltech101 / DVS128 ``.bs2`` ATIS 5-byte
records), ``aedat2`` (jAER), ``aedat3`` (cAER 3.1 polarity packets), ``aedat4`` (DV, through
``aedat``), ``evt2``/``evt3``/``dat`` (Prophesee, through ``expelliarmus``), ``hdf5``, ``npy`` and
``npz`` (structured ``(t, x, y, p)`` arrays; see :mod:`inputs.formats.arrays`). The format comes from the
file's first bytes (``#!AER-DAT2.0``/``3.1``/``4.0``, a ``% evt 2.0``/``3.0`` or
``% format EVT3`` header line, DAT's ``%`` header and binary event type/size, ``\\x89HDF``,
``\\x93NUMPY``, a zip's ``PK``) and only then from the extension (``.bin``/``.bs2``: nmnist); a
``format`` flag overrides detection but must agree with what the header says.

Documented behaviour on bad input (each one tested in ``tests/test_readers.py``); every problem is
either a :class:`~core.errors.DataError` naming the file (and the byte offset where the format
allows it) or something dropped and counted in :attr:`EventStream.counters`, never a hang or an
exception from inside a library:

- missing file, directory, empty file (0 bytes): ``DataError`` at :func:`open_events`.
- a hostile or corrupt text header (``#``/``%`` lines): read with bounded reads
  (:func:`~inputs.events.header_lines`: lines of at most 64 KiB, 65,536 lines, 4 MiB in all), else a
  ``DataError`` naming the byte offset; a sensor size outside ``1..65536`` per side in a header is a
  ``DataError`` naming the header line.
- Prophesee files read whatever their name (expelliarmus needs ``.raw``/``.dat``: they are read
  through a hard link or a temporary copy, and messages name the user's file).
- wrong format flag: ``DataError("file X does not look like FORMAT: ...")`` at :func:`open_events`.
- unrecognisable file (no known header, unknown extension): ``DataError`` listing the formats.
- truncated file (ends inside a record or packet): the complete events are kept and the missing
  tail is counted in ``truncated_bytes``; with ``strict=True`` it is a ``DataError`` naming the
  byte offset of the incomplete record. (Zip and HDF5 containers cannot be cut and still read:
  for them it is always a ``DataError``.)
- garbage bytes: records that decode are kept if they are plausible, others are dropped and
  counted (``skipped_words`` for non-event words/packets, ``invalid_events`` for events the format
  marks invalid, ``outside_sensor``); structure that cannot be decoded (a corrupt packet header, a
  damaged compressed packet) is a ``DataError`` naming the byte offset.
- events outside the sensor (``x >= width`` or ``y >= height``, when the sensor size is known from
  the header or the ``sensor_size`` flag): dropped, counted in ``outside_sensor``.
- timestamps going backwards (earlier than an event already delivered): dropped and counted in
  ``time_backwards`` by default, so every chunk is in time order and chunks follow each other in
  time (what binning needs); ``time_order="keep"`` keeps them in file order and still counts them.
  One corrupt far-future timestamp therefore drops what follows it: the counter shows it.
- 32-bit timestamp wrap (formats that store 32-bit times: AEDAT 2.0, DAT, and npy/npz/HDF5 with a
  32-bit time field): a step back by more than 2**31 µs is a wrap; 2**32 µs is added from there on,
  counted in ``time_wraps``. (AEDAT 3.1 and N-MNIST carry their own overflow counters and are
  unwrapped by their decoders; EVT2/EVT3 and AEDAT 4 times do not wrap here.)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import ConfigError, DataError
from inputs.events import EVENT_DTYPE, header_lines
from inputs.formats import aedat2, aedat3, aedat4, arrays, nmnist, prophesee

DEFAULT_CHUNK_EVENTS = 1 << 16
COUNTERS = (
    "events",  # events delivered by chunks()
    "outside_sensor",  # dropped: x or y outside the sensor (or not storable)
    "time_backwards",  # earlier than an event already delivered (dropped, or kept with time_order="keep")
    "time_wraps",  # 32-bit timestamp wraps unwrapped
    "truncated_bytes",  # bytes of an incomplete record or packet at the end of the file
    "skipped_words",  # non-event words or packets skipped (APS, IMU, special, triggers, frames)
    "invalid_events",  # events the format marks invalid (AEDAT 3 valid bit, negative timestamps)
)
_RENAMED = {"truncated_tail_bytes": "truncated_bytes", "aps_imu_special": "skipped_words"}
_WRAP = 1 << 32
Source = Callable[[], tuple[Iterator[np.ndarray], dict[str, int]]]  # a fresh (raw chunks, live counters)


@dataclass(frozen=True)
class EventFormat:
    name: str
    description: str
    extensions: tuple[str, ...]
    magic: str  # what its first bytes look like ("" when it has no header)


FORMATS: dict[str, EventFormat] = {
    f.name: f
    for f in (
        EventFormat("nmnist", "N-MNIST/N-Caltech101/DVS128 .bs2 ATIS binary, 5 bytes per event", (".bin", ".bs2"), ""),
        EventFormat("aedat2", "AEDAT 2.0 (jAER), DVS128 or DAVIS address words", (".aedat", ".dat"), "#!AER-DAT2.0"),
        EventFormat("aedat3", "AEDAT 3.1 (cAER), polarity packets", (".aedat",), "#!AER-DAT3.1"),
        EventFormat("aedat4", "AEDAT 4.0 (DV), through the aedat package", (".aedat4",), "#!AER-DAT4.0"),
        EventFormat("evt2", "Prophesee EVT 2.0 raw", (".raw",), "% evt 2.0"),
        EventFormat("evt3", "Prophesee EVT 3.0 raw", (".raw",), "% evt 3.0"),
        EventFormat("dat", "Prophesee DAT (Event2D)", (".dat",), "% ... then event type and size bytes"),
        EventFormat(
            "hdf5", "HDF5: compound t,x,y,p dataset or a group of t,x,y,p datasets", (".h5", ".hdf5"), "\\x89HDF"
        ),
        EventFormat("npy", "numpy structured (t, x, y, p) array", (".npy",), "\\x93NUMPY"),
        EventFormat("npz", "numpy zip of a structured array or t, x, y, p columns", (".npz",), "PK (zip)"),
    )
}


def _known() -> str:
    return ", ".join(FORMATS)


def _check_file(path: Path) -> int:
    if not path.exists():
        raise DataError(f"event file {path} does not exist")
    if not path.is_file():
        raise DataError(f"{path} is not a regular file (a directory?), so not an event file")
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"event file {path} is empty (0 bytes)")
    return size


def _sniff_percent_header(path: Path) -> tuple[str | None, str]:
    """Prophesee ``%`` header lines (bounded reads, :func:`~inputs.events.header_lines`): ``(format or None, what was seen)``."""
    evt = fmt = ""
    data_file = False
    offset = 0
    with open(path, "rb") as f:
        for offset, line in header_lines(f, b"%", f"{path}: Prophesee"):  # noqa: B007 (offset: after the last line)
            text = line[1:].decode("latin-1").strip()
            key, _, value = text.partition(" ")
            key = key.lower()
            if key == "evt":
                evt = value.strip()
            elif key == "format":
                fmt = value.strip().upper()
            elif text.lower().startswith("data file") or key == "version":
                data_file = True
            elif text.lower() == "end":
                break
        f.seek(offset)
        after = f.read(2)
    if evt.startswith("3") or fmt.startswith("EVT3"):
        return "evt3", f"'% evt {evt or fmt}'"
    if evt in ("2.0", "2") or (fmt.startswith("EVT2") and not fmt.startswith("EVT21")):
        return "evt2", f"'% evt {evt or fmt}'"
    if evt or fmt:
        return None, f"an unsupported Prophesee encoding ({evt or fmt})"
    if data_file or (len(after) == 2 and after[1] == 8):
        return "dat", "a '%' header (Prophesee DAT)"
    return None, "a '%' header without an encoding line"


def sniff_format(path: str | os.PathLike) -> tuple[str | None, str]:
    """What the file's first bytes say: ``(format or None, a short description for messages)``."""
    path = Path(path)
    _check_file(path)
    with open(path, "rb") as f:
        head = f.read(16)
        userblocks = []
        for off in (512, 1024, 2048):
            f.seek(off)
            userblocks.append(f.read(8))
    if head.startswith(b"#!AER-DAT"):
        version = head[9:12].decode("latin-1", "replace")
        name = {"2.0": "aedat2", "3.1": "aedat3", "3.0": "aedat3", "4.0": "aedat4"}.get(version)
        return name, f"'#!AER-DAT{version}'" + ("" if name else " (an AEDAT version we do not read)")
    if head.startswith(b"\x89HDF\r\n\x1a\n") or b"\x89HDF\r\n\x1a\n" in userblocks:
        return "hdf5", "the HDF5 signature"
    if head.startswith(arrays.NPY_MAGIC):
        return "npy", "the .npy signature"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "npz", "a zip signature"
    if head.startswith(b"%"):
        return _sniff_percent_header(path)
    return None, f"no known header (first bytes {head[:12]!r})"


def detect_format(path: str | os.PathLike) -> str:
    """The format's name: from the header bytes first, the extension second; else :class:`DataError`."""
    path = Path(path)
    found, seen = sniff_format(path)
    if found:
        return found
    ext = path.suffix.lower()
    if not seen.startswith("no known header"):
        raise DataError(f"{path}: cannot read it: it has {seen}; known formats: {_known()}")
    if ext in (".bin", ".bs2"):
        return "nmnist"
    if ext == ".dat":
        return "dat"
    hint = ""
    if ext in (".raw",):
        hint = " (a Prophesee raw file without '% evt' header: pass the format, evt2 or evt3)"
    elif ext in (".aedat", ".aedat4", ".h5", ".hdf5", ".npy", ".npz"):
        hint = f" (its extension {ext} promises a header it does not have)"
    raise DataError(f"{path}: cannot tell its event format: {seen}{hint}; known formats: {_known()}")


def _check_flag(path: Path, fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown event format {fmt!r}; known: {_known()}")
    found, seen = sniff_format(path)
    if found == fmt:
        return
    headerless = ("nmnist", "evt2", "evt3", "dat")  # formats whose files may lack a telling header
    if found is None and seen.startswith(("no known header", "a '%' header without")) and fmt in headerless:
        return
    raise DataError(
        f"file {path} does not look like {fmt}: it has {seen}"
        + (f" (detected {found})" if found else "")
        + (f"; a {fmt} file starts with {FORMATS[fmt].magic}" if FORMATS[fmt].magic else "")
    )


# --- per-format sources: (sensor size from the file, a function giving fresh raw chunks, wraps) ---


def _nmnist_source(path: Path, chunk: int, strict: bool) -> Source:
    rec = nmnist.RECORD_BYTES

    def start() -> tuple[Iterator[np.ndarray], dict[str, int]]:
        counters: dict[str, int] = {}

        def gen() -> Iterator[np.ndarray]:
            size = path.stat().st_size
            full, tail = divmod(size, rec)
            if tail and strict:
                raise DataError(
                    f"{path}: truncated N-MNIST file: the event at byte offset {full * rec} is incomplete "
                    f"({tail} of {rec} bytes)"
                )
            counters["truncated_bytes"] = tail
            overflows = 0
            with open(path, "rb") as f:
                for first in range(0, full, chunk):
                    raw = np.fromfile(f, np.uint8, min(chunk, full - first) * rec)
                    ev = nmnist.decode_nmnist(raw, source=str(path))
                    ev["t"] += overflows * nmnist.OVERFLOW_INCREMENT_US
                    overflows += int(np.count_nonzero(raw[1::rec] == nmnist.OVERFLOW_Y))
                    yield ev

        return gen(), counters

    return start


def _aedat2_source(path: Path, chunk: int, strict: bool) -> tuple[tuple[int, int], Source]:
    info0 = aedat2.read_header(path, strict)

    def start() -> tuple[Iterator[np.ndarray], dict[str, int]]:
        info = aedat2.read_header(path, strict)

        def gen() -> Iterator[np.ndarray]:
            with open(path, "rb") as f:
                f.seek(info.data_offset)
                for first in range(0, info.records, chunk):
                    n = min(chunk, info.records - first)
                    yield aedat2.decode(np.frombuffer(f.read(n * aedat2.RECORD.itemsize), aedat2.RECORD), info)

        return gen(), info.skipped

    return (info0.width, info0.height), start


def _aedat3_source(path: Path, chunk: int, strict: bool) -> tuple[tuple[int, int] | None, Source]:
    info0 = aedat3.read_header(path)

    def start() -> tuple[Iterator[np.ndarray], dict[str, int]]:
        info = aedat3.read_header(path)
        return aedat3.iter_aedat3(path, chunk, strict, info=info), info.counters

    return ((info0.width, info0.height) if info0.width else None), start


def _aedat4_source(path: Path, chunk: int, strict: bool) -> tuple[tuple[int, int] | None, Source]:
    info0 = aedat4.read_header(path)

    def start() -> tuple[Iterator[np.ndarray], dict[str, int]]:
        info = aedat4.read_header(path)
        return aedat4.iter_aedat4(path, strict, info=info), info.counters

    return ((info0.width, info0.height) if info0.width else None), start


# word types (the top 4 bits of each 32-bit EVT2 / 16-bit EVT3 word) that expelliarmus 1.1 decodes,
# found by trying each one: at any other type it stops with only a message on stdout and returns
# nothing, so we scan the words first and name the offset. (EVT3's EXT_TRIGGER, 0xa, is one of them.)
_EVT_WORDS = {
    "evt2": ("<u4", 28, {0x0, 0x1, 0x8, 0xA, 0xE, 0xF}),
    "evt3": ("<u2", 12, {0x0, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0xC, 0xE, 0xF}),
}
_RECORD_BYTES = {"evt2": 4, "evt3": 2, "dat": 8}


def _check_evt_words(path: Path, encoding: str, offset: int, size: int) -> None:
    """Raise DataError at the first word of a type no EVT decoder knows (a bounded-memory scan)."""
    dtype, shift, known = _EVT_WORDS[encoding]
    table = np.zeros(16, bool)
    table[list(known)] = True
    item = np.dtype(dtype).itemsize
    block = 1 << 22
    with open(path, "rb") as f:
        f.seek(offset)
        done = 0
        while True:
            words = np.fromfile(f, dtype, block)
            if not len(words):
                return
            bad = ~table[words >> shift]
            if bad.any():
                i = int(np.argmax(bad))
                at = offset + (done + i) * item
                raise DataError(
                    f"{path}: not valid {encoding} data: word type {int(words[i] >> shift):#x} at byte offset {at} "
                    f"is no {encoding} word type that expelliarmus decodes"
                )
            done += len(words)


def _prophesee_source(path: Path, chunk: int, encoding: str, strict: bool) -> tuple[tuple[int, int] | None, Source]:
    info = prophesee.read_header(path, encoding)
    import expelliarmus  # noqa: F401 - its C decoder loads (0.3 s) when the file opens, not inside the first read

    offset = info.data_offset
    size = path.stat().st_size
    rec = _RECORD_BYTES[encoding]
    tail = max(size - offset, 0) % rec
    if tail and strict:
        raise DataError(
            f"{path}: truncated {encoding} file: the {rec}-byte record at byte offset {size - tail} is incomplete"
        )

    def start() -> tuple[Iterator[np.ndarray], dict[str, int]]:
        if encoding in _EVT_WORDS:
            _check_evt_words(path, encoding, offset, size)
        # whatever the file's name: expelliarmus reads it through a .raw/.dat alias (prophesee.readable_path)
        return prophesee.iter_prophesee(path, encoding, chunk), {"truncated_bytes": tail}

    return ((info.width, info.height) if info.width else None), start


def _array_source(
    path: Path, chunk: int, fmt: str, strict: bool, dataset: str | None
) -> tuple[arrays.ArrayInfo, Source]:
    read_info = {
        "npy": lambda: arrays.read_npy_info(path, strict),
        "npz": lambda: arrays.read_npz_info(path, dataset),
        "hdf5": lambda: arrays.read_hdf5_info(path, dataset),
    }[fmt]
    iterate = {"npy": arrays.iter_npy, "npz": arrays.iter_npz, "hdf5": arrays.iter_hdf5}[fmt]
    info0 = read_info()

    def start() -> tuple[Iterator[np.ndarray], dict[str, int]]:
        info = read_info()
        return iterate(path, chunk, info=info), info.counters

    return info0, start


def _library_error(path: Path, fmt: str, e: BaseException) -> DataError:
    return DataError(f"{path}: cannot decode it as {fmt} ({type(e).__name__}: {e})")


class EventStream:
    """The events of one file, read lazily in chunks.

    ``format`` is the format's name, ``sensor_size`` ``(width, height)`` or None (``stated_size``: the
    size the file states, which a ``sensor_size`` given to :func:`open_events` overrides), ``counters`` what
    was read, dropped and why (:data:`COUNTERS`; up to date while :meth:`chunks` runs, complete
    after). :meth:`chunks` may be called again: it rereads the file and restarts the counters.
    """

    def __init__(
        self,
        path: Path,
        format: str,
        sensor_size: tuple[int, int] | None,
        source: Source,
        *,
        chunk_events: int,
        time_order: str,
        wraps: bool,
        stated_size: tuple[int, int] | None = None,
    ) -> None:
        self.path, self.format, self.sensor_size, self.stated_size = path, format, sensor_size, stated_size
        self.chunk_events, self.time_order, self.wraps = chunk_events, time_order, wraps
        self._source = source
        self._own = dict.fromkeys(COUNTERS, 0)
        self._fmt: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"EventStream({str(self.path)!r}, format={self.format!r}, sensor_size={self.sensor_size})"

    @property
    def counters(self) -> dict[str, int]:
        out = dict(self._own)
        for k, v in self._fmt.items():
            key = _RENAMED.get(k, k)
            out[key] = out.get(key, 0) + int(v)
        return out

    def _raw(self) -> Iterator[np.ndarray]:
        """The format's chunks, with any library exception turned into our DataError."""
        try:
            it, self._fmt = self._source()
        except DataError:
            raise
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as e:  # noqa: BLE001 - libraries raise anything, pyo3 panics are BaseExceptions
            raise _library_error(self.path, self.format, e) from None
        try:
            while True:
                try:
                    chunk = next(it)
                except StopIteration:
                    return
                except (DataError, KeyboardInterrupt, SystemExit, GeneratorExit):
                    raise
                except BaseException as e:  # noqa: BLE001
                    raise _library_error(self.path, self.format, e) from None
                yield chunk
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def _clean(self, ev: np.ndarray, state: dict[str, int | None]) -> np.ndarray:
        """Unwrap 32-bit time, drop events outside the sensor, then handle backwards time (see module docstring)."""
        c = self._own
        if ev.dtype != EVENT_DTYPE:
            ev = ev.astype(EVENT_DTYPE)
        if not len(ev):
            return ev
        t = ev["t"].astype(np.int64)
        if self.wraps:
            prev = state["prev_raw"]
            steps = np.diff(t, prepend=t[0] if prev is None else prev)
            wrapped = steps < -(1 << 31)
            state["prev_raw"] = int(t[-1])
            base = state["wraps"] or 0
            if base or wrapped.any():
                t = t + (base + np.cumsum(wrapped)) * _WRAP
                ev = ev.copy()
                ev["t"] = t
                state["wraps"] = base + int(wrapped.sum())
                c["time_wraps"] = state["wraps"]
        if self.sensor_size is not None:
            w, h = self.sensor_size
            inside = (ev["x"] < w) & (ev["y"] < h)
            if not inside.all():
                c["outside_sensor"] += len(ev) - int(inside.sum())
                ev, t = ev[inside], t[inside]
                if not len(ev):
                    return ev
        t_max = state["t_max"]
        prev_max = np.maximum.accumulate(t)
        earlier = np.concatenate(([np.iinfo(np.int64).min if t_max is None else t_max], prev_max[:-1]))
        if t_max is not None:
            earlier = np.maximum(earlier, t_max)
        back = t < earlier
        state["t_max"] = int(max(prev_max[-1], earlier[-1]))
        n_back = int(back.sum())
        if n_back:
            c["time_backwards"] += n_back
            if self.time_order == "drop":
                ev = ev[~back]
        return ev

    def chunks(self) -> Iterator[np.ndarray]:
        """Yield :data:`EVENT_DTYPE` arrays of exactly ``chunk_events`` events (the last one shorter)."""
        self._own = dict.fromkeys(COUNTERS, 0)
        self._fmt = {}
        state: dict[str, int | None] = {"prev_raw": None, "wraps": 0, "t_max": None}
        size = self.chunk_events
        pending: list[np.ndarray] = []
        n_pending = 0
        for raw in self._raw():
            ev = self._clean(raw, state)
            if not len(ev):
                continue
            pending.append(ev)
            n_pending += len(ev)
            if n_pending < size:
                continue
            joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
            k = 0
            while len(joined) - k >= size:
                self._own["events"] += size
                yield joined[k : k + size]
                k += size
            pending, n_pending = [joined[k:]], len(joined) - k
        if n_pending:
            out = np.concatenate(pending)
            self._own["events"] += len(out)
            yield out

    __iter__ = chunks

    def read_all(self) -> np.ndarray:
        """Every event in one array (for small files and tests)."""
        parts = list(self.chunks())
        return np.concatenate(parts) if parts else np.empty(0, EVENT_DTYPE)


def open_events(
    path: str | os.PathLike,
    format: str | None = None,
    *,
    sensor_size: tuple[int, int] | None = None,
    chunk_events: int = DEFAULT_CHUNK_EVENTS,
    time_order: str = "drop",
    strict: bool = False,
    dataset: str | None = None,
) -> EventStream:
    """Open an event file for chunked reading.

    ``format``: one of :data:`FORMATS` (default: detected). ``sensor_size``: ``(width, height)``,
    overrides the file's own. ``time_order``: ``"drop"`` or ``"keep"`` events whose time goes
    backwards. ``strict``: a truncated file is an error instead of a counted loss. ``dataset``: the
    ``.npz`` member or HDF5 dataset/group holding the events (default: found by search).
    """
    path = Path(path)
    if not isinstance(chunk_events, int) or isinstance(chunk_events, bool) or chunk_events < 1:
        raise ConfigError(f"chunk_events must be an integer >= 1, got {chunk_events!r}")
    if time_order not in ("drop", "keep"):
        raise ConfigError(f"time_order must be 'drop' or 'keep', got {time_order!r}")
    if sensor_size is not None:
        if len(sensor_size) != 2 or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in sensor_size):
            raise ConfigError(f"sensor_size must be (width, height), two integers >= 1, got {sensor_size!r}")
        sensor_size = (int(sensor_size[0]), int(sensor_size[1]))
    fmt = resolve_format(path, format)
    try:
        file_size, source, wraps = _open_source(path, fmt, chunk_events, strict, dataset)
    except (DataError, ConfigError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001
        raise _library_error(path, fmt, e) from None
    sensor = sensor_size or file_size
    return EventStream(path, fmt, sensor, source, chunk_events=chunk_events, time_order=time_order, wraps=wraps,
                       stated_size=file_size)  # fmt: skip


def resolve_format(path: str | os.PathLike, format: str | None = None) -> str:
    """The file's format: ``format`` checked against the file's first bytes, else detected from them;
    a missing or empty file, an unknown format or one the file does not look like is an error."""
    path = Path(path)
    _check_file(path)
    if format is None:
        return detect_format(path)
    fmt = str(format).lower()
    _check_flag(path, fmt)
    return fmt


def _open_source(
    path: Path, fmt: str, chunk: int, strict: bool, dataset: str | None
) -> tuple[tuple[int, int] | None, Source, bool]:
    if fmt == "nmnist":
        return None, _nmnist_source(path, chunk, strict), False
    if fmt == "aedat2":
        size, src = _aedat2_source(path, chunk, strict)
        return size, src, True
    if fmt == "aedat3":
        return (*_aedat3_source(path, chunk, strict), False)
    if fmt == "aedat4":
        return (*_aedat4_source(path, chunk, strict), False)
    if fmt in ("evt2", "evt3", "dat"):
        return (*_prophesee_source(path, chunk, fmt, strict), fmt == "dat")
    info, src = _array_source(path, chunk, fmt, strict, dataset)
    size = (info.width, info.height) if info.width and info.height else None
    return size, src, info.t_bits <= 32


def read_events(path: str | os.PathLike, format: str | None = None, **kwargs) -> np.ndarray:
    """All events of a file in one array, with :func:`open_events`'s checks and keyword arguments."""
    return open_events(path, format, **kwargs).read_all()
