"""The project's structure rules, checked rather than hoped for."""

import ast
import json
import re
import subprocess
import sys
import tomllib

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


# ------------------------------------------------------------------------------ set-up
INSTALLED = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
)


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # (PEP 503: how pip compares names)


def _pins(path) -> dict[str, str]:
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    pins = dict(ln.split("==") for ln in lines if ln and not ln.startswith("#"))
    return {_key(k): v for k, v in pins.items()}


def _installed(python) -> dict[str, str]:
    done = subprocess.run([str(python), "-c", INSTALLED], capture_output=True, text=True, check=True)
    return {_key(k): v for k, v in json.loads(done.stdout).items()}


def _differences(pins: dict[str, str], installed: dict[str, str]) -> list[str]:
    return [
        f"{k} {installed[k]} installed, {v} in the constraints" for k, v in pins.items() if installed.get(k, v) != v
    ]


def test_setup_installs_the_tested_versions():
    """`make setup` installs within constraints/main.txt: the environment the tests run in has those
    versions, and every dependency the project declares is pinned there."""
    pins = _pins(ROOT / "constraints" / "main.txt")
    wrong = _differences(pins, _installed(sys.executable))
    assert not wrong, f"this environment is not the one make setup installs: {wrong}"
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = declared["dependencies"] + [
        d for k in ("dev", "interop", "docs") for d in declared["optional-dependencies"][k]
    ]
    unpinned = [n for n in names if _key(re.match(r"[A-Za-z0-9_.-]+", n)[0]) not in pins]
    assert not unpinned, f"declared in pyproject.toml but not in constraints/main.txt: {unpinned}"


def test_lava_setup_installs_the_tested_versions():
    python = ROOT / ".venv-lava" / "bin" / "python"
    if not python.exists():
        pytest.skip("no .venv-lava (make setup-lava needs Python 3.10; see .venv-lava/missing.txt)")
    pins = _pins(ROOT / "constraints" / "lava.txt")
    assert {"lava-nc", "lava-dl", "numpy"} <= set(pins)
    wrong = _differences(pins, _installed(python))
    assert not wrong, f".venv-lava is not the environment make setup-lava installs: {wrong}"
