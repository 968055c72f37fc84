"""The model registry: deployable spiking students and their ANN teachers.

Every model is built from its registered name and keyword arguments alone
(``build_model(name, **arch_args)``), so a checkpoint that records both rebuilds it.

Students (spiking, time-first ``(T, B, C, H, W)`` in, output spikes ``(T, B, classes)`` out; with
``readout="li"`` the final LIF is a non-spiking leaky integrator and the output is its membrane
trace ``(T, B, classes)``; either way ``output.sum(0)`` is the logit):
  ``digits_csnn``, ``nmnist_csnn``, ``dvs_csnn``: small convolutional SNNs that deploy as they are
  (Conv2d, sum pooling, flatten, Linear, LIF, LI readout; BatchNorm only if asked, folded at conversion);
  ``sew_resnet18/34/50``: SEW-ResNets with ADD connections (Fang et al. 2021), the BKDSNN paper's
  CNN students.
Teachers (ANNs, ``(B, C, H, W)`` in, logits out): the same topologies with ReLU
(``digits_cnn``, ``nmnist_cnn``, ``dvs_cnn``) and torchvision's ``resnet18/34/50``.

Every model has ``forward_features(x) -> (feature, output)``: ``feature`` is the last-stage
feature map, the input of the final pooling/classifier, which BKD distils.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ModelError, first_line
from train.neuron import LI, LIF, LIFParameters, LIParameters
from train.quant import fake_quantise, weight_scale

# ---------------------------------------------------------------------------------------------
# Building blocks


class QuantisedWeight:
    """Mixin: when ``weight_bits`` is set, the forward pass uses fake-quantised weights (QAT) and
    the bias rounded onto the same power-of-two grid, exactly as conversion writes both."""

    weight_bits: int | None = None
    per_channel: bool = True

    def effective_parameters(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.weight_bits is None:
            return self.weight, self.bias
        weight = fake_quantise(self.weight, self.weight_bits, self.per_channel)
        bias = self.bias
        if bias is not None:
            scale = weight_scale(self.weight, self.weight_bits, self.per_channel).reshape(-1).to(bias.dtype)
            bias = bias + (torch.round(bias.detach() / scale) * scale - bias).detach()  # straight-through
        return weight, bias


class SynConv2d(QuantisedWeight, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, *self.effective_parameters())


class SynLinear(QuantisedWeight, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, *self.effective_parameters())


class SumPool2d(nn.Module):
    """Sum over each pooling window: integer spike counts stay integers (Loihi-friendly)."""

    def __init__(self, kernel_size: int, stride: int | None = None) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride or kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, divisor_override=1)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


def time_distributed(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a stateless module to every step of ``(T, B, ...)`` at once."""
    T, B = x.shape[:2]
    return module(x.flatten(0, 1)).unflatten(0, (T, B))


