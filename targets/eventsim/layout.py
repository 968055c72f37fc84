"""What :mod:`targets.eventsim` compiles from a plan, once: the node table and the flat arrays.

:func:`compile_plan` turns a :class:`~targets.plan.Plan` into a :class:`Compiled`: one table row
per node (row 0 the input; the columns ``K_*`` of :mod:`targets.eventsim.table`), the sources of
every node, and every weight, bias and neuron parameter concatenated into one array each, so that
the kernel runs free of Python objects. Every node owns a region of the per-neuron buffers
(membranes, accumulators, event lists), and every node's weights, biases and parameters are regions of
one array each; every array starts on an :data:`ALIGN`-byte line and every region :data:`PAD` elements
on (a cache line for 4-byte values).

Feature maps are held channel-last (``(y * W + x) * C + c``), so that one event's fan-out is a
few contiguous runs of ``C_out`` weights, found in a table worked out here (:func:`conv_windows`);
flatten is a relabelling whose permutation is folded into the next affine layer's weight rows.
``Compiled.perms`` maps each node's internal order back to the plan's (C, H, W) order, in which
results come back.

Here too it is decided, per layer, how the kernel works on it: a LIF or LI layer whose neurons
mostly have a constant input is updated densely, a dense LIF reads its only synapse's accumulators
itself (fused), a float synapse's bias is folded into its only LIF, and a pool whose windows do
not overlap looks each input's output neuron up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.errors import ModelError
from targets.eventsim.table import (
    AFFINE,
    AVGPOOL,
    CONV,
    DELAY,
    DENSE_FRACTION,
    FLATTEN,
    FORM_FIXED_CURRENT,
    FORM_FIXED_MEMBRANE,
    FORM_NIR,
    FORM_NIR_REST,
    FORM_NORSE_BOX,
    FORM_NORSE_CELL,
    FORM_NORSE_JUMP,
    FORM_ROCKPOOL_SYN,
    K_BOFF,
    K_CI,
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
    K_HI,
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
    K_WI,
    K_WIN,
    K_WO,
    K_WOFF,
    LI,
    LIF,
    NCOLS,
    SPIKE_FLOOR_GE,
    SPIKE_ONE,
    SPIKE_TRUNC_GT0,
    SUMPOOL,
)
from targets.plan import Plan
from targets.reference import membrane

FORMS = {None: FORM_NIR, "norse_box": FORM_NORSE_BOX, "norse_cell": FORM_NORSE_CELL, "norse_jump": FORM_NORSE_JUMP,
         "rockpool_syn": FORM_ROCKPOOL_SYN}  # fmt: skip
SPIKES = {None: SPIKE_ONE, "floor_ge": SPIKE_FLOOR_GE, "trunc_gt0": SPIKE_TRUNC_GT0}


def _own_bias(n, perm: np.ndarray, N: int) -> np.ndarray:
    """A fixed-precision neuron's own per-channel bias (behind a current) per neuron, in ``perm``'s order."""
    b = np.asarray(n.fixed["bias"])
    return b[perm // (N // len(b))]


def _rule(n) -> tuple[int, int, np.ndarray | None]:
    """A float LIF/LI layer's dialect rule: its form and spike codes, and its rest state (None: 0). A
    layer at rest elsewhere than 0 follows NIR's form from there (FORM_NIR_REST)."""
    p = n.params
    form, spike = FORMS[p.get("form")], SPIKES[p.get("spike")]
    rest = np.asarray(p["v0"], np.float32).reshape(-1) if "v0" in p else None
    if form == FORM_NIR and rest is not None:
        form = FORM_NIR_REST
    if (form != FORM_NIR or spike != SPIKE_ONE) and p.get("reset") == "subtract_next":
        raise ModelError(f"layer {n.name}: the eventsim target takes snnTorch's delayed reset with NIR's own form only")
    return form, spike, rest


def _slots(p: dict, form: int) -> tuple[str, str, str]:
    """The plan's parameters in the kernel's beta, gain and leak slots for a form."""
    if form in (FORM_NORSE_BOX, FORM_NORSE_CELL):
        return "a", "gain", "v_leak"
    if form in (FORM_NORSE_JUMP, FORM_ROCKPOOL_SYN):
        return "b", "gain", "leak"
    return "beta", "gain", "leak"


