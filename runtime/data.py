"""Inputs for a graph: a dataset, or an event file, through the encoder/binning that training used.

The graph's ``snn_deploy`` metadata records the dataset description that training wrote into
the checkpoint; with no ``--data`` the runtime rebuilds exactly that dataset's test split. A
dataset name loads that dataset with the graph's T; a file path reads one recording.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np

from core.errors import ConfigError, DataError
from inputs.datasets import DATASETS, dataset_from_description, load_dataset, spike_batch
from inputs.events import Binning, bin_events
from inputs.readers import read_events
from targets.plan import Plan


def load_inputs(plan: Plan, data: str | None = None, *, root: str | None = None, split: str = "test",
                samples: int | None = None) -> tuple[np.ndarray, np.ndarray | None, str]:  # fmt: skip
    """``(spikes (T, N, *input_shape) float32, labels (N,) or None, description)``."""
    if data is not None and Path(data).is_file():
        return _event_file(plan, Path(data))
    if data is None:
        desc = plan.meta.get("dataset")
        if not desc:
            raise ConfigError(f"{plan.source} records no dataset (a foreign graph?): pass --data NAME or an event file")
        ds = dataset_from_description(desc, split, **({"root": root} if root else {}))
    else:
        if data not in DATASETS:
            raise ConfigError(
                f"--data {data!r} is neither an existing file nor a dataset; datasets: {', '.join(sorted(DATASETS))}"
            )
        if plan.steps is None:
            raise ConfigError(f"{plan.source} states no T: this graph needs inputs whose T you choose (an event file)")
        # Bin another event dataset the way the graph's own data was binned (window, binary).
        recorded = ((plan.meta.get("dataset") or {}).get("binning")) or {}
        accepted = inspect.signature(DATASETS[data]).parameters
        binning = {k: recorded[k] for k in ("duration_us", "binary") if k in recorded and k in accepted}
        ds = load_dataset(data, split, root=root, steps=plan.steps, **binning)
    if tuple(ds.input_shape) != plan.input_shape:
        raise DataError(f"dataset {ds.name!r} gives inputs {tuple(ds.input_shape)}, the graph takes {plan.input_shape}")
    n = len(ds) if samples is None else min(samples, len(ds))
    spikes, labels = spike_batch(ds, range(n))
    return spikes, labels, f"{ds.name}/{split} ({n} samples)"


def _event_file(plan: Plan, path: Path) -> tuple[np.ndarray, None, str]:
    """One recording, any format :mod:`inputs.readers` knows, binned as the graph's data was (its
    first window; ``runtime.stream`` maps other sensors and streams long recordings)."""
    binning_desc = (plan.meta.get("dataset") or {}).get("binning")
    if binning_desc:
        binning = Binning.from_dict(binning_desc)
    else:
        if plan.steps is None or len(plan.input_shape) != 3:
            raise ConfigError(f"{plan.source}: no recorded binning or T to turn {path.name} into frames")
        binning = Binning(plan.steps, 300_000, plan.input_shape[1], plan.input_shape[2])
    events = read_events(path)  # binning drops what falls outside the graph's frame
    frames = bin_events(events, binning)  # (T, 2, H, W)
    if frames.shape[1:] != plan.input_shape:
        raise DataError(f"{path.name} bins to {frames.shape[1:]}, the graph takes {plan.input_shape}")
    return frames[:, None], None, f"{path.name} (1 recording)"
