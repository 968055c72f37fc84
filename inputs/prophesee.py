"""Prophesee event files: EVT 2.0 and EVT 3.0 raw streams, and DAT (Event2D), read through
``expelliarmus`` (a tonic dependency with a chunked C decoder).

The format is detected from the ``%`` header (``% evt 2.0`` / ``% evt 3.0`` in raw files; DAT files
end in ``.dat``) unless given. Sensor size comes from a ``% geometry WxH`` or
``% format ...;width=W;height=H`` header line when the file has one, else from the plugin name
(Gen3: 640x480, Gen4.1: 1280x720), else from the events. Events come back as ``EVENT_DTYPE``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import DataError
from inputs.events import EVENT_DTYPE

PLUGIN_SENSORS = {"gen3": (640, 480), "gen41": (1280, 720), "imx636": (1280, 720)}
ENCODINGS = ("evt2", "evt3", "dat")


@dataclass
class ProFileInfo:
    path: Path
    encoding: str
    width: int | None
    height: int | None
    header: dict[str, str]


def read_header(path: str | os.PathLike, encoding: str | None = None) -> ProFileInfo:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"event file {path} does not exist")
    header: dict[str, str] = {}
    with open(path, "rb") as f:
        while True:
            line = f.readline()
            if not line.startswith(b"%"):
                break
            text = line[1:].decode("latin-1").strip()
            key, _, value = text.partition(" ")
            header[key.lower()] = value.strip()
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
    width = height = None
    if m := re.match(r"(\d+)x(\d+)", header.get("geometry", "")):
        width, height = int(m.group(1)), int(m.group(2))
    elif (
        (fmt := header.get("format"))
        and (w := re.search(r"width=(\d+)", fmt))
        and (h := re.search(r"height=(\d+)", fmt))
    ):
        width, height = int(w.group(1)), int(h.group(1))
    else:
        plugin = header.get("plugin_name", "")
        for key, size in PLUGIN_SENSORS.items():
            if key in plugin:
                width, height = size
    return ProFileInfo(path, encoding, width, height, header)


def _convert(arr: np.ndarray) -> np.ndarray:
    ev = np.empty(len(arr), dtype=EVENT_DTYPE)
    ev["t"], ev["x"], ev["y"], ev["p"] = arr["t"], arr["x"], arr["y"], arr["p"]
    return ev


def _wizard(info: ProFileInfo, chunk_size: int):
    from expelliarmus import Wizard

    return Wizard(encoding=info.encoding, fpath=str(info.path), chunk_size=chunk_size)


def read_prophesee(path: str | os.PathLike, encoding: str | None = None) -> tuple[np.ndarray, ProFileInfo]:
    """All events of a file, and its header information."""
    info = read_header(path, encoding)
    try:
        arr = _wizard(info, 8192).read()
    except Exception as e:  # noqa: BLE001 - the C decoder raises assorted types on a bad file
        raise DataError(f"{info.path}: cannot decode it as {info.encoding} ({type(e).__name__}: {e})") from None
    return _convert(arr), info


def iter_prophesee(
    path: str | os.PathLike, encoding: str | None = None, chunk_events: int = 1 << 17
) -> Iterator[np.ndarray]:
    """The file's events in chunks of at most ``chunk_events`` (bounded memory)."""
    info = read_header(path, encoding)
    try:
        for arr in _wizard(info, chunk_events).read_chunk():
            yield _convert(arr)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{info.path}: cannot decode it as {info.encoding} ({type(e).__name__}: {e})") from None
