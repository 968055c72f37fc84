r"""The leaky integrate-and-fire (LIF) neuron, exactly as DESIGN.md states its float semantics, and
its non-spiking sibling, the leaky integrator (LI) used as an analog readout.

Discrete time with step ``dt`` (seconds), per neuron:

.. math::
    v[t] = \beta\, v[t-1] + I[t], \qquad s[t] = v[t] > \vartheta, \qquad v[t] \leftarrow 0 \text{ where } s[t]

with :math:`\beta = 1 - dt/\tau`. ``I[t]`` is the synaptic input (bias included) computed from the
layer below at the same step. The forward pass computes exactly this; the surrogate gradient
changes only the backward pass, so a trained model and its deployed graph agree.

The LI neuron is the same equation without threshold and reset; its output is the membrane:

.. math::
    v[t] = \beta\, v[t-1] + I[t]

As a readout, ``sum_t v[t]`` over the ``T`` steps is the logit (an analog score per class, where a
LIF readout gives a spike count). It maps to ``nir.LI(tau = dt/(1-beta), r = tau/dt, v_leak = 0)``.

Shaped like Norse: pure step functions over small immutable records, wrapped by thin modules
that run a whole time-first sequence ``(T, B, ...)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn

from core.errors import ModelError


@dataclass(frozen=True)
class LIFParameters:
    """Parameters of one LIF layer, in NIR's names and SI units."""

    tau: float = 2e-3  # membrane time constant, s
    v_threshold: float = 1.0  # firing threshold, in units of the synaptic input
    dt: float = 1e-3  # simulation step, s
    v_reset: float = 0.0  # reset potential (DESIGN fixes it at 0)
    v_leak: float = 0.0  # leak potential (DESIGN fixes it at 0)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tau) and math.isfinite(self.dt) and self.dt > 0 and self.tau >= self.dt):
            raise ModelError(
                f"LIF needs finite tau >= dt > 0 (so that 0 <= beta < 1), got tau={self.tau}, dt={self.dt}"
            )
        if not math.isfinite(self.v_threshold) or self.v_threshold <= 0:
            raise ModelError(f"LIF needs a finite positive v_threshold, got {self.v_threshold}")
        if self.v_reset != 0.0 or self.v_leak != 0.0:
            raise ModelError("DESIGN.md fixes v_reset = v_leak = 0; other values are not deployable")

    @property
    def beta(self) -> float:
        """Membrane decay per step, ``1 - dt/tau``."""
        return 1.0 - self.dt / self.tau

    @classmethod
    def from_beta(cls, beta: float, v_threshold: float = 1.0, dt: float = 1e-3) -> LIFParameters:
        if not 0.0 <= beta < 1.0:
            raise ModelError(f"beta must lie in [0, 1), got {beta}")
        return cls(tau=dt / (1.0 - beta), v_threshold=v_threshold, dt=dt)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class LIFState(NamedTuple):
    v: torch.Tensor  # membrane potential, units of the synaptic input


