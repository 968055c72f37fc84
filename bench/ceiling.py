"""Eventsim against the machine's scatter-add ceiling for exactly eventsim's own synaptic adds.

The issue's goal: eventsim at >= 50 % of the scatter-add ceiling at the model's T=8 and >= 10 % in
1 ms steps. The *ceiling* is the time this machine needs for the synaptic adds alone: for every
synaptic event, the run of accumulators it adds a run of weights to, executed by a minimal numba
loop (eventsim's own ``_add_run``) over the same accumulator and weight addresses, in the same
order, with the same dtypes (eventsim's accumulator width for the input: int32 in fixed precision,
float32 in float), on 64-byte aligned arrays. Nothing else: no decoding of events, no neuron
updates, no passing on.

The adds are *replayed*, not estimated: eventsim runs the samples once recording every LIF layer's
spikes per step; each synaptic node's input events are rebuilt from them (the input scan is
eventsim's own; pooling and flatten as the kernel computes them) and turned into runs
``(accumulator offset, weight offset, length, value)`` exactly as ``_conv_rows`` and the affine
loop of :mod:`targets.eventsim.kernels` do (channel-last feature maps, kernel rows and columns stored
flipped, affine rows in the input's internal order: :mod:`targets.eventsim.layout`). The replayed
add count of every synaptic node and sample is checked equal to eventsim's own work count
(``RunResult.stats[node]["synaptic_events"]``) before anything is timed. (Event order is exact
except for a LIF layer updated from its active list, whose spikes are replayed in index order: the
same adds, possibly permuted within a step.)

Timed in this one process, one thread, interleaved (one of each per repeat), median of
``--repeats``: eventsim (``targets.eventsim.run(plan, x)`` at batch 1, sample after sample) and
the ceiling kernel over the same samples' runs. Reported per workload and precision: adds per
sample, the ceiling's G adds/s, eventsim's effective G adds/s (the same adds over eventsim's time)
and its fraction of the ceiling; and where eventsim's time goes, from its per-node cycle counters
(``EventSim.cycles``, the CPU's time-stamp counter read per node and step): neuron updates (LIF,
LI), scatter (convolution, affine; for each, the time its adds take at the ceiling), pass-on
(pooling, flatten) and the driver (Python per call: wall time less the kernel's cycles).
The 1-minute load average is recorded beside every figure: this machine may be shared.

    python -m bench.ceiling
    python -m bench.ceiling --samples 16 --repeats 5

Workloads: the trained N-MNIST CSNN (``--model``; untrained when absent, as ``bench.eventsim``)
on real N-MNIST recordings from ``../shared/eventdata`` (skipped with a message when absent),
binned at the model's T and in 1 ms steps, and the same in 1 ms steps with the biases removed
(the cost then follows the events); both precisions. Writes ``ceiling.json``, ``ceiling.md`` and
``ceiling.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from bench import at_least, machine
from core.errors import ModelError
from core.fileio import save_figure, write_json_atomic, write_text_atomic
from targets.eventsim.kernels import _add_run, _cycles, window_start
from targets.eventsim.layout import aligned
from targets.eventsim.table import AFFINE, K_KIND, K_MAP, K_N, K_OFF, K_WIN, K_WOFF

ROOT = Path(__file__).resolve().parents[1]
NMNIST = ROOT.parent / "shared" / "eventdata" / "nmnist" / "train"
# the goals: eventsim's fraction of the ceiling, per workload
GOALS = {"nmnist": 0.5, "nmnist_1ms": 0.1}


# ---------------------------------------------------------------------------------------------- runs
@dataclass
class ScatterRuns:
    """Every synaptic add eventsim does for some samples, as runs: ``acc[a0 : a0 + m] += x * w[w0 : w0 + m]``
    (``x == 1``: a plain add), in eventsim's order. Offsets index eventsim's flat accumulator and
    weight arrays (``Compiled.total``, ``Compiled.weights``)."""

    a0: np.ndarray  # (runs,) uint64: first accumulator
    w0: np.ndarray  # (runs,) uint64: first weight
    m: np.ndarray  # (runs,) uint64: length (adds)
    x: np.ndarray  # (runs,) the event's value (int64 fixed, float32 float: eventsim's value dtype)
    node: np.ndarray  # (runs,) int64: table row of the synaptic node
    sample_off: np.ndarray  # (B + 1,) int64: runs of sample b are sample_off[b] : sample_off[b + 1]
    adds: dict[str, np.ndarray]  # synaptic node -> (B,) adds per sample

    def sample(self, b: int) -> slice:
        return slice(int(self.sample_off[b]), int(self.sample_off[b + 1]))


@numba.njit(cache=True, nogil=True)
def _conv_runs(idx, val, decode, win, off, woff, Co, Ho, Wo, KH, KW, SH, SW, PH, PW, a0, w0, m, xs, r):
    """The runs of events ``(idx, val)`` into a convolution, from ``r`` on: ``_conv_rows`` when the
    column stride is 1 (one run of ``n * Co`` per window row, from the lowest row up, by the node's
    windows ``win``), else the kernel's general loop (one run of ``Co`` per window position; kernel
    rows and columns stored flipped). Returns the new ``r``."""
    for e in range(idx.shape[0]):
        i = idx[e]
        if SW == 1:
            g0, wb, n, rows = win[i, 0], win[i, 1], win[i, 2], win[i, 3]
            for q in range(rows):
                a0[r] = off + (g0 + q * Wo) * Co
                w0[r] = woff + wb + q * SH * KW * Co
                m[r] = n * Co
                xs[r] = val[e]
                r += 1
            continue
        y, xx, c = decode[i, 0], decode[i, 1], decode[i, 2]
        ky, oy, kx0, ox0 = window_start(y, xx, Ho, Wo, KH, KW, SH, SW, PH, PW)
        while ky < KH and oy >= 0:
            kx, ox = kx0, ox0
            while kx < KW and ox >= 0:
                a0[r] = off + (oy * Wo + ox) * Co
                w0[r] = woff + ((c * KH + KH - 1 - ky) * KW + KW - 1 - kx) * Co
                m[r] = Co
                xs[r] = val[e]
                r += 1
                kx += SW
                ox -= 1
            ky += SH
            oy -= 1
    return r


@numba.njit(cache=True, nogil=True)
def _pool_events(idx, val, cells, acc, out_idx, out_val):
    """A pool without overlapping windows as the kernel runs it (``_pool_scatter``, then ``_pass_on``):
    each event adds to its one output neuron; the touched neurons are passed on in the order of
    their first hit, non-zero sums only. ``acc`` is left zero. Returns the number of events."""
    ng = 0
    for e in range(idx.shape[0]):
        cell = cells[idx[e]]
        if cell >= 0:
            acc[cell] += val[e]
            out_idx[ng] = cell
            ng += 1
    ne = 0
    for j in range(ng):
        i = out_idx[j]
        v = acc[i]
        acc[i] = 0
        out_idx[ne] = i
        out_val[ne] = v
        ne += v != 0
    return ne


@numba.njit(cache=True, nogil=True)
def _overlap_pool_events(idx, val, decode, Co, Ho, Wo, KH, KW, SH, SW, PH, PW, acc, mark, out_idx, out_val):
    """A pool whose windows overlap, as the kernel's general loop: neurons listed at their first touch."""
    ng = 0
    for e in range(idx.shape[0]):
        i = idx[e]
        y, xx, c = decode[i, 0], decode[i, 1], decode[i, 2]
        ky, oy, kx0, ox0 = window_start(y, xx, Ho, Wo, KH, KW, SH, SW, PH, PW)
        while ky < KH and oy >= 0:
            kx, ox = kx0, ox0
            while kx < KW and ox >= 0:
                g = (oy * Wo + ox) * Co + c
                if mark[g] == 0:
                    mark[g] = 1
                    out_idx[ng] = g
                    ng += 1
                acc[g] += val[e]
                kx += SW
                ox -= 1
            ky += SH
            oy -= 1
    ne = 0
    for j in range(ng):
        g = out_idx[j]
        v = acc[g]
        acc[g] = 0
        mark[g] = 0
        out_idx[ne] = g
        out_val[ne] = v
        ne += v != 0
    return ne


