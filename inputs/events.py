"""Event streams as numpy structured arrays, and their binning into spike frames.

An event stream is a 1-D array of :data:`EVENT_DTYPE`: ``t`` in microseconds, ``x`` the column,
``y`` the row (origin at the top left, as an image is indexed), ``p`` the polarity (1 = ON, a
brightness increase; 0 = OFF). Frames are time-first: ``(steps, 2, height, width)`` with channel
0 = OFF and channel 1 = ON, so ``frames[k, p, y, x]`` counts the events of bin ``k``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import ConfigError, DataError

EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])
"""One event: ``t`` µs, ``x`` column, ``y`` row, ``p`` polarity (1 = ON, 0 = OFF)."""

DROP_REASONS = ("outside_window", "outside_sensor")


# Bounds on the text headers of event files (AEDAT 2/3 '#' lines, Prophesee '%' lines), so a hostile
# or corrupt file costs little memory and time before it is refused. The largest real headers we
# know (jAER DAVIS files with the chip's preferences XML) have about 3,500 lines, 300 KB in all and
# 5 KB in their longest line: the bounds leave more than ten times that.
MAX_HEADER_LINE = 1 << 16  # bytes in one header line (64 KiB)
MAX_HEADER_BYTES = 1 << 22  # bytes of header in all (4 MiB)
MAX_HEADER_LINES = 1 << 16  # header lines (65,536)
MAX_SENSOR_SIDE = 1 << 16  # largest sensor width or height a header may state (x and y are uint16)


def header_lines(
    f,
    marker: bytes,
    where: str,
    *,
    max_bytes: int = MAX_HEADER_BYTES,
    max_line: int = MAX_HEADER_LINE,
    max_lines: int = MAX_HEADER_LINES,
) -> Iterator[tuple[int, bytes]]:
    """The header lines starting with ``marker`` at the start of binary file ``f``, each with the
    byte offset just after it; stops at the first other line (``f`` is then past it: seek to the
    last offset). Reads are bounded: a line with no end of line within ``max_line`` bytes, or a
    header of more than ``max_bytes`` bytes or ``max_lines`` lines, raises :class:`DataError`
    naming ``where`` (the file and format, e.g. ``"x.aedat: AEDAT 2"``) and the byte offset."""
    offset = lines = 0
    while True:
        line = f.readline(max_line)
        if not line.startswith(marker):
            return
        if not line.endswith(b"\n"):
            if len(line) < max_line:
                raise DataError(
                    f"{where} header: the line at byte offset {offset} ends the file without an end of line"
                )
            raise DataError(
                f"{where} header: the line at byte offset {offset} has no end of line within {max_line} bytes "
                f"(a header line is at most {max_line} bytes)"
            )
        lines += 1
        if offset + len(line) > max_bytes or lines > max_lines:
            raise DataError(
                f"{where} header: longer than {max_bytes} bytes or {max_lines} lines "
                f"(line {lines} ends at byte offset {offset + len(line)}); a corrupt or hostile file"
            )
        offset += len(line)
        yield offset, line


def check_sensor_size(width: int, height: int, where: str) -> tuple[int, int]:
    """``(width, height)`` when each is in ``1..MAX_SENSOR_SIDE``, else :class:`DataError` naming ``where``."""
    for name, v in (("width", width), ("height", height)):
        if not 1 <= v <= MAX_SENSOR_SIDE:
            raise DataError(f"{where}: sensor {name} {v} is not a sensor size (each side must be 1..{MAX_SENSOR_SIDE})")
    return int(width), int(height)


def empty_events(n: int = 0) -> np.ndarray:
    """A zeroed event array of length ``n``."""
    return np.zeros(n, dtype=EVENT_DTYPE)


def as_events(events: np.ndarray, *, source: str = "events") -> np.ndarray:
    """Return ``events`` as an :data:`EVENT_DTYPE` array (a copy unless it already is one).

    Accepts any structured array with fields ``t``, ``x``, ``y``, ``p`` (tonic's dtypes, a bool
    or ±1 polarity); a polarity > 0 becomes 1 (ON), anything else 0 (OFF). Negative coordinates
    raise :class:`DataError`, as they cannot be stored.
    """
    events = np.asarray(events)
    if events.dtype == EVENT_DTYPE:
        return events
    names = events.dtype.names or ()
    missing = [f for f in EVENT_DTYPE.names if f not in names]
    if events.ndim != 1 or missing:
        raise DataError(
            f"{source}: expected a 1-D structured array with fields t, x, y, p; "
            f"got shape {events.shape} and fields {list(names)} (missing {missing})"
        )
    for f in ("x", "y"):
        if events.size and np.issubdtype(events[f].dtype, np.signedinteger) and events[f].min() < 0:
            raise DataError(f"{source}: negative {f} coordinate {int(events[f].min())}")
    out = np.empty(events.shape, dtype=EVENT_DTYPE)
    out["t"] = events["t"]
    out["x"] = events["x"]
    out["y"] = events["y"]
    out["p"] = events["p"].astype(np.int64) > 0
    return out


def downsample_events(events: np.ndarray, factor: int) -> np.ndarray:
    """Spatially downsample by an integer ``factor``: ``x // factor``, ``y // factor`` (a copy)."""
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        raise ConfigError(f"downsample factor must be an integer >= 1, got {factor!r}")
    out = as_events(events).copy()
    if factor > 1:
        out["x"] //= factor
        out["y"] //= factor
    return out


