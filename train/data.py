"""Training data: datasets held in memory as one tensor and drawn by index, validation carve-outs,
and the dataset specifications (``{"name": ..., "split": ..., ...}``) that ``train.bkd`` accepts
for extra labelled data and for the unlabelled transfer set.

A dataset of event frames or spike trains (small non-negative integers) is stored as ``uint8``:
N-MNIST-sized data (5,000 samples, T = 8, 2x34x34) takes 92 MB and a batch is one index
operation instead of a file read and a binning per sample. Data that does not fit the memory
budget is read through a ``DataLoader`` with the same interface.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.config import loads_json
from core.errors import ConfigError, DataError

VALIDATION_SEED = 0  # the validation carve-out is the same for every run seed (paired comparisons)
MEMORY_BUDGET_BYTES = 4 << 30  # a dataset larger than this in memory is streamed from its files


def stratified_carve(labels: np.ndarray, fraction: float, seed: int = VALIDATION_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, carved)`` sorted index arrays: a stratified ``fraction`` of ``labels`` carved out.

    Every class keeps at least one sample, and a class with at least two samples gives at least
    one, so a validation set always sees every class that has two samples or more.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"val_fraction must lie in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    kept, carved = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n = 0 if fraction == 0 else min(max(1, round(fraction * len(idx))), len(idx) - 1)
        carved.append(idx[:n])
        kept.append(idx[n:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(carved))


class Batches:
    """Samples ``(T, C, H, W)`` and labels, drawn in batches as time-first ``(T, B, C, H, W)`` float32."""

    labels: np.ndarray
    name: str

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def order(self, generator: torch.Generator | None, rank: int = 0, world: int = 1) -> torch.Tensor:
        """This process's sample order: a permutation (or ``arange`` without a generator), padded
        by wrapping to a multiple of ``world`` (as DistributedSampler does) and split by rank."""
        n = len(self)
        perm = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        if world > 1:
            total = math.ceil(n / world) * world
            perm = torch.cat([perm, perm[: total - n]])[rank::world]
        return perm

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, rank: int = 0, world: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = self.order(generator, rank, world)
        for start in range(0, len(perm), batch_size):
            x, y = self.take(perm[start : start + batch_size])
            yield x.transpose(0, 1), y

    def num_batches(self, batch_size: int, world: int = 1) -> int:
        return math.ceil(math.ceil(len(self) / world) / batch_size)


class MemoryBatches(Batches):
    """A dataset materialised as one tensor ``(N, T, C, H, W)`` (uint8 when every value is an
    integer in 0..255, else float32)."""

    def __init__(self, x: torch.Tensor, labels: np.ndarray, name: str) -> None:
        self.x, self.labels, self.name = x, np.asarray(labels, np.int64), name
        self._y = torch.from_numpy(self.labels)

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[idx].float(), self._y[idx]

    def subset(self, idx: np.ndarray, name: str) -> MemoryBatches:
        t = torch.from_numpy(np.asarray(idx, np.int64))
        return MemoryBatches(self.x[t], self.labels[idx], name)


class DatasetBatches(Batches):
    """Samples read from the dataset on demand (data too large for memory)."""

    def __init__(self, ds: torch.utils.data.Dataset, labels: np.ndarray, name: str) -> None:
        self.ds, self.labels, self.name = ds, np.asarray(labels, np.int64), name

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xs = [self.ds[int(i)][0] for i in idx]
        return torch.stack(xs).float(), torch.from_numpy(self.labels[idx.numpy()])

    def subset(self, idx: np.ndarray, name: str) -> DatasetBatches:
        return DatasetBatches(torch.utils.data.Subset(self.ds, idx.tolist()), self.labels[idx], name)


def concat(parts: list[Batches], name: str) -> Batches:
    """One training set from several (the main split and ``--extra-train`` data)."""
    if len(parts) == 1:
        return parts[0]
    if not all(isinstance(p, MemoryBatches) for p in parts):
        big = ", ".join(p.name for p in parts if not isinstance(p, MemoryBatches))
        raise ConfigError(f"extra training data needs every part in memory; {big} is too large for it")
    xs = [p.x for p in parts]
    if any(x.is_floating_point() for x in xs):
        xs = [x.float() for x in xs]
    return MemoryBatches(torch.cat(xs), np.concatenate([p.labels for p in parts]), name)


def dataset_labels(ds: torch.utils.data.Dataset) -> np.ndarray:
    labels = getattr(ds, "labels", None)
    if labels is None and isinstance(ds, torch.utils.data.Subset):
        labels = np.asarray(dataset_labels(ds.dataset))[np.asarray(ds.indices)]
    if labels is None:
        labels = np.array([int(ds[i][1]) for i in range(len(ds))], np.int64)
    return np.asarray(labels, np.int64)


def materialise(ds: torch.utils.data.Dataset, name: str, progress: bool = True) -> Batches:
    """Read every sample of ``ds`` once into memory (with a progress bar), or wrap it for reading
    on demand when it would not fit :data:`MEMORY_BUDGET_BYTES`."""
    labels = dataset_labels(ds)
    if len(ds) == 0:
        raise DataError(f"{name}: the dataset holds no samples")
    first = ds[0][0]
    per_sample = first.numel()
    if per_sample * len(ds) > MEMORY_BUDGET_BYTES:
        return DatasetBatches(ds, labels, name)
    from tqdm import tqdm

    x = torch.empty((len(ds), *first.shape), dtype=torch.uint8)
    small_ints = True
    with tqdm(total=len(ds), desc=f"loading {name}", unit="sample", disable=not progress or len(ds) < 500,
              leave=False, file=sys.stderr, dynamic_ncols=True) as bar:  # fmt: skip
        for i in range(len(ds)):
            sample = ds[i][0]
            if tuple(sample.shape) != tuple(first.shape):
                raise DataError(f"{name}: sample {i} has shape {tuple(sample.shape)}, sample 0 {tuple(first.shape)}")
            if small_ints and not _small_ints(sample):
                if per_sample * 4 * len(ds) > MEMORY_BUDGET_BYTES:
                    return DatasetBatches(ds, labels, name)
                x = x.float()
                small_ints = False
            x[i] = sample
            bar.update(1)
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise DataError(f"{name}: the data holds NaN or infinite values")
    return MemoryBatches(x, labels, name)


def _small_ints(t: torch.Tensor) -> bool:
    return bool(((t >= 0) & (t <= 255) & (t == t.round())).all())


# ---------------------------------------------------------------------------------------------
# Dataset specifications on the command line


@dataclass(frozen=True)
class DataSpec:
    """One dataset named on the command line: ``{"name": ..., "split": "train", "root": ..., <args>}``."""

    name: str
    split: str
    root: str | None
    args: dict[str, Any]

    def describe(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in sorted(self.args.items()))
        return f"{self.name}/{self.split}{extra}"


def shares_samples(a: DataSpec, b: DataSpec) -> bool:
    """Whether two named datasets can hold the same samples: the same dataset from the same folder (or
    none) in the same split, or one of them all of it. Dataset arguments do not tell them apart (a
    ``limit`` is a part of the split, an encoder encodes the same samples)."""

    def where(spec: DataSpec) -> Path | None:
        return None if spec.root is None else Path(spec.root).expanduser().resolve()

    return a.name == b.name and where(a) == where(b) and (a.split == b.split or "all" in (a.split, b.split))


def check_held_out(test: tuple[str, DataSpec], selection: list[tuple[str, DataSpec]],
                   fitted: list[tuple[str, DataSpec]]) -> None:  # fmt: skip
    """The test data shares no samples with the data a run trains on or distils from (``fitted``) or
    selects its model with (``selection``), and the validation data none with the training data: an
    accuracy on samples the run has seen is not a test accuracy. Each pair is ``(the option, its data)``."""
    for name, spec in [*fitted, *selection]:
        if shares_samples(spec, test[1]):
            raise ConfigError(f"{name} {spec.describe()} shares samples with the test data ({test[0]} "
                              f"{test[1].describe()}): the test accuracy would be measured on samples the run has "
                              "seen; name another split, folder or dataset")  # fmt: skip
    for val_name, val in selection:
        for name, spec in fitted:
            if shares_samples(spec, val):
                raise ConfigError(f"{val_name} {val.describe()} shares samples with the training data ({name} "
                                  f"{spec.describe()}): the model would be selected on samples it trained on")  # fmt: skip


def parse_specs(text: str | None, option: str) -> list[DataSpec]:
    """A JSON object or list of objects, each naming a dataset (``name``) and optionally its
    ``split`` (default ``train``), ``root`` and dataset arguments."""
    if not text:
        return []
    try:
        value = loads_json(text)
    except ValueError as e:  # (malformed, or a key given twice)
        raise ConfigError(f"--{option} is not valid JSON: {e}") from None
    items = value if isinstance(value, list) else [value]
    specs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"--{option} entry {i} must be a JSON object with a 'name', got {item!r}")
        rest = {k: v for k, v in item.items() if k not in ("name", "split", "root")}
        specs.append(DataSpec(item["name"], str(item.get("split", "train")), item.get("root"), rest))
    return specs


def json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = loads_json(text or "{}")
    except ValueError as e:  # (malformed, or a key given twice)
        raise ConfigError(f"--{option} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--{option} must be a JSON object, got {text!r}")
    return value


def check_compatible(reference: dict[str, Any], other: dict[str, Any], what: str, keys: Sequence[str]) -> None:
    """Two dataset descriptions must agree on ``keys`` (T, input shape, binning, encoder, classes)
    for their samples to mean the same thing to one model."""
    for key in keys:
        if reference.get(key) != other.get(key):
            raise ConfigError(
                f"{what} differs from the training data in {key}: {other.get(key)!r} against {reference.get(key)!r}"
            )
