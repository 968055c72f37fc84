"""Every benchmark names the CPU it ran on (figures from different CPUs are not comparable)."""

import os
import platform

import pytest

from bench import machine

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 49
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse4_2 avx avx2 fma

processor\t: 1
model name\t: another CPU
flags\t\t: fpu avx512f avx2
"""


def test_the_first_processor_is_described_with_its_widest_vector_extension(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO)
    m = machine.describe(info)
    assert (m["cpu"], m["family"], m["model"], m["vector"]) == ("AMD EPYC 7B12", "23", "49", "avx2")
    assert m["cores"] == os.cpu_count()
    line = machine.line(m)
    assert line.startswith("AMD EPYC 7B12 (family 23 model 49), ") and ", avx2, " in line


def test_a_machine_without_cpuinfo_is_described_as_unknown(tmp_path):
    m = machine.describe(tmp_path / "missing")
    assert m["cpu"] is None and m["vector"] is None
    assert machine.line(m).startswith("unknown CPU")


@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/cpuinfo and /sys: Linux only")
def test_this_machine_is_described():
    from llvmlite import binding as llvm

    m = machine.describe()
    assert m["cpu"] and m["cores"] == os.cpu_count()
    assert m["numba_cpu"] == llvm.get_host_cpu_name()  # the CPU numba compiles the simulator for
    if platform.machine() == "x86_64":
        assert m["vector"] in ("avx512f", "avx2", "sse4_2")
        assert m["caches"]["L2"] is not None
