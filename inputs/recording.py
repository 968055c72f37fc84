"""``python -m inputs.recording OUT``: one long event recording made of emulated event digits.

The test digits, as the DVS emulator records them (:func:`inputs.datasets.event_digits_events`),
are laid one after another on the time axis, each in its own slot of the emulator's duration, and
written as one event file (HDF5, ``.npy`` or ``.npz`` by the extension; sensor size stored) with
``OUT.labels.json`` beside it: the slot start, end and label of every digit, so that streamed
predictions can be scored. Works without any downloaded data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from core.errors import ConfigError, SnnDeployError
from core.fileio import write_json_atomic
from inputs.arrays import write_hdf5, write_npy, write_npz
from inputs.datasets import event_digits_events
from inputs.emulator import EmulatorConfig


def make_recording(path: str | Path, samples: int = 40, *, split: str = "test", seed: int = 0,
                   cache_dir: str | None = None) -> dict:  # fmt: skip
    """Write the recording and its labels; returns the labels record."""
    path = Path(path)
    if samples < 1:
        raise ConfigError(f"samples must be >= 1, got {samples}")
    cfg = EmulatorConfig()
    events, labels = event_digits_events(split, seed, config=cfg, cache_dir=cache_dir)
    samples = min(samples, len(events))
    slot = cfg.duration_us
    parts = []
    for i in range(samples):
        ev = events[i].copy()
        ev["t"] += i * slot
        parts.append(ev)
    all_events = np.concatenate(parts)
    size = (cfg.canvas_size, cfg.canvas_size)
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        write_hdf5(path, all_events, sensor_size=size)
    elif suffix == ".npz":
        write_npz(path, all_events, sensor_size=size)
    elif suffix == ".npy":
        write_npy(path, all_events)
    else:
        raise ConfigError(f"{path}: choose .h5, .npz or .npy for the recording")
    record = {
        "file": path.name, "sensor_size": list(size), "slot_us": slot, "split": split, "seed": seed,
        "samples": [{"start_us": i * slot, "end_us": (i + 1) * slot, "label": int(labels[i])} for i in range(samples)],
    }  # fmt: skip
    write_json_atomic(path.with_name(path.name + ".labels.json"), record)
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="event file to write (.h5, .npz or .npy)")
    p.add_argument("--samples", type=int, default=40)
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        rec = make_recording(args.out, args.samples, split=args.split, seed=args.seed)
    except SnnDeployError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = len(rec["samples"])
    print(f"wrote {args.out}: {n} emulated digits, {n * rec['slot_us'] / 1e6:.1f} s; labels in {args.out}.labels.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
