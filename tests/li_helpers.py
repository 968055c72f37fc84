"""Shared by the LI-readout tests: a checkpoint with an LI readout, made from a trained spiking one."""

from __future__ import annotations

from pathlib import Path

from train.checkpoint import load_checkpoint, neuron_parameters, save_checkpoint
from train.models import build_model


def li_checkpoint(src: Path, dst: Path) -> Path:
    """``src``'s student with its readout LIF replaced by an LI (``readout="li"``), weights kept: a
    trained classifier whose logits are now the readout membrane summed over T."""
    ckpt = load_checkpoint(src, kind="student")
    args = {**ckpt["arch_args"], "readout": "li"}
    model = build_model(ckpt["arch"], **args)
    lif_only = {k for k in ckpt["state_dict"] if k not in model.state_dict()}  # the readout's v_threshold
    model.load_state_dict({k: v for k, v in ckpt["state_dict"].items() if k not in lif_only})
    payload = {k: v for k, v in ckpt.items() if k not in ("format", "version")}
    save_checkpoint(dst, payload | {"arch_args": args, "state_dict": model.state_dict(),
                                    "neurons": neuron_parameters(model)})  # fmt: skip
    return dst
