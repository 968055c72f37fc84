"""Model -> NIR graph in one call: trace, quantise (and for fixed precision, calibrate so that no
layer saturates), attach metadata. :mod:`convert.to_nir` is the command around it."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import nir
import numpy as np
from torch import nn

from convert.nirgraph import build_graph
from convert.quantise import (
    LI_V_LIMIT,
    FixedChoice,
    apply_fixed,
    choose_fixed,
    choose_fixed_li,
    prepare_fixed,
    quantise_float,
    value_bounds,
)
from convert.trace import trace
from core import fixed
from core.errors import ModelError
from targets import reference
from targets.plan import load_plan

PRECISIONS = ("float", "fixed")


@dataclass
class BuildReport:
    precision: str
    fixed_choices: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, dict[str, float]] = field(default_factory=dict)
    calibration_rounds: int = 0


def build_nir(model: nn.Module, input_shape: tuple[int, ...], **options: Any) -> tuple[nir.NIRGraph, BuildReport]:
    """Build the deployable NIR graph of ``model``: traced, then :func:`build_layers` with ``options``."""
    layers, outputs = trace(model, tuple(input_shape))
    return build_layers(layers, outputs, input_shape, **options)


def build_layers(
    layers: list,
    outputs: list[str],
    input_shape: tuple[int, ...],
    *,
    precision: str = "float",
    weight_bits: int | None = 8,
    per_channel: bool = True,
    steps: int = 8,
    dt: float = 1e-3,
    meta: dict[str, Any] | None = None,
    calibration: np.ndarray | None = None,
    max_rounds: int = 12,
    min_bias_exp: int = 0,
) -> tuple[nir.NIRGraph, BuildReport]:
    """The deployable NIR graph of traced ``layers`` (from a model, :func:`build_nir`, or from another
    tool's graph, :func:`convert.foreign.layers_from_plan`).

    ``calibration`` (spikes ``(T, B, *input_shape)``) is required for fixed precision: the integer
    network runs on it, and any layer whose synaptic input would overflow Lava's 16-bit messages
    or whose membrane would saturate at 24 bits gets a smaller exponent or threshold, round after
    round, until none does. An LI readout's exponent is chosen by a worst-case bound instead (it never
    saturates whatever the input; :func:`convert.quantise.choose_fixed_li`), which the calibration
    run then confirms. ``min_bias_exp`` (fixed precision) puts every bias on a grid of
    ``2**min_bias_exp`` integer units: 6 for a graph that is also written as lava-dl netx, which runs
    biases with ``bias_exp = 6``. The graph's metadata records it as ``min_bias_exp``.
    """
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    meta = {"precision": precision, "T": int(steps), "dt": float(dt), "reset": "zero",
            "weight_bits": weight_bits if precision == "float" else 8, "per_channel": per_channel,
            "input_shape": list(input_shape), **(meta or {})}  # fmt: skip
    report = BuildReport(precision)
    if precision == "float":
        if min_bias_exp:
            raise ModelError("min_bias_exp applies to fixed precision only (netx holds Loihi integers)")
        quantise_float(layers, weight_bits, per_channel)
        return build_graph(layers, outputs, tuple(input_shape), meta), report

    if calibration is None:
        raise ModelError("fixed precision needs calibration spikes to choose its scales")
    meta["min_bias_exp"] = int(min_bias_exp)
    original = copy.deepcopy(layers)
    pairs = prepare_fixed(original)
    bounds = value_bounds(original, min(float(np.min(calibration)), 0.0), float(np.max(calibration)))
    choices = {}
    for syns, lif in pairs:
        if lif.kind == "li":
            lo, hi = (sum(bounds[s][i] for s in syns[0].sources) for i in (0, 1))
            choices[lif.name] = choose_fixed_li(syns[0], lif, lo, hi, min_bias_exp)
        else:
            choices[lif.name] = choose_fixed(syns, lif)
    li_names = {lif.name for _, lif in pairs if lif.kind == "li"}
    for round_ in range(1, max_rounds + 1):
        trial = copy.deepcopy(original)
        by_name = {layer.name: layer for layer in trial}
        for syns, lif in pairs:
            apply_fixed([by_name[s.name] for s in syns], by_name[lif.name], choices[lif.name], min_bias_exp)
        graph = build_graph(trial, outputs, tuple(input_shape), meta)
        result = reference.run(load_plan(graph), calibration)
        stats = _layer_stats(result.stats)
        over = [name for name, st in stats.items()
                if st["max_abs_input"] > fixed.A_MAX or st["max_abs_v"] >= fixed.V_MAX
                or st.get("max_abs_current", 0) >= fixed.V_MAX]  # fmt: skip
        report.calibration_rounds = round_
        report.calibration = {
            name: {"max_abs_input": st["max_abs_input"], "input_headroom": fixed.A_MAX / max(st["max_abs_input"], 1),
                   "max_abs_v": st["max_abs_v"]} | (
                {"max_abs_current": st["max_abs_current"]} if "max_abs_current" in st else {}) | (
                {"spikes_per_sample": float(result.layer_counts[name].mean())} if name in result.layer_counts else
                {"v_headroom": LI_V_LIMIT / max(st["max_abs_v"], 1), "v_bound": choices[name].v_bound})
            for name, st in stats.items()
        }  # fmt: skip
        if set(over) & li_names:  # the bound of choose_fixed_li makes this impossible: a bug, never a silent pass
            raise ModelError(f"fixed precision: LI readout(s) {', '.join(sorted(set(over) & li_names))} saturate on the "
                             "calibration data although their bound says they cannot")  # fmt: skip
        if not over:
            report.fixed_choices = [asdict(choices[lif.name]) for _, lif in pairs]
            return graph, report
        for name in over:
            c = choices[name]
            syn, lif = next((syns, lif) for syns, lif in pairs if lif.name == name)
            if c.weight_exp > 0:
                choices[name] = choose_fixed(syn, lif, weight_exp=c.weight_exp - 1)
            else:
                choices[name] = choose_fixed(syn, lif, weight_exp=0, vth_cap=max(c.vth // 2, 1))
    raise ModelError(
        f"fixed precision: layers {', '.join(over)} still overflow after {max_rounds} rounds of smaller scales; "
        "their weights are too large for 8-bit mantissas at this threshold"
    )


def _layer_stats(stats: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """The reference's statistics per converted neuron layer: a CubaLIF's current (its ``.syn``
    node) reports the synaptic input and, as ``max_abs_current``, the current, which must stay
    below Lava's 24-bit wrap-around; the membrane's input is that current, not a message."""
    out = {name: dict(st) for name, st in stats.items() if not name.endswith(".syn")}
    for name, st in stats.items():
        if name.endswith(".syn"):
            owner = name[: -len(".syn")]
            out[owner] |= {"max_abs_input": st["max_abs_input"], "max_abs_current": st["max_abs_v"]}
    return out


def choice_table(choices: list[FixedChoice | dict]) -> str:
    rows = ["layer        synapse      exp   vth     scale        dv    du    bias_exp  max|m|"]
    for c in choices:
        c = c if isinstance(c, dict) else asdict(c)
        note = f"  LI readout: |v| <= {c['v_bound']} (never reaches vth << 6)" if c.get("neuron") == "li" else ""
        rows.append(f"{c['lif']:<12} {c['synapse']:<12} {c['weight_exp']:>3} {c['vth']:>6} {c['weight_scale']:>12.6g} "
                    f"{c['dv']:>5} {c.get('du', fixed.DU_FULL):>5} {c['bias_exp']:>9} {c['max_mantissa']:>7}{note}")  # fmt: skip
    return "\n".join(rows)
