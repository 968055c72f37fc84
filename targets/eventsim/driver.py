"""The ``eventsim`` target: the project's own event-driven CPU simulator (numba kernels).

Work is done per event, never as a dense product over all inputs every step:

- an input spike (or a spike count, a pooled count, a current) is an *event* ``(neuron, value)``;
  a synaptic node scatters each event's outgoing weights into its targets' accumulators (a weight
  row for an affine layer, the kernel window for a convolution, the pooling cell for pooling) and
  remembers which output pixels it touched;
- a LIF layer updates only the neurons that have state (``v != 0``) or received input this step,
  kept in an *active list*; a neuron at rest with no input costs nothing. Layers whose neurons get
  input at every step regardless (a non-zero bias or leak) are updated densely: that is the
  semantics, not a shortcut.

- an LI layer (non-spiking leaky integrator) is listed the same way: a neuron with a non-zero
  membrane, input or a constant input is updated, and each non-zero membrane is passed on as an
  event carrying its value (the next node sees analog values: float64 accumulators then); a listed
  membrane that decays to 0 (fixed precision truncates; float halves toward 0) leaves the list, so
  an LI readout's cost follows events too. Its own compiled loop keeps the LIF kernels untouched.
  The graph output of an LI readout is a float64 score per class (each step's float32 output added
  in step order, as the reference), integers in fixed precision.

Feature maps are held channel-last (``(y * W + x) * C + c``), so that one event's fan-out is a
few contiguous runs of ``C_out`` weights; flatten is a relabelling whose permutation is folded
into the next affine layer's weight rows. Results come back in the plan's (C, H, W) order.

Both precisions follow :mod:`targets.reference` operation for operation: fixed precision in
integers exactly as :mod:`core.fixed` (bit-exact; accumulators in int32 when a per-layer bound
proves that no sum can overflow, else int64), float precision with float64 accumulation rounded
once to float32 and float32 neuron arithmetic (no fused multiply-add), the reference's order.

The whole simulation (every sample, step and node) is one compiled function, free of Python
objects; :class:`EventSim` prepares its flat arrays once per plan, and :class:`EventSim.stream`
keeps neuron state across calls for streaming at batch size 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic, overload

from core import fixed
from core.errors import DataError, ModelError
from targets.plan import FRACTIONAL_SPIKES, NON_FINITE_SPIKES, Plan, check_spikes
from targets.reference import RunResult

DECAY_UNITY, DECAY_SHIFT, ACT_SHIFT, VTH_SHIFT, V_MAX = (fixed.DECAY_UNITY, fixed.DECAY_SHIFT, fixed.ACT_SHIFT,
                                                     fixed.VTH_SHIFT, fixed.V_MAX)  # fmt: skip

# node kinds in the compiled table
INPUT, CONV, AFFINE, SUMPOOL, AVGPOOL, FLATTEN, LIF, LI, DELAY = range(9)
KIND_CODE = {"conv": CONV, "affine": AFFINE, "sumpool": SUMPOOL, "avgpool": AVGPOOL, "flatten": FLATTEN, "lif": LIF,
             "li": LI, "delay": DELAY}  # fmt: skip

# columns of the node table
(K_KIND, K_N, K_SRC, K_NSRC, K_CI, K_HI, K_WI, K_CO, K_HO, K_WO, K_KH, K_KW, K_SH, K_SW, K_PH, K_PW, K_WOFF,
 K_BOFF, K_POFF, K_EXP, K_VTH, K_DV, K_DENSE, K_OFF, K_GROUPS, K_LIF, K_ROFF, K_FUSED, K_UNIFORM,
 K_MAP, K_TOFF, K_DOFF, K_DSLOT, K_DDEPTH) = range(34)  # fmt: skip
NCOLS = 34
DENSE_FRACTION = 0.25


@intrinsic
def _cycles(typingctx):
    """The CPU's cycle counter (``llvm.readcyclecounter``): per-node profile of the kernel."""

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(64), []), "llvm.readcyclecounter"
        )
        return builder.call(fn, [])

    return types.int64(), codegen


@intrinsic
def _ashr32(typingctx, a, s):
    """``a >> s`` in 32 bits (``0 <= s < 32``): numba would widen it to 64 bits, which AVX2 lanes
    cannot shift arithmetically, and the loop around it would not vectorise in 32-bit lanes."""
    sig = types.int32(types.int32, types.int32)

    def codegen(context, builder, signature, args):
        return builder.ashr(args[0], args[1])

    return sig, codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _add_run(acc, a0, weights, w0, m, x):
    """``acc[a0 : a0 + m] += x * weights[w0 : w0 + m]``. Unsigned indices: numba then adds no
    negative-index wraparound and LLVM vectorises the loop (2.6x faster, measured)."""
    if x == 1:  # a spike: a plain add
        for o in range(m):
            acc[a0 + o] += weights[w0 + o]
    else:
        xa = _cast_like(x, weights)
        for o in range(m):
            acc[a0 + o] += xa * weights[w0 + o]


def _cast_like(x, arr):
    """``x`` in ``arr``'s element type (so that a weighted scatter stays in int32 SIMD lanes)."""


@overload(_cast_like)
def _cast_like_impl(x, arr):
    dtype = arr.dtype
    return lambda x, arr: dtype(x)


def _emit_value(kind, acc_v, bias_v, exp, area):
    """The value a synaptic or pooling node passes on for one neuron (the reference's formula)."""


@overload(_emit_value)
def _emit_value_impl(kind, acc_v, bias_v, exp, area):
    # (a pool's exponent is 0 and its bias region zeros)
    if isinstance(bias_v, types.Integer):  # fixed: shift by the weight exponent (the bias enters the LIF)
        return lambda kind, acc_v, bias_v, exp, area: _input_value(acc_v, exp, False, area)
    # float: the sum rounded once to float32 (an average pool's divided by its area), then the bias
    return lambda kind, acc_v, bias_v, exp, area: _input_value(acc_v, exp, kind == AVGPOOL, area) + bias_v


def _lif_update(v, x, bias, keep, vth, beta, gain, leak, vth_f, v_reset):
    """One neuron's LIF step: ``(new v, spike)``."""


@overload(_lif_update)
def _lif_update_impl(v, x, bias, keep, vth, beta, gain, leak, vth_f, v_reset):
    if isinstance(v, types.Integer):  # core.fixed.lif_fixed_step for one neuron

        def lif_fixed(v, x, bias, keep, vth, beta, gain, leak, vth_f, v_reset):
            # trunc(v * keep / 4096) in 32-bit lanes (AVX2 has no 64-bit multiply): |v| < 2**23, so with
            # |v| = 4096 h + l the product splits exactly into h * keep + (l * keep >> 12)
            a = np.int32(abs(v))
            k32 = np.int32(keep)
            r = np.int64((a >> DECAY_SHIFT) * k32 + (((a & 4095) * k32) >> DECAY_SHIFT))
            dec = r if v >= 0 else -r
            vn = min(max(dec + (x << ACT_SHIFT) + bias, -V_MAX), V_MAX)
            if vn > vth:
                return np.int64(0), True
            return vn, False

        return lif_fixed

    # float32 throughout, in the reference's order; ``bias`` is a float synapse's bias folded into its
    # only consumer (0 otherwise), so that a neuron without input needs no event from the synapse
    def lif_float(v, x, bias, keep, vth, beta, gain, leak, vth_f, v_reset):
        vf = beta * v + gain * (x + bias) + leak  # x + bias: the reference's synapse output
        if v_reset != v_reset:  # NaN marks snnTorch's delayed subtraction: v is kept unreset, and the
            if v > vth_f:  # threshold comes off at the step after it was crossed (targets.reference)
                vf = vf - vth_f
            return vf, vf > vth_f
        if vf > vth_f:
            return v_reset, True
        return vf, False

    return lif_float


def _input_value(a, exp, avg, area):
    """Accumulator ``a`` as the value passed on: shifted by the weight exponent ``exp`` (fixed), or
    rounded to float32 and divided by an average pool's ``area`` (float); no bias."""


@overload(_input_value)
def _input_value_impl(a, exp, avg, area):
    if isinstance(a, types.Integer):

        def fixed_value(a, exp, avg, area):
            x = np.int64(a)
            return x << exp if exp >= 0 else x >> -exp

        return fixed_value

    def float_value(a, exp, avg, area):
        x = np.float32(a)
        return x / area if avg else x

    return float_value


