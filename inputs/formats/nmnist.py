"""Reader and writer for the N-MNIST ATIS binary format.

Each event is 5 bytes: byte 0 = x, byte 1 = y, bit 7 of byte 2 = polarity (1 = ON), and the
low 23 bits of bytes 2..4 (big-endian) = timestamp in µs. As in the dataset authors' reader
(Orchard's ``Read_Ndataset``, also tonic's ``read_mnist_file``), a record with ``y == 240`` is
not an event but a timestamp overflow marker: it adds 2**13 µs to every later timestamp and is
dropped. (No sensor of these datasets has 240 rows, and the 34x34 N-MNIST samples never hold one.)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.errors import DataError
from core.fileio import write_atomic
from inputs.events import EVENT_DTYPE, as_events

RECORD_BYTES = 5
OVERFLOW_Y = 240
OVERFLOW_INCREMENT_US = 2**13
MAX_TIMESTAMP_US = 2**23 - 1


def decode_nmnist(raw: bytes | np.ndarray, *, source: str = "<bytes>") -> np.ndarray:
    """Decode N-MNIST records from ``raw`` bytes into an :data:`EVENT_DTYPE` array (file order)."""
    data = (
        np.frombuffer(raw, dtype=np.uint8)
        if isinstance(raw, (bytes, bytearray, memoryview))
        else np.asarray(raw, np.uint8)
    )
    if data.size % RECORD_BYTES:
        offset = data.size - data.size % RECORD_BYTES
        raise DataError(
            f"{source}: truncated N-MNIST file: {data.size} bytes is not a multiple of {RECORD_BYTES}; "
            f"the event at byte offset {offset} is incomplete ({data.size - offset} of {RECORD_BYTES} bytes)"
        )
    rec = data.reshape(-1, RECORD_BYTES).astype(np.int64)
    t = ((rec[:, 2] & 0x7F) << 16) | (rec[:, 3] << 8) | rec[:, 4]
    overflow = rec[:, 1] == OVERFLOW_Y
    if overflow.any():
        t = t + OVERFLOW_INCREMENT_US * np.cumsum(overflow)
    keep = ~overflow
    events = np.empty(int(keep.sum()), EVENT_DTYPE)
    events["t"] = t[keep]
    events["x"] = rec[keep, 0]
    events["y"] = rec[keep, 1]
    events["p"] = rec[keep, 2] >> 7
    return events


def read_nmnist(path: str | os.PathLike) -> np.ndarray:
    """Read one N-MNIST ``.bin`` file into an :data:`EVENT_DTYPE` array (file order, ``t`` in µs).

    A missing file or a size that is not a multiple of 5 bytes raises :class:`DataError` naming
    the file (and the byte offset of the incomplete event).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"N-MNIST file {path} does not exist") from None
    except OSError as e:
        raise DataError(f"cannot read N-MNIST file {path}: {e.strerror or e}") from None
    return decode_nmnist(raw, source=str(path))


def encode_nmnist(events: np.ndarray, *, source: str = "events") -> bytes:
    """Encode events as N-MNIST records (no overflow markers: ``t`` must fit 23 bits, x, y < 256, y != 240)."""
    ev = as_events(events, source=source)
    if ev.size:
        problems = []
        if ev["t"].min() < 0 or ev["t"].max() > MAX_TIMESTAMP_US:
            problems.append(f"t must be in [0, {MAX_TIMESTAMP_US}] µs, got [{ev['t'].min()}, {ev['t'].max()}]")
        if ev["x"].max() > 255 or ev["y"].max() > 255:
            problems.append(f"x and y must be < 256, got max x {ev['x'].max()}, max y {ev['y'].max()}")
        if np.any(ev["y"] == OVERFLOW_Y):
            problems.append(f"y == {OVERFLOW_Y} is reserved for timestamp overflow markers")
        if problems:
            raise DataError(f"{source}: cannot be written as N-MNIST: {'; '.join(problems)}")
    t = ev["t"].astype(np.int64)
    rec = np.empty((ev.size, RECORD_BYTES), np.uint8)
    rec[:, 0] = ev["x"]
    rec[:, 1] = ev["y"]
    rec[:, 2] = ((ev["p"].astype(np.int64) != 0) << 7) | (t >> 16)
    rec[:, 3] = (t >> 8) & 0xFF
    rec[:, 4] = t & 0xFF
    return rec.tobytes()


def write_nmnist(path: str | os.PathLike, events: np.ndarray) -> None:
    """Write events to ``path`` in the N-MNIST format, atomically; :func:`read_nmnist` reads them back."""
    data = encode_nmnist(events, source=str(path))
    write_atomic(path, lambda f: f.write(data))