class SpikingSequential(nn.Sequential):
    """A sequence over time-first tensors: LIF layers and blocks see ``(T, B, ...)``, stateless
    layers are applied to all steps at once."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self:
            x = m(x) if isinstance(m, (LIF, LI, SEWBlock, SpikingSequential)) else time_distributed(m, x)
        return x


def set_weight_quantisation(model: nn.Module, bits: int | None, per_channel: bool = True) -> None:
    """Turn quantisation-aware training on (``bits``) or off (None) for every synaptic layer."""
    if bits is not None:
        for name, m in model.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                raise ModelError(
                    f"quantisation-aware training with BatchNorm ({name}) is not supported: the deployed "
                    "weights are folded with BatchNorm after training; train with batch_norm=False"
                )
    for m in model.modules():
        if isinstance(m, QuantisedWeight):
            m.weight_bits = bits
            m.per_channel = per_channel


# ---------------------------------------------------------------------------------------------
# Small convolutional networks (students and their ANN twins)


READOUT_INIT_GAIN = 0.25
READOUTS = ("spikes", "li")  # the final LIF's spike counts, or a non-spiking LI whose summed membrane is the logit


def readout_neuron(readout: str, lif: LIFParameters, readout_tau: float | None) -> nn.Module:
    """The student's last layer: a LIF (``readout="spikes"``) or an LI (``"li"``; ``readout_tau``
    defaults to ``2 dt``, ``beta = 0.5``: exact in float32 on the quantised grid, see ``LIParameters``)."""
    if readout == "spikes":
        if readout_tau is not None:
            raise ModelError("readout_tau applies to readout='li' only (a spiking readout uses the model's tau)")
        return LIF(lif)
    if readout == "li":
        tau = 2.0 * lif.dt if readout_tau is None else float(readout_tau)
        return LI(LIParameters(tau=tau, dt=lif.dt))
    raise ModelError(f"unknown readout {readout!r}; known readouts: {', '.join(READOUTS)}")


class FeatureHead(nn.Module):
    """A model made of ``features`` (up to the last-stage feature map) and ``head`` (pooling and
    classifier); the tracer and BKD rely on that split."""

    features: nn.Module
    head: nn.Module

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.features(x)
        return feature, self.head(feature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[1]


class ConvNet(FeatureHead):
    """conv -> [BN] -> neuron (-> sum pool 2) ... conv -> neuron | sum pool -> flatten -> linear [-> LIF | LI].

    With ``spiking=True`` the neuron is LIF and tensors are time-first; with ``spiking=False``
    it is ReLU, there is no time axis and the output is logits (the ANN teacher twin).
    ``readout`` (students only): ``"spikes"``, the linear layer feeds a LIF whose spike counts are
    the logits; ``"li"``, it feeds a non-spiking leaky integrator whose membrane summed over T is.
    """

    def __init__(
        self,
        in_channels: int,
        input_size: int,
        channels: tuple[int, ...] | list[int],
        num_classes: int,
        input_pool: int = 1,
        head_pool: int = 2,
        batch_norm: bool = False,
        spiking: bool = True,
        tau: float = 2e-3,
        v_threshold: float = 1.0,
        dt: float = 1e-3,
        readout: str = "spikes",
        readout_tau: float | None = None,
    ) -> None:
        super().__init__()
        self.spiking = spiking
        seq = SpikingSequential if spiking else nn.Sequential
        lif = LIFParameters(tau=tau, v_threshold=v_threshold, dt=dt)
        last = readout_neuron(readout, lif, readout_tau) if spiking else None

        def neuron() -> nn.Module:
            return LIF(lif) if spiking else nn.ReLU()

        layers: list[nn.Module] = []
        size = input_size
        if input_pool > 1:
            layers.append(SumPool2d(input_pool))
            size //= input_pool
        prev = in_channels
        for i, ch in enumerate(channels):
            layers.append(SynConv2d(prev, ch, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(ch))
            layers.append(neuron())
            if i < len(channels) - 1:
                layers.append(SumPool2d(2))
                size //= 2
            prev = ch
        if size < head_pool or size < 1:
            raise ModelError(f"input_size {input_size} is too small for {len(channels)} conv stages")
        self.features = seq(*layers)
        head: list[nn.Module] = []
        if head_pool > 1:
            head.append(SumPool2d(head_pool))
            size //= head_pool
        head += [nn.Flatten(), SynLinear(prev * size * size, num_classes)]
        if spiking:
            head.append(last)
        self.head = seq(*head)
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialisation: with unit thresholds and binary inputs PyTorch's default
        # (uniform, gain 1/sqrt(3)) leaves the deeper layers of a fresh SNN silent.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # The readout sees non-negative spike counts, so its currents start with a random offset of
        # about one threshold per neuron: at He scale some output neurons fire at every step for
        # every input, their spike counts saturate at T and tie, and the surrogate gradient there
        # is too weak to pull them back. A smaller readout starts below threshold instead.
        readout = [m for m in self.head if isinstance(m, nn.Linear)][-1]
        readout.weight.data.mul_(READOUT_INIT_GAIN)


# ---------------------------------------------------------------------------------------------
# SEW-ResNet (spike-element-wise ResNet with ADD connections)


class SEWBlock(nn.Module):
    """Base of the SEW residual blocks: ``out = SN(branch(x)) + SN(shortcut(x))`` (ADD)."""


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> list[nn.Module]:
    return [SynConv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout)]


class SEWBasicBlock(SEWBlock):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, lif: LIFParameters) -> None:
        super().__init__()
        self.branch = SpikingSequential(
            *_conv_bn(cin, planes, 3, stride), LIF(lif), *_conv_bn(planes, planes, 3), LIF(lif)
        )
        self.shortcut = None
        if stride != 1 or cin != planes:
            self.shortcut = SpikingSequential(*_conv_bn(cin, planes, 1, stride), LIF(lif))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.branch(x) + identity


class SEWBottleneck(SEWBlock):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, lif: LIFParameters) -> None:
        super().__init__()
        out = planes * self.expansion
        self.branch = SpikingSequential(
            *_conv_bn(cin, planes, 1), LIF(lif),
            *_conv_bn(planes, planes, 3, stride), LIF(lif),
            *_conv_bn(planes, out, 1), LIF(lif),
        )  # fmt: skip
        self.shortcut = None
        if stride != 1 or cin != out:
            self.shortcut = SpikingSequential(*_conv_bn(cin, out, 1, stride), LIF(lif))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.branch(x) + identity


class SEWResNet(FeatureHead):
    """SEW-ResNet. ``stem="cifar"``: 3x3 conv, no pooling (32x32 inputs); ``"imagenet"``: 7x7/2
    conv and a 2x2 sum pool in place of max pooling, which the deployment graph does not have."""

    def __init__(
        self,
        block: type[SEWBlock],
        layers: list[int],
        in_channels: int = 3,
        num_classes: int = 10,
        width: int = 64,
        stem: str = "cifar",
        tau: float = 2e-3,
        v_threshold: float = 1.0,
        dt: float = 1e-3,
        readout: str = "spikes",
        readout_tau: float | None = None,
    ) -> None:
        super().__init__()
        lif = LIFParameters(tau=tau, v_threshold=v_threshold, dt=dt)
        last = readout_neuron(readout, lif, readout_tau)
        if stem == "cifar":
            stem_layers = [*_conv_bn(in_channels, width, 3), LIF(lif)]
        elif stem == "imagenet":
            stem_layers = [*_conv_bn(in_channels, width, 7, 2), LIF(lif), SumPool2d(2)]
        else:
            raise ModelError(f"unknown stem {stem!r}; known: cifar, imagenet")
        stages: list[nn.Module] = []
        cin = width
        for i, n in enumerate(layers):
            planes = width * 2**i
            for j in range(n):
                stages.append(block(cin, planes, 2 if (j == 0 and i > 0) else 1, lif))
                cin = planes * block.expansion
        self.features = SpikingSequential(*stem_layers, *stages)
        self.head = SpikingSequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), SynLinear(cin, num_classes), last)


class TorchvisionResNet(nn.Module):
    """A torchvision ResNet teacher; ``stem="cifar"`` swaps in a 3x3 stem without max pooling.
    The feature is ``layer4``'s output, matching the SEW-ResNet student's last stage."""

    def __init__(self, depth: int, in_channels: int = 3, num_classes: int = 10, stem: str = "cifar") -> None:
        super().__init__()
        import torchvision  # imported here: only the ResNet teachers need it

        factory = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34, 50: torchvision.models.resnet50}
        net = factory[depth](weights=None, num_classes=num_classes)
        if stem == "cifar":
            net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.net = net

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        feature = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        return feature, n.fc(torch.flatten(n.avgpool(feature), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[1]


# ---------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[..., nn.Module]
    spiking: bool
    teacher: str | None  # registered name of the matching ANN teacher (students only)
    summary: str


MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, *, spiking: bool, teacher: str | None = None, summary: str = ""):
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = ModelSpec(name, fn, spiking, teacher, summary or (fn.__doc__ or "").strip())
        return fn

    return deco


def model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def check_model_arguments(name: str, kwargs: dict[str, Any]) -> None:
    """Unknown names and arguments, and channels that are not positive integers, are errors that list the
    options (called before any data is read or any model trained, and by :func:`build_model`)."""
    params = model_arguments(name)
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ModelError(f"model {name!r} takes no argument(s) {', '.join(unknown)}; it takes: {', '.join(params)}")
    channels = kwargs.get("channels")  # (0 channels builds, and fails only at the first forward pass)
    if channels is not None and not (
        isinstance(channels, (list, tuple))
        and channels
        and all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in channels)
    ):
        raise ModelError(f"model {name!r}: channels must be a list of positive integers, got {channels!r}")


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; unknown names and arguments are errors that list the options."""
    spec = model_spec(name)
    check_model_arguments(name, kwargs)
    try:
        return spec.build(**kwargs)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:  # torch's layers refuse e.g. 0 or -1 channels
        given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ModelError(f"model {name!r} cannot be built with {given}: {first_line(e) or type(e).__name__}") from None