def _at(p, i):
    """Element ``i`` of a per-neuron parameter array, or a layer-wide scalar parameter itself."""


@overload(_at)
def _at_impl(p, i):
    if isinstance(p, types.Array):
        return lambda p, i: p[i]
    return lambda p, i: p


def _dense_lif(src, exp, avg, area, v, bias, spikes, keep, vth, beta, gain, leak, vth_f, v_reset):
    """One step of every neuron of a dense LIF layer, without branches, so that LLVM vectorises it.

    ``src`` is the layer's input, zeroed as it is read: the fused synapse's accumulators (passed on
    as :func:`_emit_value` does: shifted by the weight exponent ``exp``, or divided by an average
    pool's ``area``) or the gathered input values (``exp`` 0, not ``avg``). ``spikes`` gets 0/1.
    A fused float synapse's own bias is zero here: it is folded into ``bias`` (checked at build).
    """


X_CLAMP = 2**24  # |input| beyond which the membrane saturates whatever its state (narrow path)


@overload(_dense_lif, jit_options={"nogil": True})
def _dense_lif_impl(src, exp, avg, area, v, bias, spikes, keep, vth, beta, gain, leak, vth_f, v_reset):
    if isinstance(bias.dtype, types.Integer) and bias.dtype.bitwidth == 32:
        # fixed precision in 32-bit lanes (8 per AVX2 vector; numba computes integers in 64 bits
        # unless every result is narrowed). Exact, given what the build checked (|bias| < 2**29,
        # weight exponents <= 23): |v| <= V_MAX < 2**23 keeps the decay's partial products below
        # 2**24; an input beyond X_CLAMP saturates the membrane whatever v and the bias are, so it is
        # clamped there first, and (x << 6) + v + bias stays below 2**31.
        i32 = np.int32

        def narrow(src, exp, avg, area, v, bias, spikes, keep, vth, beta, gain, leak, vth_f, v_reset):
            k = i32(keep)
            vt = i32(min(vth, 2**31 - 1))
            mul = i32(1 << exp) if exp >= 0 else i32(1)
            sh = i32(min(-exp, 31)) if exp < 0 else i32(0)
            lim = i32(X_CLAMP >> exp) if exp >= 0 else i32(2**31 - 1)
            for i in range(np.uint64(v.shape[0])):
                a = i32(min(max(src[i], -lim), lim))
                src[i] = 0
                x = _ashr32(i32(a * mul), sh)  # the shift by the weight exponent
                x = i32(min(max(x, i32(-X_CLAMP)), i32(X_CLAMP)))
                vv = v[i]
                sg = i32(vv >> 31)  # |v| and the sign restored without branches
                p = i32(i32(vv ^ sg) - sg)
                r = i32(i32(i32(p >> DECAY_SHIFT) * k) + i32(i32(i32(p & 4095) * k) >> DECAY_SHIFT))
                dec = i32(i32(r ^ sg) - sg)
                vn = i32(dec + i32(x << ACT_SHIFT))
                vn = i32(vn + bias[i])
                vn = i32(min(max(vn, i32(-V_MAX)), i32(V_MAX)))
                spike = vn > vt
                v[i] = i32(0) if spike else vn
                spikes[i] = spike

        return narrow

    def wide(src, exp, avg, area, v, bias, spikes, keep, vth, beta, gain, leak, vth_f, v_reset):
        for i in range(np.uint64(v.shape[0])):
            x = _input_value(src[i], exp, avg, area)
            src[i] = 0
            vn, spike = _lif_update(v[i], x, bias[i], keep, vth, _at(beta, i), _at(gain, i), _at(leak, i),
                                    _at(vth_f, i), _at(v_reset, i))  # fmt: skip
            v[i] = vn
            spikes[i] = spike

    return wide


