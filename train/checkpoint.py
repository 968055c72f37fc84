"""Checkpoints as plain data: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a dict with a format tag, the architecture's registered name and arguments,
the state dict, every LIF and LI layer's parameters (SI units, NIR names), the dataset and encoder
description, the resolved config and the metrics. Nothing in it is code, so loading a file
from elsewhere can never run anything. Version 2 adds ``checksum``, a SHA-256 over everything else
in the file (every tensor's bytes included), checked on load: a flipped bit is an error, not a
quietly different network. Version 1 files (no checksum) still load.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import CheckpointError, ModelError, first_line
from core.fileio import atomic_path, torch_save_head
from train.models import build_model, model_spec, set_weight_quantisation
from train.neuron import LI, LIF

FORMAT = "snn-deploy-checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: before checksums
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


def _feed(h: Any, x: Any) -> None:
    """Hash ``x`` with its structure: type tags and lengths keep ``["ab"]`` apart from ``["a", "b"]``."""
    if isinstance(x, dict):
        h.update(b"d%d;" % len(x))
        for k, v in x.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(x, (list, tuple)):
        h.update(b"l%d;" % len(x))
        for v in x:
            _feed(h, v)
    elif isinstance(x, torch.Tensor):
        t = x.detach().cpu().contiguous()
        h.update(f"t{t.dtype}{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(x, bool):
        h.update(b"b1" if x else b"b0")
    elif isinstance(x, int):
        h.update(b"i%d;" % x)
    elif isinstance(x, float):
        h.update(b"f" + struct.pack("<d", x))
    elif isinstance(x, str):
        raw = x.encode("utf-8", "surrogatepass")
        h.update(b"s%d;" % len(raw) + raw)
    elif x is None:
        h.update(b"n")
    else:
        h.update(f"o{type(x).__name__}:{x!r};".encode())


def checksum(data: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint's contents, every entry but ``checksum`` itself."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in data.items() if k != "checksum"})
    return h.hexdigest()


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plain data and tensors) atomically, tagged with the format and version,
    and sealed with its checksum."""
    data = {"format": FORMAT, "version": VERSION, **payload}
    if data.get("kind") not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}")
    data["checksum"] = checksum(data)
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def _unloadable(path: Path, e: Exception) -> CheckpointError:
    """Why ``torch.load`` failed on ``path``, told from the file's first bytes (a text or event file
    reads as a pickle that "needs code") and the error."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        return CheckpointError(f"checkpoint {path} cannot be read: {err.strerror or err}")
    if not head:
        return CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    if not torch_save_head(head):
        return CheckpointError(f"{path} is not a PyTorch checkpoint: it starts with {head!r}, not a zip archive or a "
                               "pickle as torch.save writes")  # fmt: skip
    if isinstance(e, pickle.UnpicklingError):
        first = first_line(e, None) or type(e).__name__
        return CheckpointError(
            f"refusing to load {path}: it is not plain data (weights-only loading rejected it: {first}). "
            "snn-deploy checkpoints hold only tensors and plain values; a file that needs code to load "
            "is either from elsewhere or unsafe"
        )
    return CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {first_line(e, 200)})")


def load_checkpoint(path: str | Path, kind: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Load and validate a checkpoint; every failure is a :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - the zip and pickle layers raise many types for a damaged file
        raise _unloadable(path, e) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a snn-deploy checkpoint (no '{FORMAT}' format tag); "
            "checkpoints from other tools must be converted into this format first"
        )
    if data.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path} has checkpoint version {data.get('version')!r}; this snn-deploy reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    if data["version"] >= 2 and data.get("checksum") != checksum(data):
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its contents do not match the checksum stored in it "
            "(changed or damaged since it was written)"
        )
    for key, tp in (("kind", str), ("arch", str), ("arch_args", dict), ("state_dict", dict)):
        if key not in data:
            raise CheckpointError(f"checkpoint {path} lacks the '{key}' entry")
        if not isinstance(data[key], tp):
            raise CheckpointError(f"checkpoint {path}: '{key}' must be a {tp.__name__}, got {type(data[key]).__name__}")
    bad = [k for k, v in data["state_dict"].items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise CheckpointError(f"checkpoint {path}: state_dict entry {bad[0]!r} is not a named tensor")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and data["kind"] not in kinds:
        raise CheckpointError(f"{path} is a {data['kind']} checkpoint; expected {' or '.join(kinds)}")
    return data


def model_from_checkpoint(ckpt: dict[str, Any], source: str = "checkpoint") -> nn.Module:
    """Rebuild the recorded architecture and load its weights (strictly: every key must match).

    The architecture is first built without memory (PyTorch's meta device) and its tensor shapes
    compared with the weights in the file, so that arguments from a damaged or foreign file cannot
    make it allocate more than the file holds."""
    arch, args = ckpt["arch"], ckpt["arch_args"]
    try:
        model_spec(arch)
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")  # (zero-element tensors: reported below as a misfit)
            shapes = {k: tuple(v.shape) for k, v in build_model(arch, **args).state_dict().items()}
    except ModelError as e:
        raise CheckpointError(f"{source}: {e}") from None
    except Exception as e:  # noqa: BLE001 - the builders' own checks raise assorted types on absurd arguments
        raise CheckpointError(f"{source}: architecture {arch!r} cannot be built from arguments {args!r} "
                              f"({type(e).__name__}: {e})") from None  # fmt: skip
    state = ckpt["state_dict"]
    for key, shape in shapes.items():
        if key in state and tuple(state[key].shape) != shape:
            raise CheckpointError(f"{source}: weights do not fit architecture {arch!r} with arguments {args!r}: "
                                  f"{key} is {tuple(state[key].shape)} in the file, {shape} in the model")  # fmt: skip
    missing, unexpected = sorted(set(shapes) - set(state)), sorted(set(state) - set(shapes))
    if missing or unexpected:
        raise CheckpointError(f"{source}: weights do not fit architecture {arch!r}: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")  # fmt: skip
    model = build_model(arch, **args)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{source}: weights do not fit architecture {arch!r}: {e}") from None
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{source}: tensor '{name}' holds NaN or infinite values")
    for name, m in model.named_modules():  # (tau and dt come from the file's buffers: check them again)
        if isinstance(m, (LIF, LI)):
            try:
                _ = m.params  # (its constructor checks tau >= dt > 0)
            except ModelError as e:
                raise CheckpointError(f"{source}: layer {name}: {e}") from None
    # A student trained with quantisation-aware training runs as it was trained and evaluated: on the grid.
    qat = ckpt.get("weight_quantisation")
    if isinstance(qat, dict) and qat.get("bits"):
        try:
            set_weight_quantisation(model, int(qat["bits"]), bool(qat.get("per_channel", True)))
        except (ModelError, TypeError, ValueError) as e:
            raise CheckpointError(f"{source}: recorded weight quantisation {qat!r} cannot be applied: {e}") from None
    return model
