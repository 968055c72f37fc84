"""The numba-compiled side of :mod:`targets.eventsim`: every loop that runs per event, neuron or step.

:func:`_simulate` is the whole simulation (every sample, step and node) in one compiled function,
free of Python objects: it walks the node table of :mod:`targets.eventsim.layout` row by row at
every step, calling small compiled loops for the scatter of a synaptic or pooling node, the
listed, blocked and dense LIF updates, the LI update and the read-out of spikes (LLVM optimises them
alone far better than inlined in the big kernel). :func:`_input_events` turns a dense input into
events. The table's vocabulary (node kinds, columns) is :mod:`targets.eventsim.table`;
:mod:`targets.eventsim.aot` compiles these functions ahead of time as well.

Both precisions follow :mod:`targets.reference` operation for operation: fixed precision in
integers exactly as :mod:`core.fixed` (bit-exact; accumulators in int32 when a per-layer bound
proves that no sum can overflow, else int64), float precision with float64 accumulation rounded
once to float32 and float32 neuron arithmetic (no fused multiply-add), the reference's order.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic, overload

from targets.eventsim.table import (
    ACT_SHIFT,
    AFFINE,
    AVGPOOL,
    BLOCK_RUN,
    CONV,
    DECAY_SHIFT,
    DECAY_UNITY,
    DELAY,
    DENSE_FRACTION,
    FLATTEN,
    FORM_FIXED_CURRENT,
    FORM_FIXED_MEMBRANE,
    FORM_NIR,
    FORM_NORSE_BOX,
    FORM_NORSE_CELL,
    FORM_NORSE_JUMP,
    FORM_ROCKPOOL_SYN,
    K_BOFF,
    K_CO,
    K_DDEPTH,
    K_DENSE,
    K_DOFF,
    K_DSLOT,
    K_DV,
    K_EXP,
    K_FORM,
    K_FUSED,
    K_GROUPS,
    K_HO,
    K_KH,
    K_KIND,
    K_KW,
    K_LIF,
    K_MAP,
    K_N,
    K_NSRC,
    K_OFF,
    K_PH,
    K_POFF,
    K_PW,
    K_ROFF,
    K_SH,
    K_SPIKE,
    K_SRC,
    K_SW,
    K_TOFF,
    K_UNIFORM,
    K_VTH,
    K_WIN,
    K_WO,
    K_WOFF,
    LI,
    LIF,
    MAX_SPIKES,
    SCAN,
    SPIKE_FLOOR_GE,
    SPIKE_ONE,
    SUMPOOL,
    U_WRAP,
    V_MAX,
    VTH_SHIFT,
    X_CLAMP,
)


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
def _claim(typingctx, counter):
    """The next sample for this thread: ``counter[0]``, incremented atomically (fetch and add 1), so
    that the threads of one batch, each calling the kernel with the same counter, take every sample
    once, each as it comes free."""

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.atomic_rmw("add", data, ir.Constant(ir.IntType(64), 1), "monotonic")

    return types.int64(counter), codegen


@intrinsic
def _ashr32(typingctx, a, s):
    """``a >> s`` in 32 bits (``0 <= s < 32``): numba would widen it to 64 bits, which AVX2 lanes
    cannot shift arithmetically, and the loop around it would not vectorise in 32-bit lanes."""
    sig = types.int32(types.int32, types.int32)

    def codegen(context, builder, signature, args):
        return builder.ashr(args[0], args[1])

    return sig, codegen


@intrinsic
def _nonzero_bits(typingctx, bits, start):
    """Bit ``j`` set where ``bits[start + j] != 0``, for ``j < SCAN``: one vector compare of SCAN
    values and its mask (numba has no vector type; a loop building the mask bit by bit was scalar)."""
    width = bits.dtype.bitwidth
    sig = types.uint64(bits, types.uint64)

    def codegen(context, builder, signature, args):
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        vec = ir.VectorType(ir.IntType(width), SCAN)
        ptr = builder.bitcast(builder.gep(arr.data, [args[1]]), vec.as_pointer())
        nonzero = builder.icmp_unsigned("!=", builder.load(ptr, align=1), ir.Constant(vec, None))
        return builder.zext(builder.bitcast(nonzero, ir.IntType(SCAN)), ir.IntType(64))

    return sig, codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _add_run(acc, a0, weights, w0, m, x):
    """``acc[a0 : a0 + m] += x * weights[w0 : w0 + m]``. Unsigned indices: numba then adds no
    negative-index wraparound and LLVM vectorises the loop (2.6x faster, measured). A spike (``x``
    1) is multiplied too (``1 * w`` is ``w`` exactly): a plain add for ``x == 1`` was a branch that a
    pool's counts (1-4, in no pattern) mispredicted; without it 1.03-1.07x per sample on the N-MNIST
    CSNN, digits and event digits, both precisions (in-process A/B)."""
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


def _dense_lif(src, exp, avg, area, v, bias, spikes, keep, vth, beta, gain, leak, vth_f, v_reset, clamp):
    """One step of every neuron of a dense LIF layer, without branches, so that LLVM vectorises it.

    ``src`` is the layer's input, zeroed as it is read: the fused synapse's accumulators (passed on
    as :func:`_emit_value` does: shifted by the weight exponent ``exp``, or divided by an average
    pool's ``area``) or the gathered input values (``exp`` 0, not ``avg``). ``spikes`` gets 0/1.
    A fused float synapse's own bias is zero here: it is folded into ``bias`` (checked at build).
    Fixed precision in 32-bit lanes: ``clamp`` False where the caller has proved that neither the
    input's nor the membrane's saturation can act (``EventSim.unclamped``); float ignores it.
    """


@intrinsic
def _shl32(typingctx, a, s):
    """``a << s`` in 32 bits (``0 <= s < 32``), for the reason of :func:`_ashr32`."""
    sig = types.int32(types.int32, types.int32)

    def codegen(context, builder, signature, args):
        return builder.shl(args[0], args[1])

    return sig, codegen


def _narrow_input(a, lim, shl, sh):
    """A dense LIF's input ``a`` (an accumulator, or a gathered input value) shifted by the weight
    exponent (``<< shl`` or ``>> sh``, one of them 0) and clamped to ``+-X_CLAMP``, as int32."""


@overload(_narrow_input)
def _narrow_input_impl(a, lim, shl, sh):
    # Clamping to +-lim = X_CLAMP >> exp (exp >= 0) or X_CLAMP << -exp (exp < 0) *before* the shift
    # equals clamping the shifted value to +-X_CLAMP (floor division is monotone), and for exp >= 0
    # keeps the left shift from overflowing: one clamp instead of two.
    if a.bitwidth == 32:
        # lim is capped at 2**31 - 1 here: that changes only a = -2**31, whose shift by -exp >= 7
        # (exp < -6 is what makes lim exceed int32) is the same whether capped or not
        return lambda a, lim, shl, sh: _ashr32(_shl32(np.int32(min(max(a, np.int32(-lim)), np.int32(lim))), shl), sh)
    # a 64-bit input (a wide accumulator, the gathered input): clamped and shifted in 64 bits
    return lambda a, lim, shl, sh: np.int32((min(max(np.int64(a), -lim), lim) << shl) >> sh)


@numba.njit(cache=True, nogil=True, inline="always")
def _decay32(vv, k):
    """``trunc(vv * k / 4096)`` for ``|vv| <= V_MAX``, ``0 <= k <= 4096``, in 32-bit lanes: with
    ``|vv| = 4096 h + l`` the product splits exactly into ``h * k + (l * k >> 12)``; the sign is
    taken off and put back without branches."""
    i32 = np.int32
    sg = _ashr32(vv, i32(31))
    p = i32(i32(vv ^ sg) - sg)
    # |v| >> 12 < 2048: the masks change no value, but tell LLVM that both factors of each product
    # fit 16 bits (one vpmaddwd instead of two-uop vpmulld)
    hi = i32(_ashr32(p, i32(DECAY_SHIFT)) & 2047)
    lo = i32(p & 4095)
    r = i32(i32(hi * k) + _ashr32(i32(lo * k), i32(DECAY_SHIFT)))
    return i32(i32(r ^ sg) - sg)


@overload(_dense_lif, jit_options={"nogil": True})
def _dense_lif_impl(src, exp, avg, area, v, bias, spikes, keep, vth, beta, gain, leak, vth_f, v_reset, clamp):
    if isinstance(bias.dtype, types.Integer) and bias.dtype.bitwidth == 32:
        # fixed precision in 32-bit lanes (8 per AVX2 vector). numba computes integers in 64 bits
        # unless every result is narrowed, and one 64-bit step left in the loop (as the input's clamp
        # and multiply once were) is done in 512-bit vectors, which on an AVX-512 CPU takes a vector
        # port out of use for the whole loop: 0.72 ns per neuron then, 0.45 now (measured). Exact,
        # given what the build checked (|bias| < 2**29, weight exponents <= 23): |v| <= V_MAX < 2**23
        # keeps the decay's partial products below 2**24; an input beyond X_CLAMP saturates the
        # membrane whatever v and the bias are, so it is clamped there first, and (x << 6) + v + bias
        # stays below 2**31.
        i32 = np.int32
        cap = 2**31 - 1 if src.dtype.bitwidth == 32 else 2**62  # (see _narrow_input)

        def narrow(src, exp, avg, area, v, bias, spikes, keep, vth, beta, gain, leak, vth_f, v_reset, clamp):
            k = i32(keep & 8191)  # (0 <= keep <= 4096: the mask changes nothing, see _decay32)
            vt = i32(min(max(vth, -V_MAX - 1), V_MAX))  # (no membrane is beyond +-V_MAX)
            if not clamp:  # exp >= 0, no input beyond X_CLAMP >> exp, no membrane that saturates: 0.81x
                s = i32(exp + ACT_SHIFT)  # the time of the pass below (18,496 neurons, measured)
                if 0 < keep <= DECAY_UNITY and keep & (keep - 1) == 0:  # keep = 4096 >> d: trunc(v / 2**d), 0.79x
                    d = i32(0)
                    while (keep << d) < DECAY_UNITY:
                        d += 1
                    low = i32((1 << d) - 1)  # (a negative v rounds toward 0: the low bits added first)
                    for i in range(np.uint64(v.shape[0])):
                        x = _shl32(i32(src[i]), s)
                        src[i] = 0
                        vv = v[i]
                        vn = i32(i32(_ashr32(i32(vv + (_ashr32(vv, i32(31)) & low)), d) + x) + bias[i])
                        spike = vn > vt
                        v[i] = i32(0) if spike else vn
                        spikes[i] = spike
                    return
                for i in range(np.uint64(v.shape[0])):
                    x = _shl32(i32(src[i]), s)
                    src[i] = 0
                    vn = i32(i32(_decay32(v[i], k) + x) + bias[i])
                    spike = vn > vt
                    v[i] = i32(0) if spike else vn
                    spikes[i] = spike
                return
            shl = i32(exp) if exp >= 0 else i32(0)
            sh = i32(min(-exp, 31)) if exp < 0 else i32(0)
            lim = X_CLAMP >> exp if exp >= 0 else min(np.int64(X_CLAMP) << min(-exp, 31), cap)
            for i in range(np.uint64(v.shape[0])):
                x = _narrow_input(src[i], lim, shl, sh)
                src[i] = 0
                vn = i32(i32(_decay32(v[i], k) + _shl32(x, i32(ACT_SHIFT))) + bias[i])
                vn = min(max(vn, i32(-V_MAX)), i32(V_MAX))
                spike = vn > vt
                v[i] = i32(0) if spike else vn
                spikes[i] = spike

        return narrow

    def wide(src, exp, avg, area, v, bias, spikes, keep, vth, beta, gain, leak, vth_f, v_reset, clamp):
        for i in range(np.uint64(v.shape[0])):
            x = _input_value(src[i], exp, avg, area)
            src[i] = 0
            vn, spike = _lif_update(v[i], x, bias[i], keep, vth, _at(beta, i), _at(gain, i), _at(leak, i),
                                    _at(vth_f, i), _at(v_reset, i))  # fmt: skip
            v[i] = vn
            spikes[i] = spike

    return wide


@numba.njit(cache=True, nogil=True, inline="always")
def window_start(y, xx, Ho, Wo, KH, KW, SH, SW, PH, PW):
    """``(ky, oy, kx0, ox0)``: the first kernel tap and output pixel, per axis, whose window holds input
    pixel ``(y, xx)``; the others follow with the tap ``SH`` (``SW``) further and the pixel one
    less, while both are in range. No division where the stride is 1."""
    ry, rx0 = y + PH, xx + PW
    ky, oy = (0, ry) if SH == 1 else (ry % SH, ry // SH)
    kx0, ox0 = (0, rx0) if SW == 1 else (rx0 % SW, rx0 // SW)
    while oy >= Ho and ky < KH:
        ky += SH
        oy -= 1
    while ox0 >= Wo and kx0 < KW:
        kx0 += SW
        ox0 -= 1
    return ky, oy, kx0, ox0


@numba.njit(cache=True, nogil=True)
def _conv_rows(idx, val, win, acc, weights, Co, Wo, wstep, marks, listed, ng, track):
    """Events ``(idx, val)`` into a convolution of column stride 1. Kernel rows and columns are
    stored flipped, so one window row is one contiguous run of ``n * Co`` weights onto ``n * Co``
    contiguous accumulators, and the next row up is ``Wo`` pixels further in the accumulators and
    ``wstep`` weights further in the weights: both ascending. Each input neuron's window was worked
    out when the plan was compiled: ``win[i]`` is the first pixel and weight of its lowest window
    row, the pixels per row and the rows (:func:`~targets.eventsim.layout.conv_windows`). With
    ``track``, the touched output pixels are listed from ``ng`` on, top row first. Returns the new
    ``ng`` and the number of weights scattered.

    Both strides ascending matters: LLVM checks once per event that a run's accumulators and weights
    do not overlap, over all its rows, and with one stride descending that check failed and every
    add ran scalar (3x slower, measured); computing the window per event from the input's (y, x, c)
    instead cost 1.3x the time of this loop on the N-MNIST CSNN's first convolution (microbenchmark)."""
    syn = 0
    co = np.uint64(Co)
    astep = np.uint64(Wo) * co
    ws = np.uint64(wstep)
    for e in range(idx.shape[0]):
        i = idx[e]
        x = val[e]
        g0, n, rows = win[i, 0], win[i, 2], win[i, 3]
        a0 = np.uint64(g0) * co
        w0 = np.uint64(win[i, 1])
        m = np.uint64(n) * co
        for r in range(np.uint64(rows)):
            _add_run(acc, a0 + r * astep, weights, w0 + r * ws, m, x)
        syn += np.int64(rows) * np.int64(n) * Co
        if track:
            for r in range(rows - 1, -1, -1):
                for g in range(g0 + r * Wo, g0 + r * Wo + n):
                    if marks[g] == 0:
                        marks[g] = 1
                        listed[ng] = g
                        ng += 1
    return ng, syn


def _plain(v, gain, leak):
    """Whether a float layer's layer-wide gain is 1 and leak 0 (False in fixed precision)."""


@overload(_plain)
def _plain_impl(v, gain, leak):
    if isinstance(v.dtype, types.Integer):
        return lambda v, gain, leak: False
    return lambda v, gain, leak: gain == 1 and leak == 0


ONE, NEG_ZERO = np.float32(1), np.float32(-0.0)  # (compile-time constants in the kernels)


@numba.njit(cache=True, nogil=True)
def _dense_plain(src, exp, avg, area, v, bias, spikes, beta, vth_f, v_reset):
    """:func:`_dense_lif` in float for a gain of 1 and a leak of 0, as the constants 1 and -0: LLVM
    then drops the multiply (``1 * y`` is ``y``) and the add (``t + -0`` is ``t``). The same numbers:
    the reference's ``t + 0`` is ``t`` too but for ``t = -0``, and ``t = beta v + (x + bias)`` is never
    -0, as ``x`` never is (accumulators start at +0, and a sum that cancels is +0). In an in-process
    A/B 1.045x per sample on the N-MNIST CSNN in 1 ms steps (0.99x at T = 8, noise). A function of its
    own, chosen in :func:`_dense_layer`: the same loop inlined beside the general one inside
    :func:`_dense_lif` made the float pass 2-3.5x slower (measured; LLVM vectorised neither)."""
    for i in range(np.uint64(v.shape[0])):
        x = _input_value(src[i], exp, avg, area)
        src[i] = 0
        vn, spike = _lif_update(v[i], x, bias[i], 0, 0, beta, ONE, NEG_ZERO, vth_f, v_reset)
        v[i] = vn
        spikes[i] = spike


@numba.njit(cache=True, nogil=True)
def _dense_layer(src, exp, avg, area, v, bias, spikes, keep, vth, beta, gain, leak, vth_f, v_reset, uniform, clamp):
    """:func:`_dense_lif` with the float parameters as layer-wide scalars when ``uniform`` (or unused:
    fixed precision), which lets the pass vectorise with fewer arrays, else per neuron."""
    if uniform and _plain(v, gain[0], leak[0]):
        _dense_plain(src, exp, avg, area, v, bias, spikes, beta[0], vth_f[0], v_reset[0])
    elif uniform:
        _dense_lif(src, exp, avg, area, v, bias, spikes, keep, vth, beta[0], gain[0], leak[0], vth_f[0], v_reset[0],
                   clamp)  # fmt: skip
    else:
        _dense_lif(src, exp, avg, area, v, bias, spikes, keep, vth, beta, gain, leak, vth_f, v_reset, clamp)


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
def _relist_blocks(v, sticky, marks, listed, G):
    """:func:`_relist` for a LIF listed by blocks of ``G`` neurons (a convolution's output pixel):
    lists (and marks) the blocks in which a neuron has state or a constant input; returns how many."""
    w = 0
    g = np.uint64(G)
    for p in range(np.uint64(v.shape[0]) // g):
        stays = False
        for i in range(p * g, p * g + g):
            stays |= (v[i] != 0) | (sticky[i] != 0)
        listed[w] = p
        marks[p] = stays
        w += stays
    return w


@numba.njit(cache=True, nogil=True)
def _block_lif(listed, G, src, exp, avg, area, v, bias, sticky, marks, flags, keep, vth, beta, gain, leak, vth_f,
               v_reset, uniform, clamp, out_idx, out_val):  # fmt: skip
    """One step of a LIF fused to its convolution and listed by blocks: block ``p`` is output pixel
    ``p``'s ``G`` channels, neurons ``p G`` to ``p G + G``, which a convolution's event reaches together.
    Listed blocks are updated by :func:`_dense_lif` (vectorised, the input ``src`` read and zeroed as
    there, spikes into ``flags``), a run of consecutive blocks in one call (a window row's pixels join
    the list together, and stay in order). Spikes become events in neuron order within a run. The list
    is compacted to the blocks in which a neuron has state or a constant input (their marks in
    ``marks[p]`` stay set). Returns ``(listed now, spikes)``."""
    w = 0
    ne = 0
    g = np.uint64(G)
    cap = flags.shape[0] // G  # blocks per call at most
    words = flags.view(np.uint64)  # (flags: whole words, all zero between runs)
    n = listed.shape[0]
    j = 0
    while j < n:
        p0 = listed[j]
        r = 1
        while j + r < n and r < cap and listed[j + r] == p0 + r:
            r += 1
        lo = np.uint64(p0) * g
        hi = lo + np.uint64(r) * g
        if uniform:
            _dense_lif(src[lo:hi], exp, avg, area, v[lo:hi], bias[lo:hi], flags, keep, vth, beta[0], gain[0], leak[0],
                       vth_f[0], v_reset[0], clamp)  # fmt: skip
        else:
            _dense_lif(src[lo:hi], exp, avg, area, v[lo:hi], bias[lo:hi], flags, keep, vth, beta[lo:hi], gain[lo:hi],
                       leak[lo:hi], vth_f[lo:hi], v_reset[lo:hi], clamp)  # fmt: skip
        for wi in range((hi - lo + np.uint64(7)) // np.uint64(8)):  # the spikes, 8 flags at a time (mostly none)
            wd = words[wi]
            if wd == 0:
                continue
            words[wi] = 0
            while wd:
                out_idx[ne] = lo + wi * np.uint64(8) + (trailing_zeros(wd) >> 3)
                out_val[ne] = 1
                ne += 1
                wd &= wd - np.uint64(1)
        for q in range(r):
            left = np.uint8(0)  # any state or constant input left in the block (a vectorised reduction)
            for i in range(lo + np.uint64(q) * g, lo + np.uint64(q + 1) * g):
                left |= np.uint8(v[i] != 0) | sticky[i]
            marks[p0 + q] = left != 0
            listed[w] = p0 + q  # in-place compaction (w <= j)
            w += left != 0
        j += r
    return w, ne


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


@numba.njit(cache=True, nogil=True, inline="always")
def _rule_membrane(form, v, x, beta, gain, leak):
    """A float membrane after input ``x`` (the synapse's output) in a dialect's form and float32
    order of operations (:func:`targets.reference.membrane`): ``beta`` holds Norse's ``a`` or the
    current decay ``b``, ``leak`` Norse's ``v_leak``."""
    if form == FORM_NORSE_BOX:
        return v + beta * ((x + leak) - v)
    if form == FORM_NORSE_CELL:
        return v + beta * ((leak - v) + x)
    if form == FORM_NORSE_JUMP:
        return v + x
    if form == FORM_ROCKPOOL_SYN:
        return (v + x) * beta
    return beta * v + gain * x + leak  # (FORM_NIR_REST: NIR's, from a rest value other than 0)


@numba.njit(cache=True, nogil=True)
def _rule_lif(listed, inp, v, bias, sticky, marks, rest, form, spike, beta, gain, leak, vth_f, v_reset, out_idx,
              out_val):  # fmt: skip
    """One step of the ``listed`` neurons of a float LIF layer with a dialect's rule (membrane form,
    several spikes per step each subtracting the threshold), as :func:`targets.reference.run`
    computes it; spikes become events whose value is the count. A neuron stays listed while its
    membrane is off its rest value ``rest`` (checked at build to be a fixed point without input) or
    it has a constant input. Returns ``(listed now, events, spikes, largest count)``."""
    w = 0
    ne = 0
    total = 0
    top = 0
    for j in range(listed.shape[0]):
        i = listed[j]
        x = inp[i] + bias[i]  # the synapse's output
        inp[i] = 0
        vf = _rule_membrane(form, v[i], x, beta[i], gain[i], leak[i])
        th = vth_f[i]
        if spike == SPIKE_ONE:
            n = np.float32(1.0) if vf > th else np.float32(0.0)
            vn = v_reset[i] if vf > th else vf
        else:
            whole = np.floor(vf / th)
            if spike == SPIKE_FLOOR_GE:
                n = min(whole, np.float32(2**16)) if vf >= th else np.float32(0.0)
            else:
                n = whole if vf > 0 else np.float32(0.0)
            vn = vf - n * th
        v[i] = vn
        c = np.int64(n)
        out_idx[ne] = i
        out_val[ne] = n
        ne += c > 0
        total += c
        top = max(top, c)
        stays = vn != rest[i] or sticky[i] != 0
        marks[i] = stays
        listed[w] = i  # in-place compaction (w <= j)
        w += stays
    return w, ne, total, top


@numba.njit(cache=True, nogil=True, inline="always")
def _emit(i, out, traced, stays, dense, out_idx, out_val, ne, trace, marks, listed, w):
    """A non-spiking (or listed) neuron ``i`` done for this step: a non-zero ``out`` becomes an event,
    ``traced`` its trace (when recording), and a listed layer keeps it listed while it ``stays``.
    Returns ``(events, listed)`` so far."""
    out_idx[ne] = i
    out_val[ne] = out
    ne += out != 0
    if trace.shape[0]:
        trace[i] = traced
    if not dense:
        marks[i] = stays
        listed[w] = i
        w += stays
    return ne, w


@numba.njit(cache=True, nogil=True)
def _rule_li(listed, dense, inp, v, bias, sticky, marks, rest, form, beta, gain, leak, out_idx, out_val, trace):
    """One step of a float LI layer with a dialect's form (:func:`_li_layer` otherwise): its output is
    the membrane after this step's input; Norse's current (``FORM_NORSE_JUMP``) keeps that value
    decayed (``v + b v``) as its state. Every non-zero output becomes an event. Returns
    ``(listed now, events, neurons updated)``."""
    n = v.shape[0] if dense else listed.shape[0]
    w = 0
    ne = 0
    for j in range(n):
        i = j if dense else listed[j]
        x = inp[i] + bias[i]
        inp[i] = 0
        out = _rule_membrane(form, v[i], x, beta[i], gain[i], leak[i])
        vn = out + beta[i] * out if form == FORM_NORSE_JUMP else out
        v[i] = vn
        ne, w = _emit(
            i, out, out, vn != rest[i] or sticky[i] != 0, dense, out_idx, out_val, ne, trace, marks, listed, w
        )
    return w, ne, n


@numba.njit(cache=True, nogil=True, inline="always")
def _trunc_decay(v, keep):
    """``trunc(v * keep / 4096)`` in int64 (:func:`core.fixed.decay` for one value)."""
    prod = np.int64(v) * keep
    return (abs(prod) >> DECAY_SHIFT) if prod >= 0 else -(abs(prod) >> DECAY_SHIFT)


@numba.njit(cache=True, nogil=True)
def _fixed_current_layer(listed, dense, inp, v, bias, sticky, marks, keep, form, spiking, vth, out_idx, out_val, trace):
    """One step of a fixed-precision current-based neuron's layer, :mod:`core.fixed` exactly: its
    current (``FORM_FIXED_CURRENT``: ``u = wrap(trunc(u keep / 4096) + (x << 6))``, no bias, output
    ``u``), or the LIF/LI behind it (``FORM_FIXED_MEMBRANE``: ``v = clip(trunc(v keep / 4096) + x +
    bias)``, ``x`` the current; a LIF (``spiking``) emits 1 where ``v > vth`` and resets to 0, an LI
    emits ``v``). Lists and events as :func:`_li_layer`. Returns ``(listed now, events, neurons updated)``."""
    n = v.shape[0] if dense else listed.shape[0]
    w = 0
    ne = 0
    for j in range(n):
        i = j if dense else listed[j]
        x = np.int64(inp[i])
        inp[i] = 0
        dec = _trunc_decay(v[i], keep)
        if form == FORM_FIXED_CURRENT:
            vn = dec + (x << ACT_SHIFT)
            if vn > U_WRAP:  # Lava's 24-bit wrap-around of the current
                vn -= 2 * U_WRAP
            elif vn <= -U_WRAP:
                vn += 2 * U_WRAP
            out = vn
        else:
            vn = min(max(dec + x + np.int64(bias[i]), -V_MAX), V_MAX)
            out = vn
            if spiking:
                out = np.int64(vn > vth)
                if out:
                    vn = 0
        v[i] = vn
        ne, w = _emit(i, out, vn, vn != 0 or sticky[i] != 0, dense, out_idx, out_val, ne, trace, marks, listed, w)
    return w, ne, n


def _li_update(v, x, bias, keep, beta, gain, leak):
    """One LI neuron's step (the LIF's update without the spike): the new membrane."""


@overload(_li_update)
def _li_update_impl(v, x, bias, keep, beta, gain, leak):
    if isinstance(v, types.Integer):  # the integer LIF of core.fixed without threshold and reset

        def li_fixed(v, x, bias, keep, beta, gain, leak):
            dec = _trunc_decay(v, keep)
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
        ne, w = _emit(i, vn, vn, vn != 0 or sticky[i] != 0, dense, out_idx, out_val, ne, trace, marks, listed, w)
    return w, ne, n


@numba.njit(cache=True, nogil=True)
def _spike_events(flags, out_idx, out_val):
    """The neurons whose 0/1 spike flag (one byte each) is set, as events of value 1, in order;
    clears the flags. SCAN flags are tested at once (one vector compare), most of them zero.
    Returns the number of spikes."""
    ne = 0
    n = flags.shape[0]
    full = n - n % SCAN
    for b0 in range(0, full, SCAN):
        mask = _nonzero_bits(flags, np.uint64(b0))
        if mask == 0:
            continue
        for j in range(np.uint64(b0), np.uint64(b0 + SCAN)):  # (vectorised)
            flags[j] = 0
        while mask:  # one set bit per spiking neuron
            out_idx[ne] = b0 + trailing_zeros(mask)
            out_val[ne] = 1
            ne += 1
            mask &= mask - np.uint64(1)
    for i in range(full, n):
        if flags[i]:
            flags[i] = 0
            out_idx[ne] = i
            out_val[ne] = 1
            ne += 1
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
    table, srcs, outputs, decode, windows, pmap, weights, biases, sticky, beta, gain, leak, vth_f, vreset, vrest,  # network
    unclamped,  # per node: 1 where a fixed LIF's saturation provably cannot act for this call's input range
    acc, gmark, glist, inp, ev_idx, ev_val, ev_n, outbuf, outmark, outlist,  # scratch, zero between steps
    nmark, v, act, act_n,  # state kept between steps (and calls, when streaming)
    dl_idx, dl_val, dl_n, dl_head, dsteps, delay_rows,  # delays: stored events per (node, slot), this step's slot
    in_off, in_idx, in_val, T, B, reset,  # input events, CSR over (sample, step)
    counts, out_steps, layer_counts, work, cycles, rasters, traces, record, excess,  # results
    claim,  # the batch's next sample (shared by the threads that run one batch; see _claim)
):  # fmt: skip
    n_nodes = table.shape[0]
    # a blocked LIF's spikes of one run of blocks (at most BLOCK_RUN blocks)
    flags = np.zeros((BLOCK_RUN * max(table[:, K_CO].max(), 1) + 7) // 8 * 8, dtype=np.uint8)
    while True:
        b = _claim(claim)
        if b >= B:
            break
        if reset or b > 0:
            for k in range(n_nodes):
                if table[k, K_KIND] == LIF or table[k, K_KIND] == LI:
                    off = table[k, K_OFF]
                    for i in range(np.uint64(off), np.uint64(off + table[k, K_N])):  # (unsigned: vectorised, 2.7x)
                        v[i] = vrest[i]  # 0, or a dialect's rest value
                    for j in range(act_n[k]):
                        nmark[off + act[off + j]] = 0
                    # at rest only the neurons with a constant input are listed (a dense layer keeps no list;
                    # a blocked one lists their blocks)
                    n_st = 0
                    if table[k, K_DENSE] == 0 and table[k, K_FUSED] >= 0:
                        n_st = _relist_blocks(vrest[off : off + table[k, K_N]], sticky[off : off + table[k, K_N]],
                                              nmark[off:], act[off:], table[table[k, K_FUSED], K_CO])  # fmt: skip
                    else:
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
                    if table[k, K_FORM] >= FORM_FIXED_CURRENT:  # fixed: a current, or the LI behind one
                        w, ne, upd = _fixed_current_layer(act[off : off + na], dense, inp[off : off + N], v[off : off + N],
                                                          biases[boff : boff + N], sticky[off : off + N],
                                                          nmark[off : off + N], DECAY_UNITY - table[k, K_DV],
                                                          table[k, K_FORM], False, 0, ev_idx[evo:], ev_val[evo:], tr)  # fmt: skip
                    elif table[k, K_FORM] != FORM_NIR:  # a dialect's form (float)
                        w, ne, upd = _rule_li(act[off : off + na], dense, inp[off : off + N], v[off : off + N],
                                              biases[boff : boff + N], sticky[off : off + N], nmark[off : off + N],
                                              vrest[off : off + N], table[k, K_FORM], beta[q0 : q0 + N],
                                              gain[q0 : q0 + N], leak[q0 : q0 + N], ev_idx[evo:], ev_val[evo:], tr)  # fmt: skip
                    elif q >= 0:  # float: per-neuron parameters
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
                    fs = table[k, K_FUSED]  # its only synapse, whose accumulators it reads itself
                    na = act_n[k]
                    # blocked: fused to a convolution but listed, by blocks of its G channels per pixel
                    blocked = fs >= 0 and not dense
                    G = table[fs, K_CO] if blocked else 1
                    if blocked:  # the pixels the convolution touched this step join the list
                        gs = table[fs, K_GROUPS]
                        for j in range(ev_n[fs]):
                            p = glist[gs + j]
                            gmark[gs + p] = 0
                            if nmark[off + p] == 0:
                                nmark[off + p] = 1
                                act[off + na] = p
                                na += 1
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
                    crowded = not dense and na * G >= N * DENSE_FRACTION
                    r0 = table[k, K_ROFF] + (t * B + b) * N  # (this step's raster row, when recording)
                    fixed_membrane = table[k, K_FORM] == FORM_FIXED_MEMBRANE  # fixed, behind a current (listed)
                    if not fixed_membrane and (table[k, K_FORM] != FORM_NIR or table[k, K_SPIKE] != SPIKE_ONE):
                        # a dialect's rule (listed)
                        w, ne, spk, top = _rule_lif(act[off : off + na], inp[off : off + N], v[off : off + N],
                                                    biases[boff : boff + N], sticky[off : off + N], nmark[off : off + N],
                                                    vrest[off : off + N], table[k, K_FORM], table[k, K_SPIKE],
                                                    beta[poff : poff + N], gain[poff : poff + N], leak[poff : poff + N],
                                                    vth_f[poff : poff + N], vreset[poff : poff + N], ev_idx[evo:],
                                                    ev_val[evo:])  # fmt: skip
                        excess[0] = max(excess[0], top)
                        if record:
                            for j in range(ne):
                                rasters[r0 + ev_idx[evo + j]] = min(np.int64(ev_val[evo + j]), MAX_SPIKES)
                        act_n[k] = w
                        work[k, b] += na
                        layer_counts[li, b] += spk
                        ev_n[k] = ne
                        continue
                    if fixed_membrane:
                        w, ne, upd = _fixed_current_layer(act[off : off + na], False, inp[off : off + N], v[off : off + N],
                                                          biases[boff : boff + N], sticky[off : off + N],
                                                          nmark[off : off + N], keep, FORM_FIXED_MEMBRANE, True, vth,
                                                          ev_idx[evo:], ev_val[evo:], traces[:0])  # fmt: skip
                        act_n[k] = w
                        work[k, b] += upd
                    elif dense or crowded:
                        # every neuron, in one branch-free pass (vectorised; nmark takes the
                        # spikes), then the spikes are read back a word at a time
                        q = max(poff, 0)  # float parameters: per neuron, or layer-wide (fixed: unused)
                        prm = (beta[q : q + N], gain[q : q + N], leak[q : q + N], vth_f[q : q + N], vreset[q : q + N],
                               poff < 0 or table[k, K_UNIFORM] != 0, unclamped[k] == 0)  # fmt: skip
                        vbs = (v[off : off + N], biases[boff : boff + N], nmark[off : off + N], keep, vth)
                        if fs >= 0:
                            su = table[fs, K_OFF]
                            _dense_layer(acc[su : su + N], table[fs, K_EXP], table[fs, K_KIND] == AVGPOOL,
                                         np.float32(table[fs, K_KH] * table[fs, K_KW]), *vbs, *prm)  # fmt: skip
                        else:
                            _dense_layer(inp[off : off + N], 0, False, np.float32(1), *vbs, *prm)
                        ne = _spike_events(nmark[off : off + N], ev_idx[evo:], ev_val[evo:])
                        if crowded and blocked:
                            act_n[k] = _relist_blocks(v[off : off + N], sticky[off : off + N], nmark[off : off + N],
                                                      act[off : off + N], G)  # fmt: skip
                        elif crowded:
                            act_n[k] = _relist(v[off : off + N], sticky[off : off + N], nmark[off : off + N],
                                               act[off : off + N])  # fmt: skip
                        work[k, b] += N
                    elif blocked:
                        q = max(poff, 0)
                        su = table[fs, K_OFF]
                        w, ne = _block_lif(act[off : off + na], G, acc[su : su + N], table[fs, K_EXP], False, np.float32(1),
                                           v[off : off + N], biases[boff : boff + N], sticky[off : off + N],
                                           nmark[off : off + N], flags, keep, vth, beta[q : q + N], gain[q : q + N],
                                           leak[q : q + N], vth_f[q : q + N], vreset[q : q + N],
                                           poff < 0 or table[k, K_UNIFORM] != 0, unclamped[k] == 0, ev_idx[evo:],
                                           ev_val[evo:])  # fmt: skip
                        act_n[k] = w
                        work[k, b] += na * G
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
                        act_n[k] = w
                        work[k, b] += na
                    if record:  # one spike each
                        for j in range(ne):
                            rasters[r0 + ev_idx[evo + j]] = 1
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
                fused = table[k, K_FUSED]  # (a LIF that reads the accumulators itself: all, or the touched pixels)
                track = fused < 0 or table[fused, K_DENSE] == 0
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
                        ng, got = _conv_rows(idx_s, val_s, windows[table[k, K_WIN] :], acc[off : off + N], weights[woff:],
                                             Co, Wo, SH * KW * Co, gmark[goff:], glist[goff:], ng, track)  # fmt: skip
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
                        ky, oy, kx0, ox0 = window_start(y, xx, Ho, Wo, KH, KW, SH, SW, PH, PW)
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
                                    base = woff + ((c * KH + KH - 1 - ky) * KW + KW - 1 - kx) * Co  # (flipped)
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
                if fused >= 0:  # its LIF reads the accumulators itself (listed by blocks: the touched pixels)
                    ev_n[k] = ng if track else 0
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


@numba.njit(cache=True, nogil=True)
def _input_events(x, bits, T, B, C, P, sT, sB, integer, off, idx, val):
    """The non-zero entries of input ``(T, B, C, P)`` (P pixels) as events: CSR ``off`` over (sample,
    step), internal index ``pixel * C + channel`` and value, written while they fit ``idx``/``val``.
    ``x`` is flat memory in which step ``t`` of sample ``b`` starts at ``t * sT + b * sB`` and holds its
    ``C * P`` values contiguously (a batch slice of a larger array needs no copy); ``bits``: the same
    memory as unsigned integers. Returns ``(problem, events, integral, largest |value|)``: problem
    0, or 1 for a non-finite value, 2 for a fractional one in fixed precision."""
    n = 0
    off[0] = 0
    if x.shape[0] == 0:  # no samples
        return 0, 0, True, 0.0
    cap = idx.shape[0]
    bad = False
    frac = False
    top = 0.0
    CP = C * P
    for b in range(B):
        for t in range(T):
            off[b * T + t] = n
            base = t * sT + b * sB
            # the step's C * P values scanned as one run (not channel by channel: one partial block per
            # step instead of one per channel, 2x faster over zeros); the channel of position q is c,
            # the next channel starts at c_end (positions come in order)
            c, c_end = 0, P
            for q0 in range(0, CP, SCAN):
                m = min(SCAN, CP - q0)
                if m == SCAN:  # the positions of the non-zero bit patterns, in one vector compare
                    mask = _nonzero_bits(bits, np.uint64(base + q0))
                else:
                    mask = np.uint64(0)
                    for j in range(m):
                        mask |= np.uint64(bits[base + q0 + j] != 0) << np.uint64(j)
                if mask == 0:  # (most runs of inputs are zero)
                    continue
                if n + m > cap:  # no room: count only (the caller grows the buffers and asks again)
                    for q in range(q0, q0 + m):
                        n += x[base + q] != 0
                    continue
                while mask:  # each non-zero bit pattern (a -0.0 too: it is skipped here)
                    q = q0 + trailing_zeros(mask)
                    mask &= mask - np.uint64(1)
                    while q >= c_end:
                        c += 1
                        c_end += P
                    a = x[base + q]
                    af = np.float64(a)
                    bad |= not abs(af) < np.inf
                    frac |= af != np.floor(af)
                    top = max(top, abs(af))
                    idx[n] = (q - c_end + P) * C + c
                    val[n] = a
                    n += a != 0
    if bad:
        return 1, 0, False, 0.0
    if integer and frac:
        return 2, 0, False, 0.0
    off[B * T] = n
    return 0, n, not frac, top
