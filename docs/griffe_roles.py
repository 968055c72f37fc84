"""A griffe extension for the API reference: the code's docstrings are written in reStructuredText
(``:func:`name```, ``.. math::``), which mkdocstrings renders as Markdown.

- ``:mod:``/``:class:``/``:func:``/``:meth:``/``:data:``/``:attr:``/``:exc:`` roles become
  cross-references when they name a public object of this project (resolved the way Sphinx does:
  absolute, or relative to the docstring's own class and module). Anything else (a private helper,
  another library's object) becomes inline code; ``mkdocs build -v`` lists those at debug level.
  A reference that resolves but is not rendered fails ``mkdocs build --strict``.
- ``:math:`x``` and ``.. math::`` blocks become arithmatex math (``$x$``, ``$$ ... $$``).
"""

from __future__ import annotations

import logging
import re

from griffe import Alias, Extension, Module, Object

PACKAGES = {"core", "inputs", "train", "convert", "runtime", "targets"}
ROLE = re.compile(r":(?:py:)?(mod|class|func|meth|data|attr|exc|obj):`([^`]+)`")
MATH_ROLE = re.compile(r":math:`([^`]+)`")
log = logging.getLogger("mkdocs.plugins.griffe_roles")


def _find(scope: Object, parts: list[str]) -> Object | Alias | None:
    obj = scope
    for part in parts:
        if isinstance(obj, Alias):
            try:
                obj = obj.final_target
            except Exception:  # an alias to another library: not ours to link
                return None
        member = obj.members.get(part)
        if member is None:
            return None
        obj = member
    return obj


def _public_path(obj: Object | Alias) -> str | None:
    if isinstance(obj, Alias):
        try:
            obj = obj.final_target
        except Exception:
            return None
    path = obj.path
    parts = path.split(".")
    if parts[0] not in PACKAGES or any(p.startswith("_") and not p.startswith("__") for p in parts):
        return None
    return path


class RstRoles(Extension):
    def on_package(self, *, pkg: Module, loader, **kwargs) -> None:
        if pkg.name in PACKAGES:
            self._walk(pkg, loader)

    def _walk(self, obj: Object, loader) -> None:
        if obj.docstring is not None:
            obj.docstring.value = self._convert(obj.docstring.value, obj, loader)
        for member in obj.members.values():
            if not isinstance(member, Alias) and member.parent is obj:
                self._walk(member, loader)

    def _resolve(self, name: str, here: Object, loader) -> str | None:
        parts = name.lstrip("~.").split(".")
        if parts[0] in PACKAGES:
            if parts[0] not in loader.modules_collection:
                try:
                    loader.load(parts[0])
                except Exception:
                    return None
            found = _find(loader.modules_collection[parts[0]], parts[1:])
            return _public_path(found) if found is not None else None
        scope: Object | None = here
        while scope is not None:
            found = _find(scope, parts)
            if found is not None:
                return _public_path(found)
            scope = scope.parent
        return None

    def _convert(self, text: str, here: Object, loader) -> str:
        def role(match: re.Match) -> str:
            name = match.group(2)
            shown = name.split(".")[-1] if name.startswith("~") else name.lstrip(".")
            if match.group(1) in ("func", "meth"):
                shown += "()" if not shown.endswith(")") else ""
            path = self._resolve(name, here, loader)
            if path is None:
                log.debug("%s: %s left as code (not a public object of this project)", here.path, name)
                return f"`{shown}`"
            return f"[`{shown}`][{path}]"

        text = ROLE.sub(role, text)
        text = MATH_ROLE.sub(lambda m: f"${m.group(1)}$", text)
        return _math_blocks(text)


def _math_blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == ".. math::":
            indent = len(lines[i]) - len(lines[i].lstrip())
            body: list[str] = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                body.append(lines[i].strip())
                i += 1
            while body and not body[-1]:
                body.pop()
            out += [" " * indent + "$$", *(" " * indent + b for b in body if b), " " * indent + "$$", ""]
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)
