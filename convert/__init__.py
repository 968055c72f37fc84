"""Conversion stage: a trained checkpoint (or another tool's float NIR graph) to deployable graph files.

``python -m convert.to_nir`` (:mod:`convert.to_nir`) writes ``<name>.nir``, ``<name>.onnx``,
``<name>.step.onnx``, optionally ``<name>.netx.h5`` and ``<name>.<library>.nir``, and the parity report
``<name>.conversion.json``; nothing is written unless every file reads back and passes the check.

- :mod:`convert.trace`: a student module walked into deployable layers and edges (BatchNorm folded).
- :mod:`convert.quantise`: float precision on a power-of-two grid; fixed precision (Loihi 2 integers),
  calibrated so that no layer overflows or saturates.
- :mod:`convert.nirgraph`: traced layers to a NIR graph with the ``snn_deploy`` metadata.
- :mod:`convert.build`: trace, quantise and build in one call.
- :mod:`convert.to_onnx`: a plan to the whole-T and the one-step ONNX files.
- :mod:`convert.netx`: lava-dl netx HDF5 export of a fixed-precision graph.
- :mod:`convert.foreign`: another tool's float graph converted like a checkpoint (to Loihi).
- :mod:`convert.peers`: our float graphs rewritten for snnTorch, SpikingJelly and Norse (``--for``).
"""