class _RunBuffer:
    """Growing run arrays."""

    def __init__(self, value_dtype: type) -> None:
        self.n = 0
        self.arrays = [np.empty(1 << 16, np.uint64) for _ in range(3)] + [np.empty(1 << 16, value_dtype)]
        self.node = np.empty(1 << 16, np.int64)

    def room(self, extra: int) -> None:
        if self.n + extra > len(self.node):
            size = max(2 * len(self.node), self.n + extra)
            self.arrays = [np.resize(a, size) for a in self.arrays]
            self.node = np.resize(self.node, size)


def _dense_events(values: np.ndarray, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Non-zero entries of an internal-order vector as events in index order (a dense LIF's
    ``_spike_events`` order)."""
    i = np.flatnonzero(values).astype(np.int64)
    return i, values[i].astype(dtype)


def replay_runs(sim, x: np.ndarray, record) -> ScatterRuns:
    """The runs of every synaptic add ``sim`` (an :class:`~targets.eventsim.EventSim`) does for the
    dense input ``x (T, B, ...)``, rebuilt from ``record`` (``sim.run(x, record=True)``: every
    LIF layer's spikes, every LI layer's membranes). A synaptic node reading a node whose events
    are not recorded (another synaptic node, a delay) raises :class:`~core.errors.ModelError`."""
    c = sim.compiled
    table = c.table
    vdt = sim.value_dtype
    names = sim._names
    row = {name: k for k, name in enumerate(names)}
    nodes = sim.lowered.nodes
    T, B = x.shape[:2]
    ev = sim.input_events(x)
    in_off, in_idx, in_val = ev.offsets.copy(), ev.index.copy(), ev.value.copy()
    # recorded layers in internal order (T, B, N)
    internal: dict[str, np.ndarray] = {}
    for name, r in (record.rasters or {}).items():
        internal[name] = r.reshape(T, B, -1)[:, :, c.perms[name]]
    for name, r in (record.traces or {}).items():
        internal[name] = r.reshape(T, B, -1)[:, :, c.perms[name]]
    syn_rows = [row[n.name] for n in nodes if n.kind in ("conv", "affine")]
    buf = _RunBuffer(vdt)
    sample_off = np.zeros(B + 1, np.int64)
    adds = {names[k]: np.zeros(B, np.int64) for k in syn_rows}
    k_n = table[:, K_N]
    pool_acc = np.zeros(max(int(k_n.max()), 1), vdt)  # a pool's sums (left zero), the largest node's size
    pool_mark = np.zeros(len(pool_acc), np.uint8)
    for b in range(B):
        for t in range(T):
            e0, e1 = in_off[b * T + t], in_off[b * T + t + 1]
            events: dict[str, tuple[np.ndarray, np.ndarray] | None] = {"input": (in_idx[e0:e1], in_val[e0:e1])}
            for n in nodes:
                k = row[n.name]
                if n.kind in ("lif", "li"):
                    events[n.name] = _dense_events(internal[n.name][t, b], vdt)
                    continue
                if n.kind in ("delay",):
                    events[n.name] = None
                    continue
                srcs = []
                for s in n.sources:
                    if events[s] is None:
                        raise ModelError(f"bench.ceiling: node {n.name} reads {s}, whose events cannot be replayed "
                                         "(only the input, LIF, LI, pooling and flatten nodes' can)")  # fmt: skip
                    srcs.append((s, *events[s]))
                if n.kind == "flatten":
                    events[n.name] = (np.concatenate([e[1] for e in srcs]), np.concatenate([e[2] for e in srcs]))
                elif n.kind in ("sumpool", "avgpool"):
                    idx = np.concatenate([e[1] for e in srcs])
                    val = np.concatenate([e[2] for e in srcs]).astype(vdt)
                    out_idx, out_val = np.empty(len(idx) + k_n[k], np.int64), np.empty(len(idx) + k_n[k], vdt)
                    if table[k, K_MAP] >= 0:
                        ne = _pool_events(idx, val, c.pool_map[table[k, K_MAP] :], pool_acc, out_idx, out_val)
                    else:
                        so = table[row[srcs[0][0]], K_OFF]
                        Co, Ho, Wo = n.out_shape
                        (kh, kw), (sh, sw), (ph, pw) = n.params["kernel"], n.params["stride"], n.params["padding"]
                        ne = _overlap_pool_events(idx, val, c.decode[so:], Co, Ho, Wo, kh, kw, sh, sw, ph, pw,
                                                  pool_acc, pool_mark, out_idx, out_val)  # fmt: skip
                    vals = out_val[:ne]
                    if n.kind == "avgpool" and not sim.integer:  # (_emit_value: float32 sum over the area)
                        vals = vals.astype(np.float32) / np.float32(np.prod(n.params["kernel"]))
                    events[n.name] = (out_idx[:ne], vals.astype(vdt))
                elif n.kind in ("conv", "affine"):
                    events[n.name] = None  # (its values feed a LIF or LI, whose events are recorded)
                    off, woff = int(table[k, K_OFF]), int(table[k, K_WOFF])
                    for s, idx, val in srcs:
                        if table[k, K_KIND] == AFFINE:
                            N = int(k_n[k])
                            buf.room(len(idx))
                            a0, w0, m, xs = buf.arrays
                            sl = slice(buf.n, buf.n + len(idx))
                            a0[sl], w0[sl], m[sl], xs[sl] = off, woff + idx * N, N, val
                            buf.node[sl] = k
                            buf.n += len(idx)
                            continue
                        Co, Ho, Wo = n.out_shape
                        KH, KW = n.params["weight"].shape[2:]
                        (SH, SW), (PH, PW) = n.params["stride"], n.params["padding"]
                        so = int(table[row[s], K_OFF])
                        buf.room(len(idx) * KH * KW)
                        r0 = buf.n
                        win = c.windows[max(int(table[k, K_WIN]), 0) :]
                        buf.n = _conv_runs(idx, val, c.decode[so:], win, off, woff, Co, Ho, Wo, KH, KW, SH, SW, PH, PW,
                                           *buf.arrays, buf.n)  # fmt: skip
                        buf.node[r0 : buf.n] = k
                else:
                    raise ModelError(f"bench.ceiling: node {n.name} of kind {n.kind} is not replayed")
        sample_off[b + 1] = buf.n
    a0, w0, m, xs = (a[: buf.n].copy() for a in buf.arrays)
    node = buf.node[: buf.n].copy()
    for k in syn_rows:
        mine = node == k
        per = np.add.reduceat(np.where(mine, m, 0).astype(np.int64), sample_off[:-1]) if buf.n else np.zeros(B)
        # (reduceat of an empty sample gives the next element: set those to 0)
        per = np.where(sample_off[1:] > sample_off[:-1], per, 0)
        adds[names[k]] = per.astype(np.int64)
    return ScatterRuns(a0, w0, m, xs, node, sample_off, adds)


def check_adds(runs: ScatterRuns, work: dict[str, np.ndarray]) -> None:
    """Raises :class:`~core.errors.ModelError` unless the replayed adds equal eventsim's own work
    counts, per synaptic node and sample (``work``: node -> (B,) synaptic events)."""
    if set(work) != set(runs.adds):
        raise ModelError(f"bench.ceiling: synaptic nodes differ: eventsim {sorted(work)}, replay {sorted(runs.adds)}")
    for name, counted in work.items():
        if not np.array_equal(np.asarray(counted, np.int64), runs.adds[name]):
            raise ModelError(f"bench.ceiling: node {name}: replayed adds {runs.adds[name].tolist()} differ from "
                             f"eventsim's synaptic events {np.asarray(counted).tolist()}")  # fmt: skip


# ---------------------------------------------------------------------------------------------- ceiling
@numba.njit(cache=True, nogil=True)
def scatter_runs(acc, weights, a0, w0, m, x):
    """The ceiling: nothing but the runs' adds, with eventsim's own ``_add_run``."""
    for r in range(a0.shape[0]):
        _add_run(acc, a0[r], weights, w0[r], m[r], x[r])


@numba.njit(cache=True)
def _tsc():
    return _cycles()


def tsc_hz(seconds: float = 0.2) -> float:
    """The time-stamp counter's rate (the unit of eventsim's cycle profile)."""
    _tsc()
    t0, c0 = time.perf_counter(), _tsc()
    while time.perf_counter() - t0 < seconds:
        pass
    t1, c1 = time.perf_counter(), _tsc()
    return (c1 - c0) / (t1 - t0)


def _load() -> float:
    return os.getloadavg()[0]


# ---------------------------------------------------------------------------------------------- measure
CATEGORY = {"lif": "neuron updates", "li": "neuron updates", "conv": "scatter", "affine": "scatter",
            "sumpool": "pass-on (pooling, flatten)", "avgpool": "pass-on (pooling, flatten)",
            "flatten": "pass-on (pooling, flatten)", "delay": "pass-on (pooling, flatten)"}  # fmt: skip


def measure(plan, x: np.ndarray, repeats: int, log=print) -> dict:
    """Eventsim against the ceiling for ``plan`` on the samples of ``x (T, B, ...)``, batch 1."""
    from targets import eventsim
    from targets.eventsim.driver import prepare

    sim = prepare(plan)
    T, B = x.shape[:2]
    samples = [np.ascontiguousarray(x[:, b : b + 1]) for b in range(B)]
    eventsim.run(plan, samples[0])  # compile / load the kernels
    t0 = time.perf_counter()
    record = eventsim.run(plan, x, record=True)
    runs = replay_runs(sim, x, record)
    log(f"  replayed {len(runs.m)} runs ({int(runs.m.sum())} adds) in {time.perf_counter() - t0:.1f} s")
    # eventsim's own work counts and cycle profile, sample by sample (batch 1, as timed)
    work = {name: np.zeros(B, np.int64) for name in runs.adds}
    updates = 0.0
    cycles: dict[str, int] = {}
    dtypes = []
    for b, xb in enumerate(samples):
        r = eventsim.run(plan, xb)
        for name in work:
            work[name][b] = int(r.stats[name]["synaptic_events"])
        updates += sum(s.get("neuron_updates", 0.0) for s in r.stats.values())
        for name, cyc in sim.cycles.items():
            cycles[name] = cycles.get(name, 0) + cyc
        ev = sim.input_events(xb)
        dtypes.append(np.dtype(sim.acc_dtype(ev.largest, ev.integral)))
    check_adds(runs, work)  # the ceiling does exactly eventsim's adds
    # the ceiling's arrays: eventsim's accumulator width per sample (grouped), 64-byte aligned
    groups = []
    for dt in sorted(set(dtypes), key=str):
        sel = np.concatenate([np.arange(*runs.sample(b).indices(len(runs.m))) for b in range(B) if dtypes[b] == dt])
        sel = sel.astype(np.int64)
        arrays = (aligned(np.zeros(sim.compiled.total, dt)), aligned(sim.weights(dt.type)),
                  *(aligned(a[sel]) for a in (runs.a0, runs.w0, runs.m, runs.x)))  # fmt: skip
        groups.append((dt, arrays, runs.node[sel]))
    plain = [(a[0], a[1], a[2], a[3], a[4], np.ones_like(a[5])) for _, a, _ in groups]  # every value 1
    cycles_of: list[list[dict[str, int]]] = []  # per repeat: eventsim's cycle profile of each sample

    def es() -> None:
        got = []
        for xb in samples:
            eventsim.run(plan, xb)
            got.append(sim.cycles)  # (a new dict per call)
        cycles_of.append(got)

    fns = {
        "eventsim": es,
        "ceiling": lambda: [scatter_runs(*g[1]) for g in groups],
        "ceiling_plain": lambda: [scatter_runs(*a) for a in plain],
        "input_scan": lambda: [sim.input_events(xb) for xb in samples],
    }
    fns["ceiling"](), fns["ceiling_plain"]()
    times: dict[str, list[float]] = {k: [] for k in fns}
    load0 = _load()
    for _ in range(repeats):  # interleaved: a slow stretch of this shared machine slows all alike
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    load1 = _load()
    med = {k: statistics.median(v) for k, v in times.items()}
    mid = int(np.argsort(times["eventsim"])[len(times["eventsim"]) // 2])  # the median repeat's profile
    t_es = times["eventsim"][mid]
    cycles = {}
    for per_sample in cycles_of[mid]:
        for name, cyc in per_sample.items():
            cycles[name] = cycles.get(name, 0) + cyc
    t_ceil = med["ceiling"]
    # the ceiling per synaptic node (its own runs alone)
    per_node = {}
    for k in sorted(set(runs.node.tolist())):
        parts = []
        for _, arr, node in groups:
            mine = node == k
            parts.append((arr[0], arr[1], *(aligned(a[mine]) for a in arr[2:])))
        one = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for q in parts:
                scatter_runs(*q)
            one.append(time.perf_counter() - t0)
        per_node[sim._names[k]] = statistics.median(one) / B
    hz = tsc_hz()
    adds = float(runs.m.sum()) / B
    kernel_s = sum(cycles.values()) / hz / B
    per_sample_es, per_sample_ceil = t_es / B, t_ceil / B
    kinds = {n.name: n.kind for n in sim.lowered.nodes}
    profile: dict[str, float] = {}
    nodes = []
    for name, cyc in cycles.items():
        if name == "input":
            continue
        sec = cyc / hz / B
        cat = CATEGORY.get(kinds.get(name, ""), "other")
        profile[cat] = profile.get(cat, 0.0) + sec
        nodes.append({"node": name, "kind": kinds.get(name, "?"), "ms": 1e3 * sec,
                      "adds": float(runs.adds[name].sum() / B) if name in runs.adds else None,
                      "ceiling_ms": 1e3 * per_node[name] if name in per_node else None})  # fmt: skip
    scan = med["input_scan"] / B
    profile["input scan (driver)"] = scan
    profile["driver, rest (Python per call, unprofiled kernel parts)"] = max(per_sample_es - kernel_s - scan, 0.0)
    return {
        "samples": B, "steps": T, "input_events_per_sample": float(x.astype(bool).sum() / B),
        "acc_dtypes": sorted({str(d) for d in dtypes}), "adds_per_sample": adds,
        "runs_per_sample": len(runs.m) / B, "mean_run_length": adds * B / max(len(runs.m), 1),
        "neuron_updates_per_sample": updates / B, "adds_checked": True,
        "ceiling_ms": 1e3 * per_sample_ceil, "eventsim_ms": 1e3 * per_sample_es,
        "ceiling_gadds_per_s": adds / per_sample_ceil / 1e9, "eventsim_gadds_per_s": adds / per_sample_es / 1e9,
        "fraction": per_sample_ceil / per_sample_es, "loadavg": [load0, load1],
        "ceiling_plain_gadds_per_s": adds * B / med["ceiling_plain"] / 1e9, "repeats": repeats,
        "eventsim_ms_spread": [1e3 * min(times["eventsim"]) / B, 1e3 * max(times["eventsim"]) / B],
        "ceiling_ms_spread": [1e3 * min(times["ceiling"]) / B, 1e3 * max(times["ceiling"]) / B],
        "tsc_ghz": hz / 1e9, "kernel_ms": 1e3 * kernel_s,
        "profile_ms": {k: 1e3 * v for k, v in profile.items()},
        "scatter_at_ceiling_ms": 1e3 * sum(per_node.values()), "nodes": nodes,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------- workloads
def workloads(args) -> list[dict]:
    """``[{key, name, model, x (T, N, 2, 34, 34), weights}]``: the N-MNIST CSNN on real recordings."""
    import torch

    from bench.eventsim import _model
    from inputs.datasets import load_dataset, spike_batch

    model, desc, weights = _model(Path(args.model), "nmnist_csnn")
    binning = (desc or {}).get("binning", {})
    steps = int(binning.get("steps", 8))
    root = str(args.data)
    ds = load_dataset("nmnist", "train", root=root, steps=steps, binary=binning.get("binary", True))
    x, _ = spike_batch(ds, range(args.samples))
    fine = load_dataset("nmnist", "train", root=root, steps=300, binary=False)
    xf, _ = spike_batch(fine, range(args.samples))
    unbiased = copy.deepcopy(model)
    with torch.no_grad():
        for m in unbiased.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None:
                m.bias.zero_()
    out = [
        dict(key="nmnist", name=f"N-MNIST CSNN, T={steps} (as trained)", model=model, x=x, weights=weights),
        dict(key="nmnist_1ms", name="N-MNIST CSNN, 1 ms steps (T=300)", model=model, x=xf, weights=weights),
        dict(key="nmnist_1ms_nobias", name="same, biases removed, 1 ms steps", model=unbiased, x=xf,
             weights=weights + ", biases set to 0"),
    ]  # fmt: skip
    return [w for w in out if w["key"] in args.workloads]


def table(results: dict) -> str:
    lines = ["| workload | precision | adds/sample | ceiling G adds/s | eventsim G adds/s | fraction of ceiling | "
             "goal | eventsim ms/sample | neuron updates / scatter / pass-on / input scan / driver rest (ms) | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results["runs"]:
        p = r["profile_ms"]
        split = " / ".join(
            f"{p.get(k, 0.0):.3f}"
            for k in (
                "neuron updates",
                "scatter",
                "pass-on (pooling, flatten)",
                "input scan (driver)",
                "driver, rest (Python per call, unprofiled kernel parts)",
            )
        )
        goal = GOALS.get(r["key"])
        lines.append(
            f"| {r['name']} | {r['precision']} | {r['adds_per_sample']:.3g} | {r['ceiling_gadds_per_s']:.2f} | "
            f"{r['eventsim_gadds_per_s']:.2f} | {100 * r['fraction']:.1f} % | "
            f"{'-' if goal is None else f'{100 * goal:.0f} %'} | {r['eventsim_ms']:.3f} | {split} | "
            f"{r['loadavg'][0]:.2f}-{r['loadavg'][1]:.2f} |"
        )
    head = [
        "# eventsim against the scatter-add ceiling",
        "",
        f"`{results['command']}`: batch 1, one thread, interleaved, median of {results['runs'][0]['repeats'] if results['runs'] else '?'} "
        "repeats; the ceiling is eventsim's own adds (replayed, count checked equal to eventsim's work per node and "
        "sample) alone. Fraction = ceiling time / eventsim time. Load: 1-minute load average before and after timing "
        f"(this machine has {os.cpu_count()} cores and may be shared).",
        "",
    ]
    if "machine" in results:  # (results written before the CPU was recorded name none)
        head += [f"Machine: {machine.line(results['machine'])}.", ""]
    nodes = ["", "Per node (ms per sample; eventsim's cycle counters; ceiling: the node's adds alone):", ""]
    for r in results["runs"]:
        nodes += [f"- {r['name']} ({r['precision']}): " + ", ".join(
            f"{n['node']} ({n['kind']}) {n['ms']:.3f}" + (f" [ceiling {n['ceiling_ms']:.3f}]" if n["ceiling_ms"] else "")
            for n in r["nodes"])]  # fmt: skip
    return "\n".join(head + lines + nodes) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    fig, ax = plt.subplots(figsize=(9, 5))
    pos = np.arange(len(runs))
    ax.bar(pos, [100 * r["fraction"] for r in runs], color=["C0" if r["precision"] == "fixed" else "C1" for r in runs])
    for i, r in enumerate(runs):
        goal = GOALS.get(r["key"])
        if goal is not None:
            ax.hlines(100 * goal, i - 0.45, i + 0.45, colors="k", linestyles="--", lw=1.5)
        ax.text(i, 100 * r["fraction"], f"{100 * r['fraction']:.1f} %", ha="center", va="bottom", fontsize=8)
    labels = [f"{textwrap.shorten(r['name'], 36, placeholder='...')} ({r['precision']})" for r in runs]
    ax.set_xticks(pos, labels, fontsize=7, rotation=30, ha="right")
    ax.plot([], [], "k--", label="goal (50 % at T=8, 10 % at 1 ms)")
    ax.set(ylabel="eventsim time at the ceiling / eventsim time (%)",
           title="eventsim's fraction of the scatter-add ceiling (batch 1, one core)")  # fmt: skip
    ax.legend(fontsize=8), ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("--samples", type=at_least(1), default=16, help="N-MNIST recordings per workload")
    p.add_argument("--repeats", type=at_least(1), default=5, help="timed repeats (median)")
    p.add_argument("--model", default="runs/nmnist_student/student.pt", help="trained N-MNIST CSNN checkpoint")
    p.add_argument("--data", default=str(NMNIST), help="N-MNIST training recordings")
    p.add_argument("--workloads", nargs="+", default=["nmnist", "nmnist_1ms", "nmnist_1ms_nobias"],
                   choices=["nmnist", "nmnist_1ms", "nmnist_1ms_nobias"])  # fmt: skip
    p.add_argument("--precisions", nargs="+", default=["fixed", "float"], choices=["fixed", "float"])
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "ceiling"))
    args = p.parse_args(argv)
    if not Path(args.data).is_dir():
        print(f"skipped: the N-MNIST recordings are not at {args.data} (../shared/eventdata); nothing measured",
              file=sys.stderr)  # fmt: skip
        return 0
    import torch

    from convert.build import build_nir
    from convert.nirgraph import write_graph
    from targets.plan import load_plan

    torch.set_num_threads(1)
    numba.set_num_threads(1)
    out = Path(args.out)
    results: dict = {"goals": GOALS, "command": "python -m bench.ceiling " + " ".join(argv or sys.argv[1:]),
                     "numba_threads": 1, "machine": machine.describe(), "runs": []}  # fmt: skip
    loads = workloads(args)
    jobs = [(w, prec) for w in loads for prec in args.precisions]
    for j, (w, prec) in enumerate(jobs, 1):
        print(f"[{j}/{len(jobs)}] {w['name']} ({prec}), {w['x'].shape[1]} samples, load {_load():.2f}", flush=True)
        x = w["x"]
        graph, _ = build_nir(w["model"], (2, 34, 34), precision=prec, steps=x.shape[0], calibration=x)
        with tempfile.TemporaryDirectory() as tmp:  # (plans are loaded from graph files, as users run them)
            path = Path(tmp) / f"{w['key']}.{prec}.nir"
            write_graph(path, graph)
            plan = load_plan(path)
        rec = measure(plan, x, args.repeats, log=lambda s: print(s, flush=True))
        rec |= {"key": w["key"], "name": w["name"], "precision": prec, "weights": w["weights"]}
        results["runs"].append(rec)
        print(f"  adds/sample {rec['adds_per_sample']:.4g}, ceiling {rec['ceiling_gadds_per_s']:.2f} G adds/s, "
              f"eventsim {rec['eventsim_gadds_per_s']:.2f} G adds/s = {100 * rec['fraction']:.1f} % of the ceiling "
              f"(load {rec['loadavg'][0]:.2f}-{rec['loadavg'][1]:.2f})", flush=True)  # fmt: skip
        write_json_atomic(out / "ceiling.json", results)
    md = table(results)
    write_text_atomic(out / "ceiling.md", md)
    if results["runs"]:
        plot(results, out / "ceiling.png")
    print(md)
    print(f"written: {out / 'ceiling.json'}, {out / 'ceiling.md'}, {out / 'ceiling.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
