"""Walk a trained student into a list of deployable layers and the edges between them.

The walk dispatches on module type through one table (:data:`HANDLERS`); BatchNorm is folded
into the convolution before it; modules the deployment graph does not support are collected
and reported together. A residual ADD is represented the NIR way: several edges into one node.
To keep that exact through chains of SEW blocks, a traced *value* is the list of node names whose
outputs sum to it, and a node that consumes the value gets an edge from each of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from core.errors import ModelError
from train.models import SEWBlock, SpikingSequential, SumPool2d
from train.neuron import LI, LIF


@dataclass
class Layer:
    """One deployable node. ``kind`` is one of conv, affine, lif, li, sumpool, avgpool, flatten (and, from
    a foreign graph, conv1d and delay)."""

    name: str
    kind: str
    sources: list[str]  # node names whose outputs sum to this node's input
    in_shape: tuple[int, ...]  # batch-free
    out_shape: tuple[int, ...]
    params: dict = field(default_factory=dict)  # numpy arrays and plain values


@dataclass
class Value:
    sources: list[str]
    shape: tuple[int, ...]


class Tracer:
    def __init__(self, input_shape: tuple[int, ...]) -> None:
        self.layers: list[Layer] = []
        self.unsupported: list[str] = []
        self._names: dict[str, int] = {}
        self.input = Value(["input"], tuple(input_shape))

    def add(self, prefix: str, kind: str, value: Value, out_shape: tuple[int, ...], **params) -> Value:
        n = self._names.get(prefix, 0)
        self._names[prefix] = n + 1
        name = prefix if n == 0 else f"{prefix}_{n}"
        self.layers.append(Layer(name, kind, list(value.sources), value.shape, tuple(out_shape), params))
        return Value([name], tuple(out_shape))


def fold_batch_norm(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of ``bn(conv(x))`` in evaluation mode, as one convolution (float64 maths)."""
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    if bn is not None:
        gamma = bn.weight.detach().double() if bn.affine else torch.ones_like(b)
        beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(b)
        inv = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
        w = w * inv.view(-1, 1, 1, 1)
        b = (b - bn.running_mean.double()) * inv + beta
    return w.numpy(), b.numpy()


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _conv(tr: Tracer, name: str, m: nn.Conv2d, v: Value, bn: nn.BatchNorm2d | None) -> Value:
    if m.groups != 1 or _pair(m.dilation) != (1, 1) or isinstance(m.padding, str):
        tr.unsupported.append(f"{name} (Conv2d with groups/dilation/string padding)")
        return v
    c, h, w = v.shape
    kh, kw = _pair(m.kernel_size)
    sh, sw = _pair(m.stride)
    ph, pw = _pair(m.padding)
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    weight, bias = fold_batch_norm(m, bn)
    return tr.add(name, "conv", v, (m.out_channels, oh, ow), weight=weight, bias=bias,
                  stride=(sh, sw), padding=(ph, pw), input_hw=(h, w))  # fmt: skip


def _linear(tr: Tracer, name: str, m: nn.Linear, v: Value) -> Value:
    b = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(m.out_features)
    return tr.add(name, "affine", v, (m.out_features,), weight=m.weight.detach().double().numpy(), bias=b)


def _lif(tr: Tracer, name: str, m: LIF, v: Value) -> Value:
    p = m.params
    return tr.add(name, "lif", v, v.shape, tau=p.tau, v_threshold=p.v_threshold, dt=p.dt)


def _li(tr: Tracer, name: str, m: LI, v: Value) -> Value:
    p = m.params
    return tr.add(name, "li", v, v.shape, tau=p.tau, dt=p.dt)


