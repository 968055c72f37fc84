"""Traced layers -> a NIR graph (nir 1.0.x), following DESIGN.md's mapping.

- ``LIF(tau = dt/(1-beta), r = tau/dt, v_leak = 0, v_threshold = theta, v_reset = 0)``, one value
  per neuron, so that a foreign reader with the graph's ``dt`` reproduces the float semantics;
  the non-spiking readout likewise as ``LI(tau = dt/(1-beta), r = tau/dt, v_leak = 0)``; a
  current-based LIF (a foreign graph's, converted) as ``CubaLIF(tau_syn, tau_mem, r = tau_mem/dt,
  w_in = tau_syn/dt, v_leak = v_bias tau_mem/dt)``: both gains 1, and ``v_leak`` the constant its
  membrane adds per step (in fixed precision the integer bias, which Loihi adds to the membrane);
  a current-based readout likewise as ``CubaLI``.
- ``Conv2d`` always carries ``input_shape``; ``Flatten`` uses batch-free dims (``start_dim=0``);
  biases are explicit arrays.
- Everything else a target needs (T, dt, precision, reset mode, scales, exponents, thresholds,
  decays, the dataset and its encoder) goes under one key, ``snn_deploy``, as a JSON string.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nir
import numpy as np

from convert.trace import Layer
from core.errors import ModelError
from core.fileio import atomic_path
from targets.plan import METADATA_KEY

GRAPH_FORMAT = "snn-deploy.graph/1"


def _node(layer: Layer) -> nir.NIRNode:
    p, shape = layer.params, layer.out_shape
    if layer.kind in ("conv", "conv1d"):  # (a traced model's: no dilation or groups)
        cls = nir.Conv2d if layer.kind == "conv" else nir.Conv1d
        one = (1, 1) if layer.kind == "conv" else (1,)
        return cls(input_shape=tuple(p["input_hw"]) if layer.kind == "conv" else int(p["input_hw"][0]),
                   weight=p["weight"].astype(np.float32), stride=tuple(p["stride"]), padding=tuple(p["padding"]),
                   dilation=tuple(p.get("dilation", one)), groups=int(p.get("groups", 1)),
                   bias=p["bias"].astype(np.float32))  # fmt: skip
    if layer.kind == "affine":
        return nir.Affine(weight=p["weight"].astype(np.float32), bias=p["bias"].astype(np.float32))
    if "tau_syn" in p:  # a current-based LIF or LI: both gains 1, the bias a leak of the membrane
        tau, tau_syn, dt = float(p["tau"]), float(p["tau_syn"]), p["dt"]
        v_bias = np.asarray(p.get("v_bias", 0.0), dtype=np.float64)
        v_bias = v_bias.reshape((-1,) + (1,) * (len(shape) - 1)) if v_bias.ndim else v_bias
        common = {"tau_syn": np.full(shape, tau_syn, dtype=np.float64), "tau_mem": np.full(shape, tau, dtype=np.float64),
                  "r": np.full(shape, tau / dt, dtype=np.float64), "w_in": np.full(shape, tau_syn / dt, dtype=np.float64),
                  "v_leak": np.broadcast_to(v_bias * (tau / dt), shape).astype(np.float64)}  # fmt: skip
        if layer.kind == "li":
            return nir.CubaLI(**common)
        return nir.CubaLIF(**common, v_threshold=np.full(shape, p["v_threshold"], dtype=np.float32),
                           v_reset=np.zeros(shape, np.float32))  # fmt: skip
    if layer.kind == "lif" and np.isinf(p["tau"]):  # no decay (beta = 1): NIR's IF, gain r * dt = 1
        return nir.IF(r=np.full(shape, 1.0 / p["dt"], dtype=np.float64),
                      v_threshold=np.full(shape, p["v_threshold"], dtype=np.float32), v_reset=np.zeros(shape, np.float32))  # fmt: skip
    if layer.kind == "lif":
        tau = float(p["tau"])
        # tau and r in float64: in float32 a reader's dt/tau * r can round to 1 + 1e-7 and turn
        # membranes sitting exactly on the threshold into spikes.
        return nir.LIF(tau=np.full(shape, tau, dtype=np.float64), r=np.full(shape, tau / p["dt"], dtype=np.float64),
                       v_leak=np.zeros(shape, np.float32), v_threshold=np.full(shape, p["v_threshold"], dtype=np.float32),
                       v_reset=np.zeros(shape, np.float32))  # fmt: skip
    if layer.kind == "li":
        tau = float(p["tau"])
        return nir.LI(tau=np.full(shape, tau, dtype=np.float64), r=np.full(shape, tau / p["dt"], dtype=np.float64),
                      v_leak=np.zeros(shape, np.float32))  # fmt: skip
    if layer.kind in ("sumpool", "avgpool"):
        cls = nir.SumPool2d if layer.kind == "sumpool" else nir.AvgPool2d
        return cls(kernel_size=np.array(p["kernel"]), stride=np.array(p["stride"]), padding=np.array([0, 0]))
    if layer.kind == "delay":  # whole steps of dt, per element
        return nir.Delay(delay=(np.broadcast_to(p["steps"], shape) * p["dt"]).astype(np.float64))
    if layer.kind == "flatten":
        return nir.Flatten(input_type={"input": np.array(layer.in_shape)}, start_dim=0, end_dim=-1)
    raise ModelError(f"no NIR node for layer kind {layer.kind!r} ({layer.name})")


def build_graph(
    layers: list[Layer], outputs: list[str], input_shape: tuple[int, ...], meta: dict[str, Any]
) -> nir.NIRGraph:
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type={"input": np.array(input_shape)})}
    edges: list[tuple[str, str]] = []
    layer_meta: dict[str, Any] = {}
    for layer in layers:
        nodes[layer.name] = _node(layer)
        edges += [(s, layer.name) for s in layer.sources]
        entry = {"kind": layer.kind}
        for key in ("quant", "fixed"):
            if key in layer.params:
                entry[key] = layer.params[key]
        layer_meta[layer.name] = entry
    nodes["output"] = nir.Output(output_type={"output": np.array(layers[-1].out_shape)})
    edges += [(s, "output") for s in outputs]
    metadata = {METADATA_KEY: json.dumps({"format": GRAPH_FORMAT, **meta, "layers": layer_meta})}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata, type_check=_type_checks(nodes))


def _type_checks(nodes: dict[str, nir.NIRNode]) -> bool:
    """Whether nir 1.0.8's type inference can check the graph: it takes a grouped convolution's
    kernel's ``C / groups`` for its input channels, so a graph holding one is written unchecked."""
    return not any(isinstance(n, (nir.Conv1d, nir.Conv2d)) and int(np.max(n.groups)) > 1 for n in nodes.values())


def write_graph(path: str | Path, graph: nir.NIRGraph) -> None:
    """Write atomically and read back, with type checking on where nir can check the graph (a file
    that does not read is an error)."""
    with atomic_path(path) as tmp:
        nir.write(tmp, graph)
        nir.read(tmp, type_check=_type_checks(graph.nodes))
