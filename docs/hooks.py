"""MkDocs hooks.

- The result plots live once, in ``bench/results/``, where the benchmarks keep them; they are copied
  into the site at build time under the same path, so the pages link them as
  ``bench/results/<bench>/<plot>.png`` and ``--strict`` checks every link.
- Every module of the six packages, subpackages included, must have its ``::: module`` block in ``docs/api/<package>.md``:
  a module missing from the API reference is a warning, so ``--strict`` fails.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
PLOTS = ROOT / "bench" / "results"
PACKAGES = ("core", "inputs", "train", "convert", "runtime", "targets")
log = logging.getLogger("mkdocs.hooks.api")


def on_files(files: Files, config, **kwargs) -> Files:
    for path in sorted(PLOTS.rglob("*.png")):
        uri = path.relative_to(ROOT).as_posix()
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_pre_build(config, **kwargs) -> None:
    for package in PACKAGES:
        page = Path(config["docs_dir"]) / "api" / f"{package}.md"
        text = page.read_text(encoding="utf-8") if page.exists() else ""
        listed = set(re.findall(r"^::: ([\w.]+)", text, flags=re.M))
        modules = {
            ".".join(p.relative_to(ROOT).with_suffix("").parts[: -1 if p.stem == "__init__" else None])
            for p in (ROOT / package).rglob("*.py")
        }  # every module and subpackage (inputs.formats, inputs.formats.readers, ...)
        for name in sorted(modules - listed):
            log.warning("API reference: %s has no '::: %s' block in docs/api/%s.md", name, name, package)
