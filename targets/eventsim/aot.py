"""eventsim's kernels compiled ahead of time, so that a process that runs them never imports numba.

Numba compiles :mod:`targets.eventsim.kernels` at their first call and caches the machine code, but
even a process that only loads it from the cache pays about 1 s before its first call on a small
CPU (numba's import 0.4 s, its compiler context's first set-up at the first call 0.5-0.7 s,
measured): most of a streaming process's start-up. ``python -m runtime.warm`` (``make setup``)
therefore also builds an extension module with the two entry points the driver calls
(``_simulate``, ``_input_events``) in every combination of argument types its warm-up met, compiled
by numba's ahead-of-time compiler (:mod:`numba.pycc`) for this machine's CPU (its model and
feature flags, as the JIT uses), with the same compiler flags as the JIT (``nogil`` included: the
threaded batch parts run at once). A manifest beside it names the module, its versions (one per
argument type key, :func:`type_key`) and what it was built from: the kernels' sources, the CPU,
Python and numpy.

At run time :class:`Entry` takes the ahead-of-time version when the manifest matches this process
(the same sources, CPU, Python and numpy) and holds this call's argument types, else numba's (which
imports numba and loads its cache, or compiles, as before). The module's wrappers do not check
argument types (an array of another dtype or layout would be read as the compiled one), so the
key is exact: every property by which numba types an argument (dtype with byte order, number of
dimensions, layout, writeable, aligned; Python bools, ints and floats, NumPy scalars), and the
build checks that equal keys give equal numba types. The folder is numba's cache folder
(``NUMBA_CACHE_DIR``, else ``targets/eventsim/__pycache__``); a rebuilt module gets a new file name,
so a process never pairs a manifest with another build's module.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from core.fileio import write_json_atomic

HERE = Path(__file__).resolve().parent
SOURCES = (HERE / "kernels.py", HERE / "table.py", HERE.parents[1] / "core" / "fixed.py")  # what the code follows
ENTRIES = ("simulate", "input_events")  # kernels._simulate, kernels._input_events
MANIFEST = "eventsim_aot.json"
ENABLED = os.environ.get("SNN_EVENTSIM_AOT", "1") != "0"  # 0: always numba's JIT (A/B, debugging)
# the driver resolves a kernel once per kind of call and reuses it; CHECK (the tests) resolves every
# call again and fails where the types would have changed under the reused version
CHECK = False
_loaded: dict[tuple[str, tuple], Callable] | None = None
_why = ""  # why the module is not used, when it is not
_recording: dict[str, list[tuple]] | None = None
_lock = threading.Lock()


def folder() -> Path:
    """Where the module and its manifest live: numba's cache folder."""
    return Path(os.environ["NUMBA_CACHE_DIR"]) if os.environ.get("NUMBA_CACHE_DIR") else HERE / "__pycache__"


def type_key(a: Any) -> Any:
    """What numba's type of argument ``a`` depends on, computed without numba."""
    if isinstance(a, np.ndarray):
        f = a.flags
        layout = "C" if f.c_contiguous else "F" if f.f_contiguous else "A"
        return (a.dtype.str, a.ndim, layout, bool(f.writeable), bool(f.aligned))
    if isinstance(a, (bool, np.bool_)):
        return "bool"
    if isinstance(a, int):
        return "int64" if -(2**63) <= a < 2**63 else "int"
    if isinstance(a, float):
        return "float64"
    if isinstance(a, np.generic):
        return a.dtype.str
    return "?" + type(a).__qualname__  # (never exported: numba decides)


def _cpu() -> str:
    """The CPU the module is compiled for: model and feature flags (Linux), else what platform says."""
    try:
        info = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
        lines = [ln for ln in info.splitlines() if ln.split(":")[0].strip() in ("vendor_id", "model name", "flags")]
        text = "\n".join(lines)
    except OSError:
        text = ""
    text = text or f"{platform.machine()} {platform.processor()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint() -> dict[str, str]:
    """What a module must have been built from to be used here."""
    digest = hashlib.sha256()
    for path in SOURCES:
        digest.update(path.read_bytes())
    return {"sources": digest.hexdigest()[:16], "cpu": _cpu(), "python": sys.version.split()[0],
            "abi": sysconfig.get_config_var("EXT_SUFFIX") or "", "numpy": np.__version__}  # fmt: skip


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list) else x


