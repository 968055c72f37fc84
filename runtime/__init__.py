"""Runtime stage: load graph files, feed them spikes, run them on targets, compare and stream.

- :mod:`runtime.run`: ``python -m runtime.run``, one target: accuracy, spikes, SynOps, throughput.
- :mod:`runtime.verify`: ``python -m runtime.verify``, every named target against the reference.
- :mod:`runtime.stream`: ``python -m runtime.stream``, an event file through a model as it is read.
- :mod:`runtime.latency`: runs a target that delivers spikes late (Lava) and aligns it to the reference.
- :mod:`runtime.metrics`: synaptic operations, sparsity, predictions, ties and dead outputs.
- :mod:`runtime.warm`: ``python -m runtime.warm`` (``make setup`` runs it), eventsim's numba kernels
  compiled into their cache once, so that a first run does not compile.

The targets themselves live in :mod:`targets`; the inputs come from :mod:`inputs`.
"""