class SuperSpike(torch.autograd.Function):
    """Heaviside step ``x > 0`` forward; fast-sigmoid derivative ``1 / (1 + k|x|)^2`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, k: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.k = k
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad / (1.0 + ctx.k * x.abs()) ** 2, None


SURROGATE_SLOPE = 4.0  # k of the fast sigmoid, per unit of threshold


def lif_step(
    current: torch.Tensor, state: LIFState, p: LIFParameters, slope: float = SURROGATE_SLOPE
) -> tuple[torch.Tensor, LIFState]:
    """One step: ``v = beta*v + I``; ``s = v > theta``; ``v = 0`` where ``s``."""
    v = p.beta * state.v + current
    s = SuperSpike.apply((v - p.v_threshold) / p.v_threshold, slope)
    # The reset is detached from the graph: the gradient flows through the integration only,
    # which keeps deep SNNs trainable; the forward value is the exact reset to 0.
    v = v * (1.0 - s.detach())
    return s, LIFState(v)


def lif_sequence(
    currents: torch.Tensor, p: LIFParameters, state: LIFState | None = None
) -> tuple[torch.Tensor, LIFState]:
    """Run :func:`lif_step` over time-first ``currents`` ``(T, B, ...)``; returns spikes ``(T, B, ...)``."""
    if state is None:
        state = LIFState(torch.zeros_like(currents[0]))
    spikes = []
    for t in range(currents.shape[0]):
        s, state = lif_step(currents[t], state, p)
        spikes.append(s)
    return torch.stack(spikes), state


class LIF(nn.Module):
    """A layer of LIF neurons over a whole sequence ``(T, B, ...) -> (T, B, ...)`` spikes.

    ``tau`` and ``v_threshold`` are per layer and are buffers (saved in the state dict), so a
    checkpoint alone rebuilds the neuron. Setting ``record = True`` keeps the last membrane trace
    (``(T, B, ...)``, before reset) for tests and plots.
    """

    def __init__(self, params: LIFParameters | None = None) -> None:
        super().__init__()
        params = params or LIFParameters()
        self.register_buffer("tau", torch.tensor(params.tau, dtype=torch.float64))
        self.register_buffer("v_threshold", torch.tensor(params.v_threshold, dtype=torch.float64))
        self.register_buffer("dt", torch.tensor(params.dt, dtype=torch.float64))
        self.record = False
        self.trace: torch.Tensor | None = None

    @property
    def params(self) -> LIFParameters:
        return LIFParameters(tau=float(self.tau), v_threshold=float(self.v_threshold), dt=float(self.dt))

    def forward(self, currents: torch.Tensor) -> torch.Tensor:
        p = self.params
        state = LIFState(torch.zeros_like(currents[0]))
        spikes, trace = [], []
        for t in range(currents.shape[0]):
            if self.record:
                trace.append(p.beta * state.v + currents[t])
            s, state = lif_step(currents[t], state, p)
            spikes.append(s)
        if self.record:
            self.trace = torch.stack(trace).detach()
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        p = self.params
        return f"tau={p.tau:g} s, v_threshold={p.v_threshold:g}, dt={p.dt:g} s, beta={p.beta:g}"


# ---------------------------------------------------------------------------------------------
# The leaky integrator (LI): no threshold, no reset, the membrane is the output


@dataclass(frozen=True)
class LIParameters:
    r"""Parameters of one LI layer, in NIR's names and SI units.

    .. math::
        v[t] = \beta\, v[t-1] + I[t], \qquad \beta = 1 - dt/\tau

    The default ``tau = 2 dt`` gives ``beta = 0.5``, a power of two: with quantised weights on a
    power-of-two grid every membrane value is then exact in float32 (each step adds one bit below
    the grid), so that float targets agree bit for bit and Loihi's 12-bit decay ``dv = 2048`` is exact.
    """

    tau: float = 2e-3  # membrane time constant, s
    dt: float = 1e-3  # simulation step, s
    v_leak: float = 0.0  # leak potential (fixed at 0, as the LIF's)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tau) and math.isfinite(self.dt) and self.dt > 0 and self.tau >= self.dt):
            raise ModelError(f"LI needs finite tau >= dt > 0 (so that 0 <= beta < 1), got tau={self.tau}, dt={self.dt}")
        if self.v_leak != 0.0:
            raise ModelError("the LI readout fixes v_leak = 0; other values are not deployable")

    @property
    def beta(self) -> float:
        """Membrane decay per step, ``1 - dt/tau``."""
        return 1.0 - self.dt / self.tau

    @classmethod
    def from_beta(cls, beta: float, dt: float = 1e-3) -> LIParameters:
        if not 0.0 <= beta < 1.0:
            raise ModelError(f"beta must lie in [0, 1), got {beta}")
        return cls(tau=dt / (1.0 - beta), dt=dt)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class LIState(NamedTuple):
    v: torch.Tensor  # membrane potential, units of the synaptic input


def li_step(current: torch.Tensor, state: LIState, p: LIParameters) -> tuple[torch.Tensor, LIState]:
    """One step: ``v = beta*v + I``; the output is ``v`` itself (no threshold, no reset)."""
    v = p.beta * state.v + current
    return v, LIState(v)


def li_sequence(currents: torch.Tensor, p: LIParameters, state: LIState | None = None) -> tuple[torch.Tensor, LIState]:
    """Run :func:`li_step` over time-first ``currents`` ``(T, B, ...)``; returns the membrane trace ``(T, B, ...)``."""
    if state is None:
        state = LIState(torch.zeros_like(currents[0]))
    trace = []
    for t in range(currents.shape[0]):
        v, state = li_step(currents[t], state, p)
        trace.append(v)
    return torch.stack(trace), state


class LI(nn.Module):
    """A layer of leaky integrators over a whole sequence ``(T, B, ...) -> (T, B, ...)`` membranes.

    As a readout, ``output.sum(0)`` is the logit. ``tau`` and ``dt`` are buffers (saved in the
    state dict), so a checkpoint alone rebuilds the layer.
    """

    def __init__(self, params: LIParameters | None = None) -> None:
        super().__init__()
        params = params or LIParameters()
        self.register_buffer("tau", torch.tensor(params.tau, dtype=torch.float64))
        self.register_buffer("dt", torch.tensor(params.dt, dtype=torch.float64))

    @property
    def params(self) -> LIParameters:
        return LIParameters(tau=float(self.tau), dt=float(self.dt))

    def forward(self, currents: torch.Tensor) -> torch.Tensor:
        return li_sequence(currents, self.params)[0]

    def extra_repr(self) -> str:
        p = self.params
        return f"tau={p.tau:g} s, dt={p.dt:g} s, beta={p.beta:g} (non-spiking)"