def _at_rest(n, rest: np.ndarray | None) -> np.ndarray:
    """Whether each neuron's state stays at its rest value without input, by the reference's own
    float32 arithmetic (:func:`targets.reference.membrane`; Norse's current decays after its jump),
    in the plan's order: those that do not are never unlisted."""
    size = int(np.prod(n.out_shape))
    p = {k: np.broadcast_to(np.asarray(v), n.out_shape).reshape(-1) if isinstance(v, np.ndarray) else v
         for k, v in n.params.items()}  # fmt: skip
    r = np.zeros(size, np.float32) if rest is None else rest
    v = membrane(p, r, np.zeros(size, np.float32))
    if p.get("form") == "norse_jump":
        v = v + p["b"] * v
    return np.asarray(v, np.float32) == r


# a plan node's kind -> its code in the table
KIND_CODE = {"conv": CONV, "affine": AFFINE, "sumpool": SUMPOOL, "avgpool": AVGPOOL, "flatten": FLATTEN, "lif": LIF,
             "li": LI, "delay": DELAY}  # fmt: skip


def _pool_cells(in_shape, out_shape, kernel, stride, padding) -> np.ndarray | None:
    """For a pool whose windows do not overlap: each internal (channel-last) input index's output
    neuron (internal index, int32), -1 outside every window; None when some input lies in two windows."""
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
    return np.where(cells[:, :, None] >= 0, out, -1).reshape(-1).astype(np.int32)


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


ALIGN = 64  # bytes: a cache line, and an AVX-512 vector
PAD = 16  # elements: every region of a flat array starts a cache line on (4-byte values)