def _load() -> dict[tuple[str, tuple], Callable]:
    """The module's versions by ``(entry, argument keys)``, or none (``_why`` says why); loaded once
    (under a lock: the threads of a batch may ask first at once)."""
    global _loaded, _why
    with _lock:
        if _loaded is None:
            _loaded, _why = _read(folder()) if ENABLED else ({}, "switched off (SNN_EVENTSIM_AOT=0)")
        return _loaded


def _read(where: Path) -> tuple[dict[tuple[str, tuple], Callable], str]:
    """The versions of the module in ``where`` if it was built for this process, and else why not."""
    path = where / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, f"not built ({path} missing: make setup, or python -m runtime.warm)"
    except (OSError, ValueError) as e:
        return {}, f"unreadable manifest {path}: {e}"
    here = fingerprint()
    changed = [k for k, v in here.items() if manifest.get("built_from", {}).get(k) != v]
    if changed:
        return {}, f"built for other {', '.join(changed)} (python -m runtime.warm builds it again)"
    try:
        so, name, versions = where / manifest["module"], manifest["name"], manifest["versions"]
    except (KeyError, TypeError) as e:
        return {}, f"unreadable manifest {path}: no {e}"
    try:
        spec = importlib.util.spec_from_file_location(name, so)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return {(entry, _as_tuple(key)): getattr(module, symbol) for entry, key, symbol in versions}, ""
    except (ImportError, OSError, AttributeError, TypeError, ValueError) as e:
        return {}, f"cannot load {so}: {e}"


def describe() -> str:
    """Which code runs the kernels in this process, for a report."""
    versions = _load()
    if versions:
        return f"compiled ahead of time ({len(versions)} versions, {folder() / MANIFEST})"
    return f"numba's JIT (the ahead-of-time module: {_why})"


def _jit(entry: str) -> Callable:
    from targets.eventsim import kernels

    return getattr(kernels, "_" + entry)


class Entry:
    """One of the driver's kernels: :meth:`resolve` gives the version for a call's arguments."""

    def __init__(self, name: str) -> None:
        assert name in ENTRIES
        self.name = name

    def resolve(self, args: tuple) -> Callable:
        if _recording is not None:
            _recording.setdefault(self.name, []).append(args)
        found = _load().get((self.name, tuple(type_key(a) for a in args)))
        return found if found is not None else _jit(self.name)


def resolved(memo: dict, kind: Any, entry: Entry, args: tuple) -> Callable:
    """``entry``'s version for ``args``, resolved once per ``kind`` of call (whatever fixes the
    argument types) and kept in ``memo``; with :data:`CHECK` every call is resolved again and must
    give the same version."""
    fn = memo.get(kind)
    if fn is None or CHECK:
        now = entry.resolve(args)
        if fn is not None and now is not fn:
            raise AssertionError(f"eventsim: the argument types of {entry.name} changed within one kind of call {kind}")
        fn = memo[kind] = now
    return fn


# ------------------------------------------------------------------------------ build (numba imported)
@contextmanager
def recording() -> Iterator[dict[str, list[tuple]]]:
    """Record the arguments of every resolution (with the module switched off: numba runs them)."""
    global _recording, _loaded, ENABLED
    was = ENABLED
    _recording, _loaded, ENABLED = {}, None, False
    try:
        yield _recording
    finally:
        _recording, _loaded, ENABLED = None, None, was


def versions_of(calls: dict[str, list[tuple]]) -> dict[str, dict[tuple, Any]]:
    """Per entry, numba's signature per argument key of the recorded ``calls`` (each compiled by
    then); raises where one key stands for two numba types (the key would be too coarse)."""
    from numba import typeof

    out: dict[str, dict[tuple, Any]] = {}
    for entry, seen in calls.items():
        dispatcher = _jit(entry)
        for args in seen:
            key = tuple(type_key(a) for a in args)
            types = tuple(typeof(a) for a in args)
            sig = dispatcher.overloads[types].signature
            if out.setdefault(entry, {}).setdefault(key, sig) != sig:
                raise RuntimeError(f"{entry}: key {key} stands for {out[entry][key]} and {sig}")
    return out