@numba.njit(cache=True, nogil=True)
def _conv_rows(idx, val, decode, acc, weights, Co, Ho, Wo, KH, KW, SH, PH, PW, marks, listed, ng, track):
    """Events ``(idx, val)`` into a convolution of column stride 1. Kernel columns are stored
    flipped, so one window row is one contiguous run of ``n * Co`` weights onto ``n * Co``
    contiguous accumulators. With ``track``, the touched output pixels are listed from ``ng`` on.
    Returns the new ``ng`` and the number of weights scattered."""
    syn = 0
    for e in range(idx.shape[0]):
        i = idx[e]
        x = val[e]
        y, xx, c = decode[i, 0], decode[i, 1], decode[i, 2]
        # the output pixels whose window holds (y, xx): no division when the row stride is 1
        ry, ox0 = y + PH, xx + PW
        ky, oy = (0, ry) if SH == 1 else (ry % SH, ry // SH)
        kx0 = 0
        while oy >= Ho and ky < KH:
            ky += SH
            oy -= 1
        while ox0 >= Wo and kx0 < KW:
            kx0 += 1
            ox0 -= 1
        n = min(KW - kx0, ox0 + 1)
        while ky < KH and oy >= 0:
            g0 = oy * Wo + ox0 - n + 1
            base = ((c * KH + ky) * KW + KW - kx0 - n) * Co
            _add_run(acc, np.uint64(g0 * Co), weights, np.uint64(base), np.uint64(n * Co), x)
            syn += n * Co
            if track:
                for g in range(g0, g0 + n):
                    if marks[g] == 0:
                        marks[g] = 1
                        listed[ng] = g
                        ng += 1
            ky += SH
            oy -= 1
    return ng, syn


@numba.njit(cache=True, nogil=True)
def _dense_layer(src, exp, avg, area, v, bias, spikes, keep, vth, beta, gain, leak, vth_f, v_reset, uniform):
    """:func:`_dense_lif` with the float parameters as layer-wide scalars when ``uniform`` (or unused:
    fixed precision), which lets the pass vectorise with fewer arrays, else per neuron."""
    if uniform:
        _dense_lif(src, exp, avg, area, v, bias, spikes, keep, vth, beta[0], gain[0], leak[0], vth_f[0], v_reset[0])
    else:
        _dense_lif(src, exp, avg, area, v, bias, spikes, keep, vth, beta, gain, leak, vth_f, v_reset)


@numba.njit(cache=True, nogil=True)
def _relist(v, sticky, marks, listed):
    """Lists (and marks) the neurons with state or a constant input, after a dense pass over a
    listed layer; returns how many."""
    w = 0
    for i in range(v.shape[0]):
        stays = v[i] != 0 or sticky[i] != 0
        listed[w] = i
        marks[i] = stays
        w += stays
    return w


@numba.njit(cache=True, nogil=True)
def _gather(idx, val, inp, marks, listed, na, dense):
    """Events ``(idx, val)`` into a LIF layer's input ``inp``; unless the layer is ``dense``, a
    neuron not yet listed joins ``listed`` (at ``na``, which is returned grown)."""
    for e in range(idx.shape[0]):
        i = idx[e]
        inp[i] += val[e]
        if not dense and marks[i] == 0:
            marks[i] = 1
            listed[na] = i
            na += 1
    return na


@numba.njit(cache=True, nogil=True)
def _listed_lif(listed, inp, v, bias, sticky, marks, keep, vth, beta, gain, leak, vth_f, v_reset, out_idx, out_val):
    """One step of the ``listed`` neurons of a LIF layer (their input in ``inp``, zeroed as read);
    spikes become events. The list is compacted in place to the neurons that stay listed (state
    left, or a constant input), whose marks stay set. Returns ``(listed now, spikes)``."""
    w = 0
    ne = 0
    for j in range(listed.shape[0]):
        i = listed[j]
        x = inp[i]
        inp[i] = 0
        vn, spike = _lif_update(v[i], x, bias[i], keep, vth, _at(beta, i), _at(gain, i), _at(leak, i), _at(vth_f, i),
                                _at(v_reset, i))  # fmt: skip
        v[i] = vn
        out_idx[ne] = i
        out_val[ne] = 1
        ne += spike
        stays = vn != 0 or sticky[i] != 0
        marks[i] = stays
        listed[w] = i  # in-place compaction (w <= j)
        w += stays
    return w, ne


def _li_update(v, x, bias, keep, beta, gain, leak):
    """One LI neuron's step (the LIF's update without the spike): the new membrane."""


@overload(_li_update)
def _li_update_impl(v, x, bias, keep, beta, gain, leak):
    if isinstance(v, types.Integer):  # the integer LIF of core.fixed without threshold and reset

        def li_fixed(v, x, bias, keep, beta, gain, leak):
            prod = np.int64(v) * keep
            dec = (abs(prod) >> DECAY_SHIFT) if prod >= 0 else -(abs(prod) >> DECAY_SHIFT)
            return min(max(dec + (np.int64(x) << ACT_SHIFT) + np.int64(bias), -V_MAX), V_MAX)

        return li_fixed

    def li_float(v, x, bias, keep, beta, gain, leak):  # float32, the reference's order (as lif_float)
        return beta * v + gain * (x + bias) + leak

    return li_float


@numba.njit(cache=True, nogil=True)
def _li_layer(listed, dense, inp, v, bias, sticky, marks, keep, beta, gain, leak, out_idx, out_val, trace):
    """One step of an LI layer: every neuron when ``dense``, else the ``listed`` ones (state, input or
    a constant input), their input in ``inp`` (zeroed as read). Every non-zero membrane becomes an
    event carrying its value; ``trace`` (empty unless recording) gets the membranes. The list is
    compacted to the neurons that stay listed. Returns ``(listed now, events, neurons updated)``."""
    n = v.shape[0] if dense else listed.shape[0]
    w = 0
    ne = 0
    for j in range(n):
        i = j if dense else listed[j]
        x = inp[i]
        inp[i] = 0
        vn = _li_update(v[i], x, bias[i], keep, _at(beta, i), _at(gain, i), _at(leak, i))
        v[i] = vn
        out_idx[ne] = i
        out_val[ne] = vn
        ne += vn != 0
        if trace.shape[0]:
            trace[i] = vn
        if not dense:
            stays = vn != 0 or sticky[i] != 0
            marks[i] = stays
            listed[w] = i
            w += stays
    return w, ne, n


@numba.njit(cache=True, nogil=True)
def _spike_events(words, out_idx, out_val):
    """The neurons whose 0/1 spike flag (one byte each, read as 64-bit ``words``) is set, as events
    of value 1, in order; clears the flags. Returns the number of spikes."""
    ne = 0
    for wi in range(words.shape[0]):
        w = words[wi]
        if w == 0:
            continue
        words[wi] = 0
        while w:  # one set bit per spiking neuron (flags are 0 or 1): bit 8j is neuron 8 wi + j
            out_idx[ne] = wi * 8 + (trailing_zeros(w) >> 3)
            out_val[ne] = 1
            ne += 1
            w &= w - np.uint64(1)
    return ne


@numba.njit(cache=True, nogil=True)
def _pool_scatter(idx, val, cells, acc, listed, ng, track):
    """Events ``(idx, val)`` into a pool whose windows do not overlap: each input neuron's one output
    neuron is looked up in ``cells`` (-1: in no window). Each hit is listed in ``listed`` from
    ``ng`` on (no marks: passing a neuron on zeroes it, so a repeat passes on nothing); returns
    the new ``ng`` and the number of hits."""
    hits = 0
    for e in range(idx.shape[0]):
        cell = cells[idx[e]]
        if cell >= 0:
            acc[cell] += val[e]
            hits += 1
            if track:
                listed[ng] = cell
                ng += 1
    return ng, hits


@numba.njit(cache=True, nogil=True, inline="always")
def _pass_one(i, kind, acc, bias, exp, area, out_idx, out_val, ne):
    """Neuron ``i``'s value as event ``ne`` (branch-free: a zero, a repeat included, is written and
    not counted); zeroes its accumulator. Returns the new number of events."""
    v = _emit_value(kind, acc[i], bias[i], exp, area)
    acc[i] = 0
    out_idx[ne] = i
    out_val[ne] = v
    return ne + (v != 0)


@numba.njit(cache=True, nogil=True)
def _pass_on_range(lo, hi, kind, acc, bias, exp, area, out_idx, out_val):
    """The values of neurons ``lo`` to ``hi`` as events (see :func:`_pass_one`); returns how many."""
    ne = 0
    for i in range(lo, hi):
        ne = _pass_one(i, kind, acc, bias, exp, area, out_idx, out_val, ne)
    return ne


@numba.njit(cache=True, nogil=True)
def _pass_on(listed, G, kind, acc, bias, exp, area, out_idx, out_val):
    """The values of the ``G`` neurons of each ``listed`` group (a touched output pixel's channels,
    an affine layer's outputs, one pooled neuron) as events; returns how many."""
    ne = 0
    if G == 1:  # pooled neurons: one loop (2x faster than groups of one)
        for j in range(listed.shape[0]):
            ne = _pass_one(listed[j], kind, acc, bias, exp, area, out_idx, out_val, ne)
        return ne
    for j in range(listed.shape[0]):
        for i in range(listed[j] * G, listed[j] * G + G):
            ne = _pass_one(i, kind, acc, bias, exp, area, out_idx, out_val, ne)
    return ne


@numba.njit(cache=True, nogil=True)
def _simulate(
    table, srcs, outputs, decode, pmap, weights, biases, sticky, beta, gain, leak, vth_f, vreset,  # the compiled network
    acc, gmark, glist, inp, ev_idx, ev_val, ev_n, outbuf, outmark, outlist,  # scratch, zero between steps
    nmark, v, act, act_n,  # state kept between steps (and calls, when streaming)
    dl_idx, dl_val, dl_n, dl_head, dsteps, delay_rows,  # delays: stored events per (node, slot), this step's slot
    in_off, in_idx, in_val, T, B, reset,  # input events, CSR over (sample, step)
    counts, out_steps, layer_counts, work, cycles, rasters, traces, record,  # results
):  # fmt: skip
    n_nodes = table.shape[0]
    for b in range(B):
        if reset or b > 0:
            for k in range(n_nodes):
                if table[k, K_KIND] == LIF or table[k, K_KIND] == LI:
                    off = table[k, K_OFF]
                    for i in range(table[k, K_N]):
                        v[off + i] = 0
                    for j in range(act_n[k]):
                        nmark[off + act[off + j]] = 0
                    # at rest only the neurons with a constant input are listed (a dense layer keeps no list)
                    n_st = 0
                    for i in range(0 if table[k, K_DENSE] else table[k, K_N]):
                        if sticky[off + i]:
                            act[off + n_st] = i
                            nmark[off + i] = 1
                            n_st += 1
                    act_n[k] = n_st
            for k in delay_rows:  # nothing stored yet: a delay emits zeros (no events)
                dl_head[k] = 0
                for j in range(table[k, K_DDEPTH]):
                    dl_n[table[k, K_DSLOT] + j] = 0
        for t in range(T):
            # node 0: the input events of this sample and step
            row = b * T + t
            n0 = 0
            for e in range(in_off[row], in_off[row + 1]):
                ev_idx[n0] = in_idx[e]
                ev_val[n0] = in_val[e]
                n0 += 1
            ev_n[0] = n0
            clock = _cycles()
            for k in range(1, n_nodes):
                now = _cycles()  # per-node cycle counts: the profile (cheap: one counter read per node and step)
                cycles[k - 1] += now - clock
                clock = now
                kind = table[k, K_KIND]
                off = table[k, K_OFF]
                evo = table[k, K_OFF]  # every node's event buffer has the node's own extent
                N = table[k, K_N]
                s0, ns = table[k, K_SRC], table[k, K_NSRC]
                ne = 0
                if kind == DELAY:  # what its source emitted ``steps`` steps ago (per neuron)
                    M, d0, ds0, head = table[k, K_DDEPTH], table[k, K_DOFF], table[k, K_DSLOT], dl_head[k]
                    for age in range(1 if table[k, K_UNIFORM] == 0 else M, M + 1):  # uniform: only the oldest slot
                        slot = (head - age) % M
                        base = d0 + slot * N
                        for e in range(dl_n[ds0 + slot]):
                            i = dl_idx[base + e]
                            if dsteps[off + i] == age:
                                ev_idx[evo + ne] = i
                                ev_val[evo + ne] = dl_val[base + e]
                                ne += 1
                    ev_n[k] = ne
                    work[k, b] += ne
                    continue
                if kind == FLATTEN:
                    for si in range(s0, s0 + ns):
                        s = srcs[si]
                        so = table[s, K_OFF]
                        for e in range(ev_n[s]):
                            ev_idx[evo + ne] = ev_idx[so + e]
                            ev_val[evo + ne] = ev_val[so + e]
                            ne += 1
                    ev_n[k] = ne
                    continue
                if kind == LI:  # non-spiking: its membranes are its events (values), its output
                    dense = table[k, K_DENSE] != 0
                    na = act_n[k]
                    for si in range(s0, s0 + ns):
                        so = table[srcs[si], K_OFF]
                        na = _gather(ev_idx[so : so + ev_n[srcs[si]]], ev_val[so : so + ev_n[srcs[si]]],
                                     inp[off : off + N], nmark[off : off + N], act[off : off + N], na, dense)  # fmt: skip
                    boff, q = table[k, K_BOFF], table[k, K_POFF]
                    q0 = max(q, 0)
                    t0 = table[k, K_TOFF] + (t * B + b) * N
                    tr = traces[t0 : t0 + N] if record else traces[:0]
                    lv = (act[off : off + na], dense, inp[off : off + N], v[off : off + N], biases[boff : boff + N],
                          sticky[off : off + N], nmark[off : off + N], DECAY_UNITY - table[k, K_DV])  # fmt: skip
                    if q >= 0:  # float: per-neuron parameters
                        w, ne, upd = _li_layer(*lv, beta[q0 : q0 + N], gain[q0 : q0 + N], leak[q0 : q0 + N],
                                               ev_idx[evo:], ev_val[evo:], tr)  # fmt: skip
                    else:  # fixed: unused
                        w, ne, upd = _li_layer(*lv, beta[0], gain[0], leak[0], ev_idx[evo:], ev_val[evo:], tr)
                    if not dense:
                        act_n[k] = w
                    work[k, b] += upd
                    ev_n[k] = ne
                    continue
                if kind == LIF:
                    # K_DENSE: most neurons have a constant input (bias, leak), so all update every step
                    dense = table[k, K_DENSE] != 0
                    fs = table[k, K_FUSED]  # a dense layer's only synapse, whose accumulators it reads itself
                    na = act_n[k]
                    if fs < 0:  # gather the input of this step; neurons not yet listed join the work list
                        for si in range(s0, s0 + ns):
                            so = table[srcs[si], K_OFF]
                            na = _gather(ev_idx[so : so + ev_n[srcs[si]]], ev_val[so : so + ev_n[srcs[si]]],
                                         inp[off : off + N], nmark[off : off + N], act[off : off + N], na, dense)  # fmt: skip
                    boff, poff = table[k, K_BOFF], table[k, K_POFF]
                    li = table[k, K_LIF]
                    vth = np.int64(table[k, K_VTH]) << VTH_SHIFT
                    keep = DECAY_UNITY - table[k, K_DV]
                    # a listed layer with most neurons listed this step is updated densely too (the
                    # neurons at rest stay at rest), and its list rebuilt from the membranes
                    crowded = not dense and na >= N * DENSE_FRACTION
                    if dense or crowded:
                        # every neuron, in one branch-free pass (vectorised; nmark takes the
                        # spikes), then the spikes are read back a word at a time
                        q = max(poff, 0)  # float parameters: per neuron, or layer-wide (fixed: unused)
                        prm = (beta[q : q + N], gain[q : q + N], leak[q : q + N], vth_f[q : q + N], vreset[q : q + N],
                               poff < 0 or table[k, K_UNIFORM] != 0)  # fmt: skip
                        vbs = (v[off : off + N], biases[boff : boff + N], nmark[off : off + N], keep, vth)
                        if fs >= 0:
                            su = table[fs, K_OFF]
                            _dense_layer(acc[su : su + N], table[fs, K_EXP], table[fs, K_KIND] == AVGPOOL,
                                         np.float32(table[fs, K_KH] * table[fs, K_KW]), *vbs, *prm)  # fmt: skip
                        else:
                            _dense_layer(inp[off : off + N], 0, False, np.float32(1), *vbs, *prm)
                        # node offsets are 8-aligned: the spike flags are read 8 at a time
                        ne = _spike_events(nmark[off : off + ((N + 7) // 8) * 8].view(np.uint64), ev_idx[evo:],
                                           ev_val[evo:])  # fmt: skip
                        if record:
                            r0 = table[k, K_ROFF] + (t * B + b) * N
                            for j in range(ne):
                                rasters[r0 + ev_idx[evo + j]] = 1
                        if crowded:
                            act_n[k] = _relist(v[off : off + N], sticky[off : off + N], nmark[off : off + N],
                                               act[off : off + N])  # fmt: skip
                        work[k, b] += N
                    else:  # the listed neurons: those with state, with input, or with a constant input
                        lv = (act[off : off + na], inp[off : off + N], v[off : off + N], biases[boff : boff + N],
                              sticky[off : off + N], nmark[off : off + N], keep, vth)  # fmt: skip
                        if poff >= 0:
                            w, ne = _listed_lif(*lv, beta[poff : poff + N], gain[poff : poff + N], leak[poff : poff + N],
                                                vth_f[poff : poff + N], vreset[poff : poff + N], ev_idx[evo:],
                                                ev_val[evo:])  # fmt: skip
                        else:
                            w, ne = _listed_lif(*lv, beta[0], gain[0], leak[0], vth_f[0], vreset[0], ev_idx[evo:],
                                                ev_val[evo:])  # fmt: skip
                        if record:
                            r0 = table[k, K_ROFF] + (t * B + b) * N
                            for j in range(ne):
                                rasters[r0 + ev_idx[evo + j]] = 1
                        act_n[k] = w
                        work[k, b] += na
                    layer_counts[li, b] += ne
                    ev_n[k] = ne
                    continue
                # conv, affine, sumpool, avgpool: scatter every source event, then pass on values
                Co, Ho, Wo = table[k, K_CO], table[k, K_HO], table[k, K_WO]
                KH, KW, SH, SW, PH, PW = (table[k, K_KH], table[k, K_KW], table[k, K_SH], table[k, K_SW],
                                          table[k, K_PH], table[k, K_PW])  # fmt: skip
                woff = table[k, K_WOFF]
                goff = table[k, K_GROUPS]
                moff = table[k, K_MAP]
                pool = kind in (SUMPOOL, AVGPOOL)
                # remember the touched output pixels (a pool: the touched neurons), to pass on only
                # those (not when a dense LIF reads all the accumulators itself)
                track = table[k, K_FUSED] < 0
                ng = 0
                syn = 0
                for si in range(s0, s0 + ns):
                    s = srcs[si]
                    so = table[s, K_OFF]
                    idx_s, val_s = ev_idx[so : so + ev_n[s]], ev_val[so : so + ev_n[s]]
                    if moff >= 0:  # a pool whose windows do not overlap: one output neuron per event
                        ng, got = _pool_scatter(idx_s, val_s, pmap[moff:], acc[off : off + N], glist[goff:], ng, track)
                        syn += got
                        continue
                    if kind == CONV and SW == 1:
                        ng, got = _conv_rows(idx_s, val_s, decode[so:], acc[off : off + N], weights[woff:], Co, Ho, Wo,
                                             KH, KW, SH, PH, PW, gmark[goff:], glist[goff:], ng, track)  # fmt: skip
                        syn += got
                        continue
                    for e in range(ev_n[s]):
                        i = ev_idx[so + e]
                        x = ev_val[so + e]
                        if kind == AFFINE:
                            _add_run(acc, np.uint64(off), weights, np.uint64(woff + i * N), np.uint64(N), x)
                            syn += N
                            if ng == 0:
                                glist[goff] = 0
                                gmark[goff] = 1
                                ng = 1
                            continue
                        d = so + i
                        y, xx, c = decode[d, 0], decode[d, 1], decode[d, 2]
                        # the output pixels whose window holds (y, xx): no division when the stride is 1
                        ry, rx0 = y + PH, xx + PW
                        ky, oy = (0, ry) if SH == 1 else (ry % SH, ry // SH)
                        kx0, ox0 = (0, rx0) if SW == 1 else (rx0 % SW, rx0 // SW)
                        while oy >= Ho and ky < KH:
                            ky += SH
                            oy -= 1
                        while ox0 >= Wo and kx0 < KW:
                            kx0 += SW
                            ox0 -= 1
                        while ky < KH and oy >= 0:
                            kx, ox = kx0, ox0
                            while kx < KW and ox >= 0:
                                g = oy * Wo + ox
                                if pool:  # a pool marks neurons, not pixels
                                    g = g * Co + c
                                if track and gmark[goff + g] == 0:
                                    gmark[goff + g] = 1
                                    glist[goff + ng] = g
                                    ng += 1
                                if kind == CONV:
                                    base = woff + ((c * KH + ky) * KW + KW - 1 - kx) * Co
                                    a0u, bu = np.uint64(off + g * Co), np.uint64(base)
                                    xa = _cast_like(x, weights)
                                    for o in range(np.uint64(Co)):
                                        acc[a0u + o] += xa * weights[bu + o]
                                    syn += Co
                                else:
                                    acc[off + g] += x
                                    syn += 1
                                kx += SW
                                ox -= 1
                            ky += SH
                            oy -= 1
                work[k, b] += syn
                if table[k, K_FUSED] >= 0:  # its LIF reads the accumulators itself
                    ev_n[k] = 0
                    continue
                # pass on the values of the touched output pixels (every neuron when the bias is dense)
                boff = table[k, K_BOFF]
                area = np.float32(KH * KW)
                exp = table[k, K_EXP]
                G = N if kind == AFFINE else (1 if pool else Co)  # neurons per listed group
                if moff < 0:  # the marks set while scattering (a pool without overlaps sets none)
                    for j in range(ng):
                        gmark[goff + glist[goff + j]] = 0
                vals = (kind, acc[off : off + N], biases[boff : boff + N], exp, area, ev_idx[evo:], ev_val[evo:])
                if table[k, K_DENSE] != 0:
                    ne = _pass_on_range(0, N, *vals)
                else:
                    ne = _pass_on(glist[goff : goff + ng], G, *vals)
                ev_n[k] = ne
            now = _cycles()
            cycles[n_nodes - 1] += now - clock
            # the graph output: the sum of the output nodes' values, truncated to integers
            no = 0
            for oi in range(outputs.shape[0]):
                s = outputs[oi]
                so = table[s, K_OFF]
                for e in range(ev_n[s]):
                    i = ev_idx[so + e]
                    outbuf[i] += ev_val[so + e]
                    if outmark[i] == 0:
                        outmark[i] = 1
                        outlist[no] = i
                        no += 1
            for j in range(no):
                i = outlist[j]
                c = _cast_like(outbuf[i], counts)  # int64 (truncated) counts, or float64 scores of an LI readout
                counts[b, i] += c
                out_steps[t, b, i] += c
                outbuf[i] = 0
                outmark[i] = 0
            # every delay stores what its source emitted this step (no work at all without delays)
            for k in delay_rows:
                M, N = table[k, K_DDEPTH], table[k, K_N]
                s = srcs[table[k, K_SRC]]
                so, head = table[s, K_OFF], dl_head[k]
                base = table[k, K_DOFF] + head * N
                for e in range(ev_n[s]):
                    dl_idx[base + e] = ev_idx[so + e]
                    dl_val[base + e] = ev_val[so + e]
                dl_n[table[k, K_DSLOT] + head] = ev_n[s]
                dl_head[k] = (head + 1) % M


def _pool_cells(in_shape, out_shape, kernel, stride, padding) -> np.ndarray | None:
    """For a pool whose windows do not overlap: each internal (channel-last) input index's output
    neuron (internal index), -1 outside every window; None when some input lies in two windows."""
    c, h, w = in_shape
    _, ho, wo = out_shape
    cells = np.full((h, w), -1, dtype=np.int64)
    for oy in range(ho):
        for ox in range(wo):
            y0, x0 = oy * stride[0] - padding[0], ox * stride[1] - padding[1]
            window = cells[max(y0, 0) : max(y0 + kernel[0], 0), max(x0, 0) : max(x0 + kernel[1], 0)]
            if np.any(window >= 0):
                return None
            window[...] = oy * wo + ox
    out = cells[:, :, None] * c + np.arange(c)
    return np.where(cells[:, :, None] >= 0, out, -1).reshape(-1)


def _grid_span(w: np.ndarray) -> float:
    """max over output neurons of ``sum |w| / q``, with ``q`` the largest power of two of which each
    of the neuron's weights is a multiple (quantised weights: the quantiser's scale; inf when the
    weights have no such grid). Integer inputs up to ``x`` then keep every partial sum a multiple of
    ``q`` below ``x * span * q``: exact in float32 while ``x * span < 2**24``."""
    rows = np.asarray(w, dtype=np.float64).reshape(w.shape[0], -1)
    mant, exp = np.frexp(rows)
    whole = np.abs(mant * 2.0**53).astype(np.int64)  # rows == whole * 2**(exp - 53), exactly
    low = np.where(whole != 0, whole & -whole, 1)  # lowest set bit
    grid = np.where(whole != 0, exp - 53 + np.log2(low).astype(np.int64), np.iinfo(np.int64).max).min(axis=1)
    span = np.where(grid < 1024, np.abs(rows).sum(axis=1) / np.exp2(np.minimum(grid, 1023).astype(np.float64)), 0.0)
    return float(span.max(initial=0.0))


def _padded(n: int) -> int:
    return -(-n // 8) * 8


SCAN = 32  # input values tested at once for any non-zero (one vector compare)


@numba.njit(cache=True, nogil=True)
def _input_events(x, bits, T, B, C, P, integer, off, idx, val):
    """The non-zero entries of ``x`` (flat, C-contiguous ``(T, B, C, P)``, P pixels; ``bits``: the
    same memory as unsigned integers) as events: CSR
    ``off`` over (sample, step), internal index ``pixel * C + channel`` and value, written while
    they fit ``idx``/``val``. Returns ``(problem, events, integral, largest |value|)``: problem 0, or
    1 for a non-finite value, 2 for a fractional one in fixed precision."""
    n = 0
    off[0] = 0
    if x.shape[0] == 0:  # no samples
        return 0, 0, True, 0.0
    zero = bits[0] ^ bits[0]
    cap = idx.shape[0]
    bad = False
    frac = False
    top = 0.0
    for b in range(B):
        for t in range(T):
            off[b * T + t] = n
            for c in range(C):
                base = ((t * B + b) * C + c) * P
                for p0 in range(0, P, SCAN):
                    m = min(SCAN, P - p0)
                    if m == SCAN:  # most inputs are zero: skip a run of them in one test of their bits
                        hit = zero
                        for j in range(SCAN):
                            hit |= bits[base + p0 + j]
                        if hit == 0:
                            continue
                    mask = np.uint64(0)  # the positions of the non-zero bit patterns
                    for j in range(m):
                        mask |= np.uint64(bits[base + p0 + j] != 0) << np.uint64(j)
                    if mask == 0:
                        continue
                    if n + m > cap:  # no room: count only (the caller grows the buffers and asks again)
                        for p in range(p0, p0 + m):
                            n += x[base + p] != 0
                        continue
                    while mask:  # each non-zero bit pattern (a -0.0 too: it is skipped here)
                        p = p0 + trailing_zeros(mask)
                        mask &= mask - np.uint64(1)
                        a = x[base + p]
                        af = np.float64(a)
                        bad |= not abs(af) < np.inf
                        frac |= af != np.floor(af)
                        top = max(top, abs(af))
                        idx[n] = p * C + c
                        val[n] = a
                        n += a != 0
    if bad:
        return 1, 0, False, 0.0
    if integer and frac:
        return 2, 0, False, 0.0
    off[B * T] = n
    return 0, n, not frac, top


def _sole_lif_consumer(plan: Plan, name: str) -> bool:
    """Whether ``name`` feeds exactly one node, a LIF or LI with no other input (and not the output)."""
    users = [n for n in plan.nodes if name in n.sources]
    return (
        name not in plan.outputs and len(users) == 1 and users[0].kind in ("lif", "li") and users[0].sources == [name]
    )


def _channel_last(shape: tuple[int, ...]) -> np.ndarray:
    """For each internal (channel-last) index, the flat index in the plan's (C, H, W) order."""
    if len(shape) != 3:
        return np.arange(int(np.prod(shape)), dtype=np.int64)
    c, h, w = shape
    return np.arange(c * h * w, dtype=np.int64).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)


@dataclass
class Compiled:
    table: np.ndarray
    srcs: np.ndarray
    outputs: np.ndarray
    weights: np.ndarray
    biases: np.ndarray
    decode: np.ndarray  # (total, 3): (y, x, c) of every internal index of a (C, H, W) node
    pool_map: np.ndarray  # per pool without overlapping windows: input index -> its one output neuron, or -1
    sticky: np.ndarray  # neurons with a constant input (bias, leak): listed even at rest
    lif_params: tuple[np.ndarray, ...]  # beta, gain, leak, vth, vreset (float32, internal order)
    perms: dict[str, np.ndarray]  # node -> internal index -> plan index
    total: int  # summed node extents (every per-neuron buffer)
    groups: int  # summed group-mark extents
    lif_names: list[str]
    out_perm: np.ndarray
    in_perm: np.ndarray
    lif_rows: np.ndarray  # table row of each LIF, in lif_names order
    lif_sizes: list[int]
    li_names: list[str]  # non-spiking LI layers (their traces are recorded on request)
    li_rows: np.ndarray
    li_sizes: list[int]
    dsteps: np.ndarray  # per internal index of a delay node: its delay in steps
    delay_extent: int  # stored events of every delay, every slot
    delay_slots: int
    delay_rows: np.ndarray  # table rows of the delay nodes


class EventSim:
    """A plan compiled once into the flat arrays the kernel runs; reused by every batch."""

    def __init__(self, plan: Plan) -> None:
        from targets import get_target

        plan.require_rules(get_target("eventsim").rules, "eventsim")
        self.plan = plan
        self.integer = plan.precision == "fixed"
        self.value_dtype = np.int64 if self.integer else np.float32
        self._build()

    # ------------------------------------------------------------------------------ compile
    def _build(self) -> None:
        plan = self.plan
        nodes = plan.nodes
        index = {"input": 0} | {n.name: k + 1 for k, n in enumerate(nodes)}
        perms: dict[str, np.ndarray] = {"input": _channel_last(plan.input_shape)}
        table = np.zeros((len(nodes) + 1, NCOLS), dtype=np.int64)
        table[:, [K_BOFF, K_POFF, K_LIF, K_ROFF, K_FUSED, K_MAP, K_TOFF]] = -1
        pool_maps: list[np.ndarray] = []
        n_in = int(np.prod(plan.input_shape))
        table[0, K_N], table[0, K_OFF] = n_in, 0
        total, groups = _padded(n_in), 0
        srcs: list[int] = []
        weights: list[np.ndarray] = []
        woff = 0
        biases: list[np.ndarray] = []
        boff = 0
        lif: list[list[np.ndarray]] = [[], [], [], [], []]
        poff = 0
        bias_at: dict[str, int] = {}
        bias_of: dict[str, np.ndarray] = {}
        folded: dict[str, np.ndarray] = {}  # float synapse -> bias its sole LIF consumer adds
        sticky_parts: list[tuple[int, np.ndarray]] = []
        fan_in_abs: dict[str, float] = {}
        grid_span: dict[str, float] = {}
        dense_node: dict[str, bool] = {"input": False}
        lif_names = []
        li_names = []
        doff = dslot = 0
        delay_steps: list[tuple[int, np.ndarray]] = []
        for k, n in enumerate(nodes, start=1):
            row = table[k]
            row[K_KIND] = KIND_CODE[n.kind]
            N = int(np.prod(n.out_shape))
            row[K_N], row[K_OFF], row[K_SRC], row[K_NSRC] = N, total, len(srcs), len(n.sources)
            total += _padded(N)  # every node's region starts 8-aligned (spikes are read a word at a time)
            srcs += [index[s] for s in n.sources]
            if n.kind == "delay":  # first in the plan; its source (later) must hold the same layout
                if len(n.sources) != 1:
                    raise ModelError(f"{plan.source}: the eventsim target takes a Delay with one input; {n.name} sums "
                                     f"{', '.join(n.sources)}")  # fmt: skip
                perms[n.name] = _channel_last(n.out_shape)
                steps = n.params["steps"].reshape(-1)
                row[K_DDEPTH] = int(steps.max())
                row[K_UNIFORM] = bool((steps == steps.max()).all())
                row[K_DOFF], row[K_DSLOT] = doff, dslot
                doff += int(steps.max()) * N
                dslot += int(steps.max())
                delay_steps.append((row[K_OFF], steps[perms[n.name]]))
                dense_node[n.name] = False
                continue
            in_perms = [perms[s] for s in n.sources]
            if any(not np.array_equal(p, in_perms[0]) for p in in_perms[1:]):
                raise ModelError(f"{plan.source}: node {n.name} sums inputs held in different layouts")
            in_perm = in_perms[0]
            if len(n.in_shape) == 3:
                row[K_CI], row[K_HI], row[K_WI] = n.in_shape
            if len(n.out_shape) == 3:
                row[K_CO], row[K_HO], row[K_WO] = n.out_shape
            if n.kind in ("conv", "sumpool", "avgpool"):
                if len(n.in_shape) != 3 or not np.array_equal(in_perm, _channel_last(n.in_shape)):
                    raise ModelError(f"{plan.source}: node {n.name} needs a (C, H, W) input")
                kh, kw = n.params["kernel"] if n.kind != "conv" else n.params["weight"].shape[2:]
                row[K_KH], row[K_KW] = kh, kw
                row[K_SH], row[K_SW] = n.params["stride"]
                row[K_PH], row[K_PW] = n.params["padding"]
                row[K_GROUPS] = groups
                # a pool marks neurons, and lists one per input event when its windows do not overlap
                groups += (
                    max(N, len(n.sources) * int(np.prod(n.in_shape)))
                    if n.kind != "conv"
                    else n.out_shape[1] * n.out_shape[2]
                )
                perms[n.name] = _channel_last(n.out_shape)
                if n.kind != "conv":
                    cells = _pool_cells(n.in_shape, n.out_shape, (kh, kw), n.params["stride"], n.params["padding"])
                    if cells is not None:
                        row[K_MAP] = sum(len(m) for m in pool_maps)
                        pool_maps.append(cells)
            if n.kind in ("conv", "affine"):
                w = n.fixed["weight"] if self.integer else n.params["weight"].astype(np.float64)
                # largest |sum of weights| into one neuron: bounds the accumulator per unit of input
                fan_in_abs[n.name] = float(np.abs(w).reshape(w.shape[0], -1).sum(axis=1).max(initial=0))
                if not self.integer:
                    grid_span[n.name] = _grid_span(w)
                if n.kind == "conv":
                    wt = np.ascontiguousarray(w[:, :, :, ::-1].transpose(1, 2, 3, 0))  # (C, kh, kw flipped, O)
                else:
                    wt = np.ascontiguousarray(w.T[in_perm])  # rows in the input's internal order
                    perms[n.name] = np.arange(N, dtype=np.int64)
                    row[K_GROUPS] = groups
                    groups += 1
                row[K_WOFF] = woff
                weights.append(wt.reshape(-1))
                woff += wt.size
                per_channel = n.fixed["bias"] if self.integer else n.params["bias"]
                b = np.asarray(per_channel)[perms[n.name] // (N // len(per_channel))]
                row[K_EXP] = n.fixed["weight_exp"] if self.integer else 0
                if not self.integer and _sole_lif_consumer(plan, n.name):
                    folded[n.name], b = b, np.zeros_like(b)  # the LIF adds it: no event needed per step
                row[K_DENSE] = dense_node[n.name] = (not self.integer) and bool(np.any(b != 0))
            elif n.kind in ("sumpool", "avgpool"):
                b = np.zeros(N)
                row[K_DENSE] = dense_node[n.name] = any(dense_node[s] for s in n.sources)
            elif n.kind == "flatten":
                perms[n.name] = in_perm
                dense_node[n.name] = any(dense_node[s] for s in n.sources)
            if n.kind in ("conv", "affine", "sumpool", "avgpool"):  # every accumulating node has a bias region
                row[K_BOFF], bias_at[n.name], bias_of[n.name] = boff, boff, b
                biases.append(b)
                boff += N
            if n.kind == "li":
                perms[n.name] = in_perm
                li_names.append(n.name)
                dense_node[n.name] = False
                syn = n.sources[0]
                if self.integer:
                    if syn not in bias_at or len(n.sources) != 1:
                        raise ModelError(f"{plan.source}: fixed-precision LI {n.name} must follow one synaptic layer")
                    row[K_BOFF] = bias_at[syn]
                    row[K_DV] = n.fixed["dv"]
                    constant = bias_of[syn]
                else:
                    for j, key in enumerate(("beta", "gain", "leak")):
                        lif[j].append(np.asarray(n.params[key], dtype=np.float32).reshape(-1)[in_perm])
                    lif[3].append(np.zeros(N, np.float32))  # (no threshold, no reset)
                    lif[4].append(np.zeros(N, np.float32))
                    row[K_POFF] = poff
                    poff += N
                    constant = lif[2][-1].copy()
                    if syn in folded:
                        row[K_BOFF] = boff
                        biases.append(folded[syn])
                        boff += N
                        constant = constant + folded[syn]
                if row[K_BOFF] < 0:
                    row[K_BOFF] = boff
                    biases.append(np.zeros(N))
                    boff += N
                restless = constant != 0  # a constant input changes the membrane at every step
                sticky_parts.append((row[K_OFF], restless))
                row[K_DENSE] = bool(np.mean(restless) >= DENSE_FRACTION)
            if n.kind == "lif":
                perms[n.name] = in_perm
                row[K_LIF] = len(lif_names)
                lif_names.append(n.name)
                dense_node[n.name] = False
                syn = n.sources[0]
                if self.integer:
                    if syn not in bias_at:
                        raise ModelError(f"{plan.source}: fixed-precision LIF {n.name} must follow a synaptic layer")
                    row[K_BOFF] = bias_at[syn]
                    row[K_VTH], row[K_DV] = n.fixed["vth"], n.fixed["dv"]
                    constant = bias_of[syn]
                    at_rest_spikes = np.full(N, n.fixed["vth"] < 0)
                else:
                    for j, key in enumerate(("beta", "gain", "leak", "v_threshold", "v_reset")):
                        lif[j].append(np.asarray(n.params[key], dtype=np.float32).reshape(-1)[in_perm])
                    if n.params.get("reset") == "subtract_next":  # (the kernel's mark for it: v_reset NaN)
                        lif[4][-1] = np.full_like(lif[4][-1], np.nan)
                    row[K_POFF] = poff
                    row[K_UNIFORM] = all(np.all(p[-1] == p[-1][0]) for p in lif)  # layer-wide: scalars suffice
                    poff += N
                    constant = lif[2][-1].copy()
                    at_rest_spikes = lif[3][-1] < 0
                    if syn in folded:
                        row[K_BOFF] = boff
                        biases.append(folded[syn])
                        boff += N
                        constant = constant + folded[syn]
                if row[K_BOFF] < 0:  # a region of zeros: the dense update reads a bias for every neuron
                    row[K_BOFF] = boff
                    biases.append(np.zeros(N))
                    boff += N
                # neurons that change at every step: a constant input, or a threshold below 0 (they
                # spike at rest); they are always listed
                restless = (constant != 0) | at_rest_spikes
                sticky_parts.append((row[K_OFF], restless))
                # Dense when at least DENSE_FRACTION of the neurons have a constant input: they update
                # every step anyway, and one branch-free pass over all is cheaper than the lists
                row[K_DENSE] = bool(np.mean(restless) >= DENSE_FRACTION)
                # (a float synapse's bias is folded into this LIF by then: _dense_lif reads none)
                if (
                    row[K_DENSE]
                    and syn in bias_at
                    and _sole_lif_consumer(plan, syn)
                    and (self.integer or not np.any(bias_of[syn] != 0))
                ):
                    # fuse: the dense update reads the synapse's accumulators, no event list between
                    row[K_FUSED], table[index[syn], K_FUSED] = index[syn], k
        for n in nodes:
            if n.kind == "delay" and not np.array_equal(perms[n.name], perms[n.sources[0]]):
                raise ModelError(f"{plan.source}: the eventsim target cannot delay {n.sources[0]} ({n.name}): it holds "
                                 "that layer in another layout than the delay's readers")  # fmt: skip
        dsteps = np.zeros(total, dtype=np.int64)
        for start, st in delay_steps:
            dsteps[start : start + len(st)] = st
        outputs = np.array([index[o] for o in plan.outputs], dtype=np.int64)
        out_perms = [perms[o] for o in plan.outputs]
        if any(not np.array_equal(p, out_perms[0]) for p in out_perms[1:]):
            raise ModelError(f"{plan.source}: the graph output sums nodes held in different layouts")
        vdt = self.value_dtype
        # fixed: 32-bit biases let the dense update run in 32-bit lanes (see _dense_lif)
        narrow = (
            self.integer
            and max((np.abs(b).max(initial=0) for b in biases), default=0) < 2**29
            and (max(table[:, K_EXP]) <= 23)
        )
        sticky = np.zeros(total, dtype=np.uint8)
        for start, mask in sticky_parts:
            sticky[start : start + len(mask)] = mask
        decode = np.zeros((total, 3), dtype=np.int64)
        for k, shape in enumerate([plan.input_shape] + [n.out_shape for n in nodes]):
            if len(shape) == 3:
                c, h, w = shape
                i = np.arange(c * h * w)
                start = table[k, K_OFF]
                decode[start : start + len(i)] = np.stack([(i // c) // w, (i // c) % w, i % c], axis=1)
        self.compiled = Compiled(
            decode=decode,
            pool_map=np.concatenate(pool_maps) if pool_maps else np.zeros(1, dtype=np.int64),
            sticky=sticky,
            table=table,
            srcs=np.array(srcs, dtype=np.int64),
            outputs=outputs,
            weights=np.concatenate(weights) if weights else np.zeros(0),
            biases=(np.concatenate(biases) if biases else np.zeros(0)).astype(np.int32 if narrow else vdt),
            lif_params=tuple(np.concatenate(p) if p else np.zeros(1, dtype=np.float32) for p in lif),
            perms=perms,
            total=total,
            groups=max(groups, 1),
            lif_names=lif_names,
            out_perm=out_perms[0],
            in_perm=perms["input"],
            lif_rows=np.array([index[n] for n in lif_names], dtype=np.int64),
            lif_sizes=[int(np.prod(plan.node(n).out_shape)) for n in lif_names],
            li_names=li_names,
            li_rows=np.array([index[n] for n in li_names], dtype=np.int64),
            li_sizes=[int(np.prod(plan.node(n).out_shape)) for n in li_names],
            dsteps=dsteps,
            delay_extent=max(doff, 1),
            delay_slots=max(dslot, 1),
            delay_rows=np.array([k for k, n in enumerate(nodes, start=1) if n.kind == "delay"], dtype=np.int64),
        )
        self._fan_in_abs = fan_in_abs
        self._grid_span = grid_span
        self._weights_as: dict[type, np.ndarray] = {}
        self._scratch: dict[type, tuple[np.ndarray, ...]] = {}
        self._acc_dtypes: dict[tuple[float, bool], type] = {}
        self._run_state: State | None = None
        self._names = ["input"] + [n.name for n in self.plan.nodes]  # by table row
        self._synapse_rows = [
            k for k in range(1, len(self.compiled.table)) if self.compiled.table[k, K_KIND] in (CONV, AFFINE)
        ]
        self._event_buffers = (np.empty(1 << 16, dtype=np.int64), np.empty(1 << 16, dtype=self.value_dtype))

    def acc_dtype(self, input_max: float, integral: bool = True) -> type:
        """The narrowest accumulator in which every sum is exact for inputs up to ``input_max``
        (``integral``: integers only): fixed precision int32 when no sum can reach 2**31, else int64;
        float precision float32 when every partial sum is exactly representable in float32, else
        float64 (the reference's float64 sum is then exact too, so both round to the same float32)."""
        key = (input_max, integral or self.integer)
        if key not in self._acc_dtypes:  # per call at batch 1: computed once per input range
            self._acc_dtypes[key] = self._acc_dtype(*key)
        return self._acc_dtypes[key]

    def _acc_dtype(self, input_max: float, integral: bool) -> type:
        # a delay passes on what its source (later in the plan) emitted: its bound is found by
        # iterating to a fixed point (a loop whose bound keeps growing is unbounded)
        delays = {n.name: n.sources[0] for n in self.plan.nodes if n.kind == "delay"}
        known = {d: (0.0, True) for d in delays}
        for _ in range(len(delays) + 2):
            result, bound, whole = self._acc_pass(input_max, integral, known)
            new = {d: (bound[s], whole[s]) for d, s in delays.items()}
            if new == known:
                return result
            known = new
        return self._acc_pass(input_max, integral, dict.fromkeys(delays, (np.inf, False)))[0]

    def _acc_pass(self, input_max: float, integral: bool, delayed: dict[str, tuple[float, bool]]):
        # per node: a bound on |value| and whether its values are integers
        bound: dict[str, float] = {"input": float(input_max)}
        whole: dict[str, bool] = {"input": integral}
        worst = 0.0
        exact32 = True
        for n in self.plan.nodes:
            if n.kind == "delay":
                bound[n.name], whole[n.name] = delayed[n.name]
                continue
            x = sum(bound[s] for s in n.sources)
            ints = all(whole[s] for s in n.sources)
            if n.kind in ("conv", "affine"):
                acc = x * self._fan_in_abs[n.name]
                if self.integer:
                    bound[n.name] = acc * 2.0 ** n.fixed["weight_exp"] + 1
                else:  # integer inputs times weights on a grid of ``quantum``: exact while below 2**24 quanta
                    exact32 &= ints and x * self._grid_span[n.name] < 2**24
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
                bound[n.name] = 1.0 if n.kind == "lif" else x
                whole[n.name] = n.kind == "lif" or ints
            worst = max(worst, acc)
        if self.integer:
            return (np.int32 if worst < 2**31 - 1 else np.int64), bound, whole
        return (np.float32 if exact32 else np.float64), bound, whole

    def weights(self, dtype: type) -> np.ndarray:
        if dtype not in self._weights_as:
            self._weights_as[dtype] = self.compiled.weights.astype(dtype)
        return self._weights_as[dtype]

    # ------------------------------------------------------------------------------ run
    def input_events(self, spikes: np.ndarray) -> Events:
        """Dense ``(T, B, *input_shape)`` input as events: CSR offsets over (sample, step), internal
        neuron indices and values (checked as they are read). Valid until the next call: the index
        and value arrays are views of buffers reused by every call."""
        spikes = check_spikes(self.plan, spikes, values=False)
        if spikes.dtype == np.bool_:
            spikes = spikes.view(np.uint8)
        T, B = spikes.shape[:2]
        shape = self.plan.input_shape
        channels, pixels = (shape[0], shape[1] * shape[2]) if len(shape) == 3 else (1, int(np.prod(shape)))
        flat = np.ascontiguousarray(spikes).reshape(-1)
        off = np.empty(B * T + 1, dtype=np.int64)
        while True:  # the event buffers are reused from call to call, grown when an input needs more
            idx, val = self._event_buffers
            problem, n, integral, top = _input_events(flat, flat.view(f"u{flat.itemsize}"), T, B, channels, pixels,
                                                      self.integer, off, idx, val)  # fmt: skip
            if n + SCAN <= len(idx) or problem:
                break
            self._event_buffers = (
                np.empty(2 * n + SCAN, dtype=np.int64),
                np.empty(2 * n + SCAN, dtype=self.value_dtype),
            )
        if problem:
            raise DataError(NON_FINITE_SPIKES if problem == 1 else FRACTIONAL_SPIKES)
        idx, val = idx[:n], val[:n]
        return Events(off, idx, val, T, B, top, integral)

    def scratch(self, acc_dtype: type) -> tuple[np.ndarray, ...]:
        """Buffers the kernel leaves as it found them (all zero) after every step: made once per dtype."""
        if acc_dtype not in self._scratch:
            c, vdt, n_out = self.compiled, self.value_dtype, len(self.compiled.out_perm)
            self._scratch[acc_dtype] = (
                np.zeros(c.total, dtype=acc_dtype), np.zeros(c.groups, dtype=np.uint8),
                np.zeros(c.groups, dtype=np.int64), np.zeros(c.total, dtype=vdt), np.zeros(c.total, dtype=np.int64),
                np.zeros(c.total, dtype=vdt), np.zeros(len(c.table), dtype=np.int64), np.zeros(n_out, dtype=vdt),
                np.zeros(n_out, dtype=np.uint8), np.zeros(n_out, dtype=np.int64),
            )  # fmt: skip
        return self._scratch[acc_dtype]

    def new_state(self) -> State:
        c = self.compiled
        return State(
            v=np.zeros(c.total, dtype=np.int32 if self.integer else np.float32),  # |v| <= V_MAX < 2**23
            act=np.zeros(c.total, dtype=np.int64),
            act_n=np.zeros(len(c.table), dtype=np.int64),
            nmark=np.zeros(c.total, dtype=np.uint8),
            dl_idx=np.zeros(c.delay_extent, dtype=np.int64),
            dl_val=np.zeros(c.delay_extent, dtype=self.value_dtype),
            dl_n=np.zeros(c.delay_slots, dtype=np.int64),
            dl_head=np.zeros(len(c.table), dtype=np.int64),
        )

    def execute(self, events, state: State, *, reset: bool, record: bool) -> Outputs:
        """Run input events (from :meth:`input_events`) from ``state``, or from rest with ``reset``."""
        off, idx, val, T, B = events.offsets, events.index, events.value, events.steps, events.batch
        c = self.compiled
        adt = self.acc_dtype(events.largest, events.integral)
        n_out = len(c.out_perm)
        sizes = c.lif_sizes
        table = c.table
        li_sizes = c.li_sizes
        if record:
            r_off = np.concatenate([[0], np.cumsum([T * B * n for n in sizes])]).astype(np.int64)
            t_off = np.concatenate([[0], np.cumsum([T * B * n for n in li_sizes])]).astype(np.int64)
            table = table.copy()
            table[c.lif_rows, K_ROFF] = r_off[:-1]
            table[c.li_rows, K_TOFF] = t_off[:-1]
        rasters = np.zeros(int(r_off[-1]) if record else 0, dtype=np.uint8)
        traces = np.zeros(int(t_off[-1]) if record else 0, dtype=self.value_dtype)
        # scores of an LI readout: float64 totals of the float32 outputs (fixed: integers, as counts)
        cdt = np.float64 if self.plan.scores and not self.integer else np.int64
        counts = np.zeros((B, n_out), dtype=cdt)
        out_steps = np.zeros((T, B, n_out), dtype=cdt)
        layer_counts = np.zeros((len(sizes), B), dtype=np.int64)
        work = np.zeros((len(table), B), dtype=np.int64)  # synaptic events, or LIF neuron updates
        cycles = np.zeros(len(table), dtype=np.int64)
        _simulate(
            table, c.srcs, c.outputs, c.decode, c.pool_map, self.weights(adt), c.biases, c.sticky, *c.lif_params,
            *self.scratch(adt), state.nmark, state.v, state.act, state.act_n, state.dl_idx, state.dl_val, state.dl_n,
            state.dl_head, c.dsteps, c.delay_rows, off, idx, val, T, B, reset,
            counts, out_steps, layer_counts, work, cycles, rasters, traces, record,
        )  # fmt: skip
        plan = self.plan
        lif_rasters = li_traces = None
        if record:
            lif_rasters = {}
            for i, name in enumerate(c.lif_names):
                r = rasters[r_off[i] : r_off[i + 1]].reshape(T, B, sizes[i])
                out = np.empty_like(r)
                out[:, :, c.perms[name]] = r
                lif_rasters[name] = out.reshape(T, B, *plan.node(name).out_shape)
            li_traces = {}
            for i, name in enumerate(c.li_names):
                r = traces[t_off[i] : t_off[i + 1]].reshape(T, B, li_sizes[i])
                out = np.empty_like(r)
                out[:, :, c.perms[name]] = r
                li_traces[name] = out.reshape(T, B, *plan.node(name).out_shape).astype(
                    np.int64 if self.integer else np.float32
                )
        logical = np.empty_like(counts)
        logical[:, c.out_perm] = counts
        steps = np.empty_like(out_steps)
        steps[:, :, c.out_perm] = out_steps
        names = self._names
        syn = {names[k]: work[k] for k in self._synapse_rows}
        updates = {names[k]: work[k] for k in c.lif_rows} | {names[k]: work[k] for k in c.li_rows}
        layers = dict(zip(c.lif_names, layer_counts, strict=True))
        self.cycles = dict(zip(names, cycles.tolist(), strict=True))
        return Outputs(logical, steps, layers, syn, updates, lif_rasters, work, li_traces)

    def run(self, spikes: np.ndarray, record: bool = False) -> RunResult:
        if self._run_state is None:  # a run starts from rest: the state of the previous run is reused
            self._run_state = self.new_state()
        out = self.execute(self.input_events(spikes), self._run_state, reset=True, record=record)
        total = out.work.sum(axis=1).tolist()
        stats = {self._names[k]: {"synaptic_events": float(total[k])} for k in self._synapse_rows}
        rows = list(self.compiled.lif_rows) + list(self.compiled.li_rows)
        stats |= {self._names[k]: {"neuron_updates": float(total[k])} for k in rows}
        return RunResult(out.counts, out.layer_counts, out.rasters, stats, traces=out.traces)

    def stream(self) -> Stream:
        return Stream(self)


def stream(plan: Plan) -> Stream:
    """A streaming run (batch size 1, state kept between calls) of ``plan``."""
    return prepare(plan).stream()


@dataclass
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


def run(plan: Plan, spikes: np.ndarray, *, record: bool = False) -> RunResult:
    return prepare(plan).run(spikes, record=record)