def _padded(n: int) -> int:
    return -(-n // PAD) * PAD


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised array whose data starts on an :data:`ALIGN`-byte boundary. NumPy's own start
    16 bytes into a line as often as not, so a vector load of a region straddles two lines: the same
    simulator ran 3-7 % slower with its arrays 16 bytes off a line (measured)."""
    dtype = np.dtype(dtype)
    size = math.prod(shape) if isinstance(shape, tuple) else int(shape)
    raw = np.empty(size * dtype.itemsize + ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start : start + size * dtype.itemsize].view(dtype).reshape(shape)


def aligned_zeros(shape, dtype) -> np.ndarray:
    out = aligned_empty(shape, dtype)
    out.fill(0)
    return out


def aligned(a: np.ndarray, dtype=None) -> np.ndarray:
    """A copy of ``a`` (as ``dtype``, default its own) whose data starts on an :data:`ALIGN`-byte boundary."""
    out = aligned_empty(a.shape, a.dtype if dtype is None else dtype)
    out[...] = a
    return out


def _joined(parts: list[np.ndarray], dtype, empty: int = 0) -> np.ndarray:
    """``parts`` end to end, each from a multiple of :data:`PAD` elements on (the offsets the
    table holds), zeros between; aligned. ``empty``: the size when there are no parts."""
    out = aligned_zeros(sum(_padded(p.size) for p in parts) if parts else empty, dtype)
    at = 0
    for p in parts:
        out[at : at + p.size] = p.reshape(-1)
        at += _padded(p.size)
    return out


def conv_windows(in_shape, out_shape, kernel, stride_y: int, padding) -> np.ndarray:
    """For each input neuron of a convolution of column stride 1 (internal, channel-last order), the
    window rows its event adds to, as the kernel's :func:`~targets.eventsim.kernels._conv_rows` runs
    them: ``(g0, w0, n, rows)``, the first output pixel and the first weight (from the node's own, kernel
    rows and columns stored flipped) of the lowest window row, the pixels per row and the rows. The
    next row up starts ``Wo`` pixels and ``stride_y * KW * Co`` weights further (int32)."""
    C, H, W = in_shape
    Co, Ho, Wo = out_shape
    KH, KW = kernel
    PH, PW = padding
    y, x, c = np.unravel_index(np.arange(C * H * W), (H, W, C))
    ry = y + PH
    ky0, oy0 = ry % stride_y, ry // stride_y
    # the rows j = 0, 1, ... reach kernel row ky0 + j * stride_y and output row oy0 - j: in range together
    j = np.arange(-(-KH // stride_y))[:, None]
    inside = (ky0 + j * stride_y < KH) & (oy0 - j >= 0) & (oy0 - j < Ho)
    rows = inside.sum(axis=0)
    last = np.where(rows > 0, inside.argmax(axis=0) + rows - 1, 0)  # (the in-range rows are consecutive)
    ky, oy = ky0 + last * stride_y, oy0 - last
    ox0 = x + PW
    kx0 = np.clip(ox0 - (Wo - 1), 0, KW)  # the first kernel column whose output column exists
    ox0 = ox0 - kx0
    n = np.maximum(np.minimum(KW - kx0, ox0 + 1), 0)
    g0 = oy * Wo + ox0 - n + 1
    w0 = ((c * KH + KH - 1 - ky) * KW + KW - kx0 - n) * Co
    out = np.stack([g0, w0, n, rows], axis=1)
    out[(rows == 0) | (n == 0)] = 0  # no output pixel sees this input
    return out.astype(np.int32)


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
    """A plan as the kernel runs it: the node table, the flat arrays, and the way back to the plan."""

    table: np.ndarray
    srcs: np.ndarray
    outputs: np.ndarray
    weights: np.ndarray
    biases: np.ndarray
    decode: np.ndarray  # (total, 3) int32: (y, x, c) of every internal index of a node in ``decoded`` (else 0)
    windows: np.ndarray  # (n, 4) int32, per convolution of column stride 1 (K_WIN): conv_windows of its input
    pool_map: np.ndarray  # int32, per pool without overlapping windows: input index -> its one output neuron, or -1
    sticky: np.ndarray  # neurons with a constant input (bias, leak): listed even at rest
    vrest: np.ndarray  # every neuron's state at rest: 0, or a dialect's rest value (Norse: v_leak)
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
    fan_in_abs: dict[str, float]  # synaptic node -> largest sum of |weights| into one neuron
    grid_span: dict[str, float]  # float precision: synaptic node -> _grid_span of its weights


def compile_plan(plan: Plan, integer: bool, value_dtype: type) -> Compiled:
    """``plan`` as the table and arrays the kernel runs; ``integer``: fixed precision, whose event
    values are ``value_dtype`` (int64; float32 in float precision)."""
    nodes = plan.nodes
    index = {"input": 0} | {n.name: k + 1 for k, n in enumerate(nodes)}
    perms: dict[str, np.ndarray] = {"input": _channel_last(plan.input_shape)}
    table = np.zeros((len(nodes) + 1, NCOLS), dtype=np.int64)
    table[:, [K_BOFF, K_POFF, K_LIF, K_ROFF, K_FUSED, K_MAP, K_TOFF, K_WIN]] = -1
    pool_maps: list[np.ndarray] = []
    windows: list[np.ndarray] = []
    decoded: set[str] = set()  # the nodes whose (y, x, c) the kernel looks up: sources of its general loop
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
    rests: list[tuple[int, np.ndarray]] = []  # (node offset, rest values) of layers at rest off 0
    for k, n in enumerate(nodes, start=1):
        row = table[k]
        row[K_KIND] = KIND_CODE[n.kind]
        N = int(np.prod(n.out_shape))
        row[K_N], row[K_OFF], row[K_SRC], row[K_NSRC] = N, total, len(srcs), len(n.sources)
        total += _padded(N)  # every node's region starts a cache line on
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
                else:  # overlapping windows: the kernel's general loop decodes each input's (y, x, c)
                    decoded.update(n.sources)
        if n.kind in ("conv", "affine"):
            w = n.fixed["weight"] if integer else n.params["weight"].astype(np.float64)
            # largest |sum of weights| into one neuron: bounds the accumulator per unit of input
            fan_in_abs[n.name] = float(np.abs(w).reshape(w.shape[0], -1).sum(axis=1).max(initial=0))
            if not integer:
                grid_span[n.name] = _grid_span(w)
            if n.kind == "conv":
                wt = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 2, 3, 0))  # (C, kh, kw flipped, O)
                if n.params["stride"][1] == 1:  # (the kernel's _conv_rows: each input's window, worked out here)
                    row[K_WIN] = sum(len(t) for t in windows)
                    windows.append(conv_windows(n.in_shape, n.out_shape, (kh, kw), n.params["stride"][0],
                                                n.params["padding"]))  # fmt: skip
                else:  # the kernel's general loop decodes each input's (y, x, c)
                    decoded.update(n.sources)
            else:
                wt = np.ascontiguousarray(w.T[in_perm])  # rows in the input's internal order
                perms[n.name] = np.arange(N, dtype=np.int64)
                row[K_GROUPS] = groups
                groups += 1
            row[K_WOFF] = woff
            weights.append(wt.reshape(-1))
            woff += _padded(wt.size)
            per_channel = n.fixed["bias"] if integer else n.params["bias"]
            b = np.asarray(per_channel)[perms[n.name] // (N // len(per_channel))]
            row[K_EXP] = n.fixed["weight_exp"] if integer else 0
            if not integer and _sole_lif_consumer(plan, n.name):
                folded[n.name], b = b, np.zeros_like(b)  # the LIF adds it: no event needed per step
            row[K_DENSE] = dense_node[n.name] = (not integer) and bool(np.any(b != 0))
        elif n.kind in ("sumpool", "avgpool"):
            b = np.zeros(N)
            row[K_DENSE] = dense_node[n.name] = any(dense_node[s] for s in n.sources)
        elif n.kind == "flatten":
            perms[n.name] = in_perm
            dense_node[n.name] = any(dense_node[s] for s in n.sources)
        if n.kind in ("conv", "affine", "sumpool", "avgpool"):  # every accumulating node has a bias region
            row[K_BOFF], bias_at[n.name], bias_of[n.name] = boff, boff, b
            biases.append(b)
            boff += _padded(N)
        if n.kind == "li":
            perms[n.name] = in_perm
            li_names.append(n.name)
            dense_node[n.name] = False
            syn = n.sources[0]
            if integer and "du" in n.fixed:  # a CubaLIF's current (no bias: the plan checked its synapse's)
                row[K_FORM], row[K_DV] = FORM_FIXED_CURRENT, n.fixed["du"] + 1
                constant = np.zeros(N)
            elif integer and n.fixed["current"]:  # an LI behind a current: its own bias
                row[K_FORM], row[K_DV] = FORM_FIXED_MEMBRANE, n.fixed["dv"]
                constant = _own_bias(n, in_perm, N)
                row[K_BOFF] = boff
                biases.append(constant)
                boff += _padded(N)
            elif integer:
                if syn not in bias_at or len(n.sources) != 1:
                    raise ModelError(f"{plan.source}: fixed-precision LI {n.name} must follow one synaptic layer")
                row[K_BOFF] = bias_at[syn]
                row[K_DV] = n.fixed["dv"]
                constant = bias_of[syn]
            else:
                form, _, rest = _rule(n)
                row[K_FORM] = form
                for j, key in enumerate(_slots(n.params, form)):
                    lif[j].append(np.asarray(n.params[key], dtype=np.float32).reshape(-1)[in_perm])
                lif[3].append(np.zeros(N, np.float32))  # (no threshold, no reset)
                lif[4].append(np.zeros(N, np.float32))
                row[K_POFF] = poff
                poff += _padded(N)
                # a constant input: NIR's leak, or (a dialect's form) a rest that is no fixed point or
                # not 0 (an LI's output is its membrane)
                constant = lif[2][-1].copy() if form == FORM_NIR else np.zeros(N, np.float32)
                if form != FORM_NIR:
                    r = np.zeros(N, np.float32) if rest is None else rest[in_perm]
                    rests.append((row[K_OFF], r))
                    constant = constant + ((r != 0) | ~_at_rest(n, rest)[in_perm])
                if syn in folded:
                    row[K_BOFF] = boff
                    biases.append(folded[syn])
                    boff += _padded(N)
                    constant = constant + folded[syn]
            if row[K_BOFF] < 0:
                row[K_BOFF] = boff
                biases.append(np.zeros(N))
                boff += _padded(N)
            restless = constant != 0  # a constant input changes the membrane at every step
            sticky_parts.append((row[K_OFF], restless))
            row[K_DENSE] = bool(np.mean(restless) >= DENSE_FRACTION)
        if n.kind == "lif":
            perms[n.name] = in_perm
            row[K_LIF] = len(lif_names)
            lif_names.append(n.name)
            dense_node[n.name] = False
            syn = n.sources[0]
            if integer and (n.fixed["current"] or len(n.sources) > 1):
                # behind a CubaLIF's current (listed: FORM_FIXED_MEMBRANE), or fed by several synapses (a
                # loop's among them): the plan's bias for the membrane, in a region of its own
                if n.fixed["current"]:
                    row[K_FORM] = FORM_FIXED_MEMBRANE
                row[K_VTH], row[K_DV] = n.fixed["vth"], n.fixed["dv"]
                constant = _own_bias(n, in_perm, N)
                row[K_BOFF] = boff
                biases.append(constant)
                boff += _padded(N)
                at_rest_spikes = np.zeros(N, dtype=bool)
            elif integer:
                if syn not in bias_at:
                    raise ModelError(f"{plan.source}: fixed-precision LIF {n.name} must follow a synaptic layer")
                row[K_BOFF] = bias_at[syn]
                row[K_VTH], row[K_DV] = n.fixed["vth"], n.fixed["dv"]
                constant = bias_of[syn]
                at_rest_spikes = np.full(N, n.fixed["vth"] < 0)
            else:
                form, spike, rest = _rule(n)
                row[K_FORM], row[K_SPIKE] = form, spike
                for j, key in enumerate((*_slots(n.params, form), "v_threshold", "v_reset")):
                    lif[j].append(np.asarray(n.params[key], dtype=np.float32).reshape(-1)[in_perm])
                if n.params.get("reset") == "subtract_next":  # (the kernel's mark for it: v_reset NaN)
                    lif[4][-1] = np.full_like(lif[4][-1], np.nan)
                row[K_POFF] = poff
                row[K_UNIFORM] = all(np.all(p[-1] == p[-1][0]) for p in lif)  # layer-wide: scalars suffice
                poff += _padded(N)
                constant = lif[2][-1].copy() if form == FORM_NIR else np.zeros(N, np.float32)
                at_rest_spikes = lif[3][-1] < 0
                if form != FORM_NIR or spike != SPIKE_ONE:  # listed only: rest, spikes at rest, no fixed point
                    r = np.zeros(N, np.float32) if rest is None else rest[in_perm]
                    rests.append((row[K_OFF], r))
                    at_rest_spikes = ~_at_rest(n, rest)[in_perm] | (r > lif[3][-1])
                    if spike != SPIKE_ONE:
                        at_rest_spikes |= r >= lif[3][-1]
                if syn in folded:
                    row[K_BOFF] = boff
                    biases.append(folded[syn])
                    boff += _padded(N)
                    constant = constant + folded[syn]
            if row[K_BOFF] < 0:  # a region of zeros: the dense update reads a bias for every neuron
                row[K_BOFF] = boff
                biases.append(np.zeros(N))
                boff += _padded(N)
            # neurons that change at every step: a constant input, or a threshold below 0 (they
            # spike at rest); they are always listed
            restless = (constant != 0) | at_rest_spikes
            sticky_parts.append((row[K_OFF], restless))
            # Dense when at least DENSE_FRACTION of the neurons have a constant input: they update
            # every step anyway, and one branch-free pass over all is cheaper than the lists
            # (a layer with a dialect's rule is updated in its list: _rule_lif)
            row[K_DENSE] = bool(np.mean(restless) >= DENSE_FRACTION) and row[K_FORM] == row[K_SPIKE] == 0
            # (a float synapse's bias is folded into this LIF by then: _dense_lif reads none)
            # fuse: the update reads the synapse's accumulators, no event list between: a dense layer
            # all of them; a listed one after a convolution by blocks, the channels of each output
            # pixel the convolution touched (an event reaches all of a pixel's channels at once)
            if (
                syn in bias_at
                and (row[K_DENSE] or (plan.node(syn).kind == "conv" and row[K_FORM] == row[K_SPIKE] == 0))
                and _sole_lif_consumer(plan, syn)
                and (integer or not np.any(bias_of[syn] != 0))
            ):
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
    vdt = value_dtype
    # fixed: 32-bit biases let the dense update run in 32-bit lanes (see _dense_lif)
    narrow = (
        integer and max((np.abs(b).max(initial=0) for b in biases), default=0) < 2**29 and (max(table[:, K_EXP]) <= 23)
    )
    vrest = aligned_zeros(total, np.int32 if integer else np.float32)
    for start, r in rests:
        vrest[start : start + len(r)] = r
    sticky = aligned_zeros(total, np.uint8)
    for start, mask in sticky_parts:
        sticky[start : start + len(mask)] = mask
    decode = aligned_zeros((total, 3), np.int32)
    for k, (name, shape) in enumerate([("input", plan.input_shape)] + [(n.name, n.out_shape) for n in nodes]):
        if len(shape) == 3 and name in decoded:
            c, h, w = shape
            i = np.arange(c * h * w)
            start = table[k, K_OFF]
            decode[start : start + len(i)] = np.stack([(i // c) // w, (i // c) % w, i % c], axis=1)
    return Compiled(
        decode=decode,
        windows=aligned(np.concatenate(windows)) if windows else np.zeros((1, 4), dtype=np.int32),
        pool_map=aligned(np.concatenate(pool_maps)) if pool_maps else np.zeros(1, dtype=np.int32),
        sticky=sticky,
        vrest=vrest,
        table=table,
        srcs=np.array(srcs, dtype=np.int64),
        outputs=outputs,
        weights=_joined(weights, np.result_type(*weights) if weights else np.float64),
        biases=_joined(biases, np.int32 if narrow else vdt),
        lif_params=tuple(_joined(p, np.float32, empty=1) for p in lif),
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
        fan_in_abs=fan_in_abs,
        grid_span=grid_span,
    )
