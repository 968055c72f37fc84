"""Graphs other libraries wrote, with the spikes those libraries computed (``tests/data/foreign``,
made by ``make_fixtures.py`` in scratch environments): replayed in each producer's dialect, every
target must give the producer's own spikes, bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import ModelError
from runtime.latency import extra_steps, run_aligned
from targets import TARGETS, get_target, unavailable_reason
from targets import reference as ref
from targets.plan import NOT_REPRODUCED, load_plan
from tests.conftest import DATA

ROOT = DATA / "foreign"
MANIFEST = json.loads((ROOT / "manifest.json").read_text())["fixtures"]
MARKS = {"lava": pytest.mark.lava}


def dialect(entry: dict) -> str:
    """The dialect a fixture's library runs it in (snnTorch's reset mechanism is not in the file)."""
    lib = entry["library"]
    if lib == "snntorch" and (entry.get("library_config") or {}).get("reset_mechanism") == "zero":
        return "snntorch-zero"
    return lib


REPRODUCED = sorted(k for k, e in MANIFEST.items() if dialect(e) not in NOT_REPRODUCED)
PENDING = sorted(k for k, e in MANIFEST.items() if dialect(e) in NOT_REPRODUCED)


def _fixture(name: str):
    e = MANIFEST[name]
    data = np.load(ROOT / e["files"]["npz"])
    return e, load_plan(ROOT / e["files"]["nir"], dialect=dialect(e)), data


def _producer_rasters(e: dict, data) -> dict[str, np.ndarray]:
    """Per spiking node, spikes per (step, sample, neuron): 0/1, or counts (Rockpool, Sinabs)."""
    return {k: data[f"spikes/{k}"].astype(np.int64) for k in e["spiking_nodes"]}


def test_the_fixtures_cover_every_producer():
    assert {e["library"] for e in MANIFEST.values()} == {"snntorch", "norse", "spikingjelly", "rockpool", "sinabs"}
    assert len(REPRODUCED) == len(MANIFEST) == 30 and not PENDING


def test_norse_li_membrane_within_float32_rounding_of_the_sum():
    """Norse's LI output is its membrane: equal up to the last bits, because torch's Linear sums the
    weights in another order than the reference's float64 sum rounded once (the spikes are identical)."""
    e, plan, data = _fixture("norse_li")
    got = ref.run(plan, data["input"], record=True).traces["3"].reshape(data["mem/3"].shape)
    ulp = np.spacing(np.abs(data["mem/3"]).astype(np.float32))
    assert np.abs(got - data["mem/3"]).max() > 0  # not bit-identical: the sum order differs, as said
    assert (np.abs(got - data["mem/3"]) <= 4 * ulp).all()


@pytest.mark.parametrize("name", REPRODUCED)
def test_reference_gives_the_producers_spikes(name):
    e, plan, data = _fixture(name)
    assert plan.meta["dt"] == (e["dt"] or 1e-3)  # the exporter's dt (Sinabs has none: tau is in steps)
    got = ref.run(plan, data["input"], record=True)
    for k, want in _producer_rasters(e, data).items():
        assert want.any(), f"{k} never spikes: the fixture proves nothing"
        assert np.array_equal(got.rasters[k].reshape(want.shape).astype(np.int64), want), k


@pytest.mark.parametrize("target", [pytest.param(t, marks=MARKS.get(t, ())) for t in TARGETS if t != "reference"])
@pytest.mark.parametrize("name", REPRODUCED)
def test_every_target_gives_the_producers_spikes(name, target):
    e, plan, data = _fixture(name)
    info = get_target(target)
    if unavailable_reason(target):
        pytest.skip(f"{target} is unavailable: {unavailable_reason(target)}")
    x = data["input"]
    why = info.unsupported(plan)
    if why is None:
        pad = np.zeros((extra_steps(plan, info.latency), *x.shape[1:]), x.dtype)
        why = info.refusal(plan, np.concatenate([x, pad]))
    if why:  # declined by name, never run wrong: the direct call refuses too
        if target in ("eventsim", "lava") and plan.rules:
            with pytest.raises(ModelError, match="does not compute the .* rule"):
                run_aligned(info, plan, x)
        pytest.skip(f"{target} declines {name}: {why}")
    got = run_aligned(info, plan, x, record=True)
    want = _producer_rasters(e, data)
    if info.rasters:
        for k, w in want.items():
            assert np.array_equal(got.rasters[k].reshape(w.shape).astype(np.int64), w), k
    for k, w in want.items():
        assert np.array_equal(got.layer_counts[k], w.reshape(w.shape[0], w.shape[1], -1).sum(axis=(0, 2))), k


def test_several_spikes_per_step_are_counted():
    e, plan, data = _fixture("rockpool_multispike")
    got = ref.run(plan, data["input"], record=True).rasters["1_LIFNeuronTorch"]
    assert got.max() > 1 and np.array_equal(got.reshape(data["spikes/1_LIFNeuronTorch"].shape),
                                            data["spikes/1_LIFNeuronTorch"].astype(np.uint8))  # fmt: skip


def test_an_unknown_dialect_is_named():
    with pytest.raises(ModelError, match="unknown dialect 'brian2'; known: nir, snntorch"):
        load_plan(ROOT / MANIFEST["snntorch_linear"]["files"]["nir"], dialect="brian2")
