"""The project's structure rules, checked rather than hoped for."""

import ast
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# DESIGN.md: dependencies run one way.
FORBIDDEN = {
    "core": {"inputs", "train", "convert", "runtime", "targets"},
    "inputs": {"train", "convert", "runtime", "targets"},
    "train": {"convert", "runtime", "targets"},
    "convert": {"runtime"},
}


def imported_packages(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_run_one_way(package):
    for path in (ROOT / package).rglob("*.py"):
        bad = set(imported_packages(path)) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_torch_load_is_always_weights_only():
    for path in ROOT.rglob("*.py"):
        if any(part.startswith(".venv") for part in path.parts) or "tests" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            is_call = isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load"
            if is_call and getattr(node.func.value, "id", None) == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                assert "weights_only" in kw and getattr(kw["weights_only"], "value", None) is True, (
                    f"{path.relative_to(ROOT)}:{node.lineno} calls torch.load without weights_only=True"
                )


def test_ruff_is_clean():
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:]
