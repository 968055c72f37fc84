"""Prophesee EVT 2.0 raw files, decoded by a numba kernel; and one fused pass that decodes, maps
(crop, pool, polarity) and bins a stream window's events straight into the model's input frames.

After the ``%`` header the file is little-endian 32-bit words; the top 4 bits are the word type:

- ``CD_OFF`` (0) / ``CD_ON`` (1): an event. Bits 27..22: the timestamp's low 6 bits; 21..11: x;
  10..0: y; the polarity is the type.
- ``EVT_TIME_HIGH`` (8): bits 27..0 are the timestamp's upper 28 bits: ``t = high << 6 | low`` (µs).
- ``EXT_TRIGGER`` (10), ``OTHERS`` (14), ``CONTINUED`` (15): skipped.

Any other type is not EVT 2.0. Events before the first ``EVT_TIME_HIGH`` take ``high = 0`` (their
time is the low 6 bits), as expelliarmus 1.1 decodes them: :func:`iter_evt2` gives exactly what
``expelliarmus.Wizard(encoding="evt2")`` gives (every event's ``t, x, y, p``, in file order; tested
on ``../shared/eventdata/evt2/gen3_sample.raw``), in one pass over the words at about 200 M
events/s on one core, as fast as expelliarmus's C decoder (the generic reader, which converts and
checks its output, reaches about 28 M; ``python -m bench.stream --only evt2``).

Bad input (:func:`iter_evt2`): a word of an unknown type, an event outside the sensor (when the
header states its size) and a file whose data is not a whole number of words (a truncated last
word) are each a :class:`DataError` naming the file and the byte offset; the file is read in chunks
of ``chunk_words`` words (bounded memory).

:class:`WindowBinner` is the streaming pass (``python -m runtime.stream`` on an EVT 2.0 file): the
same events, the same drops and counts (``outside_sensor`` and ``time_backwards`` as
:class:`~inputs.formats.readers.EventStream` counts them, ``outside_crop`` and ``unused_polarity``
as :class:`runtime.stream.SensorMap` does) and the same frames as :meth:`runtime.stream.SensorMap.frames`,
in one loop over the words with no event array in between (tested against decode, then map, then bin).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numba
import numpy as np

from core.errors import ConfigError, DataError
from inputs.events import EVENT_DTYPE

CD_OFF, CD_ON, EVT_TIME_HIGH, EXT_TRIGGER, OTHERS, CONTINUED = 0x0, 0x1, 0x8, 0xA, 0xE, 0xF
WORD_TYPES = {CD_OFF: "CD_OFF", CD_ON: "CD_ON", EVT_TIME_HIGH: "EVT_TIME_HIGH", EXT_TRIGGER: "EXT_TRIGGER",
              OTHERS: "OTHERS", CONTINUED: "CONTINUED"}  # fmt: skip
WORD_BYTES = 4
MAX_SIDE = 1 << 11  # x and y have 11 bits
DEFAULT_CHUNK_WORDS = 1 << 20  # 4 MiB per read

# Why a kernel stopped before the end of its words (the word's index comes with it).
DONE, BAD_WORD, OUTSIDE_SENSOR, NEXT_WINDOW, BEFORE_WINDOW = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class Evt2File:
    """Where an EVT 2.0 file's words are: ``words`` whole words from byte ``data_offset``, then
    ``tail_bytes`` (0..3) bytes of a truncated word. (The class variables describe the word layout:
    :class:`inputs.formats.evt3.Evt3File` is the same with 16-bit words.)"""

    ENCODING: ClassVar[str] = "EVT 2.0"
    WORD_DTYPE: ClassVar[str] = "<u4"  # little-endian words
    WORD_BYTES: ClassVar[int] = WORD_BYTES
    TYPE_SHIFT: ClassVar[int] = 28  # word type = word >> TYPE_SHIFT
    TYPES: ClassVar[dict[int, str]] = WORD_TYPES

    path: Path
    data_offset: int  # byte offset of the first word (the end of the '%' header)
    words: int  # whole words after the header
    tail_bytes: int  # bytes after the last whole word
    width: int | None  # sensor columns, from the header (None: not stated)
    height: int | None  # sensor rows

    def chunks(self, chunk_words: int = DEFAULT_CHUNK_WORDS) -> Iterator[tuple[int, np.ndarray]]:
        """``(index of the chunk's first word, words)``, at most ``chunk_words`` at a time."""
        if chunk_words < 1:
            raise ConfigError(f"chunk_words must be >= 1, got {chunk_words}")
        with open(self.path, "rb") as f:
            f.seek(self.data_offset)
            for first in range(0, self.words, chunk_words):
                words = np.fromfile(f, self.WORD_DTYPE, min(chunk_words, self.words - first))
                if len(words) != min(chunk_words, self.words - first):  # the file shrank while we read it
                    raise DataError(f"{self.path}: ends early, at byte offset {self.offset(first + len(words))}")
                yield first, words

    def offset(self, word: int) -> int:
        """The byte offset of word number ``word``."""
        return self.data_offset + self.WORD_BYTES * word

    def bad_word(self, word: int, value: int) -> DataError:
        known = ", ".join(f"{k} ({v:#x})" for v, k in self.TYPES.items())
        return DataError(
            f"{self.path}: not valid {self.ENCODING} data: word type {value >> self.TYPE_SHIFT:#x} (word "
            f"{value:#0{2 + 2 * self.WORD_BYTES}x}) at byte offset {self.offset(word)}; {self.ENCODING} word types: {known}"
        )

    def truncated(self) -> DataError:
        return DataError(
            f"{self.path}: truncated {self.ENCODING} file: the {self.WORD_BYTES}-byte word at byte offset "
            f"{self.offset(self.words)} is incomplete ({self.tail_bytes} of {self.WORD_BYTES} bytes)"
        )


def open_evt2(path: str | os.PathLike) -> Evt2File:
    """The file's header (:func:`inputs.formats.prophesee.read_header`: bounded reads, a checked sensor
    size) and the extent of its words; a file whose header names another encoding is a :class:`DataError`."""
    from inputs.formats.prophesee import read_header

    info = read_header(path, "evt2")
    evt = info.header.get("evt", "").strip()
    if evt and evt not in ("2", "2.0"):  # (EVT 2.1 is another layout: 64-bit vectorised words)
        raise DataError(f"{info.path}: the header says '% evt {evt}': not EVT 2.0")
    data = max(info.path.stat().st_size - info.data_offset, 0)
    return Evt2File(info.path, info.data_offset, data // WORD_BYTES, data % WORD_BYTES, info.width, info.height)


# ---------------------------------------------------------------------------------------------
# Decoding


@numba.njit(cache=True, nogil=True)
def decode_words(words, time_high, width, height, t, x, y, p):
    """Decode ``words`` into ``t, x, y, p`` (each at least ``len(words)`` long) from the running
    ``time_high``. Returns ``(events written, time_high, stop, index)``: ``stop`` is ``DONE`` with
    ``index = len(words)``, else ``BAD_WORD`` or ``OUTSIDE_SENSOR`` at word ``index`` (nothing
    after it decoded)."""
    n = 0
    for i in range(len(words)):
        w = words[i]
        kind = w >> 28
        if kind <= 1:  # CD_OFF, CD_ON
            xs = (w >> 11) & 0x7FF
            ys = w & 0x7FF
            if xs >= width or ys >= height:
                return n, time_high, OUTSIDE_SENSOR, i
            t[n] = (time_high << 6) | ((w >> 22) & 0x3F)
            x[n] = xs
            y[n] = ys
            p[n] = kind
            n += 1
        elif kind == 8:  # EVT_TIME_HIGH
            time_high = np.int64(w & 0xFFFFFFF)
        elif kind != 10 and kind < 14:  # not EXT_TRIGGER, OTHERS, CONTINUED
            return n, time_high, BAD_WORD, i
    return n, time_high, DONE, len(words)


def _decode(f: Evt2File, first: int, words: np.ndarray, time_high: np.int64, out: np.ndarray) -> tuple[int, np.int64]:
    """Decode one chunk into ``out`` (room for ``len(words)`` events); ``(events, time_high)``, else a
    :class:`DataError` naming the byte offset."""
    width, height = (f.width, f.height) if f.width else (MAX_SIDE, MAX_SIDE)
    n, time_high, stop, i = decode_words(words, time_high, width, height, out["t"], out["x"], out["y"], out["p"])
    if stop == BAD_WORD:
        raise f.bad_word(first + i, int(words[i]))
    if stop == OUTSIDE_SENSOR:
        w = int(words[i])
        raise DataError(
            f"{f.path}: corrupt EVT 2.0 data: the event at byte offset {f.offset(first + i)} is at x={(w >> 11) & 0x7FF}, "
            f"y={w & 0x7FF}, outside the {f.width}x{f.height} sensor the header states"
        )
    return int(n), time_high


def iter_evt2(path: str | os.PathLike, chunk_words: int = DEFAULT_CHUNK_WORDS) -> Iterator[np.ndarray]:
    """The file's events as :data:`~inputs.events.EVENT_DTYPE` arrays, one per chunk of at most
    ``chunk_words`` words (a chunk may hold no event). Bad input is a :class:`DataError` naming the
    byte offset (see the module docstring); a truncated last word is found before any event is read."""
    f = open_evt2(path)
    if f.tail_bytes:
        raise f.truncated()
    time_high = np.int64(0)
    for first, words in f.chunks(chunk_words):
        ev = np.empty(len(words), EVENT_DTYPE)
        n, time_high = _decode(f, first, words, time_high, ev)
        yield ev[:n]


def read_evt2(path: str | os.PathLike, chunk_words: int = DEFAULT_CHUNK_WORDS) -> np.ndarray:
    """Every event of the file in one array (see :func:`iter_evt2`), decoded in place: no copy of
    the events (joining structured arrays costs more than decoding them)."""
    f = open_evt2(path)
    if f.tail_bytes:
        raise f.truncated()
    ev = np.empty(f.words, EVENT_DTYPE)  # at most one event per word
    n, time_high = 0, np.int64(0)
    for first, words in f.chunks(chunk_words):
        k, time_high = _decode(f, first, words, time_high, ev[n : n + len(words)])
        n += k
    return ev[:n]


# ---------------------------------------------------------------------------------------------
# Decode, map and bin in one pass

# state[...] of bin_words: what carries from one call (and one chunk) to the next
TIME_HIGH, T_MAX, WIN_START, WIN_END, NEXT_T = 0, 1, 2, 3, 4
READ, OUTSIDE_SENSOR_N, TIME_BACKWARDS, OUTSIDE_CROP, UNUSED_POLARITY, WIN_EVENTS, LAST_T = 5, 6, 7, 8, 9, 10, 11
STATE_SIZE = 12
POLARITY_MODES = {"split": 0, "merge": 1, "on": 2, "off": 3}


@numba.njit(cache=True, nogil=True, inline="always")
def step_of(t, win_start, steps, window_us):
    """``(k, start, end)``: the step of the window starting at ``win_start`` that holds time ``t``, and
    that step's first time and the next step's (``steps`` equal steps of ``window_us``, as
    :class:`inputs.events.Binning` cuts them)."""
    k = (t - win_start) * steps // window_us
    return k, win_start + (k * window_us + steps - 1) // steps, win_start + ((k + 1) * window_us + steps - 1) // steps


@numba.njit(cache=True, nogil=True, inline="always")
def bin_event(frames, t, c, my, mx, binary, k, k_start, k_end, win_start, window_us):
    """One event at time ``t`` into ``frames[step, c, my, mx]`` (a spike, or one more): ``(ok, k, k_start,
    k_end)``, the step ``k`` holding times ``[k_start, k_end)`` found again only when ``t`` leaves it;
    not ``ok`` (nothing written) for a time before the window (where a window was started after an
    event: never a write outside the frames)."""
    if t >= k_end or t < k_start:
        if t < win_start:
            return False, k, k_start, k_end
        k, k_start, k_end = step_of(t, win_start, frames.shape[0], window_us)
    if binary:
        frames[k, c, my, mx] = 1.0
    else:
        frames[k, c, my, mx] += 1.0
    return True, k, k_start, k_end


@numba.njit(cache=True, nogil=True, inline="always")
def load_window(state):
    """What a fused pass starts from: the latest time delivered, the window ``[start, end)``, the last
    event's time, and the current step ``(k, k_start, k_end)`` (none yet: -1, the window's end)."""
    win_end = state[WIN_END]
    return state[T_MAX], state[WIN_START], win_end, state[LAST_T], -1, win_end, win_end


@numba.njit(cache=True, nogil=True, inline="always")
def store_counts(state, t_max, last_t, read, outside_sensor, backwards, outside_crop, unused, in_window):
    """What a fused pass carries to its next call: the latest time delivered and the last event's, and
    this call's counts added to the window's and the stream's."""
    state[T_MAX] = t_max
    state[LAST_T] = last_t
    state[READ] += read
    state[OUTSIDE_SENSOR_N] += outside_sensor
    state[TIME_BACKWARDS] += backwards
    state[OUTSIDE_CROP] += outside_crop
    state[UNUSED_POLARITY] += unused
    state[WIN_EVENTS] += in_window


@numba.njit(cache=True, nogil=True)
def bin_words(words, start, state, frames, sensor_w, sensor_h, col, row, polarity, window_us, binary):
    """Decode ``words[start:]``, drop and count as the reader and the sensor map do, and bin every
    event of the window ``[state[WIN_START], state[WIN_END])`` into ``frames`` (steps, channels,
    height, width). ``col[x]`` / ``row[y]``: the model column / row of sensor column x / row y, -1
    outside the crop. Returns ``(index, stop)``: ``DONE`` at the end of the words, ``NEXT_WINDOW``
    at an event at or after the window's end (``state[NEXT_T]`` holds its time; nothing of it
    counted yet: call again from ``index`` once the window moved), ``BAD_WORD`` at a word no
    EVT 2.0 type."""
    time_high = state[TIME_HIGH]
    # the current step k holds times [k_start, k_end): one division per step, not per event
    t_max, win_start, win_end, last_t, k, k_start, k_end = load_window(state)
    read = outside_sensor = backwards = outside_crop = unused = in_window = 0
    stop = DONE
    i = start
    n = len(words)
    while i < n:
        w = words[i]
        kind = w >> 28
        if kind <= 1:  # CD_OFF, CD_ON
            xs = (w >> 11) & 0x7FF
            ys = w & 0x7FF
            if xs >= sensor_w or ys >= sensor_h:
                outside_sensor += 1
                i += 1
                continue
            t = (time_high << 6) | ((w >> 22) & 0x3F)
            if t < t_max:  # earlier than an event already delivered: the reader drops it
                backwards += 1
                i += 1
                continue
            if t >= win_end:
                state[NEXT_T] = t
                stop = NEXT_WINDOW
                break
            t_max = t
            last_t = t
            read += 1
            mx = col[xs]
            my = row[ys]
            if mx < 0 or my < 0:
                outside_crop += 1
                i += 1
                continue
            if polarity == 0:
                c = np.int64(kind)
            elif polarity == 1 or (polarity == 2) == (kind == 1):  # merge; on and an ON event; off and an OFF one
                c = 0
            else:
                unused += 1
                i += 1
                continue
            ok, k, k_start, k_end = bin_event(frames, t, c, my, mx, binary, k, k_start, k_end, win_start, window_us)
            if not ok:
                state[NEXT_T] = t
                stop = BEFORE_WINDOW
                break
            in_window += 1
        elif kind == 8:  # EVT_TIME_HIGH
            time_high = np.int64(w & 0xFFFFFFF)
        elif kind != 10 and kind < 14:  # not EXT_TRIGGER, OTHERS, CONTINUED
            stop = BAD_WORD
            break
        i += 1
    state[TIME_HIGH] = time_high
    store_counts(state, t_max, last_t, read, outside_sensor, backwards, outside_crop, unused, in_window)
    return i, stop


class WindowBinner:
    """Frames of consecutive windows of ``window_us`` from EVT 2.0 words, with ``runtime.stream``'s
    mapping (:class:`runtime.stream.SensorMap`'s ``x0, y0, factor, width, height, channels,
    polarity``, ``span``: the sensor columns and rows fed, by default ``width`` and ``height`` times
    ``factor``) and binning (``steps`` equal steps, ``binary``: one spike at most per pixel and step).

    Use: :meth:`run` over each chunk of words; at ``NEXT_WINDOW`` call :meth:`start` once (the first
    event: ``next_t`` is its time) or :meth:`take` (the window's frames and events; the next window
    starts where it ended) until ``next_t`` is inside the window, then :meth:`run` again from the
    index it returned.
    """

    DONE, BAD_WORD, NEXT_WINDOW = DONE, BAD_WORD, NEXT_WINDOW
    WORD_DTYPE: ClassVar[type] = np.uint32  # (inputs.formats.evt3.WindowBinner: its words and its kernel)

    kernel = staticmethod(bin_words)

    def __init__(self, sensor: tuple[int, int], x0: int, y0: int, factor: int, width: int, height: int,
                 channels: int, polarity: str, steps: int, window_us: int, binary: bool,
                 span: tuple[int, int] | None = None) -> None:  # fmt: skip
        if polarity not in POLARITY_MODES:
            raise ConfigError(f"polarity must be one of {', '.join(POLARITY_MODES)}, got {polarity!r}")
        if channels != (2 if polarity == "split" else 1):  # the kernel writes channel p (split) or 0 unchecked
            raise ConfigError(f"polarity {polarity} needs {2 if polarity == 'split' else 1} channel(s), not {channels}")
        for name, v in (
            ("factor", factor),
            ("width", width),
            ("height", height),
            ("steps", steps),
            ("window_us", window_us),
        ):
            if v < 1:
                raise ConfigError(f"WindowBinner {name} must be >= 1, got {v}")
        self.sensor = (min(int(sensor[0]), MAX_SIDE), min(int(sensor[1]), MAX_SIDE))
        span_x, span_y = span or (width * factor, height * factor)
        self.span = (min(span_x, width * factor), min(span_y, height * factor))
        self.col = _axis_map(x0, factor, self.span[0])
        self.row = _axis_map(y0, factor, self.span[1])
        self.shape = (int(steps), int(channels), int(height), int(width))
        self.polarity = POLARITY_MODES[polarity]
        self.window_us = int(window_us)
        self.binary = bool(binary)
        self.state = np.zeros(STATE_SIZE, np.int64)
        self.state[[WIN_START, WIN_END]] = -1  # not started: the first event stops the pass
        self.frames = np.zeros(self.shape, np.float32)

    def run(self, words: np.ndarray, start: int = 0) -> tuple[int, int]:
        """``(index, stop)`` of :func:`bin_words` on ``words[start:]``."""
        i, stop = self.kernel(words, start, self.state, self.frames, self.sensor[0], self.sensor[1], self.col, self.row,
                              self.polarity, self.window_us, self.binary)  # fmt: skip
        if stop == BEFORE_WINDOW:
            raise ConfigError(f"an event at {self.next_t} µs comes before the window that starts at "
                              f"{self.window_start} µs: start the first window at or before the first event")  # fmt: skip
        return int(i), int(stop)

    @property
    def next_t(self) -> int:
        """The time of the event the last :meth:`run` stopped at (``NEXT_WINDOW``)."""
        return int(self.state[NEXT_T])

    @property
    def window_start(self) -> int | None:
        return None if self.state[WIN_START] < 0 else int(self.state[WIN_START])

    def start(self, t0_us: int) -> None:
        """The first window starts at ``t0_us``."""
        self.state[WIN_START], self.state[WIN_END] = t0_us, t0_us + self.window_us

    def take(self) -> tuple[np.ndarray, int]:
        """The current window's ``(frames, events binned)``; the next window follows it."""
        if self.window_start is None:
            raise ConfigError("WindowBinner.take before start: no window yet")
        frames, n = self.frames, int(self.state[WIN_EVENTS])
        self.frames = np.zeros(self.shape, np.float32)
        self.state[WIN_EVENTS] = 0
        self.state[WIN_START] += self.window_us
        self.state[WIN_END] += self.window_us
        return frames, n

    @property
    def counters(self) -> dict[str, int]:
        """``events`` read (in the sensor, in time order) and the reader's drops, by
        :data:`~inputs.formats.readers.COUNTERS`' names."""
        s = self.state
        return {
            "events": int(s[READ]),
            "outside_sensor": int(s[OUTSIDE_SENSOR_N]),
            "time_backwards": int(s[TIME_BACKWARDS]),
        }

    @property
    def dropped(self) -> dict[str, int]:
        """The sensor map's drops, by :class:`runtime.stream.SensorMap`'s names."""
        return {"outside_crop": int(self.state[OUTSIDE_CROP]), "unused_polarity": int(self.state[UNUSED_POLARITY])}

    @property
    def last_t(self) -> int:
        """The time of the last event read."""
        return int(self.state[LAST_T])

    def warm(self) -> None:
        """Load (or compile) the kernel now, on a copy of the state: nothing changes."""
        state = self.state
        self.state = state.copy()
        try:
            self.run(np.zeros(0, self.WORD_DTYPE))
        finally:
            self.state = state


def iter_windows(
    f: Evt2File, binner: WindowBinner, chunk_words: int = DEFAULT_CHUNK_WORDS
) -> Iterator[tuple[int, np.ndarray, int]]:
    """``(start µs, frames, events binned)`` of every window from the one holding the first event
    (its start a multiple of the window) to the one holding the last; a word of no EVT 2.0 type is
    a :class:`DataError` naming its byte offset. (``runtime.stream`` runs its own loop: a first window
    of its choosing, a check of time gaps, the network between windows.)"""
    window_us = binner.window_us
    for first, words in f.chunks(chunk_words):
        i = 0
        while True:
            i, stop = binner.run(words, i)
            if stop == DONE:
                break
            if stop == BAD_WORD:
                raise f.bad_word(first + i, int(words[i]))
            t = binner.next_t
            if binner.window_start is None:
                binner.start(t - t % window_us)
            while t >= binner.window_start + window_us:
                start = binner.window_start
                yield (start, *binner.take())
    if binner.window_start is not None:
        start = binner.window_start
        yield (start, *binner.take())


def _axis_map(origin: int, factor: int, span: int, side: int = MAX_SIDE) -> np.ndarray:
    """``((v - origin) // factor)`` for every sensor coordinate ``v`` below ``side`` (default: every one
    an EVT 2.0 word can hold), -1 where ``v`` is outside the ``span`` sensor pixels from ``origin`` fed to
    the model."""
    v = np.arange(side, dtype=np.int64) - origin
    return np.where((v >= 0) & (v < span), v // factor, -1).astype(np.int32)