def fresh(calls: dict[str, list[tuple]]) -> bool:
    """Whether the module in :func:`folder` is usable here and holds every key of ``calls``."""
    have = _read(folder())[0]
    return bool(have) and all(
        (e, tuple(type_key(a) for a in args)) in have for e, seen in calls.items() for args in seen
    )


@contextmanager
def _numba_aot_as_jit() -> Iterator[None]:
    """numba's ahead-of-time compiler made to compile as its JIT does, for the build's length only:

    - every export gets its own compiler flags, the JIT's for these functions (``nogil``,
      ``nopython``, the error model): pycc shares one flags object between exports, and numba's
      inliner turns SSA off in it, so that a second export of the same function failed to type
      (measured with numba 0.68);
    - the code targets the CPU's feature flags as well as its model: pycc passes the model alone, and
      LLVM then assumes every feature of that model, which a virtual machine may not expose (AVX-512
      on this project's Zen 4 machines).
    """
    from numba.core import codegen
    from numba.core.compiler import Flags
    from numba.pycc import compiler as pycc_compiler

    jit = _jit("simulate")
    compile_extra = pycc_compiler.compile_extra
    features = codegen.AOTCPUCodegen._customize_tm_features

    def own_flags(typingctx, targetctx, func, args, return_type, flags, locals, library):
        own = Flags()
        jit.targetdescr.options.parse_as_flags(own, jit.targetoptions)
        own.no_compile, own.nrt = flags.no_compile, flags.nrt
        return compile_extra(typingctx, targetctx, func, args, return_type, own, locals=locals, library=library)

    pycc_compiler.compile_extra = own_flags
    codegen.AOTCPUCodegen._customize_tm_features = lambda self: self._get_host_cpu_features()
    try:
        yield
    finally:
        pycc_compiler.compile_extra = compile_extra
        codegen.AOTCPUCodegen._customize_tm_features = features


def build(calls: dict[str, list[tuple]], where: Path | None = None) -> dict[str, Any]:
    """Compile the module for the argument types of ``calls`` (from :func:`recording`) into
    ``where`` (:func:`folder`), then switch the manifest to it; returns the manifest."""
    import numba

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (pycc's pending-deprecation notice)
        from numba.pycc import CC

    where = where or folder()
    where.mkdir(parents=True, exist_ok=True)
    versions = versions_of(calls)
    built_from = fingerprint()
    tag = hashlib.sha256(json.dumps([built_from, sorted(map(str, versions.items()))]).encode()).hexdigest()[:12]
    name = f"eventsim_aot_{tag}"
    t0 = time.perf_counter()
    listed = []
    with tempfile.TemporaryDirectory(prefix=".aot-", dir=where) as tmp:
        cc = CC(name)
        cc.output_dir = tmp
        cc.target_cpu = "host"
        for entry, by_key in versions.items():
            for i, (key, sig) in enumerate(sorted(by_key.items(), key=str)):
                symbol = f"{entry}_{i}"
                cc.export(symbol, sig)(_jit(entry).py_func)
                listed.append([entry, key, symbol])
        with _numba_aot_as_jit(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cc.compile()
        (so,) = Path(tmp).glob(name + "*")
        os.replace(so, where / so.name)
    manifest = {"name": name, "module": so.name, "built_from": built_from, "numba": numba.__version__,
                "seconds": round(time.perf_counter() - t0, 1), "versions": listed}  # fmt: skip
    old = None
    if (where / MANIFEST).is_file():
        try:
            old = json.loads((where / MANIFEST).read_text()).get("module")
        except (OSError, ValueError):
            old = None
    write_json_atomic(where / MANIFEST, manifest)
    if old and old != so.name:  # (a process that loaded it keeps its mapping)
        (where / old).unlink(missing_ok=True)
    return manifest
