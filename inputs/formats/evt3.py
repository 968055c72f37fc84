"""Prophesee EVT 3.0 raw files, decoded by a numba kernel; and the fused pass that decodes, maps
(crop, pool, polarity) and bins a stream window's events straight into the model's input frames
(:mod:`inputs.formats.evt2`'s layout, state and window logic, with EVT 3.0's words).

After the ``%`` header the file is little-endian 16-bit words; the top 4 bits are the word type.
The decoder keeps a current ``y``, polarity, vector base ``x`` and time:

- ``EVT_ADDR_Y`` (0x0): ``y`` = bits 10..0 (bit 11, the system type, is ignored).
- ``EVT_ADDR_X`` (0x2): one event at ``x`` = bits 10..0, polarity = bit 11 (it becomes the current
  polarity), with the current ``y`` and time.
- ``VECT_BASE_X`` (0x3): base ``x`` = bits 10..0, polarity = bit 11.
- ``VECT_12`` (0x4) / ``VECT_8`` (0x5): an event at ``base_x + i`` for each set bit ``i`` of the low
  12 / 8 bits, then ``base_x += 12`` / ``8``.
- ``EVT_TIME_LOW`` (0x6) / ``EVT_TIME_HIGH`` (0x8): the time's low / high 12 bits.
- ``CONTINUED_4`` (0x7), ``EXT_TRIGGER`` (0xA), ``OTHERS`` (0xE), ``CONTINUED_12`` (0xF): skipped.

Time is what expelliarmus 1.1 computes (its ``read_evt3``), wrap-arounds included: a low part
smaller than the one before counts one overflow of the low part, a high part smaller than the one
before one overflow of the high part, and
``t = (high overflows << 24) + ((high + low overflows) << 12) + low`` (µs). Events before the first
time word have ``t = 0``, before the first ``EVT_ADDR_Y`` ``y = 0``. :func:`iter_evt3` gives exactly
what ``expelliarmus.Wizard(encoding="evt3")`` gives (every event's ``t, x, y, p``, in file order;
tested on ``../shared/eventdata/evt3/gen41_sample.raw`` against the decode stored beside it), at
about 60 to 100 M events/s on one core (expelliarmus through the generic reader: about 22 M).

Word types follow Prophesee's EVT 3.0 specification, where expelliarmus 1.1 differs: it stops at
``EXT_TRIGGER`` (0xA) words (only a message on stdout) and skips 0xC words, which this decoder refuses.

Bad input (:func:`iter_evt3`): a word of an unknown type, an event outside the sensor (when the
header states its size; a vector's ``x`` can pass 2047) and a file whose data is not a whole number
of words (a truncated last word) are each a :class:`DataError` naming the file and the byte offset;
the file is read in chunks of ``chunk_words`` words (bounded memory).

:class:`WindowBinner` is the streaming pass (``python -m runtime.stream`` on an EVT 3.0 file), with
the same drops, counts and frames as the generic path (tested against decode, then map, then bin),
at about 45 M events/s on one core (the generic decode, map and bin: about 12 M; ``python -m
bench.stream --only evt3``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numba
import numpy as np

from core.errors import DataError
from inputs.events import EVENT_DTYPE
from inputs.formats import evt2
from inputs.formats.evt2 import (
    BAD_WORD,
    BEFORE_WINDOW,
    DONE,
    NEXT_T,
    NEXT_WINDOW,
    OUTSIDE_SENSOR,
    TIME_HIGH,
    WIN_END,
    WIN_START,
    bin_event,
    iter_windows,
    load_window,
    store_counts,
)

EVT_ADDR_Y, EVT_ADDR_X, VECT_BASE_X, VECT_12, VECT_8 = 0x0, 0x2, 0x3, 0x4, 0x5
EVT_TIME_LOW, CONTINUED_4, EVT_TIME_HIGH, EXT_TRIGGER, OTHERS, CONTINUED_12 = 0x6, 0x7, 0x8, 0xA, 0xE, 0xF
WORD_TYPES = {EVT_ADDR_Y: "EVT_ADDR_Y", EVT_ADDR_X: "EVT_ADDR_X", VECT_BASE_X: "VECT_BASE_X", VECT_12: "VECT_12",
              VECT_8: "VECT_8", EVT_TIME_LOW: "EVT_TIME_LOW", CONTINUED_4: "CONTINUED_4",
              EVT_TIME_HIGH: "EVT_TIME_HIGH", EXT_TRIGGER: "EXT_TRIGGER", OTHERS: "OTHERS",
              CONTINUED_12: "CONTINUED_12"}  # fmt: skip
WORD_BYTES = 2
MAX_X = 1 << 16  # a vector's x: a 16-bit base (11 bits set by VECT_BASE_X, then += 12 / 8) plus its bit
MAX_Y = 1 << 11  # y has 11 bits
DEFAULT_CHUNK_WORDS = 1 << 21  # 4 MiB per read

LOW_BIT = np.zeros(1 << 12, np.int64)  # LOW_BIT[1 << j] = j: a set bit's index without a loop over the bits
LOW_BIT[1 << np.arange(12)] = np.arange(12)

# state[...] past evt2's STATE_SIZE: the decoder's registers, carried from one call (and one chunk) to the next
# (TIME_HIGH is evt2's slot: the high 12 bits)
TIME_LOW, HIGH_OVFS, LOW_OVFS, ADDR_Y, POLARITY, BASE_X, TIME, BAD_X = 12, 13, 14, 15, 16, 17, 18, 19
STATE3_SIZE = 20


@dataclass(frozen=True)
class Evt3File(evt2.Evt2File):
    """Where an EVT 3.0 file's 16-bit words are (see :class:`inputs.formats.evt2.Evt2File`)."""

    ENCODING: ClassVar[str] = "EVT 3.0"
    WORD_DTYPE: ClassVar[str] = "<u2"
    WORD_BYTES: ClassVar[int] = WORD_BYTES
    TYPE_SHIFT: ClassVar[int] = 12
    TYPES: ClassVar[dict[int, str]] = WORD_TYPES

    def chunks(self, chunk_words: int = DEFAULT_CHUNK_WORDS) -> Iterator[tuple[int, np.ndarray]]:
        return super().chunks(chunk_words)


