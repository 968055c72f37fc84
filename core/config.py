"""Command configuration: one dataclass holds the defaults, a config file overrides them,
flags override that. Unknown keys and wrong types are errors that name the key.

Each field's help text lives in ``field(metadata={"help": ...})``; ``choices`` may be given there
too, ``min`` (the smallest value allowed) and ``positive`` (the value must be above 0) bound a
number, and ``positional: True`` makes a field a positional argument. Supported field types: bool,
int, float, str, and ``X | None`` of those. A float is always finite (``nan`` and ``inf`` are refused).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from core.errors import ConfigError
from core.fileio import read_text

C = TypeVar("C")


def _base_type(tp: Any) -> tuple[type, bool]:
    """(scalar type, optional?) of a field annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported config annotation {tp!r}")
        return args[0], True
    return tp, False


def _field_types(cls: type) -> dict[str, tuple[type, bool]]:
    hints = typing.get_type_hints(cls)
    return {f.name: _base_type(hints[f.name]) for f in dataclasses.fields(cls)}


def _coerce(cls_name: str, key: str, value: Any, tp: type, optional: bool, source: str) -> Any:
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: key '{key}' of {cls_name} must not be null")
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        raise ConfigError(
            f"{source}: key '{key}' must be {tp.__name__}{' or null' if optional else ''}, "
            f"got {type(value).__name__} {value!r}"
        )
    return float(value) if tp is float else value


def _check_values(cls: type, cfg: Any) -> None:
    """Choices and bounds, named as the flag the user typed (``--batch-size``)."""
    for f in dataclasses.fields(cls):
        value = getattr(cfg, f.name)
        if value is None or isinstance(value, bool):
            continue
        name = f.name if f.metadata.get("positional") else f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{name} = {value!r} is not one of {', '.join(map(str, choices))}")
        if not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
        low = f.metadata.get("min")
        if low is not None and value < low:
            raise ConfigError(f"{name} must be at least {low}, got {value!r}")
        high = f.metadata.get("max")
        if high is not None and value > high:
            raise ConfigError(f"{name} must be at most {high}, got {value!r}")
        if f.metadata.get("positive") and not value > 0:
            raise ConfigError(f"{name} must be above 0, got {value!r}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML config file (by its suffix) into a dict; a missing, unreadable or malformed
    file, another suffix and a key given twice are errors naming the file."""
    path = Path(path)
    if path.suffix not in (".json", ".toml"):
        raise ConfigError(f"config file {path} must be a .json or a .toml file (its suffix says which)")
    kind = "TOML" if path.suffix == ".toml" else "JSON"
    text = read_text(path, "config file", kind, ConfigError)
    try:
        data = tomllib.loads(text) if kind == "TOML" else loads_json(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, ValueError) as e:
        raise ConfigError(f"config file {path} is not valid {kind}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table of keys, got {type(data).__name__}")
    return data


def loads_json(text: str) -> Any:
    """``json.loads``, a key given twice in an object an error (``ValueError``, as for malformed JSON)."""
    return json.loads(text, object_pairs_hook=_unique_keys)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's keys as a dict, a key given twice an error (JSON would keep the last silently;
    TOML refuses it)."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"key {key!r} is given twice")
        data[key] = value
    return data


def from_dict(cls: type[C], data: dict[str, Any], base: C | None = None, source: str = "config") -> C:
    """Build ``cls`` from ``data`` over ``base`` (defaults if None); unknown keys are errors."""
    ftypes = _field_types(cls)
    unknown = sorted(set(data) - set(ftypes))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"known keys: {', '.join(ftypes)}"
        )
    values = dataclasses.asdict(base) if base is not None else {}
    json_text = json_fields(cls)
    for key, value in data.items():
        tp, optional = ftypes[key]
        if key in json_text and isinstance(value, (dict, list)):  # a config file's table for a flag's JSON text
            value = json.dumps(value)
        values[key] = _coerce(cls.__name__, key, value, tp, optional, source)
    cfg = cls(**values)
    _check_values(cls, cfg)
    return cfg


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _parse_optional(tp: type):
    def parse(text: str):
        if text.lower() in ("none", "null"):
            return None
        return _parse_bool(text) if tp is bool else tp(text)

    parse.__name__ = tp.__name__
    return parse


def help_text(doc: str) -> str:
    """A command's description for ``--help``: its docstring's first paragraph, on one line."""
    return " ".join(doc.strip().split("\n\n")[0].split())


def json_fields(cls: type) -> set[str]:
    """The fields of ``cls`` that hold JSON text (metadata ``json``): a config file may give a table or list."""
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get("json")}


class _Parser(argparse.ArgumentParser):
    """argparse's parser; arguments it does not know get ``hint`` after its message (a positional
    field's ``extra_hint``: say, what to do with a shell's expansion of a glob into many files)."""

    hint = ""

    def error(self, message: str):
        extra = message.partition(": ")[2].split() if message.startswith("unrecognized arguments") else []
        if self.hint and extra and not any(a.startswith("-") for a in extra):  # (only extra files, not a flag)
            message += f" ({self.hint})"
        super().error(message)


def build_parser(cls: type, prog: str, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one ``--flag`` per field (defaults shown) and ``--config FILE``;
    ``description`` is the command's docstring, whose first paragraph its help shows."""
    parser = _Parser(
        prog=prog,
        description=help_text(description),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", default=None, help="JSON or TOML file overriding the defaults; flags override it")
    defaults = cls()
    for f in dataclasses.fields(cls):
        tp, optional = _base_type(typing.get_type_hints(cls)[f.name])
        if f.metadata.get("positional"):
            parser.add_argument(f.name, type=tp, help=f.metadata.get("help", ""))
            parser.hint = f.metadata.get("extra_hint", "")
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "default": argparse.SUPPRESS,
            "help": f.metadata.get("help", "")
            + ("" if "(default" in f.metadata.get("help", "") else f" (default: {getattr(defaults, f.name)!r})"),
        }
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if tp is bool and not optional:
            kwargs["type"] = _parse_bool
            kwargs["nargs"] = "?"
            kwargs["const"] = True
            kwargs["metavar"] = "BOOL"
        else:
            kwargs["type"] = _parse_optional(tp) if optional else tp
        parser.add_argument(flag, **kwargs)
    return parser


def parse_config(cls: type[C], argv: list[str] | None, prog: str, description: str) -> C:
    """Defaults <- ``--config`` file <- flags. Raises ConfigError on unknown keys or wrong types."""
    parser = build_parser(cls, prog, description)
    ns = vars(parser.parse_args(argv))
    config_file = ns.pop("config")
    cfg = cls()
    if config_file is not None:
        cfg = from_dict(cls, load_config_file(config_file), base=cfg, source=str(config_file))
    return from_dict(cls, ns, base=cfg, source="command line")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
