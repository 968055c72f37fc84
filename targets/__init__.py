"""Execution targets, one backend each, found through one explicit registry.

A target has a name, the precisions and node kinds it supports, and one way to run:
``run(plan, spikes (T, B, ...), record=False) -> RunResult`` (output spike counts, or an LI
readout's per-class scores, per-layer spike counts, and on request the per-layer rasters and LI
membrane traces). Norse 1.1.0's ``from_nir`` maps no ``nir.LI``, so the ``norse`` target declares
the ``li`` kind unsupported. Modules load lazily, so that asking for the list
of targets imports no backend. A target whose backend may be missing on a machine (Lava's separate
Python 3.10 environment) names a function that says why it cannot run here; commands skip it when
asked for every target and refuse it with that reason when it is named.

- :mod:`targets.plan`: a NIR graph (ours or another tool's) as the execution plan every target runs.
- :mod:`targets.reference`: plain numpy, one step at a time; defines the semantics.
- :mod:`targets.torch_target`, :mod:`targets.onnx_target`, :mod:`targets.eventsim` (the event-driven
  simulator), :mod:`targets.lava_target` (with :mod:`targets.lava_worker`, run in ``.venv-lava``),
  :mod:`targets.norse_target`, :mod:`targets.snntorch_target`: one backend each.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from core.errors import ConfigError, ModelError

DIALECT_RULES = (
    "subtract_next",
    "norse_box",
    "norse_cell",
    "norse_jump",
    "v0",
    "rockpool_syn",
    "floor_ge",
    "trunc_gt0",
)
ALL_KINDS = ("conv", "conv1d", "affine", "lif", "li", "sumpool", "avgpool", "flatten", "delay")
CONV_FEATURES = ("dilation", "groups")  # what a convolution may do beyond a plain 2-D correlation (Plan.conv_features)


@dataclass(frozen=True)
class TargetInfo:
    name: str
    module: str  # the module that implements ``run(plan, spikes, record=False, **options)``
    precisions: tuple[str, ...]
    kinds: tuple[str, ...]
    summary: str
    rasters: bool = True  # can return per-layer rasters (record=True)
    options: tuple[str, ...] = ()  # extra keyword options its run() takes
    latency: int = 0  # extra steps of delay per synaptic layer (Lava's Dense/Conv: 1)
    available: str | None = None  # a function in ``module``: () -> why it cannot run here, or None
    streams: bool = False  # ``module`` has ``stream(plan, **options)``: batch 1, state kept between calls
    refuses: str | None = None  # a function in ``module``: (plan, spikes) -> why it would not match this graph, or None
    rules: tuple[str, ...] = ()  # neuron rules of producer dialects it computes (Plan.rules)
    conv_features: tuple[str, ...] = ()  # convolution features it computes (CONV_FEATURES; Plan.conv_features)

    def runner(self) -> Callable:
        return importlib.import_module(self.module).run

    def streamer(self) -> Callable:
        return importlib.import_module(self.module).stream

    def unsupported(self, plan) -> str | None:
        """Why this target cannot compute ``plan`` at all (its precision, a node kind, a dialect's neuron
        rule), or None; :meth:`refusal` adds what the target itself declines."""
        if plan.precision not in self.precisions:
            return f"it runs {' and '.join(self.precisions)} precision only; the graph is {plan.precision}"
        missing = sorted({f"{n.origin or n.kind} ({n.kind})" for n in plan.nodes if n.kind not in self.kinds})
        if missing:
            nodes = [n.name for n in plan.nodes if n.kind not in self.kinds]
            return f"it has no {', '.join(missing)}: node(s) {', '.join(nodes)}"
        rules = sorted(plan.rules - set(self.rules))
        if rules:
            return f"it does not compute the {', '.join(rules)} rule of the {plan.meta.get('dialect')} dialect"
        feats = {f: names for f, names in sorted(plan.conv_features.items()) if f not in self.conv_features}
        if feats:
            return "it has no convolution " + "; ".join(f"{f} ({', '.join(names)})" for f, names in feats.items())
        return None

    def require(self, plan) -> None:
        """Refuse, by name, a plan :meth:`unsupported` says this target cannot compute (a direct call
        never gets a silent wrong answer)."""
        reason = self.unsupported(plan)
        if reason:
            raise ModelError(f"the {self.name} target cannot run {plan.source}: {reason}")

    def refusal(self, plan, spikes) -> str | None:
        """Why this target declines ``plan`` on these (padded) ``spikes``, or None (it runs it)."""
        if self.refuses is None:
            return None
        return getattr(importlib.import_module(self.module), self.refuses)(plan, spikes)

    def unavailable_reason(self) -> str | None:
        """Why this target cannot run on this machine, or None when it can (imports its module only
        when it names an ``available`` check)."""
        if self.available is None:
            return None
        return getattr(importlib.import_module(self.module), self.available)()


TARGETS: dict[str, TargetInfo] = {}


def register_target(info: TargetInfo) -> None:
    if info.name in TARGETS:
        raise ConfigError(f"target {info.name!r} is registered twice")
    TARGETS[info.name] = info


DEVICES = ("auto", "cpu", "cuda")  # the torch target's --device (auto: CUDA when present)


def get_target(name: str) -> TargetInfo:
    if name not in TARGETS:
        raise ConfigError(f"unknown target {name!r}; known targets: {', '.join(TARGETS)}")
    return TARGETS[name]


def unavailable_reason(name: str) -> str | None:
    """Why target ``name`` cannot run on this machine, or None when it can."""
    return get_target(name).unavailable_reason()


def require_target(name: str, chosen: tuple[str, ...] = ()) -> TargetInfo:
    """The target ``name``, which must be able to run here; else the reason, as an error. ``chosen``:
    the options the user set (flags away from their defaults), each of which the target must take."""
    info = get_target(name)
    for option in chosen:
        if option not in info.options:
            takes = ", ".join(f"--{o}" for o in info.options) or "none"
            raise ConfigError(f"--{option} does not apply to target {name!r} (the options it takes: {takes})")
    reason = info.unavailable_reason()
    if reason:
        raise ConfigError(f"target {name!r} is unavailable on this machine: {reason}")
    return info


register_target(TargetInfo("reference", "targets.reference", ("float", "fixed"), ALL_KINDS,
                           "plain numpy, one step at a time: defines the semantics", rules=DIALECT_RULES,
                           conv_features=CONV_FEATURES))  # fmt: skip
register_target(TargetInfo("torch", "targets.torch_target", ("float", "fixed"), ALL_KINDS,
                           "PyTorch tensors, CUDA when present", options=("device", "threads"), streams=True,
                           rules=DIALECT_RULES, conv_features=CONV_FEATURES))  # fmt: skip
register_target(TargetInfo("onnx", "targets.onnx_target", ("float", "fixed"), ALL_KINDS,
                           "ONNX Runtime on the .onnx file beside the .nir (CUDA provider when present)", rasters=False,
                           options=("threads",), streams=True, rules=DIALECT_RULES, conv_features=CONV_FEATURES))  # fmt: skip
register_target(TargetInfo("eventsim", "targets.eventsim", ("float", "fixed"), ALL_KINDS,
                           "the project's event-driven CPU simulator (numba): work per spike, not per neuron", streams=True,
                           rules=DIALECT_RULES, conv_features=CONV_FEATURES))  # fmt: skip
register_target(TargetInfo("norse", "targets.norse_target", ("float",), ("conv", "affine", "lif", "sumpool", "flatten"),
                           "Norse 1.1.0 reading the .nir file (independent check of the file format)", refuses="refusal",
                           conv_features=CONV_FEATURES))  # fmt: skip
register_target(TargetInfo("snntorch", "targets.snntorch_target", ("float",), ("conv", "affine", "lif", "sumpool", "avgpool", "flatten"),
                           "snnTorch 1.0.0's own import of the graph written for it (convert.peers; the interop extra)",
                           available="unavailable_reason", refuses="refusal", conv_features=CONV_FEATURES))  # fmt: skip
register_target(TargetInfo("lava", "targets.lava_target", ("float", "fixed"), ALL_KINDS,
                           "Lava 0.10's CPU simulation of Loihi 2 (fixed_pt bit-accurate, floating_pt), worker in .venv-lava", latency=1,
                           available="unavailable_reason", refuses="refusal", conv_features=CONV_FEATURES))  # fmt: skip