def open_evt3(path: str | os.PathLike) -> Evt3File:
    """The file's header (:func:`inputs.formats.prophesee.read_header`: bounded reads, a checked sensor
    size; it ends at ``% end`` where there is one) and the extent of its words; a file whose header
    names another encoding is a :class:`DataError`."""
    from inputs.formats.prophesee import read_header

    info = read_header(path, "evt3")
    evt = info.header.get("evt", "").strip()
    if evt and evt not in ("3", "3.0"):
        raise DataError(f"{info.path}: the header says '% evt {evt}': not EVT 3.0")
    data = max(info.path.stat().st_size - info.data_offset, 0)
    return Evt3File(info.path, info.data_offset, data // WORD_BYTES, data % WORD_BYTES, info.width, info.height)


def new_state() -> np.ndarray:
    """A fresh decoder state (:data:`STATE3_SIZE` int64; no window started)."""
    state = np.zeros(STATE3_SIZE, np.int64)
    state[WIN_START] = state[WIN_END] = -1
    return state


# ---------------------------------------------------------------------------------------------
# Decoding


@numba.njit(cache=True, nogil=True)
def count_events(words):
    """How many events ``words`` hold (``EVT_ADDR_X`` words and the set bits of vectors)."""
    n = 0
    for i in range(len(words)):
        w = np.int64(words[i])
        kind = w >> 12
        if kind == 2:
            n += 1
        elif kind == 4 or kind == 5:
            bits = w & (0xFFF if kind == 4 else 0xFF)
            while bits:
                bits &= bits - 1
                n += 1
    return n


@numba.njit(cache=True, nogil=True, inline="always")
def _registers(state):
    """The decoder's registers carried in ``state``: ``(y, polarity, base x, time high, time low, high
    overflows, low overflows, time)``."""
    return (state[ADDR_Y], state[POLARITY], state[BASE_X], state[TIME_HIGH], state[TIME_LOW], state[HIGH_OVFS],
            state[LOW_OVFS], state[TIME])  # fmt: skip


@numba.njit(cache=True, nogil=True, inline="always")
def _store_registers(state, ys, pol, base_x, th, tl, tho, tlo, now):
    state[ADDR_Y], state[POLARITY], state[BASE_X], state[TIME] = ys, pol, base_x, now
    state[TIME_HIGH], state[TIME_LOW], state[HIGH_OVFS], state[LOW_OVFS] = th, tl, tho, tlo


@numba.njit(cache=True, nogil=True, inline="always")
def _control(kind, w, ys, pol, base_x, th, tl, tho, tlo, now):
    """One EVT 3.0 word that carries no event: the decoder's state after it, ``(ok, y, polarity, base
    x, time high, time low, high overflows, low overflows, time)``, with expelliarmus's time
    arithmetic; ``ok`` is false for a word of no EVT 3.0 type (CONTINUED_4, EXT_TRIGGER, OTHERS and
    CONTINUED_12 are skipped)."""
    if kind == 0:  # EVT_ADDR_Y
        ys = w & 0x7FF
    elif kind == 6 or kind == 8:  # EVT_TIME_LOW, EVT_TIME_HIGH: a smaller part than before wrapped around
        part = w & 0xFFF
        if kind == 6:
            tlo += part < tl
            tl = part
        else:
            tho += part < th
            th = part
        now = (tho << 24) + ((th + tlo) << 12) + tl
    elif kind == 3:  # VECT_BASE_X
        pol = (w >> 11) & 1
        base_x = w & 0x7FF
    elif kind != 7 and kind != 10 and kind < 14:
        return False, ys, pol, base_x, th, tl, tho, tlo, now
    return True, ys, pol, base_x, th, tl, tho, tlo, now


@numba.njit(cache=True, nogil=True)
def decode_words(words, state, width, height, t, x, y, p):
    """Decode ``words`` into ``t, x, y, p`` (room for :func:`count_events` events) from the running
    ``state``. Returns ``(events written, stop, index)``: ``stop`` is ``DONE`` with ``index =
    len(words)``, else ``BAD_WORD`` or ``OUTSIDE_SENSOR`` at word ``index`` (the event's ``x`` in
    ``state[BAD_X]``, its ``y`` in ``state[ADDR_Y]``; the state is that before the word)."""
    ys, pol, base_x, th, tl, tho, tlo, now = _registers(state)
    n = 0
    stop = DONE
    i = 0
    while i < len(words):
        w = np.int64(words[i])
        kind = w >> 12
        if kind == 2:  # EVT_ADDR_X
            xs = w & 0x7FF
            if xs >= width or ys >= height:
                state[BAD_X] = xs
                stop = OUTSIDE_SENSOR
                break
            pol = (w >> 11) & 1
            t[n] = now
            x[n] = xs
            y[n] = ys
            p[n] = pol
            n += 1
        elif kind == 4 or kind == 5:  # VECT_12, VECT_8
            size = 12 if kind == 4 else 8
            bits = w & ((1 << size) - 1)
            bad = -1
            for j in range(size):
                if (bits >> j) & 1 and (((base_x + j) & 0xFFFF) >= width or ys >= height):
                    bad = (base_x + j) & 0xFFFF
                    break
            if bad >= 0:
                state[BAD_X] = bad
                stop = OUTSIDE_SENSOR
                break
            for j in range(size):
                if (bits >> j) & 1:
                    t[n] = now
                    x[n] = (base_x + j) & 0xFFFF
                    y[n] = ys
                    p[n] = pol
                    n += 1
            base_x = (base_x + size) & 0xFFFF
        else:
            ok, ys, pol, base_x, th, tl, tho, tlo, now = _control(kind, w, ys, pol, base_x, th, tl, tho, tlo, now)
            if not ok:
                stop = BAD_WORD
                break
        i += 1
    _store_registers(state, ys, pol, base_x, th, tl, tho, tlo, now)
    return n, stop, i


def _decode(f: Evt3File, first: int, words: np.ndarray, state: np.ndarray, out: np.ndarray) -> int:
    """Decode one chunk into ``out`` (room for its events); the events written, else a
    :class:`DataError` naming the byte offset."""
    width, height = (f.width, f.height) if f.width else (MAX_X, MAX_Y)
    n, stop, i = decode_words(words, state, width, height, out["t"], out["x"], out["y"], out["p"])
    if stop == BAD_WORD:
        raise f.bad_word(first + i, int(words[i]))
    if stop == OUTSIDE_SENSOR:
        raise DataError(
            f"{f.path}: corrupt EVT 3.0 data: the event of the word at byte offset {f.offset(first + i)} is at "
            f"x={int(state[BAD_X])}, y={int(state[ADDR_Y])}, outside the {f.width}x{f.height} sensor the header states"
        )
    return int(n)


def iter_evt3(path: str | os.PathLike, chunk_words: int = DEFAULT_CHUNK_WORDS) -> Iterator[np.ndarray]:
    """The file's events as :data:`~inputs.events.EVENT_DTYPE` arrays, one per chunk of at most
    ``chunk_words`` words (a chunk may hold no event). Bad input is a :class:`DataError` naming the
    byte offset (see the module docstring); a truncated last word is found before any event is read."""
    f = open_evt3(path)
    if f.tail_bytes:
        raise f.truncated()
    state = new_state()
    for first, words in f.chunks(chunk_words):
        ev = np.empty(count_events(words), EVENT_DTYPE)
        n = _decode(f, first, words, state, ev)
        yield ev[:n]


def read_evt3(path: str | os.PathLike, chunk_words: int = DEFAULT_CHUNK_WORDS) -> np.ndarray:
    """Every event of the file in one array (see :func:`iter_evt3`): counted in a first pass over the
    words, then decoded in place (no copy of the events)."""
    f = open_evt3(path)
    if f.tail_bytes:
        raise f.truncated()
    ev = np.empty(sum(count_events(words) for _, words in f.chunks(chunk_words)), EVENT_DTYPE)
    n, state = 0, new_state()
    for first, words in f.chunks(chunk_words):
        n += _decode(f, first, words, state, ev[n:])
    return ev[:n]


# ---------------------------------------------------------------------------------------------
# Decode, map and bin in one pass


@numba.njit(cache=True, nogil=True)
def bin_words(words, start, state, frames, sensor_w, sensor_h, col, row, polarity, window_us, binary):
    """:func:`inputs.formats.evt2.bin_words` for EVT 3.0 words: the same arguments, state slots,
    drops, counts and stops. A word's events share one time, so the pass stops (``NEXT_WINDOW``)
    *before* a word holding an event in the sensor at or after the window's end: called again from
    that index, it decodes the whole word (``col`` covers every x below ``MAX_X``)."""
    ys, pol, base_x, th, tl, tho, tlo, now = _registers(state)
    # the current step k holds times [k_start, k_end): one division per step, not per event
    t_max, win_start, win_end, last_t, k, k_start, k_end = load_window(state)
    read = outside_sensor = backwards = outside_crop = unused = in_window = 0
    stop = DONE
    i = start
    n = len(words)
    while i < n:
        w = np.int64(words[i])
        kind = w >> 12
        if kind == 2 or kind == 4 or kind == 5:  # EVT_ADDR_X, VECT_12, VECT_8
            if kind == 2:
                size = 1
                bits = np.int64(1)
                base = w & 0x7FF
                p = (w >> 11) & 1
            else:
                size = 12 if kind == 4 else 8
                bits = w & ((1 << size) - 1)
                base = base_x
                p = pol
            inside = outside = 0
            if ys < sensor_h and base + size <= sensor_w:  # (the usual case) every event in the sensor
                b = bits
                while b:
                    b &= b - 1
                    inside += 1
            else:
                for j in range(size):
                    if (bits >> j) & 1:
                        if ys < sensor_h and ((base + j) & 0xFFFF) < sensor_w:
                            inside += 1
                        else:
                            outside += 1
            if inside and now >= win_end:  # (then now >= t_max: no event of it goes back in time)
                state[NEXT_T] = now
                stop = NEXT_WINDOW
                break
            outside_sensor += outside
            if kind == 2:
                pol = p
            else:
                base_x = (base_x + size) & 0xFFFF
            if not inside:
                i += 1
                continue
            if now < t_max:  # earlier than an event already delivered: the reader drops it
                backwards += inside
                i += 1
                continue
            t = now
            t_max = t
            last_t = t
            read += inside
            my = row[ys]
            if my < 0:  # a row outside the crop: every event of the word
                outside_crop += inside
                i += 1
                continue
            if polarity == 0:
                c = p
                use = True
            else:  # merge; on and an ON event; off and an OFF one
                c = 0
                use = polarity == 1 or (polarity == 2) == (p == 1)
            b = bits
            while b:  # each event (set bit): outside the crop, else an unused polarity, else binned
                low = b & -b
                b ^= low
                xs = (base + LOW_BIT[low]) & 0xFFFF
                if xs >= sensor_w:  # (counted above)
                    continue
                mx = col[xs]
                if mx < 0:
                    outside_crop += 1
                    continue
                if not use:
                    unused += 1
                    continue
                ok, k, k_start, k_end = bin_event(frames, t, c, my, mx, binary, k, k_start, k_end, win_start, window_us)
                if not ok:
                    state[NEXT_T] = t
                    stop = BEFORE_WINDOW
                    break
                in_window += 1
            if stop != DONE:
                break
        else:
            ok, ys, pol, base_x, th, tl, tho, tlo, now = _control(kind, w, ys, pol, base_x, th, tl, tho, tlo, now)
            if not ok:
                stop = BAD_WORD
                break
        i += 1
    _store_registers(state, ys, pol, base_x, th, tl, tho, tlo, now)
    store_counts(state, t_max, last_t, read, outside_sensor, backwards, outside_crop, unused, in_window)
    return i, stop


class WindowBinner(evt2.WindowBinner):
    """:class:`inputs.formats.evt2.WindowBinner` over EVT 3.0 words (the same arguments, use and
    counters; :func:`inputs.formats.evt2.iter_windows` runs it over an :class:`Evt3File`)."""

    WORD_DTYPE: ClassVar[type] = np.uint16

    kernel = staticmethod(bin_words)

    def __init__(self, sensor: tuple[int, int], x0: int, y0: int, factor: int, width: int, height: int,
                 channels: int, polarity: str, steps: int, window_us: int, binary: bool,
                 span: tuple[int, int] | None = None) -> None:  # fmt: skip
        super().__init__(sensor, x0, y0, factor, width, height, channels, polarity, steps, window_us, binary, span)
        self.sensor = (min(int(sensor[0]), MAX_X), min(int(sensor[1]), MAX_Y))
        self.col = evt2._axis_map(x0, factor, self.span[0], MAX_X)
        self.state = new_state()


__all__ = ["Evt3File", "WindowBinner", "count_events", "decode_words", "iter_evt3", "iter_windows", "open_evt3",
           "read_evt3", "bin_words"]  # fmt: skip