def model_arguments(name: str) -> list[str]:
    return list(inspect.signature(model_spec(name).build).parameters)


@register_model("digits_csnn", spiking=True, teacher="digits_cnn")
def digits_csnn(
    in_channels=1,
    input_size=8,
    num_classes=10,
    channels=(32, 64),
    batch_norm=False,
    tau=2e-3,
    v_threshold=1.0,
    dt=1e-3,
    readout="spikes",
    readout_tau=None,
):
    """CSNN for 1x8x8 digit spikes: two 3x3 conv LIF layers, 2x2 sum pool, linear LIF (or LI) readout."""
    return ConvNet(
        in_channels,
        input_size,
        list(channels),
        num_classes,
        batch_norm=batch_norm,
        tau=tau,
        v_threshold=v_threshold,
        dt=dt,
        readout=readout,
        readout_tau=readout_tau,
    )


@register_model("digits_cnn", spiking=False)
def digits_cnn(in_channels=1, input_size=8, num_classes=10, channels=(32, 64), batch_norm=False):
    """ANN twin of digits_csnn (ReLU, no time axis)."""
    return ConvNet(in_channels, input_size, list(channels), num_classes, batch_norm=batch_norm, spiking=False)


@register_model("nmnist_csnn", spiking=True, teacher="nmnist_cnn")
def nmnist_csnn(
    in_channels=2,
    input_size=34,
    num_classes=10,
    channels=(16, 32, 64),
    batch_norm=False,
    tau=2e-3,
    v_threshold=1.0,
    dt=1e-3,
    readout="spikes",
    readout_tau=None,
):
    """CSNN for 2x34x34 N-MNIST-style event frames: three conv LIF stages with sum pooling."""
    return ConvNet(
        in_channels,
        input_size,
        list(channels),
        num_classes,
        batch_norm=batch_norm,
        tau=tau,
        v_threshold=v_threshold,
        dt=dt,
        readout=readout,
        readout_tau=readout_tau,
    )


