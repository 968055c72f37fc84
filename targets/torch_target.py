"""The ``torch`` target: a plan as PyTorch tensor operations, on CUDA when present, else the CPU.

Float precision follows the reference's order of operations (synapse sum + bias in float32, then
``beta*v + gain*I + leak``); a synapse whose float32 sum is not provably exact for the input at hand
(:func:`targets.plan.float32_exact_synapses`: unquantised weights, analog input, an LI layer's
membrane) accumulates in float64 and rounds once, as the reference does. Fixed precision uses int64 tensors
and exactly the arithmetic of :mod:`core.fixed` (convolutions run in float64, where every integer
involved is exact, and are rounded back to int64). An LI layer is the LIF update without the spike;
its membrane is its output, and scores add each step's float32 output to a float64 total.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from core import fixed
from core.errors import ConfigError
from targets.plan import SYNAPSE_KINDS, Node, Plan, check_spikes, float32_exact_synapses
from targets.reference import RunResult, membrane, multi_spikes


def pick_device(device: str | None = None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA device is available")
    return torch.device(device)


class TorchPlan:
    """A plan's parameters moved onto a device once, ready to run many batches."""

    def __init__(self, plan: Plan, device: torch.device) -> None:
        self.plan, self.device = plan, device
        self.integer = plan.precision == "fixed"
        self.tensors: dict[str, dict[str, torch.Tensor]] = {}
        for n in plan.nodes:
            t: dict[str, torch.Tensor] = {}
            if n.kind in SYNAPSE_KINDS:
                if self.integer:
                    t["weight"] = torch.as_tensor(n.fixed["weight"], dtype=torch.float64, device=device)
                    shape = (-1,) + (1,) * (len(n.out_shape) - 1)
                    t["bias"] = torch.as_tensor(n.fixed["bias"], dtype=torch.int64, device=device).view(shape)
                else:
                    t["weight"] = torch.as_tensor(n.params["weight"], device=device)
                    t["bias"] = torch.as_tensor(n.params["bias"], device=device)
            elif n.kind in ("lif", "li") and self.integer and "bias" in n.fixed:
                shape = (-1,) + (1,) * (len(n.out_shape) - 1)
                t["bias"] = torch.as_tensor(n.fixed["bias"], dtype=torch.int64, device=device).view(shape)
            elif n.kind in ("lif", "li") and not self.integer:
                for k in ("beta", "gain", "leak", "v_threshold", "v_reset", "a", "v_leak", "b", "v0"):
                    if k in n.params:
                        t[k] = torch.as_tensor(n.params[k], device=device)
            self.tensors[n.name] = t
        self.synapses = {n.name for n in plan.nodes if n.kind in SYNAPSE_KINDS}
        self.delay_rows: dict[str, torch.Tensor] = {}
        self._float64: dict[float | None, set[str]] = {}  # by input range: synapses that sum in float64
        self.float64_synapses: set[str] = set()

    def _float64_synapses(self, spikes: np.ndarray) -> set[str]:
        integral = spikes.dtype.kind in "biu" or bool(np.array_equal(spikes, np.rint(spikes)))
        key = float(np.abs(spikes).max(initial=0)) if integral else None
        if key not in self._float64:
            self._float64[key] = self.synapses - float32_exact_synapses(self.plan, key)
        return self._float64[key]

    def _membrane(self, n, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The membrane of a LIF or LI layer after this step's input, before any spike and reset:
        Loihi's truncating decay, the input and bias in fixed precision, saturating at 24 bits (a
        CubaLIF's current: :func:`core.fixed.current_step`);
        ``beta v + gain x + leak`` in float."""
        if self.integer:
            f = n.fixed
            prod = v * (fixed.DECAY_UNITY - (f["du"] + 1 if "du" in f else f["dv"]))
            v = torch.sign(prod) * (prod.abs() >> fixed.DECAY_SHIFT) + (x if f.get("current") else x << fixed.ACT_SHIFT)
            if "du" in f:  # a CubaLIF's current: no bias, Lava's 24-bit wrap-around
                w = 2 * fixed.U_WRAP
                return torch.where(v > fixed.U_WRAP, v - w, torch.where(v <= -fixed.U_WRAP, v + w, v))
            return (v + self.tensors[n.name]["bias"]).clamp(-fixed.V_MAX, fixed.V_MAX)
        # NIR's beta*v + gain*I + leak, or a dialect's arithmetic, in the reference's float32 operations
        return membrane(self.tensors[n.name], v, x, n.params.get("form", ""))

    def _emit(self, n: Node, buf: torch.Tensor) -> torch.Tensor:
        """What a delay emits now: per element, its sources' sum ``steps`` steps ago (``buf`` holds the
        last ``max(steps)`` sums, oldest first)."""
        B = buf.shape[1]
        if n.name not in self.delay_rows:
            self.delay_rows[n.name] = torch.as_tensor(buf.shape[0] - n.params["steps"].reshape(-1), device=self.device)
        rows = self.delay_rows[n.name]
        y = buf[rows, :, torch.arange(rows.numel(), device=self.device)].T  # (B, N)
        return y.reshape(B, *n.out_shape)

    def _accumulate(self, n: Node, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """A synapse's weighted sum without the bias (``F.conv1d``/``F.conv2d`` with the plan's stride,
        padding, dilation and groups, or a matrix product), in the dtype of ``x`` and ``w``."""
        if n.kind == "affine":
            return x @ w.T
        p = n.params
        conv = F.conv2d if n.kind == "conv" else F.conv1d
        return conv(x, w, stride=p["stride"], padding=p["padding"], dilation=p["dilation"], groups=p["groups"])

    def _synapse(self, n: Node, x: torch.Tensor) -> torch.Tensor:
        t = self.tensors[n.name]
        if self.integer:
            acc = torch.round(self._accumulate(n, x.to(torch.float64), t["weight"])).to(torch.int64)
            e = n.fixed["weight_exp"]
            return acc << e if e >= 0 else acc >> -e
        bias = t["bias"].view((-1,) + (1,) * (len(n.out_shape) - 1))
        if n.name in self.float64_synapses:  # float64 accumulation rounded once, then the bias: the reference's rule
            acc = self._accumulate(n, x.to(torch.float64), t["weight"].to(torch.float64))
            return acc.to(torch.float32) + bias
        # Accumulate without the bias, then add it, as the reference does; on the power-of-two
        # grid of converted graphs the float32 sum is exact in any order.
        return self._accumulate(n, x, t["weight"]) + bias

    @torch.no_grad()
    def run(
        self, spikes: np.ndarray | torch.Tensor, record: bool = False, state: dict[str, torch.Tensor] | None = None
    ) -> RunResult:
        """Run from rest, or from ``state`` (membranes by LIF/LI name; updated in place: streaming)."""
        plan = self.plan
        if isinstance(spikes, torch.Tensor):
            spikes = spikes.cpu().numpy()
        spikes = check_spikes(plan, spikes)
        if not self.integer:
            self.float64_synapses = self._float64_synapses(spikes)
        x_all = torch.as_tensor(spikes)
        x_all = x_all.to(self.device, torch.int64 if self.integer else torch.float32)
        T, B = x_all.shape[:2]
        lifs = [n for n in plan.nodes if n.kind == "lif"]
        lis = [n for n in plan.nodes if n.kind == "li"]
        state = {} if state is None else state
        for n in lifs + lis:
            if n.name not in state or state[n.name].shape[0] != B:
                state[n.name] = torch.zeros(
                    (B, *n.out_shape), dtype=torch.int64 if self.integer else torch.float32, device=self.device
                )
                if "v0" in n.params and not self.integer:  # a dialect's rest state (Norse: v_leak)
                    state[n.name][:] = self.tensors[n.name]["v0"]
        counts = {n.name: torch.zeros(B, dtype=torch.int64, device=self.device) for n in lifs}
        rasters = (
            {n.name: torch.zeros((T, B, *n.out_shape), dtype=torch.uint8, device=self.device) for n in lifs}
            if record
            else None
        )
        traces = (
            {n.name: torch.zeros((T, B, *n.out_shape), dtype=state[n.name].dtype, device=self.device) for n in lis}
            if record
            else None
        )
        by_name = {n.name: n for n in plan.nodes}
        scores_f64 = plan.scores and not self.integer
        out_counts = torch.zeros(
            (B, int(np.prod(by_name[plan.outputs[0]].out_shape))),
            dtype=torch.float64 if scores_f64 else torch.int64,
            device=self.device,
        )
        vdt = torch.int64 if self.integer else torch.float32
        for n in plan.nodes:  # a delay's memory (its sources' sums, last max(steps) steps) is state too
            if n.kind == "delay" and (n.name not in state or state[n.name].shape[1] != B):
                state[n.name] = torch.zeros((int(n.params["steps"].max()), B, int(np.prod(n.out_shape))), dtype=vdt,
                                            device=self.device)  # fmt: skip
        for t in range(T):
            values = {"input": x_all[t]}
            for n in plan.nodes:
                if n.kind == "delay":
                    values[n.name] = self._emit(n, state[n.name])
                    continue
                x = values[n.sources[0]]
                for s in n.sources[1:]:
                    x = x + values[s]
                if n.kind in SYNAPSE_KINDS:
                    y = self._synapse(n, x)
                elif n.kind == "lif":
                    v = self._membrane(n, state[n.name], x)
                    if self.integer:
                        s = v > (n.fixed["vth"] << fixed.VTH_SHIFT)
                        state[n.name] = torch.where(s, torch.zeros_like(v), v)
                        y = s.to(torch.int64)
                    else:
                        p = self.tensors[n.name]
                        if "spike" in n.params:  # several spikes per step, each subtracting the threshold
                            s = multi_spikes({**p, "spike": n.params["spike"]}, v)
                            state[n.name] = v - s * p["v_threshold"]
                        elif n.params.get("reset") == "subtract_next":  # the state is the unreset membrane
                            v = torch.where(state[n.name] > p["v_threshold"], v - p["v_threshold"], v)
                            s = v > p["v_threshold"]
                            state[n.name] = v
                        else:
                            s = v > p["v_threshold"]
                            state[n.name] = torch.where(s, p["v_reset"], v)
                        y = s.to(torch.float32)
                    counts[n.name] += s.reshape(B, -1).sum(1).to(torch.int64)
                    if record:
                        rasters[n.name][t] = s
                elif n.kind == "li":
                    y = v = self._membrane(n, state[n.name], x)
                    # Norse's synaptic current: the output has this step's jump, the state decays after it
                    state[n.name] = v + self.tensors[n.name]["b"] * v if n.params.get("form") == "norse_jump" else v
                    if record:
                        traces[n.name][t] = v
                elif n.kind in ("sumpool", "avgpool"):
                    k, st, pd = n.params["kernel"], n.params["stride"], n.params["padding"]
                    xf = x.to(torch.float64) if self.integer else x
                    y = F.avg_pool2d(xf, k, st, pd, count_include_pad=True, divisor_override=1)
                    if n.kind == "avgpool":
                        y = y / float(k[0] * k[1])
                    if self.integer:
                        y = torch.round(y).to(torch.int64)
                elif n.kind == "flatten":
                    y = x.reshape(B, *n.out_shape)
                values[n.name] = y
            for n in plan.nodes:
                if n.kind == "delay":
                    x = values[n.sources[0]]
                    for src in n.sources[1:]:
                        x = x + values[src]
                    buf = state[n.name]  # oldest first: shift by one step, the newest last
                    state[n.name] = torch.cat([buf[1:], x.reshape(1, B, -1).to(buf.dtype)])
            out = values[plan.outputs[0]]
            for s in plan.outputs[1:]:
                out = out + values[s]
            out_counts += out.reshape(B, -1).to(torch.float64 if scores_f64 else torch.int64)
        return RunResult(
            out_counts.cpu().numpy(),
            {k: v.cpu().numpy() for k, v in counts.items()},
            {k: v.cpu().numpy() for k, v in rasters.items()} if record else None,
            traces={k: v.cpu().numpy() for k, v in traces.items()} if record else None,
        )


def prepare(plan: Plan, device: str | None = None) -> TorchPlan:
    dev = pick_device(device)
    key = ("torch", str(dev))
    if key not in plan.prepared:
        plan.prepared[key] = TorchPlan(plan, dev)
    return plan.prepared[key]


def run(plan: Plan, spikes, *, record: bool = False, device: str | None = None) -> RunResult:
    return prepare(plan, device).run(spikes, record=record)


class Stream:
    """Batch-size-1 run that keeps the membranes from one call to the next (streaming)."""

    def __init__(self, plan: Plan, device: str | None = None) -> None:
        self.torch_plan = prepare(plan, device)
        self.state: dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        self.state = {}

    def feed(self, spikes: np.ndarray) -> np.ndarray:
        """Advance by ``spikes`` shaped ``(t, *input_shape)``; returns the output spike counts (classes,), or
        the scores of an LI readout over these steps."""
        return self.torch_plan.run(np.asarray(spikes)[:, None], state=self.state).counts[0]


def stream(plan: Plan, *, device: str | None = None, threads: int | None = None) -> Stream:
    """A streaming run; ``threads`` sets this process's torch CPU threads (batch 1 gains nothing
    from more than one)."""
    if threads is not None:
        torch.set_num_threads(threads)
    return Stream(plan, device)