@dataclass(frozen=True)
class Binning:
    """How an event stream becomes ``steps`` equal frames.

    The window ``[t0_us, t0_us + duration_us)`` is cut into ``steps`` equal bins; event ``t`` goes
    to bin ``floor((t - t0_us) * steps / duration_us)`` (exact integer arithmetic).
    """

    steps: int  # number of time bins T
    duration_us: int  # window length, µs
    height: int  # sensor rows
    width: int  # sensor columns
    binary: bool = True  # clip each bin's count to 1 (a spike) instead of counting events
    t0_us: int | None = None  # window start, µs; None = the earliest event's time

    def __post_init__(self) -> None:
        for name in ("steps", "duration_us", "height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"Binning.{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.binary, bool):
            raise ConfigError(f"Binning.binary must be a bool, got {self.binary!r}")
        if self.t0_us is not None and (not isinstance(self.t0_us, int) or isinstance(self.t0_us, bool)):
            raise ConfigError(f"Binning.t0_us must be an integer or None, got {self.t0_us!r}")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Frame shape ``(steps, 2, height, width)``."""
        return (self.steps, 2, self.height, self.width)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; :meth:`from_dict` rebuilds the same binning."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Binning:
        """Rebuild from :meth:`to_dict` output; unknown keys raise :class:`ConfigError`."""
        return _from_dict(cls, data)


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build the frozen dataclass ``cls`` from a dict, naming unknown or missing keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}: expected a dict, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    required = [
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and n not in data
    ]
    if required:
        raise ConfigError(f"{cls.__name__}: missing key(s) {', '.join(required)}")
    return cls(**data)


def bin_events_counted(events: np.ndarray, binning: Binning) -> tuple[np.ndarray, dict[str, int]]:
    """Bin ``events`` into float32 frames shaped ``(steps, 2, height, width)``; count the drops.

    Returns ``(frames, dropped)`` where ``dropped`` maps each reason in :data:`DROP_REASONS` to a
    number of events: ``"outside_window"`` (``t`` not in ``[t0, t0 + duration_us)``) is checked
    first, then ``"outside_sensor"`` (``x >= width`` or ``y >= height``).
    """
    events = as_events(events)
    steps, height, width = binning.steps, binning.height, binning.width
    if events.size == 0:
        return np.zeros(binning.shape, np.float32), {r: 0 for r in DROP_REASONS}
    t0 = int(events["t"].min()) if binning.t0_us is None else binning.t0_us
    dt = events["t"] - t0  # int64 µs since the window start
    in_window = (dt >= 0) & (dt < binning.duration_us)
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64)
    on_sensor = (x < width) & (y < height)
    keep = in_window & on_sensor
    dropped = {
        "outside_window": int(np.count_nonzero(~in_window)),
        "outside_sensor": int(np.count_nonzero(in_window & ~on_sensor)),
    }
    k = dt[keep] * steps // binning.duration_us
    p = events["p"][keep].astype(np.int64) != 0
    flat = ((k * 2 + p) * height + y[keep]) * width + x[keep]
    counts = np.bincount(flat, minlength=steps * 2 * height * width)
    if binning.binary:
        np.minimum(counts, 1, out=counts)
    return counts.astype(np.float32).reshape(binning.shape), dropped


def bin_events(events: np.ndarray, binning: Binning) -> np.ndarray:
    """Bin ``events`` into float32 frames ``(steps, 2, height, width)``; see :func:`bin_events_counted`."""
    return bin_events_counted(events, binning)[0]