def _sumpool(tr: Tracer, name: str, m: SumPool2d, v: Value) -> Value:
    c, h, w = v.shape
    k, s = m.kernel_size, m.stride
    return tr.add(name, "sumpool", v, (c, (h - k) // s + 1, (w - k) // s + 1), kernel=(k, k), stride=(s, s))


def _adaptive_avg(tr: Tracer, name: str, m: nn.AdaptiveAvgPool2d, v: Value) -> Value:
    c, h, w = v.shape
    if _pair(m.output_size) != (1, 1):
        tr.unsupported.append(f"{name} (AdaptiveAvgPool2d to {m.output_size}, only global pooling is supported)")
        return v
    return tr.add(name, "avgpool", v, (c, 1, 1), kernel=(h, w), stride=(h, w))


def _avgpool(tr: Tracer, name: str, m: nn.AvgPool2d, v: Value) -> Value:
    c, h, w = v.shape
    (kh, kw), (sh, sw) = _pair(m.kernel_size), _pair(m.stride or m.kernel_size)
    if _pair(m.padding) != (0, 0) or m.ceil_mode:
        tr.unsupported.append(f"{name} (AvgPool2d with padding or ceil_mode)")
        return v
    return tr.add(name, "avgpool", v, (c, (h - kh) // sh + 1, (w - kw) // sw + 1), kernel=(kh, kw), stride=(sh, sw))


def _flatten(tr: Tracer, name: str, m: nn.Flatten, v: Value) -> Value:
    if m.start_dim != 1 or m.end_dim != -1:
        tr.unsupported.append(f"{name} (Flatten other than start_dim=1, end_dim=-1)")
        return v
    return tr.add(name, "flatten", v, (int(np.prod(v.shape)),))


def _sequence(tr: Tracer, name: str, m: nn.Sequential, v: Value) -> Value:
    children = list(m.named_children())
    i = 0
    while i < len(children):
        child_name, child = children[i]
        full = f"{name}.{child_name}" if name else child_name
        bn = None
        if isinstance(child, nn.Conv2d) and i + 1 < len(children) and isinstance(children[i + 1][1], nn.BatchNorm2d):
            bn = children[i + 1][1]
            i += 1
        v = _conv(tr, full, child, v, bn) if isinstance(child, nn.Conv2d) else trace_module(tr, full, child, v)
        i += 1
    return v


def _sew_block(tr: Tracer, name: str, m: SEWBlock, v: Value) -> Value:
    out = trace_module(tr, f"{name}.branch", m.branch, v)
    shortcut = v if m.shortcut is None else trace_module(tr, f"{name}.shortcut", m.shortcut, v)
    return Value(out.sources + shortcut.sources, out.shape)


def _container(tr: Tracer, name: str, m: nn.Module, v: Value) -> Value:
    """A model with ``features`` and ``head`` (every registered student)."""
    v = trace_module(tr, "features", m.features, v)
    return trace_module(tr, "head", m.head, v)


HANDLERS: dict[type, Callable[[Tracer, str, nn.Module, Value], Value]] = {
    SpikingSequential: _sequence,
    nn.Sequential: _sequence,
    SEWBlock: _sew_block,
    nn.Conv2d: lambda tr, n, m, v: _conv(tr, n, m, v, None),
    nn.Linear: _linear,
    LIF: _lif,
    LI: _li,
    SumPool2d: _sumpool,
    nn.AdaptiveAvgPool2d: _adaptive_avg,
    nn.AvgPool2d: _avgpool,
    nn.Flatten: _flatten,
    nn.Identity: lambda tr, n, m, v: v,
}


def trace_module(tr: Tracer, name: str, m: nn.Module, v: Value) -> Value:
    for cls in type(m).__mro__:
        if cls in HANDLERS:
            return HANDLERS[cls](tr, name, m, v)
    if hasattr(m, "features") and hasattr(m, "head"):
        return _container(tr, name, m, v)
    tr.unsupported.append(f"{name or '<model>'} ({type(m).__name__})")
    return v


def trace(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[list[Layer], list[str]]:
    """Deployable layers of ``model`` in execution order, and the output sources.

    Raises :class:`ModelError` naming every unsupported module at once.
    """
    model = model.eval()
    tr = Tracer(input_shape)
    out = trace_module(tr, "", model, tr.input)
    if tr.unsupported:
        raise ModelError(
            "the model holds layers the deployment graph does not support: " + "; ".join(tr.unsupported)
            + ". Supported: Conv2d (+ BatchNorm2d, folded), Linear, LIF, LI, SumPool2d, AvgPool2d / global "
            "AdaptiveAvgPool2d, Flatten, SEW residual ADD"
        )  # fmt: skip
    if not tr.layers or tr.layers[-1].kind not in ("lif", "li"):
        raise ModelError(
            "a deployable student must end in a LIF layer (its output spikes are the class scores) or an LI "
            "readout (its membrane summed over T is)"
        )
    inner = [layer.name for layer in tr.layers[:-1] if layer.kind == "li"]
    if inner:
        raise ModelError(f"LI layers are readouts and must end the student; {', '.join(inner)} feed(s) other layers")
    return tr.layers, out.sources
