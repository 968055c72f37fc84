"""``python -m runtime.stream FILE --model model.nir --target NAME``: predictions as the events arrive.

The recording is read in chunks (:func:`inputs.formats.readers.open_events`: any supported format, bounded
memory), each event is mapped from the sensor to the model's input (a crop, a downsampling by
pooling ``factor x factor`` pixels, polarity channels), and the events are binned into steps of the
model's input bin (the binning recorded with the graph's dataset, else the graph's ``dt``). Every
window of ``--window-steps`` steps (default: the graph's T) runs on the target one step after the
other, the neuron state kept from window to window (``--reset-per-window`` starts each window
from rest, which is how the model was trained on fixed-length samples).

EVT 2.0 and EVT 3.0 files (Prophesee Gen3 and later, up to tens of millions of events per second) take a
fused path (``--fused``, on by default): :class:`inputs.formats.evt2.WindowBinner` (EVT 3.0:
:class:`inputs.formats.evt3.WindowBinner`) decodes the words,
maps and bins each event straight into the window's frames in one compiled loop, with the same
windows, frames, drops and counts as the generic path (reader, then :class:`SensorMap`, then
:meth:`SensorMap.frames`; tested equal), at about 200 M events/s on one core instead of about 9 M.
(EVT 3.0: about 45 M events/s instead of about 12 M; the Gen4.1 sample streams at about 9x real
time instead of about 2.5x; ``python -m bench.stream --only evt3``.) A word of no
EVT 2.0 / 3.0 type is an error naming its byte offset when the pass reaches it (the generic path
scans the whole file first). EVT 3.0 word types follow Prophesee's specification where expelliarmus,
the generic path's decoder, differs (see :mod:`inputs.formats.evt3`): an ``EXT_TRIGGER`` (0xA) word is
skipped (the generic path refuses the file), a 0xC word is an error (the generic path skips it).

Output: one JSON line per window (start and end time in µs, events, predicted class, per-class
output spike counts, latency) on stdout or into ``--out``, then a summary (events read, events
dropped and why, windows, wall time, events per second, real-time factor = recording time /
processing time (``null`` when the events span no time), latency per window; ``startup``: process
start to the first window's output, stage by stage, see :func:`process_age_s`); ``--plot`` draws the
event rate with the predicted class.

The predicted class is the ``argmax`` of the window's class scores, a tied maximum going to the
lowest class index (the window record says ``"tied": true``). With a spike readout a window without
any output spike predicts no class (``null``). With an LI readout the ``counts`` are the window's
scores (the LI membrane summed over the window's steps; floats in float precision).

Targets: ``eventsim``, ``torch`` and ``onnx`` (``model.step.onnx``) keep state between windows;
any other registered target (``lava``, ``norse``, ...) runs each window from rest and needs
``--reset-per-window``.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from core import MAX_STEPS
from core.config import parse_config
from core.errors import ConfigError, DataError, SnnDeployError, error_line
from core.fileio import (
    append_line,
    exclusive,
    save_figure,
    writable_file,
    writable_folder,
    write_json_atomic,
    write_text_atomic,
)
from inputs.events import Binning, bin_events_counted, empty_events
from inputs.formats.readers import DEFAULT_CHUNK_EVENTS, FORMATS, open_events, resolve_format
from runtime.latency import run_aligned
from targets import DEVICES, TARGETS, TargetInfo, require_target
from targets.plan import DIALECTS, Plan, load_plan


@dataclass
class StreamConfig:
    file: str = field(default="", metadata={"help": "event file (format detected from its header), or a folder or a quoted glob of many: each streamed on its own, in parallel", "positional": True,
                                              "extra_hint": "one FILE: for many recordings, quote the pattern ('rec/*.h5') or name their folder"})  # fmt: skip
    model: str = field(default="", metadata={"help": "the .nir graph to run"})
    target: str = field(default="eventsim", metadata={"help": "target: " + ", ".join(TARGETS)})
    format: str | None = field(default=None, metadata={"help": "event file format (default: detected): " + ", ".join(FORMATS)})  # fmt: skip
    sensor_size: str | None = field(default=None, metadata={"help": "sensor WxH where the file states none (e.g. 128x128), or in place of the size it states"})  # fmt: skip
    crop: str | None = field(default=None, metadata={"help": "sensor region X0,Y0,W,H fed to the model (default: centred)"})  # fmt: skip
    downsample: int | None = field(default=None, metadata={"min": 1, "help": "pool factor x factor pixels (default: the largest that fits)"})  # fmt: skip
    polarity: str = field(default="auto", metadata={"help": "auto (2 channels: OFF/ON; 1 channel: merged), split, merge, on, off",
                                                    "choices": ["auto", "split", "merge", "on", "off"]})  # fmt: skip
    bin_us: int | None = field(default=None, metadata={"min": 1, "help": "µs per step (default: the model's recorded binning, else its dt)"})  # fmt: skip
    window_steps: int | None = field(default=None, metadata={"min": 1, "max": MAX_STEPS, "help": "steps per prediction window (default: the model's T)"})  # fmt: skip
    dt: float | None = field(default=None, metadata={"positive": True, "help": "time step in s of a graph another tool wrote (default: the graph's, else the dialect's)"})  # fmt: skip
    dialect: str | None = field(default=None, metadata={"help": "run the graph as the library that wrote it does: " + ", ".join(DIALECTS)})  # fmt: skip
    reset_per_window: bool = field(default=False, metadata={"help": "start every window from rest"})
    t0_us: int | None = field(default=None, metadata={"min": 0, "help": "start of the first window, µs (default: the first event's time rounded down to a window)"})  # fmt: skip
    labels: str | None = field(default=None, metadata={"help": "JSON of labelled time slots (inputs.recording writes one): score the windows"})  # fmt: skip
    binary: bool | None = field(default=None, metadata={"help": "clip each step's count to one spike (default: as recorded)"})  # fmt: skip
    chunk_events: int = field(default=DEFAULT_CHUNK_EVENTS, metadata={"min": 1, "help": "events read per chunk (EVT 2.0 / 3.0 with --fused: words)"})  # fmt: skip
    fused: bool = field(default=True, metadata={"help": "EVT 2.0 and 3.0 files: decode, map and bin in one compiled pass over the words (false: the generic reader, then the map, then the binning; the same output, slower)"})  # fmt: skip
    out: str | None = field(default=None, metadata={"help": "JSON-lines file for the windows (default: stdout); its summary goes to <out>.summary.json"})  # fmt: skip
    plot: str | None = field(default=None, metadata={"help": "write a PNG of event rate and predicted class over time"})
    device: str = field(default="auto", metadata={"help": "torch target: auto, cpu or cuda", "choices": list(DEVICES)})
    threads: int = field(default=1, metadata={"min": 1, "help": "CPU threads of the torch and onnx targets (batch size 1 gains nothing from more)"})  # fmt: skip
    progress: bool = field(default=True, metadata={"help": "show a progress bar (with --out)"})
    file_labels: str | None = field(default=None, metadata={"help": "many files: CSV of file,label (default: labels.csv in the folder, if any); each recording's majority class is scored"})  # fmt: skip
    workers: int | None = field(default=None, metadata={"min": 1, "help": "many files: worker processes (default: one per core, at most one per file)"})  # fmt: skip
    cluster: str = field(default="local", metadata={"help": "many files: local, ray (RAY_ADDRESS, else a local Ray instance) or ray://host:port"})  # fmt: skip


# ---------------------------------------------------------------------------------------------
# From the sensor to the model's input


@dataclass(frozen=True)
class SensorMap:
    """Sensor pixel ``(x, y)`` -> model pixel ``((x - x0) // factor, (y - y0) // factor)``, for the
    ``span_x`` columns and ``span_y`` rows from ``(x0, y0)`` (a ``--crop`` smaller than the model's input
    times ``factor`` feeds only its own pixels)."""

    x0: int
    y0: int
    factor: int
    width: int  # model input columns
    height: int  # model input rows
    channels: int  # model input channels
    polarity: str  # split, merge, on, off
    span_x: int  # sensor columns fed: at most width * factor
    span_y: int  # sensor rows fed: at most height * factor

    @classmethod
    def default(cls, sensor: tuple[int, int], shape: tuple[int, ...], crop: str | None, factor: int | None,
                polarity: str) -> SensorMap:  # fmt: skip
        if len(shape) != 3:
            raise ConfigError(
                f"the model takes input of shape {shape}; streaming needs a (channels, height, width) input"
            )
        c, h, w = shape
        sw, sh = sensor
        if crop:
            try:
                x0, y0, cw, ch = (int(v) for v in crop.split(","))
            except ValueError:
                raise ConfigError(f"--crop must be X0,Y0,W,H (integers), got {crop!r}") from None
            if cw < 1 or ch < 1:
                raise ConfigError(f"--crop width and height must be positive, got {crop!r}")
            if x0 < 0 or y0 < 0 or x0 + cw > sw or y0 + ch > sh:
                raise ConfigError(f"--crop {crop} reaches outside the {sw}x{sh} sensor (columns 0..{sw - 1}, rows "
                                  f"0..{sh - 1}): no event there could reach the model")  # fmt: skip
            factor = factor or max(1, min(cw // w, ch // h))
            if cw < factor or ch < factor:
                raise ConfigError(f"--crop {crop} is narrower than one model pixel pooling {factor}x{factor} sensor "
                                  "pixels (--downsample)")  # fmt: skip
        else:
            factor = factor or max(1, min(sw // w, sh // h))
            x0, y0 = (sw - w * factor) // 2, (sh - h * factor) // 2
            cw, ch = w * factor, h * factor
        if factor < 1:
            raise ConfigError(f"--downsample must be >= 1, got {factor}")
        if polarity == "auto":
            polarity = "split" if c == 2 else "merge"
        if (polarity == "split") != (c == 2) or c not in (1, 2):
            raise ConfigError(f"--polarity {polarity} does not fit a model with {c} input channel(s)")
        span_x, span_y = min(cw, w * factor) // factor * factor, min(ch, h * factor) // factor * factor
        return cls(x0, y0, factor, w, h, c, polarity, span_x, span_y)

    def coverage_note(self, sensor: tuple[int, int]) -> str | None:
        """A note when the sensor reaches less than half of the model's columns or rows (a ``--downsample``
        too large for it, or a sensor smaller than the model's input): the rest never receives an event."""
        sw, sh = sensor
        cols = (max(0, -self.x0) // self.factor, (min(sw - self.x0, self.span_x) - 1) // self.factor)
        rows = (max(0, -self.y0) // self.factor, (min(sh - self.y0, self.span_y) - 1) // self.factor)
        if 2 * (cols[1] - cols[0] + 1) >= self.width and 2 * (rows[1] - rows[0] + 1) >= self.height:
            return None
        return (f"events reach only columns {cols[0]}..{cols[1]} and rows {rows[0]}..{rows[1]} of the model's "
                f"{self.width}x{self.height} input (the {sw}x{sh} sensor's {self.span_x}x{self.span_y} pixels from "
                f"({self.x0}, {self.y0}), pooled {self.factor}x{self.factor}): the rest never receives one "
                "(--crop, --downsample)")  # fmt: skip

    def __call__(self, events: np.ndarray) -> tuple[np.ndarray, int, int]:
        """Model-pixel events, and how many fell outside the region or had the unused polarity.
        (int32 in place and ``take``, not int64 and a boolean mask: 4x the events per second.)"""
        x = events["x"].astype(np.int32)
        y = events["y"].astype(np.int32)
        x -= self.x0
        y -= self.y0
        inside = (x >= 0) & (x < self.span_x) & (y >= 0) & (y < self.span_y)
        x //= self.factor
        y //= self.factor
        keep = inside & ((events["p"] != 0) == (self.polarity == "on")) if self.polarity in ("on", "off") else inside
        idx = np.flatnonzero(keep)
        out = events.take(idx)
        out["x"], out["y"] = x.take(idx), y.take(idx)
        n_inside = int(np.count_nonzero(inside))
        return out, len(events) - n_inside, n_inside - len(idx)

    def frames(self, events: np.ndarray, binning: Binning) -> np.ndarray:
        """``(steps, channels, height, width)`` input frames of one window."""
        frames, _ = bin_events_counted(events, binning)  # (steps, 2, H, W); the window is chosen by the caller
        if self.channels == 1:
            frames = frames.sum(axis=1, keepdims=True)
            if binning.binary:
                np.minimum(frames, 1, out=frames)
        return frames


def _not_events(plan: Plan) -> str | None:
    """Why the graph's predictions on events mean little, when its dataset was encoded frames."""
    desc = plan.meta.get("dataset") or {}
    if desc.get("binning") or not desc.get("encoder"):
        return None
    return (f"the graph was trained on {desc.get('name')!r}, frames made by the {desc['encoder'].get('name')!r} "
            "encoder, not on events: its predictions on an event recording mean little")  # fmt: skip


def timing(plan: Plan, cfg: StreamConfig) -> tuple[int, int, bool]:
    """``(bin_us, window_steps, binary)``: the flags, else the graph's recorded binning, else its dt and T."""
    recorded = (plan.meta.get("dataset") or {}).get("binning") or {}
    if cfg.bin_us is not None:
        bin_us = cfg.bin_us
    elif recorded:
        bin_us = max(1, int(recorded["duration_us"]) // int(recorded["steps"]))
    else:
        bin_us = max(1, round(float(plan.meta["dt"]) * 1e6))
    steps = cfg.window_steps or plan.steps or int(recorded.get("steps", 0)) or 8
    binary = cfg.binary if cfg.binary is not None else bool(recorded.get("binary", True))
    if bin_us < 1 or steps < 1:
        raise ConfigError(f"--bin-us and --window-steps must be >= 1, got {bin_us} and {steps}")
    return bin_us, steps, binary


# ---------------------------------------------------------------------------------------------
# Targets


class WindowRunner:
    """Any registered target, each window run from rest through its ``run`` (aligned for its latency)."""

    def __init__(self, info: TargetInfo, plan: Plan) -> None:
        self.info, self.plan = info, plan

    def reset(self) -> None:
        pass

    def feed(self, frames: np.ndarray) -> np.ndarray:
        return run_aligned(self.info, self.plan, frames[:, None]).counts[0]


def stepper(target: str, plan: Plan, reset_per_window: bool, device: str = "auto", threads: int = 1):
    """An object with ``reset()`` and ``feed(frames (t, C, H, W)) -> output counts (classes,)``."""
    chosen = (("device",) if device != "auto" else ()) + (("threads",) if threads != 1 else ())
    info = require_target(target, chosen)
    if plan.precision not in info.precisions:
        raise ConfigError(f"the {target} target does not run {plan.precision} precision")
    if info.streams:
        options = {k: v for k, v in {"device": device, "threads": threads}.items() if k in info.options}
        return info.streamer()(plan, **options)
    if not reset_per_window:
        stateful = ", ".join(t.name for t in TARGETS.values() if t.streams)
        raise ConfigError(
            f"the {target} target runs whole windows from rest and cannot keep state between them: add "
            f"--reset-per-window (targets that keep state: {stateful})"
        )
    return WindowRunner(info, plan)


# ---------------------------------------------------------------------------------------------
# Start-up


def process_age_s() -> float | None:
    """Seconds since this process started, by the kernel's clock: Linux's ``/proc/self/stat`` start time
    (clock ticks since boot, 10 ms resolution) against ``CLOCK_BOOTTIME``; else psutil's creation time
    where psutil is installed; else None. The start is the fork that made the process (for a command,
    microseconds before the interpreter starts), so the age includes the interpreter's own start."""
    try:
        after_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()  # fields 3, 4, ... of proc(5)
        return time.clock_gettime(time.CLOCK_BOOTTIME) - int(after_name[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil

        return time.time() - psutil.Process().create_time()
    except Exception:  # not installed, or no process table to read
        return None


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def update(self, n: int = 1) -> None:
        pass


def progress_bar(shown: bool, **options):
    """tqdm's bar on stderr, imported only when it is shown (its import is a twentieth of a warm start)."""
    if not shown:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(file=sys.stderr, leave=False, **options)


# ---------------------------------------------------------------------------------------------
# The stream


def _size_note(stated: tuple[int, int] | None, sensor: tuple[int, int]) -> str | None:
    """A note when ``--sensor-size`` replaced the size the file states."""
    if stated is None or tuple(stated) == tuple(sensor):
        return None
    return f"--sensor-size {sensor[0]}x{sensor[1]} replaced the {stated[0]}x{stated[1]} sensor the file states"


def _sensor(cfg: StreamConfig, stated: tuple[int, int] | None) -> tuple[int, int] | None:
    if cfg.sensor_size is None:
        return stated
    try:
        w, h = (int(v) for v in cfg.sensor_size.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--sensor-size must be WxH (e.g. 128x128), got {cfg.sensor_size!r}") from None
    if w < 1 or h < 1:
        raise ConfigError(f"--sensor-size must be positive, got {cfg.sensor_size!r}")
    return (w, h)


FUSED = {"evt2": ("inputs.formats.evt2", "open_evt2"), "evt3": ("inputs.formats.evt3", "open_evt3")}
"""Formats with a fused decode, map and bin pass: ``{format: (module, its file opener)}``."""


def _open_raw(cfg: StreamConfig, fmt: str):
    """``(module, Evt2File or Evt3File)`` of :mod:`inputs.formats.evt2` / :mod:`inputs.formats.evt3` for
    an EVT 2.0 / 3.0 file with ``--fused`` (the generic reader, and its decoder's import, are not
    needed then), else ``(None, None)``."""
    if fmt not in FUSED or not cfg.fused:
        return None, None
    import importlib

    name, opener = FUSED[fmt]
    module = importlib.import_module(name)
    return module, getattr(module, opener)(cfg.file)


def stream(cfg: StreamConfig, emit=None, plan: Plan | None = None) -> dict[str, Any]:
    """Stream ``cfg.file`` through the model; ``emit(record)`` receives every window's record.
    ``plan``: ``cfg.model`` already loaded (many recordings in one worker load it once)."""
    t_enter = time.perf_counter()
    plan = plan or load_plan(cfg.model, dt=cfg.dt, dialect=cfg.dialect)
    t_graph = time.perf_counter()
    fmt = resolve_format(cfg.file, cfg.format)
    module, raw_file = _open_raw(cfg, fmt)
    if raw_file is None:
        events = open_events(cfg.file, fmt, sensor_size=_sensor(cfg, None), chunk_events=cfg.chunk_events)
        stated = events.stated_size
    else:
        events, stated = None, (raw_file.width, raw_file.height) if raw_file.width else None
    sensor = _sensor(cfg, stated)
    if sensor is None:
        raise ConfigError(f"{cfg.file}: the {fmt} file states no sensor size; pass --sensor-size WxH")
    mapper = SensorMap.default(sensor, plan.input_shape, cfg.crop, cfg.downsample, cfg.polarity)
    bin_us, steps, binary = timing(plan, cfg)
    window_us = bin_us * steps
    fused = None
    if module is not None:  # its kernel loaded (or compiled) now, before the clock starts
        fused = module.WindowBinner(sensor, mapper.x0, mapper.y0, mapper.factor, mapper.width, mapper.height,
                                    mapper.channels, mapper.polarity, steps, window_us, binary,
                                    (mapper.span_x, mapper.span_y))  # fmt: skip
        fused.warm()
    slots = load_slots(cfg.labels) if cfg.labels else None
    t_open = time.perf_counter()
    run = stepper(cfg.target, plan, cfg.reset_per_window, cfg.device, cfg.threads)
    t_target = time.perf_counter()
    # the first call loads (or compiles) the target's code before the clock starts: latencies are steady-state
    run.feed(np.zeros((steps, *plan.input_shape), np.float32))
    run.reset()
    startup_s = time.perf_counter() - t_target
    h, w = plan.input_shape[1:]
    dropped = {"outside_crop": 0, "unused_polarity": 0}
    windows: list[dict[str, Any]] = []
    pending: list[np.ndarray] = []
    t_start = t_first = t_last = first_output = None
    used = 0
    start_wall = time.perf_counter()

    def take_pending() -> tuple[np.ndarray, int]:
        """The window's frames and events, from the mapped events gathered for it."""
        nonlocal pending
        evs = np.concatenate(pending) if pending else empty_events()
        pending = []
        return mapper.frames(evs, Binning(steps, window_us, h, w, binary=binary, t0_us=int(t_start))), len(evs)

    take = fused.take if fused is not None else take_pending  # the fused pass binned them as it read them

    def close_window(final: bool = False) -> None:
        nonlocal t_start, used, first_output
        t0 = time.perf_counter()
        frames, n_events = take()
        if cfg.reset_per_window:
            run.reset()
        counts = np.asarray(run.feed(frames))
        if not (plan.scores and plan.precision == "float"):
            counts = counts.astype(np.int64)
        used += n_events
        decided = plan.scores or counts.any()  # a spike readout without any output spike predicts nothing
        rec = {"window": len(windows), "start_us": int(t_start), "end_us": int(t_start + window_us),
               "events": n_events, "class": int(counts.argmax()) if decided else None,
               "tied": bool(decided and (counts == counts.max()).sum() > 1),
               "counts": counts.tolist(), "latency_ms": 1e3 * (time.perf_counter() - t0)}  # fmt: skip
        if slots is not None:
            rec["label"] = label_of(slots, rec["start_us"], rec["end_us"])
        if final:
            rec["partial"] = True
        windows.append(rec)
        if emit is not None:
            emit(rec)
        if first_output is None:
            first_output = time.perf_counter()
        t_start += window_us

    def first_window(t: int) -> int:
        """The first window's start for the first event's time ``t``."""
        start = cfg.t0_us if cfg.t0_us is not None else t - t % window_us
        if start > t:
            raise ConfigError(f"--t0-us {start} is after the first event ({t} µs)")
        return start

    with progress_bar(bool(cfg.progress and cfg.out), desc="streaming", unit="ev", unit_scale=True) as bar:
        for first, words in raw_file.chunks(cfg.chunk_events) if raw_file is not None else ():
            i = 0
            while True:  # the pass stops at every event beyond its window (and at the first event)
                i, stop = fused.run(words, i)
                if stop == fused.DONE:
                    break
                if stop == fused.BAD_WORD:
                    raise raw_file.bad_word(first + i, int(words[i]))
                t = fused.next_t
                if t_start is None:
                    t_first = t
                    t_start = first_window(t)
                    fused.start(t_start)
                _check_gap(cfg.file, t_start, t, window_us)
                while t >= t_start + window_us:
                    close_window()
            bar.update(len(words))
        if fused is not None and t_start is not None:
            t_last = fused.last_t
        for chunk in events.chunks() if fused is None else ():
            if len(chunk) == 0:
                continue
            if t_start is None:
                t_first = int(chunk["t"][0])
                t_start = first_window(t_first)
            t_last = int(chunk["t"][-1])
            _check_gap(cfg.file, t_start, t_last, window_us)
            mapped, outside, unused = mapper(chunk)
            dropped["outside_crop"] += outside
            dropped["unused_polarity"] += unused
            while len(mapped) and mapped["t"][-1] >= t_start + window_us:  # events beyond this window
                cut = int(np.searchsorted(mapped["t"], t_start + window_us, side="left"))
                pending.append(mapped[:cut])
                mapped = mapped[cut:]
                close_window()
            pending.append(mapped)
            bar.update(len(chunk))
        if t_start is not None:
            while t_start + window_us <= t_last:
                close_window()
            close_window(final=True)  # the window holding the last events, cut short by the recording's end
    wall = time.perf_counter() - start_wall
    counters = events.counters if raw_file is None else {**fused.counters, "truncated_bytes": raw_file.tail_bytes}
    if fused is not None:
        dropped = {k: dropped[k] + v for k, v in fused.dropped.items()}
    if t_first is None:
        raise DataError(f"{cfg.file}: the file holds no events" + _dropped_note(counters))
    span_s = (t_last - t_first) / 1e6
    lat = np.array([w_["latency_ms"] for w_ in windows])
    summary = {
        "file": str(cfg.file), "format": fmt, "sensor_size": list(sensor), "model": str(cfg.model),
        "target": cfg.target, "precision": plan.precision, "mapping": asdict(mapper),
        "bin_us": bin_us, "window_steps": steps, "window_us": window_us, "binary": binary,
        "reset_per_window": cfg.reset_per_window,
        "events_read": int(counters.get("events", 0)), "events_used": used,
        "dropped": {**{k: int(v) for k, v in counters.items() if k != "events" and v}, **{k: v for k, v in dropped.items() if v}},
        "windows": len(windows), "startup_s": startup_s,
        "startup": {"graph_s": t_graph - t_enter, "open_s": t_open - t_graph, "target_s": t_target - t_open,
                    "first_call_s": startup_s, "first_window_s": first_output - start_wall,
                    "steady_window_ms": float(np.median(lat[1:])) if len(lat) > 1 else None,
                    "kernels": _kernels(cfg.target)},
        "wall_s": wall, "events_per_s": counters.get("events", 0) / wall if wall else None,
        "recording_s": span_s, "real_time_factor": span_s / wall if span_s and wall else None,
        "latency_ms": {"mean": float(lat.mean()), "p50": float(np.median(lat)), "p95": float(np.percentile(lat, 95)),
                       "max": float(lat.max())},
        "classes": _class_histogram(windows),
        "output": plan.output_kind,
        "note": "; ".join(n for n in (_not_events(plan), _size_note(stated, sensor), mapper.coverage_note(sensor))
                          if n) or None,
        "tied_windows": sum(w["tied"] for w in windows),
        "class_names": (plan.meta.get("dataset") or {}).get("class_names"),
    }  # fmt: skip
    if slots is not None:
        summary["scored"] = score(windows)
    return {"summary": summary, "windows": windows}


def load_slots(labels_path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(starts, ends, labels)`` of a labels file (``{"samples": [{start_us, end_us, label}]}``)."""
    path = Path(labels_path)
    if not path.is_file():
        raise DataError(f"labels file {labels_path} {'is a folder' if path.is_dir() else 'does not exist'}")
    form = '{"samples": [{"start_us": ..., "end_us": ..., "label": ...}, ...]}, as inputs.recording writes'
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise DataError(f"labels file {labels_path} is not JSON ({e}); it must hold {form}") from None
    except OSError as e:
        raise DataError(f"labels file {labels_path} cannot be read: {e.strerror or e}") from None
    slots = data.get("samples") if isinstance(data, dict) else None
    if not isinstance(slots, list):
        raise DataError(f"labels file {labels_path} holds no list 'samples'; it must hold {form}")
    keys = ("start_us", "end_us", "label")
    for i, slot in enumerate(slots):
        values = [slot.get(k) for k in keys] if isinstance(slot, dict) else [None]
        if not all(isinstance(v, int) and not isinstance(v, bool) and abs(v) < 1 << 62 for v in values):
            raise DataError(f"labels file {labels_path}: slot {i} must give the integers {', '.join(keys)}, got "
                            f"{slot!r:.200}")  # fmt: skip
    starts, ends, labels = (np.array([s[k] for s in slots], np.int64).reshape(-1) for k in keys)
    # label_of looks a window up by its start: slots must follow one another (it read others silently wrong)
    bad = np.flatnonzero((ends <= starts) | np.r_[False, starts[1:] < ends[:-1]])
    if bad.size:
        i = int(bad[0])
        raise DataError(f"labels file {labels_path}: slot {i} ({starts[i]}..{ends[i]} µs) is empty or starts before "
                        "the slot before it ends; slots must be in time order without overlap")  # fmt: skip
    return starts, ends, labels


def label_of(slots, start_us: int, end_us: int) -> int | None:
    """The label of the slot holding the window's middle, if any."""
    starts, ends, truth = slots
    mid = (start_us + end_us) / 2
    i = int(np.searchsorted(starts, mid, side="right")) - 1
    return int(truth[i]) if i >= 0 and mid < ends[i] else None


def score(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy of the windows that have a label."""
    labelled = [w for w in windows if w.get("label") is not None]
    hits = sum(w["class"] == w["label"] for w in labelled)
    return {"windows": len(labelled), "correct": hits, "accuracy": hits / len(labelled) if labelled else None}


MAX_WINDOWS_PER_GAP = 100_000


def _kernels(target: str) -> str | None:
    """Which code ran eventsim's kernels (ahead of time, or numba's JIT and why): start-up depends on it."""
    if target != "eventsim":
        return None
    from targets.eventsim import aot

    return aot.describe()


def _check_gap(path: str, t_start: int, t_last: int, window_us: int) -> None:
    """A time jump that would make an absurd number of windows (a corrupt far-future timestamp)."""
    if (t_last - t_start) // window_us > MAX_WINDOWS_PER_GAP:
        raise DataError(
            f"{path}: events jump {(t_last - t_start) / 1e6:.1f} s ahead of the current window "
            f"({(t_last - t_start) // window_us:,} windows of {window_us} µs); a corrupt timestamp? "
            "Use a longer --window-steps or --bin-us if the recording really has such a gap"
        )


def _dropped_note(counters: dict[str, int]) -> str:
    dropped = {k: v for k, v in counters.items() if k != "events" and v}
    return f" (dropped: {dropped})" if dropped else ""


def _class_histogram(windows: list[dict[str, Any]]) -> dict[str, int]:
    hist: dict[str, int] = {}
    for w in windows:
        key = "none" if w["class"] is None else str(w["class"])
        hist[key] = hist.get(key, 0) + 1
    return hist


def plot(result: dict[str, Any], path: str | Path, class_names: list[str] | None = None) -> str:
    """Event rate over time (top) and the predicted class per window (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wins = result["windows"]
    t0 = wins[0]["start_us"]
    mid = np.array([(w["start_us"] + w["end_us"]) / 2 - t0 for w in wins]) / 1e6
    width = result["summary"]["window_us"] / 1e6
    rate = np.array([w["events"] for w in wins]) / width
    fig, (a, b) = plt.subplots(2, 1, figsize=(10, 5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    a.bar(mid, rate, width=width * 0.95, color="tab:blue")
    a.set(
        ylabel="events / s (model input)",
        title=f"{Path(result['summary']['file']).name} on {result['summary']['target']}",
    )
    a.grid(alpha=0.3)
    cls = np.array([-1 if w["class"] is None else w["class"] for w in wins])
    b.scatter(mid, cls, c=np.where(cls < 0, 0.5, cls), cmap="tab10", s=14, label="predicted")
    truth = [(m, w["label"]) for m, w in zip(mid, wins) if w.get("label") is not None]
    if truth:
        b.scatter(*zip(*truth), marker="x", color="k", s=22, lw=0.8, label="label")
        b.legend(fontsize=7, loc="upper right", ncol=2)
    b.set(xlabel="time (s)", ylabel="predicted class")
    n = len(wins[0]["counts"])
    b.set_yticks(range(-1, n), ["none"] + (class_names or [str(i) for i in range(n)]))
    b.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# Many recordings


def is_many(spec: str) -> bool:
    """Whether ``FILE`` names many recordings: a folder or a glob pattern."""
    return Path(spec).is_dir() or any(c in spec for c in "*?[")


def recordings(spec: str) -> list[Path]:
    """The recordings a folder (files with a known event extension) or a glob names, sorted by name."""
    if Path(spec).is_dir():
        exts = {e for f in FORMATS.values() for e in f.extensions}
        files = sorted(p for p in Path(spec).iterdir() if p.is_file() and p.suffix.lower() in exts)
        what = f"folder {spec} holds no event file (extensions {', '.join(sorted(exts))})"
    else:
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        what = f"the pattern {spec!r} matches no file"
    if not files:
        raise DataError(what)
    names = [p.name for p in files]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{spec}: recordings with the same file name in different folders ({', '.join(twice[:5])}): "
                          "their outputs would collide; name one folder at a time")  # fmt: skip
    return files


def read_file_labels(path: str | Path) -> dict[str, int]:
    """``file,label`` rows (a header row is allowed) -> {file name: label}."""
    from inputs.labels import read_label_rows

    return {
        Path(file).name: label for _, file, label in read_label_rows(path, header=False, key=lambda f: Path(f).name)
    }


def stream_one(cfg: StreamConfig, file: str) -> dict[str, Any]:
    """One recording of many, in a worker: :func:`stream` with ``file`` (no progress bar of its own)."""
    from runtime.parallel import _one_thread, _plan

    _one_thread()
    plan = _plan(str(Path(cfg.model).resolve()), cfg.dt, None, cfg.dialect)
    return stream(replace(cfg, file=file, progress=False), plan=plan)


def majority(windows: list[dict[str, Any]]) -> int | None:
    """The class most windows predict (ties: the lowest index); None when no window predicts one."""
    hist = {int(k): v for k, v in _class_histogram(windows).items() if k != "none"}
    return min(hist, key=lambda k: (-hist[k], k)) if hist else None


def stream_many(cfg: StreamConfig, out: Path, files: list[Path] | None = None) -> dict[str, Any]:
    """Every recording ``cfg.file`` names, over ``--workers`` processes (or a Ray cluster): per
    recording ``<out>/<name>.jsonl`` and its ``.summary.json`` (what a single-file run with that
    ``--out`` writes), each written whole as soon as the recording is done (a failure or Ctrl-C later
    keeps them); then ``<out>/summary.json``. ``files``: :func:`recordings` of ``cfg.file``, when known."""
    from runtime.parallel import map_ordered, open_pool, resolve_workers

    files = files or recordings(cfg.file)
    labels_path = cfg.file_labels or (Path(cfg.file) / "labels.csv" if Path(cfg.file).is_dir() else None)
    labels = read_file_labels(labels_path) if labels_path and (cfg.file_labels or Path(labels_path).is_file()) else None
    plan = load_plan(cfg.model, dt=cfg.dt, dialect=cfg.dialect)  # errors in the graph before any worker starts
    stepper(cfg.target, plan, cfg.reset_per_window, cfg.device, cfg.threads)  # the target and its options, likewise
    workers = resolve_workers(cfg.workers, len(files), 1, cfg.cluster, min_per_worker=1)
    entries: dict[int, dict[str, Any]] = {}  # per finished recording: its line in the summary

    def finished(i: int, res: dict[str, Any]) -> None:
        f = files[i]
        res["summary"] |= {"file": str(f), "model": str(cfg.model)}  # as named here, not the workers' absolute paths
        lines = out / f"{f.name}.jsonl"
        write_text_atomic(lines, "".join(json.dumps(w) + "\n" for w in res["windows"]))
        write_json_atomic(lines.with_name(lines.name + ".summary.json"), res["summary"])
        s = res["summary"]
        entries[i] = {"file": str(f), "windows": s["windows"], "events_read": s["events_read"], "wall_s": s["wall_s"],
                      "real_time_factor": s["real_time_factor"], "class": majority(res["windows"]), "lines": str(lines)}  # fmt: skip
        if labels is not None:
            entries[i]["label"] = labels.get(f.name)
        res["windows"] = []  # written: not kept in memory for the rest of the run
        bar.update(1)

    t0 = time.perf_counter()
    bar = progress_bar(cfg.progress, total=len(files), desc="recordings", unit="file")
    with bar, open_pool(workers, cfg.cluster, [require_target(cfg.target).module, "runtime.stream"]) as pool:
        workers = pool.workers if pool is not None else 1
        absolute = replace(cfg, model=str(Path(cfg.model).resolve()))  # workers may start elsewhere
        results = map_ordered(pool, stream_one, [(absolute, str(f.resolve())) for f in files], [str(f) for f in files],
                              finished)  # fmt: skip
    wall = time.perf_counter() - t0
    per_file = [entries[i] for i in range(len(files))]
    scored = [e for e in per_file if e.get("label") is not None]
    summary = {
        "files": len(files), "model": str(cfg.model), "target": cfg.target, "workers": workers, "cluster": cfg.cluster,
        "wall_s": wall, "windows": sum(e["windows"] for e in per_file),
        "events_read": sum(e["events_read"] for e in per_file),
        "recording_s": sum(r["summary"]["recording_s"] for r in results),
        "class_rule": "a recording's class is the class most of its windows predict (a tie: the lowest index)",
        "recordings": per_file,
    }  # fmt: skip
    summary["events_per_s"] = summary["events_read"] / wall if wall else None
    if labels is not None:
        hits = sum(e["class"] == e["label"] for e in scored)
        summary["scored"] = {"labels": str(labels_path), "recordings": len(scored), "correct": hits,
                             "accuracy": hits / len(scored) if scored else None,
                             "unlabelled": [e["file"] for e in per_file if e.get("label") is None][:20]}  # fmt: skip
    write_json_atomic(out / "summary.json", summary)
    return summary


def main_many(cfg: StreamConfig) -> int:
    files = recordings(cfg.file)  # (an empty folder says so before the flags it would need)
    if not cfg.out:
        raise ConfigError("many recordings need --out FOLDER: one JSON-lines file per recording and summary.json")
    if cfg.plot:
        raise ConfigError("--plot draws one recording: stream that file on its own")
    if cfg.labels:
        raise ConfigError("--labels holds the time slots of one recording; many recordings take --file-labels (file,label CSV)")  # fmt: skip
    out = writable_folder(cfg.out, "--out")
    with exclusive(f"{out.resolve()}/runtime.stream", f"the recordings' outputs in {out}"):
        s = stream_many(cfg, out, files)
    print(f"{s['files']} recordings, {s['windows']} windows, {s['events_read']:,} events in {s['wall_s']:.2f} s on "
          f"{s['workers']} worker(s) ({s['cluster']}): {s['events_per_s']:,.0f} events/s", file=sys.stderr)  # fmt: skip
    if "scored" in s:
        sc = s["scored"]
        missing = s["files"] - sc["recordings"]
        unlabelled = (f"; {missing} recording(s) without a label, not scored: "
                      f"{', '.join(Path(f).name for f in sc['unlabelled'][:5])}{', ...' if missing > 5 else ''}")  # fmt: skip
        print(f"against {sc['labels']}: {sc['correct']}/{sc['recordings']} labelled recordings correct "
              f"({_percent(sc['accuracy'])}){unlabelled if missing else ''}", file=sys.stderr)  # fmt: skip
    print(f"windows: {out}/<file>.jsonl; summary: {out / 'summary.json'}", file=sys.stderr)
    return 0


def _percent(accuracy: float | None) -> str:
    """An accuracy as a percentage; "n/a" when nothing was scored (0/0 read as 0.0%)."""
    return "n/a: none has a label" if accuracy is None else f"{100 * accuracy:.1f}%"


STREAM_MEMORY_HINT = "shorter windows (--window-steps) or fewer events per chunk (--chunk-events) need less"


def main(argv: list[str] | None = None) -> int:
    cfg, many = None, False
    started: list[float | None] = []  # the process's age when its first window was written
    try:
        cfg = parse_config(StreamConfig, argv, "python -m runtime.stream", __doc__)
        if not cfg.file or not cfg.model:
            raise ConfigError("give the event file and --model model.nir")
        many = is_many(cfg.file)
        if many:
            return main_many(cfg)
        if cfg.file_labels:
            raise ConfigError("--file-labels labels many recordings (a folder or a pattern), one class each; one "
                              "recording's time slots take --labels")  # fmt: skip
        given = {"the recording": cfg.file, "the --model graph": cfg.model, "the --labels file": cfg.labels}
        out = writable_file(cfg.out, "--out", given) if cfg.out else None
        summary_path = writable_file(out.with_name(out.name + ".summary.json"), "the summary", given) if out else None
        if cfg.plot:
            plot_path = writable_file(cfg.plot, "--plot", given).resolve()
            if out is not None and plot_path in (out.resolve(), summary_path.resolve()):
                raise ConfigError(f"--plot {cfg.plot} is a file --out writes: the plot would replace it; name another")

        def emit(rec):
            line = json.dumps(rec)
            if out is None:
                print(line, flush=True)
            elif not started:  # an earlier run's windows are replaced by this run's first, in one rename
                write_text_atomic(out, line + "\n")
            else:
                append_line(out, line)
            if not started:
                started.append(process_age_s())

        # a second stream into the file would interleave its windows with this one's
        with exclusive(f"{out.resolve()}/runtime.stream", f"{out}") if out else contextlib.nullcontext():
            result = stream(cfg, emit)
            summary = result["summary"]
            summary["startup"] |= {"process_to_imports_s": IMPORTED_S, "process_to_first_output_s": started[0]}
            if cfg.plot:
                summary["plot"] = plot(result, cfg.plot, summary["class_names"])
            if out is not None:
                write_json_atomic(summary_path, summary)
            else:
                print(json.dumps({"summary": summary}), flush=True)
    except (SnnDeployError, OSError, MemoryError) as e:
        print(f"error: {error_line(e, STREAM_MEMORY_HINT)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = ""  # where the output written so far lies
        if cfg is not None and cfg.out and (many or started):
            kept = f"; the {'recordings finished before it' if many else 'windows so far'} are in {cfg.out}"
        print(f"interrupted: the workers were stopped; no summary was written{kept}", file=sys.stderr)
        return 130
    s = summary
    print(
        f"{s['windows']} windows, {s['events_read']:,} events read, {s['events_used']:,} used, dropped: "
        f"{s['dropped'] or 'none'}; {s['wall_s']:.2f} s wall for {s['recording_s']:.3f} s of recording: "
        f"real-time factor {_factor(s['real_time_factor'])}, {s['events_per_s']:,.0f} events/s; latency per window "
        f"{s['latency_ms']['p50']:.2f} ms median, {s['latency_ms']['max']:.2f} ms max",
        file=sys.stderr,
    )
    st = s["startup"]
    print(f"start-up: first window out {_s(st['process_to_first_output_s'])} after the process started (imports "
          f"{_s(st['process_to_imports_s'])}, graph {_s(st['graph_s'])}, target {_s(st['target_s'])}, first call "
          f"{_s(st['first_call_s'])}, first window {_s(st['first_window_s'])}); then {st['steady_window_ms'] or 0:.2f} ms "
          "per window" + (f"; eventsim's kernels: {st['kernels']}" if st.get("kernels") else ""), file=sys.stderr)  # fmt: skip
    if s["note"]:
        print(f"note: {s['note']}", file=sys.stderr)
    silent = s["classes"].get("none", 0)
    if s["tied_windows"] or silent:
        print(f"{s['tied_windows']} window(s) with a tied maximum (the lowest class index wins), {silent} without any "
              "output spike (no class)", file=sys.stderr)  # fmt: skip
    if "scored" in s:
        sc = s["scored"]
        print(f"against {cfg.labels}: {sc['correct']}/{sc['windows']} windows correct ({_percent(sc['accuracy'])})",
              file=sys.stderr)  # fmt: skip
    if out is not None:
        print(f"windows: {out}; summary: {out.with_name(out.name + '.summary.json')}", file=sys.stderr)
    if cfg.plot:
        print(f"plot: {summary['plot']}", file=sys.stderr)
    return 0


def _s(seconds: float | None) -> str:
    return "unknown" if seconds is None else f"{seconds:.2f} s"


def _factor(real_time: float | None) -> str:
    return "n/a (the events span no time)" if real_time is None else f"{real_time:.1f}x"


# Process start to this module imported: under ``python -m runtime.stream``, the interpreter's start and every
# import this command needs before it reads its flags (the target's own imports come later, in ``target_s``).
IMPORTED_S = process_age_s()

if __name__ == "__main__":
    sys.exit(main())
