"""The Python side of :mod:`targets.eventsim`: the target's functions and the state between calls.

:class:`EventSim` holds a plan compiled once (:func:`~targets.eventsim.layout.compile_plan`) and
what every call reuses: input events read by a compiled scan into buffers kept from call to call,
the accumulator width chosen per input range, scratch buffers, and the results of the kernel
(:func:`~targets.eventsim.kernels._simulate`, one call per batch) put back into the plan's order.
:class:`Stream` keeps the neuron :class:`State` from one call to the next at batch size 1.
:func:`run`, :func:`stream` and :func:`prepare` are what the target registry calls.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

from core.errors import DataError, ModelError
from core.fixed import ACT_SHIFT, DECAY_SHIFT, DECAY_UNITY, V_MAX, VTH_SHIFT
from targets.eventsim import table as K
from targets.eventsim.aot import Entry, resolved, type_key
from targets.eventsim.layout import Compiled, aligned, aligned_empty, aligned_zeros, compile_plan
from targets.eventsim.table import AFFINE, CONV, K_KIND, K_ROFF, K_TOFF, MAX_SPIKES, SCAN
from targets.plan import FRACTIONAL_SPIKES, NON_FINITE_SPIKES, Plan, check_spikes, lower_convolutions
from targets.reference import RunResult

SIMULATE, INPUT_EVENTS = Entry("simulate"), Entry("input_events")


class EventSim:
    """A plan compiled once into the flat arrays the kernel runs; reused by every batch."""

    def __init__(self, plan: Plan) -> None:
        from targets import get_target

        get_target("eventsim").require(plan)  # (its node kinds, rules and convolutions: all; a precision)
        self.plan = plan  # shapes and checks as the user's graph states them
        self.lowered = lower_convolutions(plan)  # what the kernel runs: plain 2-D convolutions only
        self.integer = plan.precision == "fixed"
        self.value_dtype = np.int64 if self.integer else np.float32
        self.compiled: Compiled = compile_plan(self.lowered, self.integer, self.value_dtype)
        self._weights_as: dict[type, np.ndarray] = {}
        self._scratch: dict[type, tuple[np.ndarray, ...]] = {}
        self._by_range: dict[tuple[float, bool], tuple] = {}  # (see _kernel_args)
        self._run_state: State | None = None
        self._kernels: dict = {}  # the kernels' versions per kind of call (see input_events, _execute)
        self._forms: dict = {}  # input forms met, and how they are read (see input_events)
        self._names = ["input"] + [n.name for n in self.plan.nodes]  # by table row
        c = self.compiled
        self._synapse_rows = [k for k in range(1, len(c.table)) if c.table[k, K_KIND] in (CONV, AFFINE)]
        # what every call needs, worked out once (a call at batch 1 is short: its Python counts)
        self._update_rows = [int(k) for k in c.lif_rows] + [int(k) for k in c.li_rows]  # (Python ints)
        self._synapse_names = [(self._names[k], k) for k in self._synapse_rows]  # (for the stats of a run)
        self._update_names = [(self._names[k], k) for k in self._update_rows]
        self._stat_names = [(name, "synaptic_events", k) for name, k in self._synapse_names] + [
            (name, "neuron_updates", k) for name, k in self._update_names
        ]
        shape = self.lowered.input_shape
        self._channels_pixels = (shape[0], shape[1] * shape[2]) if len(shape) == 3 else (1, int(np.prod(shape)))
        # scores of an LI readout: float64 totals of the float32 outputs (fixed: integers, as counts)
        self._count_dtype = np.float64 if self.plan.scores and not self.integer else np.int64
        # the outputs' plan order from the kernel's (None: the same order, nothing to permute)
        in_order = np.array_equal(c.out_perm, np.arange(len(c.out_perm)))
        self._out_order = None if in_order else np.argsort(c.out_perm)
        self._rooms = self._saturation_rooms()
        self._new_buffers()

    def _new_buffers(self) -> None:
        """The buffers a call reuses (each simulator its own: see :meth:`twins`)."""
        self._event_buffers = (aligned_empty(1 << 16, np.int64), aligned_empty(1 << 16, self.value_dtype))
        self._offsets = np.empty(0, dtype=np.int64)
        self._record_layout: tuple = ()  # a recording call's ((T, B), node table, raster and trace offsets)
        self._no_record = (np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=self.value_dtype))
        self._cycles = np.zeros(len(self.compiled.table), dtype=np.int64)
        self._twins: list[EventSim] = []  # simulators for the other threads of a batch (twins)

    @property
    def cycles(self) -> dict[str, int]:
        """The last call's CPU cycles per node (the kernel's per-node profile), as a new dict."""
        return dict(zip(self._names, self._cycles.tolist(), strict=True))

    # ------------------------------------------------------------------------------ accumulators
    def acc_dtype(self, input_max: float, integral: bool = True) -> type:
        """The narrowest accumulator in which every sum is exact for inputs up to ``input_max``
        (``integral``: integers only): fixed precision int32 when no sum can reach 2**31, else int64;
        float precision float32 when every partial sum is exactly representable in float32, else
        float64 (the reference's float64 sum is then exact too, so both round to the same float32)."""
        return self._for_range(input_max, integral)[0]

    def unclamped(self, input_max: float, integral: bool = True) -> np.ndarray:
        """Per node table row, 1 for a fixed-precision LIF whose saturation cannot act on inputs up to
        ``input_max``: the kernel's dense update then skips its clamps (:func:`_dense_lif`).

        Exact by these bounds: ``X``, the largest input the layer can receive after the weight
        exponent's shift (from the same per-node bounds as :meth:`acc_dtype`), is at most
        ``X_CLAMP``, where the input's clamp starts; the exponent is not negative (one left shift
        then, into 32 bits without overflow); with every membrane in ``[-V_MAX, V_MAX]`` (rest values
        included), ``trunc(V_MAX * keep / 4096) + 64 X + max |bias| <= V_MAX``, so no new membrane
        falls below ``-V_MAX``; and the threshold is below ``V_MAX``, so a membrane above ``V_MAX``
        spikes and resets whether or not it was clamped first."""
        return self._for_range(input_max, integral)[1]

    def _for_range(self, input_max: float, integral: bool) -> tuple[type, np.ndarray]:
        return self._kernel_args(input_max, integral)[:2]

    def _kernel_args(self, input_max: float, integral: bool) -> tuple[type, np.ndarray, tuple]:
        """``(accumulator dtype, unclamped, the kernel's network and scratch arguments)`` for this input
        range: computed once per range (a call at batch 1 is short: its Python counts)."""
        key = (input_max, integral or self.integer)
        if key not in self._by_range:
            adt, unclamped = self._ranges(*key)
            c = self.compiled
            network = (c.srcs, c.outputs, c.decode, c.windows, c.pool_map, self.weights(adt), c.biases, c.sticky,
                       *c.lif_params, c.vrest, unclamped, *self.scratch(adt))  # fmt: skip
            self._by_range[key] = (adt, unclamped, network)
        return self._by_range[key]

    def _ranges(self, input_max: float, integral: bool) -> tuple[type, np.ndarray]:
        # a delay passes on what its source (later in the plan) emitted: its bound is found by
        # iterating to a fixed point (a loop whose bound keeps growing is unbounded)
        delays = {n.name: n.sources[0] for n in self.plan.nodes if n.kind == "delay"}
        known = {d: (0.0, True) for d in delays}
        for _ in range(len(delays) + 2):
            result, bound, whole, into = self._acc_pass(input_max, integral, known)
            new = {d: (bound[s], whole[s]) for d, s in delays.items()}
            if new == known:
                return result, self._unclamped(into)
            known = new
        result, _, _, into = self._acc_pass(input_max, integral, dict.fromkeys(delays, (np.inf, False)))
        return result, self._unclamped(into)

    def _saturation_rooms(self) -> dict[int, int]:
        """Per fixed LIF row whose clamps an input range can make idle (:meth:`unclamped`: exponent not
        negative, threshold below V_MAX, rest values within +-V_MAX), the room its shifted input may
        take: ``V_MAX - trunc(V_MAX * keep / 4096) - max |bias|`` (what depends on the network only,
        worked out once)."""
        c, rooms = self.compiled, {}
        for k in c.lif_rows if self.integer else ():
            off, n, boff, fs = (int(c.table[k, col]) for col in (K.K_OFF, K.K_N, K.K_BOFF, K.K_FUSED))
            exp = int(c.table[fs, K.K_EXP]) if fs >= 0 else 0  # (the kernel's: a gathered input's is 0)
            keep = DECAY_UNITY - int(c.table[k, K.K_DV])
            top, low = int(np.abs(c.biases[boff : boff + n]).max(initial=0)), int(c.vrest[off : off + n].min(initial=0))
            if exp >= 0 and (int(c.table[k, K.K_VTH]) << VTH_SHIFT) < V_MAX and low >= -V_MAX:
                rooms[int(k)] = V_MAX - (V_MAX * keep >> DECAY_SHIFT) - top
        return rooms

    def _unclamped(self, into: dict[str, float]) -> np.ndarray:
        """:meth:`unclamped` from each node's input bound ``into`` (after the weight exponent)."""
        flags = np.zeros(len(self.compiled.table), dtype=np.uint8)
        for k, room in self._rooms.items():
            x = into[self._names[k]]
            flags[k] = x <= K.X_CLAMP and (math.ceil(x) << ACT_SHIFT) <= room
        return flags

    def _acc_pass(self, input_max: float, integral: bool, delayed: dict[str, tuple[float, bool]]):
        # per node: a bound on |value|, whether its values are integers, and a bound on its input
        bound: dict[str, float] = {"input": float(input_max)}
        whole: dict[str, bool] = {"input": integral}
        into: dict[str, float] = {}
        worst = 0.0
        exact32 = True
        for n in self.lowered.nodes:
            if n.kind == "delay":
                bound[n.name], whole[n.name] = delayed[n.name]
                continue
            x = into[n.name] = sum(bound[s] for s in n.sources)
            ints = all(whole[s] for s in n.sources)
            if n.kind in ("conv", "affine"):
                acc = x * self.compiled.fan_in_abs[n.name]
                if self.integer:
                    bound[n.name] = acc * 2.0 ** n.fixed["weight_exp"] + 1
                else:  # integer inputs times weights on a grid of ``quantum``: exact while below 2**24 quanta
                    exact32 &= ints and x * self.compiled.grid_span[n.name] < 2**24
                    bound[n.name] = acc + float(np.abs(n.params["bias"]).max(initial=0))
                whole[n.name] = self.integer
            elif n.kind in ("sumpool", "avgpool"):
                acc = x * n.params["kernel"][0] * n.params["kernel"][1]
                exact32 &= ints and acc < 2**24
                bound[n.name], whole[n.name] = acc, ints and n.kind == "sumpool"
            elif n.kind == "li":  # an analog membrane (fixed: it feeds nothing; saturates at V_MAX)
                acc = 0.0
                bound[n.name], whole[n.name] = (float(V_MAX), True) if self.integer else (np.inf, False)
            else:
                acc = 0.0
                several = n.kind == "lif" and "spike" in n.params  # several spikes per step: counts
                bound[n.name] = (float(MAX_SPIKES) if several else 1.0) if n.kind == "lif" else x
                whole[n.name] = n.kind == "lif" or ints
            worst = max(worst, acc)
        if self.integer:
            return (np.int32 if worst < 2**31 - 1 else np.int64), bound, whole, into
        return (np.float32 if exact32 else np.float64), bound, whole, into

    def weights(self, dtype: type) -> np.ndarray:
        if dtype not in self._weights_as:
            self._weights_as[dtype] = aligned(self.compiled.weights, dtype)  # (one copy, cast as it goes)
        return self._weights_as[dtype]

    # ------------------------------------------------------------------------------ run
    def input_events(self, spikes: np.ndarray) -> Events:
        """Dense ``(T, B, *input_shape)`` input as events: CSR offsets over (sample, step), internal
        neuron indices and values (checked as they are read). Valid until the next call: the arrays
        are views of buffers reused by every call.

        An array of a form met before (dtype, shape and flags; C-contiguous) skips the checks and the
        layout work, whose outcome the form decides: at batch 1 a call is short, and each distinct
        operation counts when its code has left the caches (a call after other work: the Python
        before the scan took 68 us of a 900 us N-MNIST sample after a torch-target sample, 16 us
        back to back; measured)."""
        form = self._forms.get((spikes.dtype, spikes.shape, spikes.flags.num)) if type(spikes) is np.ndarray else None
        if form is None:
            return self._first_events(spikes)
        T, B, s_t, s_b, view, kind = form
        flat = spikes.reshape(-1)  # (C-contiguous: a view)
        return self._scan(flat if view is None else flat.view(view), T, B, s_t, s_b, kind)

    def _first_events(self, spikes) -> Events:
        """:meth:`input_events` for an input of a form not met before: checked, converted where the
        kernel cannot read it, laid out; the form kept where the array is read where it lies."""
        given, view, copied = spikes, None, False
        spikes = check_spikes(self.plan, spikes, values=False)
        kind = spikes.dtype.kind
        if kind == "b":
            spikes, view = spikes.view(np.uint8), np.uint8
        elif kind == "f" and spikes.itemsize == 2:  # (numba has no float16: widened, exactly)
            spikes, copied = spikes.astype(np.float32), True
        if not spikes.dtype.isnative:  # (numba reads native byte order only: the same values, reordered)
            spikes, copied = spikes.astype(spikes.dtype.newbyteorder("=")), True
        T, B = spikes.shape[:2]
        flat, s_t, s_b = step_rows(spikes)
        key = type_key(flat)
        if not copied and type(given) is np.ndarray and given.flags.c_contiguous:  # (then read where it lies)
            if len(self._forms) >= MAX_FORMS:  # (inputs of ever new lengths: start again)
                self._forms.clear()
            self._forms[(given.dtype, given.shape, given.flags.num)] = (T, B, s_t, s_b, view, key)
        return self._scan(flat, T, B, s_t, s_b, key)

    def _scan(self, flat: np.ndarray, T: int, B: int, s_t: int, s_b: int, kind) -> Events:
        """The compiled input scan of ``flat`` (see :func:`step_rows`), ``kind`` its type key."""
        channels, pixels = self._channels_pixels
        if len(self._offsets) < B * T + 1:
            self._offsets = np.empty(B * T + 1, dtype=np.int64)
        off = self._offsets[: B * T + 1]
        while True:  # the event buffers are reused from call to call, grown when an input needs more
            idx, val = self._event_buffers
            args = (flat, flat.view(UNSIGNED[flat.itemsize]), T, B, channels, pixels, s_t, s_b, self.integer, off, idx,
                    val)  # fmt: skip
            # only the input's type varies between calls (the rest is this simulator's): resolved once per type
            problem, n, integral, top = resolved(self._kernels, kind, INPUT_EVENTS, args)(*args)
            if n + SCAN <= len(idx) or problem:
                break
            self._event_buffers = (aligned_empty(2 * n + SCAN, np.int64), aligned_empty(2 * n + SCAN, self.value_dtype))
        if problem:
            raise DataError(NON_FINITE_SPIKES if problem == 1 else FRACTIONAL_SPIKES)
        idx, val = idx[:n], val[:n]
        return Events(off, idx, val, T, B, top, integral)

    def scratch(self, acc_dtype: type) -> tuple[np.ndarray, ...]:
        """Buffers the kernel leaves as it found them (all zero) after every step: made once per dtype."""
        if acc_dtype not in self._scratch:
            c, vdt, n_out = self.compiled, self.value_dtype, len(self.compiled.out_perm)
            self._scratch[acc_dtype] = (
                aligned_zeros(c.total, acc_dtype), aligned_zeros(c.groups, np.uint8), aligned_zeros(c.groups, np.int64),
                aligned_zeros(c.total, vdt), aligned_zeros(c.total, np.int64), aligned_zeros(c.total, vdt),
                np.zeros(len(c.table), dtype=np.int64), np.zeros(n_out, dtype=vdt), np.zeros(n_out, dtype=np.uint8),
                np.zeros(n_out, dtype=np.int64),
            )  # fmt: skip
        return self._scratch[acc_dtype]

    def new_state(self) -> State:
        c = self.compiled
        return State(
            v=aligned_zeros(c.total, np.int32 if self.integer else np.float32),  # |v| <= V_MAX < 2**23
            act=aligned_zeros(c.total, np.int64),
            act_n=np.zeros(len(c.table), dtype=np.int64),
            nmark=aligned_zeros(c.total, np.uint8),
            dl_idx=np.zeros(c.delay_extent, dtype=np.int64),
            dl_val=np.zeros(c.delay_extent, dtype=self.value_dtype),
            dl_n=np.zeros(c.delay_slots, dtype=np.int64),
            dl_head=np.zeros(len(c.table), dtype=np.int64),
        )

    def execute(self, events, state: State, *, reset: bool, record: bool) -> Outputs:
        """Run input events (from :meth:`input_events`) from ``state``, or from rest with ``reset``."""
        counts, out_steps, layers, work, lif_rasters, li_traces = self._execute(events, state, reset, record)
        if self._out_order is not None:  # back into the plan's order
            out_steps = out_steps.take(self._out_order, axis=2)
        names = self._names
        syn = {names[k]: work[k] for k in self._synapse_rows}
        updates = {names[k]: work[k] for k in self._update_rows}
        return Outputs(counts, out_steps, layers, syn, updates, lif_rasters, work, li_traces)

    def _execute(self, events, state: State, reset: bool, record: bool) -> tuple:
        """:meth:`execute`'s kernel call: ``(counts, output per step in the kernel's order, layer counts,
        work, rasters, traces)``, what :meth:`run` needs without the rest of :class:`Outputs`."""
        recording = self._record_buffers(events.steps, events.batch) if record else None
        raw = self._call(events, state, reset, recording, np.zeros(1, dtype=np.int64))
        return self._finish(*raw, recording, events.steps, events.batch)

    def _call(self, events, state: State, reset: bool, recording: tuple | None, claim: np.ndarray) -> tuple:
        """One kernel call: ``(counts, output per step, layer counts, work, excess)`` in the kernel's
        order, new arrays, for the samples this call took. ``recording``: the node table, rasters and
        traces to record into (:meth:`_record_buffers`), or None. ``claim``: the batch's next sample,
        zero at first; the threads of one batch share it and each takes the next sample as it comes
        free (:func:`~targets.eventsim.kernels._claim`), a call alone takes every sample."""
        off, idx, val, T, B = events.offsets, events.index, events.value, events.steps, events.batch
        c = self.compiled
        adt, _, network = self._kernel_args(events.largest, events.integral)
        n_out, cdt = len(c.out_perm), self._count_dtype
        record = recording is not None
        table, rasters, traces = recording if record else (c.table, *self._no_record)
        # what is returned is allocated per call (a caller may keep it); the rest is reused
        counts = np.zeros((B, n_out), dtype=cdt)
        out_steps = np.zeros((T, B, n_out), dtype=cdt)
        layer_counts = np.zeros((len(c.lif_sizes), B), dtype=np.int64)
        work = np.zeros((len(table), B), dtype=np.int64)  # synaptic events, or LIF neuron updates
        # the kernel adds to the cycles; excess: the most spikes one neuron emitted in one step (several
        # per step); both new zeros, as the outputs (one operation fewer than zeroing kept arrays)
        cycles = self._cycles = np.zeros(len(c.table), dtype=np.int64)
        excess = np.zeros(1, dtype=np.int64)
        args = (
            table, *network, state.nmark, state.v, state.act, state.act_n, state.dl_idx, state.dl_val,
            state.dl_n, state.dl_head, c.dsteps, c.delay_rows, off, idx, val, T, B, reset,
            counts, out_steps, layer_counts, work, cycles, rasters, traces, record, excess, claim,
        )  # fmt: skip
        # every argument's type follows from the accumulator's (the network's arrays) and whether
        # this call records: resolved once per pair (aot.CHECK verifies it in the tests)
        resolved(self._kernels, (adt, record), SIMULATE, args)(*args)
        return counts, out_steps, layer_counts, work, int(excess[0])

    def _finish(self, counts, out_steps, layer_counts, work, excess: int, recording, T: int, B: int) -> tuple:
        """A kernel call's results (:meth:`_call`) as :meth:`_execute` returns them."""
        if excess > MAX_SPIKES:
            raise ModelError(f"a neuron emits {excess} spikes in one step; at most {MAX_SPIKES} are counted")
        lif_rasters = li_traces = None
        if recording is not None:
            lif_rasters, li_traces = self._recorded(recording[1], recording[2], T, B)
        if self._out_order is not None:  # back into the plan's order
            counts = counts.take(self._out_order, axis=1)
        layers = dict(zip(self.compiled.lif_names, layer_counts))
        return counts, out_steps, layers, work, lif_rasters, li_traces

    def _record_buffers(self, T: int, B: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For a recording call: the node table with the offsets of every LIF's raster and every LI's
        trace (kept for the next call of the same ``T, B``), and zeroed rasters and traces."""
        c = self.compiled
        if not self._record_layout or self._record_layout[0] != (T, B):
            r_off = np.concatenate([[0], np.cumsum([T * B * n for n in c.lif_sizes])]).astype(np.int64)
            t_off = np.concatenate([[0], np.cumsum([T * B * n for n in c.li_sizes])]).astype(np.int64)
            table = c.table.copy()
            table[c.lif_rows, K_ROFF] = r_off[:-1]
            table[c.li_rows, K_TOFF] = t_off[:-1]
            self._record_layout = ((T, B), table, r_off, t_off)
        _, table, r_off, t_off = self._record_layout
        return table, np.zeros(int(r_off[-1]), dtype=np.uint8), np.zeros(int(t_off[-1]), dtype=self.value_dtype)

    def _recorded(self, rasters: np.ndarray, traces: np.ndarray, T: int, B: int) -> tuple[dict, dict]:
        """The recorded rasters (LIF) and traces (LI) per layer, in the plan's order and shapes."""
        c = self.compiled
        _, _, r_off, t_off = self._record_layout
        trace_dtype = np.int64 if self.integer else np.float32
        return (self._per_layer(rasters, r_off, c.lif_names, c.lif_sizes, T, B),
                self._per_layer(traces, t_off, c.li_names, c.li_sizes, T, B, trace_dtype))  # fmt: skip

    def _per_layer(self, flat, off, names, sizes, T: int, B: int, dtype=None) -> dict[str, np.ndarray]:
        """Each layer's region ``flat[off[i] : off[i + 1]]`` as ``(T, B, *out_shape)`` in the plan's order."""
        out = {}
        for i, name in enumerate(names):
            r = flat[off[i] : off[i + 1]].reshape(T, B, sizes[i])
            o = np.empty_like(r)
            o[:, :, self.compiled.perms[name]] = r
            o = o.reshape(T, B, *self.plan.node(name).out_shape)
            out[name] = o if dtype is None else o.astype(dtype)
        return out

    def run(self, spikes: np.ndarray, record: bool = False) -> RunResult:
        return self._result(*self._execute(self.input_events(spikes), self.run_state(), True, record))

    def run_state(self) -> State:
        """The state a run starts from rest in: the previous run's, reused."""
        if self._run_state is None:
            self._run_state = self.new_state()
        return self._run_state

    def _result(self, counts, out_steps, layers, work, rasters, traces) -> RunResult:
        """:meth:`_execute`'s results as a run's, with the work per node summed over the batch."""
        rows = (work if work.shape[1] == 1 else work.sum(axis=1, keepdims=True)).tolist()  # per node: [over the batch]
        stats = {name: {what: float(rows[k][0])} for name, what, k in self._stat_names}
        return RunResult(counts, layers, rasters, stats, traces=traces)

    def stream(self) -> Stream:
        return Stream(self)

    def twins(self, n: int) -> list[EventSim]:
        """``n`` simulators of this compiled network (this one first), each with buffers and state of
        its own, so that they run in parallel threads; the compiled arrays are shared (read only)."""
        while len(self._twins) < n - 1:
            twin = copy.copy(self)
            twin._scratch, twin._by_range, twin._run_state = {}, {}, None
            twin._new_buffers()
            self._twins.append(twin)
        return [self, *self._twins[: n - 1]]


def step_rows(spikes: np.ndarray) -> tuple[np.ndarray, int, int]:
    """``spikes (T, B, ...)`` as ``(flat, sT, sB)``: 1-D memory in which step ``t`` of sample ``b``
    starts at element ``t * sT + b * sB`` and holds that step's values contiguously. A large batch
    slice of a larger array (each step's values together) is read where it lies: copying a 1 ms-step
    N-MNIST sample cost 0.35 ms, measured; anything else is copied (a view costs ~4 us to make)."""
    shape = spikes.shape
    row = math.prod(shape[2:])
    if spikes.nbytes >= VIEW_BYTES and shape[1] > 0:
        k = spikes.itemsize
        s_t, s_b = spikes.strides[:2]
        if s_t >= 0 and s_b >= 0 and s_t % k == 0 and s_b % k == 0 and spikes[0, 0].flags.c_contiguous:
            span = (shape[0] - 1) * (s_t // k) + (shape[1] - 1) * (s_b // k) + row
            return np.lib.stride_tricks.as_strided(spikes, shape=(span,), strides=(k,)), s_t // k, s_b // k
    return spikes.ravel(), shape[1] * row, row  # (a view where the input is contiguous)


SCAN_APART_BYTES = 1 << 24  # a threaded run's input from this size on is read by every thread, a part each
MAX_FORMS = 256  # input forms a simulator keeps (see EventSim.input_events)
VIEW_BYTES = 1 << 18  # inputs from this size on are read in place where their layout allows
UNSIGNED = {k: np.dtype(f"u{k}") for k in (1, 2, 4, 8)}  # an input's values as bit patterns, by item size


@dataclass(slots=True)
class Events:
    """Input events, CSR over (sample, step); with what the accumulator width depends on."""

    offsets: np.ndarray
    index: np.ndarray
    value: np.ndarray
    steps: int
    batch: int
    largest: float  # largest |value|
    integral: bool  # every value an integer


@dataclass
class State:
    """What a network keeps between steps: membranes and the active lists (batch size 1)."""

    v: np.ndarray
    act: np.ndarray
    act_n: np.ndarray
    nmark: np.ndarray
    dl_idx: np.ndarray  # delays: the events stored per slot (a slot per step of the longest delay)
    dl_val: np.ndarray
    dl_n: np.ndarray
    dl_head: np.ndarray  # per table row: the slot this step stores into


@dataclass
class Outputs:
    counts: np.ndarray  # (B, classes): output spike counts, or an LI readout's scores (float64; fixed: int64)
    per_step: np.ndarray  # (T, B, classes) output spikes (or output values of an LI readout) per step
    layer_counts: dict[str, np.ndarray]  # LIF -> (B,)
    synaptic_events: dict[str, np.ndarray]  # synaptic node -> (B,) weights scattered (effective accumulates)
    neuron_updates: dict[str, np.ndarray]  # LIF and LI -> (B,) neuron state updates (the rest cost nothing)
    rasters: dict[str, np.ndarray] | None
    work: np.ndarray  # (nodes, B): synaptic events of synaptic nodes, updates of LIFs, by table row
    traces: dict[str, np.ndarray] | None = None  # LI -> (T, B, ...) membranes, when recording


class Stream:
    """Batch-size-1 simulation that keeps neuron state from one call to the next (streaming)."""

    def __init__(self, sim: EventSim) -> None:
        self.sim = sim
        self.state = sim.new_state()
        self.fresh = True

    def reset(self) -> None:
        self.fresh = True

    def step(self, spikes: np.ndarray) -> Outputs:
        """Advance by ``spikes`` shaped ``(t, *input_shape)``; returns the output spikes per step."""
        x = np.asarray(spikes)[:, None]
        out = self.sim.execute(self.sim.input_events(x), self.state, reset=self.fresh, record=False)
        self.fresh = False
        return out

    def feed(self, spikes: np.ndarray) -> np.ndarray:
        """Like :meth:`step`; returns the output spike counts (classes,)."""
        return self.step(spikes).counts[0]


def prepare(plan: Plan) -> EventSim:
    if "eventsim" not in plan.prepared:
        plan.prepared["eventsim"] = EventSim(plan)
    return plan.prepared["eventsim"]


def run(plan: Plan, spikes: np.ndarray, *, record: bool = False, threads: int = 1) -> RunResult:
    """``spikes (T, B, ...)`` through the simulator; ``threads`` > 1 runs the batch on that many
    threads (the kernel releases the GIL), each simulator with its own buffers and state: the same
    results.

    The input is read into events once, by this thread, or from :data:`SCAN_APART_BYTES` on by every
    thread an equal part (the scan costs about the same per sample; handing work to a thread and
    back costs 0.2 ms, more than a small batch's scan). Every thread then runs the kernel over the
    whole batch, and the threads' kernels share one counter of the next sample
    (:func:`~targets.eventsim.kernels._claim`): a thread takes the next sample as it comes free, so a
    core slowed by other work, or samples with more events, cost at most a sample's wait at the end,
    not the slowest half, and there is no Python between samples. Each thread's results go to
    arrays of its own (two threads writing neighbouring samples' counters would share cache lines at
    every step), which are summed: every sample's row is one thread's and the others' zeros."""
    sim = prepare(plan)
    B = np.shape(spikes)[1] if int(threads) > 1 and np.ndim(spikes) > 1 else 0
    threads = max(1, min(int(threads), B))
    if threads == 1:
        return sim.run(spikes, record=record)
    twins = sim.twins(threads)
    if not isinstance(spikes, np.ndarray):  # (a list, a tensor: read once, here)
        spikes = np.asarray(spikes)
    if spikes.nbytes < SCAN_APART_BYTES:
        events = sim.input_events(spikes)
    else:  # (each thread's scan checks its part)
        cuts = [B * k // threads for k in range(threads + 1)]
        events = joined_events(_on_each(twins, lambda k, twin: twin.input_events(spikes[:, cuts[k] : cuts[k + 1]])))
    recording = sim._record_buffers(events.steps, B) if record else None
    claim = np.zeros(1, dtype=np.int64)
    raws = _on_each(twins, lambda k, twin: twin._call(events, twin.run_state(), True, recording, claim))
    counts, per_step, layers, work, excess = zip(*raws)  # (each sample's row: one thread's, the others' zeros)
    sim._cycles = sum(twin._cycles for twin in twins)  # (the profile of the whole batch)
    total = (sum(counts), sum(per_step), sum(layers), sum(work), max(excess))
    return sim._result(*sim._finish(*total, recording, events.steps, B))


def joined_events(parts: list[Events]) -> Events:
    """Input events of consecutive parts of a batch as the events of the whole batch (copied)."""
    ends = np.cumsum([0] + [len(p.index) for p in parts])
    offsets = np.concatenate([p.offsets[:-1] + e for p, e in zip(parts, ends)] + [ends[-1:]])
    return Events(offsets, np.concatenate([p.index for p in parts]), np.concatenate([p.value for p in parts]),
                  parts[0].steps, sum(p.batch for p in parts), max(p.largest for p in parts),
                  all(p.integral for p in parts))  # fmt: skip


def _on_each(twins: list[EventSim], work) -> list:
    """``work(k, twin)`` for every twin at once, the first on this thread and the others on the pool's
    threads; their results in order. Where one fails, its error is raised once all have ended."""
    from concurrent.futures import wait

    pending = [_pool(len(twins) - 1).submit(work, k, twin) for k, twin in enumerate(twins) if k]
    try:
        first = work(0, twins[0])
    finally:
        wait(pending)
    return [first, *(f.result() for f in pending)]


_POOLS: dict = {}


def _pool(workers: int):
    """A thread pool of ``workers`` threads, made once per size (the kernel releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor  # (only where threads run: 8 ms of imports)

    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="eventsim")
    return _POOLS[workers]


def stream(plan: Plan) -> Stream:
    """A streaming run (batch size 1, state kept between calls) of ``plan``."""
    return prepare(plan).stream()
