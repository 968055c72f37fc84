"""The CPU a benchmark ran on, recorded beside its figures.

The machines these benchmarks run on are virtual and not always the same kind: the project's runs
so far were on an AMD EPYC of the Zen 2 family (AVX2, no AVX-512) and later on one of family 26
(Zen 5: AVX-512; the ceiling benchmark's synaptic adds 1.6x as fast). Figures from different CPUs are not
comparable, so every benchmark's results name the CPU, its vector instructions, its caches and the
CPU numba compiles for (the simulator's machine code is specific to it).
"""

from __future__ import annotations

import os
from pathlib import Path

VECTOR_FLAGS = ("avx512f", "avx2", "sse4_2", "asimd", "sve")  # the widest first
CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo(path: Path) -> dict[str, str]:
    """The first processor's fields of ``path`` (a ``/proc/cpuinfo``; empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _caches() -> dict[str, str]:
    """cpu0's cache sizes by level ("L1d", "L1i", "L2", "L3") as the kernel reports them."""
    sizes = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            kind, lvl, size = ((index / f).read_text().strip() for f in ("type", "level", "size"))
        except OSError:
            continue
        sizes[f"L{lvl}" + {"Data": "d", "Instruction": "i"}.get(kind, "")] = size
    return sizes


def describe(cpuinfo: Path = CPUINFO) -> dict:
    """``{cpu, family, model, cores, vector, caches, numba_cpu}`` of this machine (None where unknown)."""
    info, caches = _cpuinfo(cpuinfo), _caches()
    flags = set(info.get("flags", info.get("Features", "")).split())
    try:
        from llvmlite import binding as llvm

        numba_cpu = llvm.get_host_cpu_name()
    except (ImportError, RuntimeError):
        numba_cpu = None
    return {
        "cpu": info.get("model name") or info.get("CPU implementer"),
        "family": info.get("cpu family"),
        "model": info.get("model"),
        "cores": os.cpu_count(),
        "vector": next((f for f in VECTOR_FLAGS if f in flags), None),
        "caches": {lvl: caches.get(lvl) for lvl in ("L1d", "L2", "L3")},
        "numba_cpu": numba_cpu,
    }


def line(m: dict) -> str:
    """One line for a report of what :func:`describe` gave: ``AMD EPYC (family 26 model 2), 2 cores,
    avx512f, L1d 48K / L2 1024K / L3 32768K, numba compiles for znver5``."""
    caches = " / ".join(f"{k} {v}" for k, v in m["caches"].items() if v)
    return (f"{m['cpu'] or 'unknown CPU'} (family {m['family']} model {m['model']}), {m['cores']} cores, "
            f"{m['vector'] or 'no known vector extension'}, {caches or 'caches unknown'}, "
            f"numba compiles for {m['numba_cpu'] or 'an unknown CPU'}")  # fmt: skip