@register_model("nmnist_cnn", spiking=False)
def nmnist_cnn(in_channels=2, input_size=34, num_classes=10, channels=(16, 32, 64), batch_norm=False):
    """ANN twin of nmnist_csnn."""
    return ConvNet(in_channels, input_size, list(channels), num_classes, batch_norm=batch_norm, spiking=False)


@register_model("dvs_csnn", spiking=True, teacher="dvs_cnn")
def dvs_csnn(
    in_channels=2,
    input_size=128,
    num_classes=11,
    input_pool=2,
    channels=(16, 32, 64, 64),
    batch_norm=False,
    tau=2e-3,
    v_threshold=1.0,
    dt=1e-3,
    readout="spikes",
    readout_tau=None,
):
    """CSNN for larger DVS inputs (2x128x128 summed to 2x64x64 by an input pool), four conv stages."""
    return ConvNet(
        in_channels,
        input_size,
        list(channels),
        num_classes,
        input_pool=input_pool,
        batch_norm=batch_norm,
        tau=tau,
        v_threshold=v_threshold,
        dt=dt,
        readout=readout,
        readout_tau=readout_tau,
    )


@register_model("dvs_cnn", spiking=False)
def dvs_cnn(in_channels=2, input_size=128, num_classes=11, input_pool=2, channels=(16, 32, 64, 64), batch_norm=False):
    """ANN twin of dvs_csnn."""
    return ConvNet(
        in_channels,
        input_size,
        list(channels),
        num_classes,
        input_pool=input_pool,
        batch_norm=batch_norm,
        spiking=False,
    )


def _sew(block, layers):
    def build(in_channels=3, num_classes=10, width=64, stem="cifar", tau=2e-3, v_threshold=1.0, dt=1e-3,
              readout="spikes", readout_tau=None):  # fmt: skip
        return SEWResNet(block, layers, in_channels, num_classes, width, stem, tau=tau, v_threshold=v_threshold, dt=dt,
                         readout=readout, readout_tau=readout_tau)  # fmt: skip

    return build


def _teacher_resnet(depth):
    def build(in_channels=3, num_classes=10, stem="cifar"):
        return TorchvisionResNet(depth, in_channels, num_classes, stem)

    return build


for _depth, _block, _layers in (
    (18, SEWBasicBlock, [2, 2, 2, 2]),
    (34, SEWBasicBlock, [3, 4, 6, 3]),
    (50, SEWBottleneck, [3, 4, 6, 3]),
):
    register_model(f"sew_resnet{_depth}", spiking=True, teacher=f"resnet{_depth}",
                   summary=f"SEW-ResNet-{_depth} (ADD connections)")(_sew(_block, _layers))  # fmt: skip
    register_model(f"resnet{_depth}", spiking=False, summary=f"torchvision ResNet-{_depth} teacher")(
        _teacher_resnet(_depth)
    )


def teacher_arguments(student: str, student_args: dict) -> dict:
    """Arguments of the matching teacher: the student's, less those only neurons have."""
    teacher = model_spec(student).teacher
    if teacher is None:
        raise ModelError(f"model {student!r} has no registered teacher")
    allowed = set(model_arguments(teacher))
    return {k: v for k, v in student_args.items() if k in allowed}
