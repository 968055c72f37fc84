"""Inputs for a graph: a dataset, an event file or a spike array, through the binning training used.

``graph`` is anything with the plan's ``input_shape``, ``steps``, ``meta`` (the graph's
``snn_deploy`` metadata) and ``source``: a :class:`targets.plan.Plan` (this package does not
import the targets).

The graph's ``snn_deploy`` metadata records the dataset description that training wrote into
the checkpoint; with no ``--data`` the runtime rebuilds exactly that dataset's test split. A
dataset name loads that dataset with the graph's T; a file path reads one recording; a ``.npy``
file is the spike tensor itself, ``(T, B, *input_shape)``. A graph another library wrote states
none of this: :func:`targets.plan.load_plan` takes its ``--dt`` and ``--steps``, and ``--bin-us`` sets the
width of a time bin (the binning window is ``steps * bin_us``).
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from pathlib import Path

import numpy as np

from core.errors import ConfigError, DataError
from inputs.events import Binning, bin_events_counted
from inputs.formats.readers import read_events


def load_inputs(plan, data: str | None = None, *, root: str | None = None, split: str = "test",
                samples: int | None = None, bin_us: int | None = None, steps: int | None = None,
                cache_dir: str | None = None) -> tuple[np.ndarray, np.ndarray | None, str]:  # fmt: skip
    """``(spikes (T, N, *input_shape) float32, labels (N,) or None, description)``; ``bin_us``: µs per
    time step when binning events (default: the graph's recorded binning); ``steps``: the T a user
    asked for (``--steps``), which a spike array of another T contradicts; ``cache_dir``: where an
    emulated dataset's events are kept between processes."""
    if bin_us is not None and (isinstance(bin_us, bool) or int(bin_us) != bin_us or bin_us < 1):
        raise ConfigError(f"--bin-us must be a positive integer, got {bin_us!r}")
    if data is not None and Path(data).suffix == ".npy" and not _event_array(Path(data)):
        if bin_us is not None:  # (ignored before, without a word)
            raise ConfigError(f"--bin-us bins events; {Path(data).name} is a spike array, already in steps")
        return _array_file(plan, Path(data), samples, steps)
    if data is not None and Path(data).is_file():
        return _event_file(plan, Path(data), bin_us)
    from inputs.datasets import DATASETS, cache_args, dataset_from_description, load_dataset, spike_batch  # (torch)

    if data is None:
        desc = plan.meta.get("dataset")
        if not desc:
            raise ConfigError(f"{plan.source} records no dataset (a graph another library wrote?): pass --data with a "
                              "dataset name, an event file or a .npy spike array (T, B, ...), and --steps (and "
                              "--bin-us) for event data")  # fmt: skip
        overrides: dict = ({"root": root} if root else {}) | ({"limit": samples} if samples else {})
        overrides |= cache_args(desc.get("name"), cache_dir)
        if plan.steps is not None and plan.steps != desc.get("steps"):
            overrides["steps"] = plan.steps  # --steps
        if bin_us is not None:
            builder = DATASETS.get(desc.get("name"))
            if builder is not None and "duration_us" not in inspect.signature(builder).parameters:
                raise ConfigError(f"dataset {desc.get('name')!r} is not event data: --bin-us does not apply")
            overrides |= {"steps": plan.steps, "duration_us": plan.steps * int(bin_us)}
        try:
            ds = dataset_from_description(desc, split, **overrides)
        except ConfigError as e:  # (a name or argument the user never typed: say where it comes from)
            raise ConfigError(f"{plan.source}: the dataset it records: {e}") from None
        except DataError as e:
            recorded = (desc.get("args") or {}).get("root")
            if root or not recorded:
                raise
            raise DataError(f"{plan.source}: the dataset it records, in {recorded}: {e}; name the folder where it "
                            "lies now with --data-root") from None  # fmt: skip
    else:
        if data not in DATASETS:
            raise ConfigError(
                f"--data {data!r} is neither an existing file nor a dataset; datasets: {', '.join(sorted(DATASETS))}"
            )
        if plan.steps is None:
            raise ConfigError(f"{plan.source} states no T: pass --steps (or a .npy spike array, whose T it is)")
        # Bin another event dataset the way the graph's own data was binned (window, binary).
        recorded = ((plan.meta.get("dataset") or {}).get("binning")) or {}
        accepted = inspect.signature(DATASETS[data]).parameters
        binning = {k: recorded[k] for k in ("duration_us", "binary") if k in recorded and k in accepted}
        if bin_us is not None:
            if "duration_us" not in accepted:
                raise ConfigError(f"dataset {data!r} is not event data: --bin-us does not apply")
            binning["duration_us"] = plan.steps * int(bin_us)
        ds = load_dataset(data, split, root=root, steps=plan.steps, limit=samples, **binning,
                          **cache_args(data, cache_dir))  # fmt: skip
    if tuple(ds.input_shape) != plan.input_shape:
        raise DataError(f"dataset {ds.name!r} gives inputs {tuple(ds.input_shape)}, the graph takes {plan.input_shape}")
    n = len(ds) if samples is None else min(samples, len(ds))
    spikes, labels = spike_batch(ds, range(n))
    return spikes, labels, f"{ds.name}/{split} ({n} samples)"


def command_inputs(plan, cfg) -> tuple[np.ndarray, np.ndarray | None, str]:
    """:func:`load_inputs` with a command's flags (``runtime.run``'s and ``runtime.verify``'s config:
    ``data``, ``data_root``, ``split``, ``samples``, ``bin_us``, ``steps`` and ``cache_dir``)."""
    file_only(cfg.data, cfg.data_root, cfg.split)
    return load_inputs(plan, cfg.data, root=cfg.data_root, split=cfg.split, samples=cfg.samples, bin_us=cfg.bin_us,
                       steps=cfg.steps, cache_dir=cfg.cache_dir)  # fmt: skip


def file_only(data: str | None, root: str | None, split: str = "test") -> None:
    """``--data-root`` and a ``--split`` other than the default choose a dataset's samples: with a file as
    ``--data`` they would be ignored (they were), so they are refused."""
    if data is not None and Path(data).is_file() and (root or split != "test"):
        flag = "--data-root" if root else f"--split {split}"
        raise ConfigError(f"{flag} chooses a dataset's samples; --data {data} is a file, read whole")


def _array_file(plan, path: Path, samples: int | None, steps: int | None = None) -> tuple[np.ndarray, None, str]:
    """A ``.npy`` spike tensor ``(T, B, *input_shape)``: the input as it is, its own T (``--steps``, when
    given, must be that T)."""
    if not path.is_file():
        raise DataError(f"spike array {path} does not exist")
    try:
        spikes = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable .npy array ({type(e).__name__}: {e})") from None
    if (
        spikes.dtype.kind not in "biuf"
        or spikes.ndim != len(plan.input_shape) + 2
        or tuple(spikes.shape[2:]) != tuple(plan.input_shape)
    ):
        raise DataError(f"{path.name}: a spike array must be numbers shaped (T, B, {', '.join(map(str, plan.input_shape))}), "
                        f"got {spikes.dtype} {tuple(spikes.shape)}")  # fmt: skip
    if spikes.shape[0] < 1 or spikes.shape[1] < 1:
        raise DataError(
            f"{path.name}: the spike array {tuple(spikes.shape)} has no {'steps' if spikes.shape[0] < 1 else 'samples'}"
        )
    if not np.isfinite(spikes).all():
        raise DataError(f"{path.name}: the spike array holds NaN or infinite values")
    if steps is not None and spikes.shape[0] != steps:  # (a conversion wrote the array's T into the graph)
        raise ConfigError(f"--steps {steps}, but {path.name} has T = {spikes.shape[0]} steps: a spike array is its "
                          "own T; drop --steps or give an array of that many steps")  # fmt: skip
    if plan.steps is not None and spikes.shape[0] != plan.steps:
        print(f"note: {path.name} has T = {spikes.shape[0]} steps; the graph states T = {plan.steps}: running "
              f"{spikes.shape[0]}", file=sys.stderr)  # fmt: skip
    n = spikes.shape[1] if samples is None else min(samples, spikes.shape[1])
    return spikes[:, :n].astype(np.float32), None, f"{path.name} ({n} samples, T = {spikes.shape[0]})"


def _event_array(path: Path) -> bool:
    """Whether a ``.npy`` file holds events (a structured array with t, x, y, p), not a spike tensor."""
    try:
        names = np.load(path, mmap_mode="r", allow_pickle=False).dtype.names
    except (ValueError, OSError, EOFError):
        return False  # (the spike-array reader says what is wrong with it)
    return bool(names) and {"t", "x", "y", "p"} <= set(names)


def _event_file(plan, path: Path, bin_us: int | None = None) -> tuple[np.ndarray, None, str]:
    """One recording, any format :mod:`inputs.formats.readers` knows, binned as the graph's data was, or
    in bins of ``bin_us`` µs: one window, from the dataset's start time (N-MNIST's 0) or, for a
    recording on a device's clock whose first event lies outside that window, from its first event.
    An event outside the graph's frame is an error (``runtime.stream`` maps other sensors and streams
    whole recordings)."""
    binning_desc = (plan.meta.get("dataset") or {}).get("binning")
    if binning_desc:  # (--steps, in plan.steps, and --bin-us change it as they change a dataset's binning)
        binning = Binning.from_dict(binning_desc)
        steps = plan.steps or binning.steps
        duration = steps * int(bin_us) if bin_us is not None else binning.duration_us
        binning = dataclasses.replace(binning, steps=steps, duration_us=duration)
    else:
        if plan.steps is None or len(plan.input_shape) != 3:
            raise ConfigError(f"{plan.source}: no recorded binning or T to turn {path.name} into frames: pass --steps "
                              "(and --bin-us, default 300 ms / steps)")  # fmt: skip
        duration = plan.steps * int(bin_us) if bin_us is not None else 300_000
        binning = Binning(plan.steps, duration, plan.input_shape[1], plan.input_shape[2])
    events = read_events(path)
    first = int(events["t"].min()) if len(events) else 0
    t0 = binning.t0_us
    if t0 is not None and len(events) and not t0 <= first < t0 + binning.duration_us:
        # the dataset's samples start at t0 (N-MNIST's at 0); a recording on a device's clock starts
        # later, and a window from t0 would hold none of its events: it starts at its first event
        binning = dataclasses.replace(binning, t0_us=None)
    frames, dropped = bin_events_counted(events, binning)  # (T, 2, H, W)
    if dropped["outside_sensor"]:  # a larger sensor's recording: an empty or partial input, without a word
        raise DataError(
            f"{path.name}: {dropped['outside_sensor']:,} of the window's events lie outside the graph's "
            f"{binning.width}x{binning.height} input (pixels up to x={int(events['x'].max())}, "
            f"y={int(events['y'].max())}); a recording's pixels are fed as they are here: map a larger sensor with "
            "runtime.stream (--crop, --downsample)"
        )
    if frames.shape[1:] != plan.input_shape:
        raise DataError(f"{path.name} bins to {frames.shape[1:]}, the graph takes {plan.input_shape}")
    out = dropped["outside_window"]  # (runtime.stream runs the whole recording)
    start = first if binning.t0_us is None else binning.t0_us
    what = f"{binning.duration_us / 1e3:g} ms from t = {start:,} µs" + (
        f"; {out:,} events outside it not used" if out else ""
    )
    return frames[:, None], None, f"{path.name} ({what})"
