"""Checkpoints as plain data: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a dict with a format tag, the architecture's registered name and arguments,
the state dict, every LIF and LI layer's parameters (SI units, NIR names), the dataset and encoder
description, the resolved config and the metrics. Nothing in it is code, so loading a file
from elsewhere can never run anything.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import CheckpointError, ModelError
from core.fileio import atomic_path
from train.models import build_model, model_spec, set_weight_quantisation
from train.neuron import LI, LIF

FORMAT = "snn-deploy-checkpoint"
VERSION = 1
KINDS = ("student", "teacher", "resume")


def neuron_parameters(model: nn.Module) -> dict[str, dict[str, float | str]]:
    """``{layer name: parameters}`` of every neuron layer, in module order: a LIF's
    ``{tau, v_threshold, dt, v_reset, v_leak, beta}``, an LI readout's ``{tau, dt, v_leak, beta,
    kind: "li"}`` (no threshold: it never spikes)."""
    out: dict[str, dict[str, float | str]] = {}
    for name, m in model.named_modules():
        if isinstance(m, LIF):
            out[name] = {**m.params.to_dict(), "beta": m.params.beta}
        elif isinstance(m, LI):
            out[name] = {**m.params.to_dict(), "beta": m.params.beta, "kind": "li"}
    return out


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plain data and tensors) atomically, tagged with the format and version."""
    data = {"format": FORMAT, "version": VERSION, **payload}
    if data.get("kind") not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}")
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def load_checkpoint(path: str | Path, kind: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Load and validate a checkpoint; every failure is a :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"refusing to load {path}: it is not plain data (weights-only loading rejected it: {first}). "
            "snn-deploy checkpoints hold only tensors and plain values; a file that needs code to load "
            "is either from elsewhere or unsafe"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a snn-deploy checkpoint (no '{FORMAT}' format tag); "
            "checkpoints from other tools must be converted into this format first"
        )
    if data.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {data.get('version')!r}; this snn-deploy reads version {VERSION}"
        )
    for key in ("kind", "arch", "arch_args", "state_dict"):
        if key not in data:
            raise CheckpointError(f"checkpoint {path} lacks the '{key}' entry")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and data["kind"] not in kinds:
        raise CheckpointError(f"{path} is a {data['kind']} checkpoint; expected {' or '.join(kinds)}")
    return data


def model_from_checkpoint(ckpt: dict[str, Any], source: str = "checkpoint") -> nn.Module:
    """Rebuild the recorded architecture and load its weights (strictly: every key must match)."""
    try:
        model_spec(ckpt["arch"])
        model = build_model(ckpt["arch"], **ckpt["arch_args"])
    except ModelError as e:
        raise CheckpointError(f"{source}: {e}") from None
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{source}: weights do not fit architecture {ckpt['arch']!r}: {e}") from None
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{source}: tensor '{name}' holds NaN or infinite values")
    # A student trained with quantisation-aware training runs as it was trained and evaluated: on the grid.
    qat = ckpt.get("weight_quantisation")
    if isinstance(qat, dict) and qat.get("bits"):
        try:
            set_weight_quantisation(model, int(qat["bits"]), bool(qat.get("per_channel", True)))
        except (ModelError, TypeError, ValueError) as e:
            raise CheckpointError(f"{source}: recorded weight quantisation {qat!r} cannot be applied: {e}") from None
    return model
