"""Prophesee event files: EVT 2.0 and EVT 3.0 raw streams, and DAT (Event2D), read through
``expelliarmus`` (a tonic dependency with a chunked C decoder).

The format is detected from the ``%`` header (``% evt 2.0`` / ``% evt 3.0`` in raw files; DAT files
end in ``.dat``) unless given. Sensor size comes from a ``% geometry WxH`` or
``% format ...;width=W;height=H`` header line when the file has one, else from the plugin name
(Gen3: 640x480, Gen4.1: 1280x720), else from the events. Events come back as ``EVENT_DTYPE``.

Bad input: the header is read with bounded reads (:func:`inputs.events.header_lines`); a sensor
size outside ``1..65536`` per side, or a polarity other than 0/1 (DAT stores 4 bits), is a
:class:`DataError` naming the file and the header line or the event. expelliarmus reads only files
whose resolved name ends in ``.raw``/``.dat``: any other name is read through a hard link or a
temporary copy (:func:`readable_path`), and messages name the user's file.

EVT 2.0 and EVT 3.0 also have numba decoders of our own, :mod:`inputs.formats.evt2` and
:mod:`inputs.formats.evt3` (the same events as expelliarmus, tested; errors name the byte offset),
each with the fused decode, map and bin pass that ``python -m runtime.stream`` uses for such files.
(EVT 3.0 word types: expelliarmus refuses ``EXT_TRIGGER`` words, 0xA, and skips 0xC words, which
the specification does not define; :mod:`inputs.formats.evt3` does the opposite.)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import DataError
from inputs.events import EVENT_DTYPE, check_sensor_size, header_lines

PLUGIN_SENSORS = {"gen3": (640, 480), "gen41": (1280, 720), "imx636": (1280, 720)}
ENCODINGS = ("evt2", "evt3", "dat")
SUFFIX = {"evt2": ".raw", "evt3": ".raw", "dat": ".dat"}  # the only file names expelliarmus accepts


@dataclass
class ProFileInfo:
    path: Path
    encoding: str
    width: int | None
    height: int | None
    header: dict[str, str]
    data_offset: int = 0  # byte offset of the first event record (after the header and DAT's 2 type/size bytes)


def _sensor_from_header(path: Path, header: dict[str, str], lines: dict[str, tuple[int, str]]):
    """``(width, height)`` from a ``geometry`` or ``format`` line (checked), else None."""
    for key, pattern in (("geometry", r"\s*(-?\d+)\s*x\s*(-?\d+)"), ("format", None)):
        if key not in header:
            continue
        value = header[key]
        if pattern:
            m = re.match(pattern, value)
            w, h = (m.group(1), m.group(2)) if m else (None, None)
        else:
            mw, mh = re.search(r"width=(-?\d+)", value), re.search(r"height=(-?\d+)", value)
            if not (mw or mh):
                continue  # a format line without a size ('% format EVT3')
            w, h = (mw.group(1) if mw else None), (mh.group(1) if mh else None)
        at, text = lines[key]
        where = f"{path}: header line {text[:200]!r} at byte offset {at}"
        if w is None or h is None:
            raise DataError(f"{where}: cannot read a sensor size (width x height) from it")
        return check_sensor_size(int(w), int(h), where)
    return None


def read_header(path: str | os.PathLike, encoding: str | None = None) -> ProFileInfo:
    """The ``%`` header: encoding, sensor size and where the events start (bounded reads, see
    :func:`inputs.events.header_lines`; a sensor size outside ``1..65536`` is a :class:`DataError`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"event file {path} does not exist")
    header: dict[str, str] = {}
    lines: dict[str, tuple[int, str]] = {}  # key -> (byte offset, line) for messages
    offset = 0
    with open(path, "rb") as f:
        for end, line in header_lines(f, b"%", f"{path}: Prophesee"):
            text = line[1:].decode("latin-1").strip()
            key, _, value = text.partition(" ")
            header[key.lower()] = value.strip()
            lines[key.lower()] = (offset, line.decode("latin-1").rstrip())
            offset = end
            if text.lower() == "end":  # EVT 3 headers end with '% end'; the data may start with '%'
                break
    if encoding is None:
        evt = header.get("evt", "")
        if path.suffix.lower() == ".dat":
            encoding = "dat"
        elif evt.startswith("3"):
            encoding = "evt3"
        elif evt.startswith("2"):
            encoding = "evt2"
        else:
            raise DataError(
                f"{path}: cannot tell the Prophesee encoding (no '% evt' header line, not .dat); pass it explicitly"
            )
    if encoding not in ENCODINGS:
        raise DataError(f"unknown Prophesee encoding {encoding!r}; known: {', '.join(ENCODINGS)}")
    size = _sensor_from_header(path, header, lines)
    if size is None:
        plugin = header.get("plugin_name", "")
        size = next((s for key, s in PLUGIN_SENSORS.items() if key in plugin), None)
    width, height = size or (None, None)
    return ProFileInfo(path, encoding, width, height, header, offset + (2 if encoding == "dat" else 0))


@contextlib.contextmanager
def readable_path(path: Path, encoding: str) -> Iterator[Path]:
    """A path to the file that expelliarmus accepts: its name must end in ``.raw`` (EVT) or ``.dat``
    *after* it resolves symbolic links, and be UTF-8. Any other file is hard-linked (free) or, where
    that fails (another file system, a file we do not own), copied into a temporary folder under the
    right name for as long as the context lasts."""
    ext = SUFFIX[encoding]
    real = path.resolve()
    try:
        ok = str(real).encode("utf-8").endswith(ext.encode())
    except UnicodeEncodeError:  # a file name that is not UTF-8 (surrogate escapes): expelliarmus cannot pass it on
        ok = False
    if ok:
        yield real
        return
    with tempfile.TemporaryDirectory(prefix="snn-events-") as tmp:
        alias = Path(tmp) / f"events{ext}"
        try:
            os.link(real, alias)
        except OSError:
            try:
                shutil.copyfile(real, alias)
            except OSError as e:
                raise DataError(
                    f"{path}: expelliarmus reads only files named *{ext}, and copying it to such a name in "
                    f"{tmp} failed ({e.strerror or e}); rename the file to end in {ext}"
                ) from None
        yield alias


def _convert(arr: np.ndarray, info: ProFileInfo, first: int) -> np.ndarray:
    """expelliarmus records -> ``EVENT_DTYPE``; a polarity other than 0/1 (DAT stores 4 bits) refuses the file."""
    bad = (arr["p"] != 0) & (arr["p"] != 1)
    if bad.any():
        i = int(np.argmax(bad))
        at = f" (byte offset {info.data_offset + 8 * (first + i)})" if info.encoding == "dat" else ""
        raise DataError(
            f"{info.path}: corrupt {info.encoding} data: event {first + i}{at} has polarity {int(arr['p'][i])} "
            "(expected 0 or 1)"
        )
    ev = np.empty(len(arr), dtype=EVENT_DTYPE)
    ev["t"], ev["x"], ev["y"], ev["p"] = arr["t"], arr["x"], arr["y"], arr["p"]
    return ev


def _decode_error(info: ProFileInfo, e: Exception) -> DataError:
    return DataError(f"{info.path}: cannot decode it as {info.encoding} ({type(e).__name__}: {e})")


def read_prophesee(path: str | os.PathLike, encoding: str | None = None) -> tuple[np.ndarray, ProFileInfo]:
    """All events of a file, and its header information."""
    info = read_header(path, encoding)
    from expelliarmus import Wizard

    with readable_path(info.path, info.encoding) as readable:
        try:
            arr = Wizard(encoding=info.encoding, fpath=str(readable)).read()
        except Exception as e:  # noqa: BLE001 - the C decoder raises assorted types on a bad file
            raise _decode_error(info, e) from None
    return _convert(arr, info, 0), info


def iter_prophesee(
    path: str | os.PathLike, encoding: str | None = None, chunk_events: int = 1 << 17
) -> Iterator[np.ndarray]:
    """The file's events in chunks of at most ``chunk_events`` (bounded memory)."""
    info = read_header(path, encoding)
    from expelliarmus import Wizard

    done = 0
    with readable_path(info.path, info.encoding) as readable:
        try:
            chunks = Wizard(encoding=info.encoding, fpath=str(readable), chunk_size=chunk_events).read_chunk()
            for arr in chunks:
                ev = _convert(arr, info, done)
                done += len(arr)
                yield ev
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001
            raise _decode_error(info, e) from None
