"""Hostile and corrupt event files: one regression test per defect of the readers' hardening issue
(D1-D6 and absurd sensor sizes), a memory bound on multi-GiB sparse headers, and a fuzz run of every
case registered in ``bench.fuzz`` (every format ``inputs.formats.readers`` reads, and the model files: checkpoints,
graphs and ONNX files)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import fuzz
from core.errors import DataError, SnnDeployError
from inputs.events import MAX_HEADER_LINE, MAX_HEADER_LINES
from inputs.formats import aedat2, aedat3, arrays, prophesee
from inputs.formats.readers import open_events, read_events

ROOT = Path(__file__).resolve().parents[1]
EVENTDATA = ROOT.parent / "shared" / "eventdata"
DVS128 = fuzz.AEDAT2_DVS128


def prophesee_file(tmp_path: Path, encoding: str, name: str | None = None, n: int = 300) -> Path:
    """A valid EVT2/EVT3/DAT file written by expelliarmus (the name may end in anything)."""
    seed = fuzz.CASES[encoding].seeds(None, tmp_path)[0]
    path = tmp_path / (name or f"rec{'.dat' if encoding == 'dat' else '.raw'}")
    path.write_bytes(seed)
    return path


# --- D1: one header line without a length limit ----------------------------------------------------

_SPARSE_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    from inputs.formats import aedat2, prophesee
    from inputs.formats.readers import open_events

    def vm_size():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))

    cases = json.loads(sys.argv[1])
    readers = {"open_events": lambda p, fmt: open_events(p, fmt).read_all(),
               "aedat2": lambda p, fmt: aedat2.read_aedat2(p), "prophesee": lambda p, fmt: prophesee.read_prophesee(p)}
    for path, fmt, reader in cases:  # warm every code path once, then limit the address space
        try:
            readers[reader](path + ".small", fmt)
        except Exception:
            pass
    limit = vm_size() + (3 << 29)  # 1.5 GiB above what the process holds now
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = []
    for path, fmt, reader in cases:
        try:
            readers[reader](path, fmt)
            out.append(["no error", ""])
        except BaseException as e:
            out.append([type(e).__name__, str(e)])
    print(json.dumps({"results": out, "rss_growth_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0}))
    """
)


def test_d1_a_multi_gib_header_line_is_refused_in_bounded_memory(tmp_path):
    """A 3 GiB single '%' or '#' header line (a sparse file: tiny on disk): a DataError naming the
    offset, read under an address-space limit of 1.5 GiB above the baseline, little memory growth."""
    heads = {"evt2.raw": b"%", "dat.dat": b"%", "aedat2.aedat": b"#!AER-DAT2.0\r\n#", "anything.bin": b"%"}
    for name, head in heads.items():
        with open(tmp_path / name, "wb") as f:
            f.write(head)
            f.seek(3 << 30)
            f.write(b"\0")
        (tmp_path / (name + ".small")).write_bytes(head + b"x\n")
        assert os.stat(tmp_path / name).st_blocks * 512 < 1 << 20, "the test needs a sparse file"
    cases = [
        (str(tmp_path / "evt2.raw"), "evt2", "open_events"),
        (str(tmp_path / "dat.dat"), "dat", "open_events"),
        (str(tmp_path / "anything.bin"), None, "open_events"),
        (str(tmp_path / "aedat2.aedat"), None, "open_events"),
        (str(tmp_path / "aedat2.aedat"), None, "aedat2"),
        (str(tmp_path / "dat.dat"), None, "prophesee"),
    ]
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", _SPARSE_SCRIPT, json.dumps(cases)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for (path, fmt, reader), (kind, message) in zip(cases, report["results"]):
        assert kind == "DataError", (path, fmt, reader, kind, message)
        offset = 14 if "aedat2" in path else 0
        assert f"{path}: " in message and f"line at byte offset {offset} has no end of line within" in message, message
    assert report["rss_growth_kib"] < 64 << 10, report  # well under 64 MiB for reading a 3 GiB line
    assert time.monotonic() - t0 < 60


@pytest.mark.parametrize("fmt", ["aedat2", "aedat3", "evt2", "evt3", "dat"])
def test_d1_header_line_limit_names_the_offset(tmp_path, fmt):
    """Every text-header reader stops at MAX_HEADER_LINE bytes of one line, naming the line's offset."""
    first = {"aedat2": b"#!AER-DAT2.0\r\n", "aedat3": b"#!AER-DAT3.1\r\n", "evt2": b"% evt 2.0\n",
             "evt3": b"% evt 3.0\n", "dat": b"% Data file containing Event2D events.\n"}[fmt]  # fmt: skip
    marker = first[:1]
    suffix = {"aedat2": ".aedat", "aedat3": ".aedat", "dat": ".dat"}.get(fmt, ".raw")
    path = tmp_path / f"long{suffix}"
    path.write_bytes(first + marker + b"x" * (MAX_HEADER_LINE + 10) + b"\n" + b"\0" * 64)
    with pytest.raises(DataError, match=rf"long\.\w+: .*line at byte offset {len(first)} has no end of line within"):
        open_events(path, fmt).read_all()


# --- D2: millions of header lines --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["aedat2", "evt3"])
def test_d2_twenty_million_header_lines_are_refused_at_once(tmp_path, fmt):
    path = tmp_path / ("many.aedat" if fmt == "aedat2" else "many.raw")
    first, line = (DVS128, b"#\n") if fmt == "aedat2" else (b"% evt 3.0\n", b"%\n")
    path.write_bytes(first + line * 20_000_000)
    t0 = time.monotonic()
    with pytest.raises(DataError, match=rf"many\.\w+: .*header: longer than \d+ bytes or {MAX_HEADER_LINES} lines"):
        open_events(path).read_all()
    reader = aedat2.read_aedat2 if fmt == "aedat2" else prophesee.read_prophesee
    with pytest.raises(DataError, match="header: longer than"):
        reader(path)
    assert time.monotonic() - t0 < 5.0  # was 54 s before the first event


def test_d2_the_largest_real_jaer_header_still_reads(eventdata):
    """The bounds leave room: the real DAVIS header (2,104 lines, 175 KB) and a 3,487-line fixture read."""
    assert len(read_events(eventdata / "aedat2" / "davis240c_translating_boxes.aedat")) == 162_771
    ev, info = aedat2.read_aedat2(eventdata / "aedat2" / "header_only" / "mibblez_header_test_240.aedat")
    assert info.data_offset == 303_869 and len(ev) == 0


# --- D3: Prophesee files under any name ----------------------------------------------------------------

NAMES = ["rec.bin", "rec", "rec.RAW", "rec.dat", "rec.raw", "rec.DAT", "r\u00e9c.bin", "rec\udcff.raw"]


@pytest.mark.parametrize("encoding", ["evt2", "evt3", "dat"])
@pytest.mark.parametrize("name", NAMES)
def test_d3_prophesee_files_read_whatever_their_name(tmp_path, encoding, name):
    want = read_events(prophesee_file(tmp_path, encoding))
    assert len(want) == 300
    path = prophesee_file(tmp_path, encoding, name)
    s = open_events(path)
    assert s.format == encoding and np.array_equal(s.read_all(), want)
    assert np.array_equal(prophesee.read_prophesee(path, encoding)[0], want)
    link = tmp_path / f"link{'.raw' if encoding == 'dat' else '.dat'}"  # a symlink whose target has the wrong name
    link.symlink_to(path)
    assert np.array_equal(read_events(link, encoding), want)


def test_d3_the_real_recordings_read_under_a_bin_name(eventdata, tmp_path):
    for rel in ("evt2/gen3_sample.raw", "evt3/gen41_sample.raw", "dat/ncars_sample.dat"):
        want = read_events(eventdata / rel)
        link = tmp_path / (Path(rel).stem + ".bin")
        link.symlink_to(eventdata / rel)  # a read-only file owned by another user: copied, not hard-linked
        assert np.array_equal(read_events(link), want), rel


def test_d3_errors_name_the_users_file_not_a_temporary_one(tmp_path):
    path = prophesee_file(tmp_path, "dat", "corrupt.bin")
    data = bytearray(path.read_bytes())
    offset = prophesee.read_header(path, "dat").data_offset
    data[offset + 8 * 5 + 7] |= 0x80  # polarity nibble of event 5 -> 8 or 9
    path.write_bytes(bytes(data))
    for read in (lambda: read_events(path), lambda: prophesee.read_prophesee(path, "dat")):
        with pytest.raises(DataError) as e:
            read()
        assert str(e.value).startswith(f"{path}: ") and "snn-events" not in str(e.value)
    evt = prophesee_file(tmp_path, "evt3", "cut.bin")
    evt.write_bytes(evt.read_bytes()[:-1])
    with pytest.raises(DataError, match=rf"^{tmp_path}/cut\.bin: truncated evt3 file"):
        open_events(evt, strict=True)


# --- D4: .npy versions 1.0, 2.0, 3.0; no pickles -----------------------------------------------------------


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_d4_npy_versions_are_read(tmp_path, version):
    ev = fuzz.random_events(500, 64, 48)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "stored array in format 3.0"
        np.lib.format.write_array(buf, ev, version=version)
    (tmp_path / "v.npy").write_bytes(buf.getvalue())
    assert buf.getvalue()[6:8] == bytes(version)
    assert np.array_equal(read_events(tmp_path / "v.npy", chunk_events=77), ev)
    (tmp_path / "cut.npy").write_bytes(buf.getvalue()[:-5])  # truncation handling is the same in every version
    s = open_events(tmp_path / "cut.npy")
    assert len(s.read_all()) == 499 and s.counters["truncated_bytes"] == 5


def test_d4_npy_3_0_with_a_unicode_field_name(tmp_path):
    dt = np.dtype([("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1"), ("温度", "<f4")])
    rec = np.zeros(4, dt)
    rec["t"], rec["x"], rec["p"] = [1, 2, 3, 4], [5, 6, 7, 8], [1, 0, 1, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        np.save(tmp_path / "u.npy", rec)
    assert (tmp_path / "u.npy").read_bytes()[6:8] == b"\x03\x00"
    ev = read_events(tmp_path / "u.npy")
    assert list(ev["t"]) == [1, 2, 3, 4] and list(ev["x"]) == [5, 6, 7, 8] and list(ev["p"]) == [1, 0, 1, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        np.savez(tmp_path / "u.npz", events=rec)
    assert np.array_equal(read_events(tmp_path / "u.npz"), ev)


def test_d4_object_arrays_are_refused_not_unpickled(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([1, {"a": 2}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"obj\.npy: the array holds Python objects .*refused"):
        open_events(tmp_path / "obj.npy")
    dt = np.dtype([("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "O")])
    np.save(tmp_path / "field.npy", np.zeros(2, dt), allow_pickle=True)
    with pytest.raises(DataError, match="Python objects"):
        open_events(tmp_path / "field.npy", "npy")
    np.savez(tmp_path / "obj.npz", events=np.zeros(2, dt))
    with pytest.raises(DataError, match=r"obj\.npz\[events\]: the array holds Python objects"):
        open_events(tmp_path / "obj.npz")


# --- D5: DAT polarity ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [8, 2, 15])
def test_d5_dat_polarity_other_than_0_or_1_refuses_the_file(tmp_path, value):
    path = prophesee_file(tmp_path, "dat")
    offset = prophesee.read_header(path, "dat").data_offset
    words = np.frombuffer(path.read_bytes()[offset:], "<u4").copy()
    words[2 * 100 + 1] = (words[2 * 100 + 1] & 0x0FFFFFFF) | (value << 28)  # p is the top 4 bits of the second word
    path.write_bytes(path.read_bytes()[:offset] + words.tobytes())
    match = rf"rec\.dat: corrupt dat data: event 100 \(byte offset {offset + 800}\) has polarity {value}"
    with pytest.raises(DataError, match=match):
        read_events(path)
    with pytest.raises(DataError, match=match):
        list(open_events(path, chunk_events=16).chunks())  # the index counts across chunks
    with pytest.raises(DataError, match=match):
        prophesee.read_prophesee(path)


# --- D6: no Rust panic text on stderr --------------------------------------------------------------------------


def test_d6_a_corrupt_aedat4_packet_gives_one_line_and_a_quiet_stderr(eventdata, tmp_path, capfd):
    data = bytearray((eventdata / "aedat4" / "dvxplorer_sample.aedat4").read_bytes())
    data[282_947] ^= 0x80  # in the LZ4 frame of the packet at 282,931: the decoder's flatbuffer check panics
    path = tmp_path / "panic.aedat4"
    path.write_bytes(bytes(data))
    capfd.readouterr()
    with pytest.raises(DataError, match=r"panic\.aedat4: corrupt AEDAT 4 packet at byte offset 282931 \(PanicExc"):
        read_events(path)
    out, err = capfd.readouterr()
    assert err == "" and out == ""
    print("still here", file=sys.stderr)  # stderr works again after the held-back call
    assert capfd.readouterr().err == "still here\n"


# --- absurd sensor sizes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line,bad",
    [
        (b"% geometry 4294967296x4294967296\n", "width 4294967296"),
        (b"% geometry 640x0\n", "height 0"),
        (b"% geometry -640x480\n", "width -640"),
        (b"% geometry 640x480x\n", None),
        (b"% format EVT3;height=720;width=99999999\n", "width 99999999"),
        (b"% geometry big\n", "cannot read a sensor size"),
    ],
)
def test_absurd_prophesee_sensor_sizes_are_refused(tmp_path, line, bad):
    path = prophesee_file(tmp_path, "evt3")
    data = path.read_bytes()
    path.write_bytes(line + data)
    if bad is None:  # a size in range is fine
        assert open_events(path).sensor_size == (640, 480)
        return
    with pytest.raises(DataError, match=rf"rec\.raw: header line '{line.decode().strip()}' at byte offset 0.*{bad}"):
        open_events(path)


@pytest.mark.parametrize("size", [(4294967296, 4), (0, 4), (65537, 4), (346, -260)])
def test_absurd_aedat3_sensor_sizes_are_refused(tmp_path, size):
    data = aedat3.encode_aedat3(fuzz.random_events(10, 4, 4), source="Mystery", sensor_size=(1, 1))
    data = data.replace(b"sizeX 1 sizeY 1", f"sizeX {size[0]} sizeY {size[1]}".encode())
    (tmp_path / "a.aedat").write_bytes(data)
    with pytest.raises(
        DataError, match=r"a\.aedat: AEDAT 3 header line '#-Source 1: sizeX -?\d+ sizeY -?\d+': sensor (width|height)"
    ):
        open_events(tmp_path / "a.aedat")


@pytest.mark.parametrize("size", [(0, 5), (-1, 5), (5, 1 << 32)])
def test_absurd_array_sensor_sizes_are_refused(tmp_path, size):
    ev = fuzz.random_events(10, 4, 4)
    np.savez(tmp_path / "e.npz", events=ev, sensor_size=np.array(size, np.int64))
    with pytest.raises(
        DataError, match=r"e\.npz: member sensor_size: sensor (width|height) -?\d+ is not a sensor size"
    ):
        open_events(tmp_path / "e.npz")
    arrays.write_hdf5(tmp_path / "e.h5", ev, sensor_size=(4, 4))
    import h5py

    with h5py.File(tmp_path / "e.h5", "a") as f:
        f["events"].attrs["width"], f["events"].attrs["height"] = size
    with pytest.raises(DataError, match=r"e\.h5\[events\]: sensor size attributes: sensor"):
        open_events(tmp_path / "e.h5")


def test_absurd_aedat4_sensor_size_is_refused(eventdata, tmp_path):
    data = (eventdata / "aedat4" / "dvxplorer_sample.aedat4").read_bytes()
    assert data.count(b'"sizeX" type="int">320<') == 1
    (tmp_path / "z.aedat4").write_bytes(data.replace(b'"sizeX" type="int">320<', b'"sizeX" type="int">000<'))
    with pytest.raises(DataError, match=r"z\.aedat4: the IOHeader's description .*: sensor width 0 is not a sensor"):
        open_events(tmp_path / "z.aedat4")


# --- fuzz: every registered case, mutated under hypothesis ----------------------------------------------------

# READERS_FUZZ_EXAMPLES=500 for a deeper (random) search; the default is a quick, repeatable one
_DEEP = int(os.environ.get("READERS_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_DEEP or 60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=not _DEEP)
_pos = st.integers(0, 1 << 20)
_bytes = st.sampled_from(fuzz.INTERESTING_BYTES) | st.binary(min_size=1, max_size=16)
MUTATIONS = {  # the same mutation tuples as bench.fuzz.random_ops draws, for fuzz.apply_ops
    "flip": st.tuples(st.just("flip"), _pos, st.integers(0, 7)),
    "truncate": st.tuples(st.just("truncate"), _pos),
    "insert": st.tuples(st.just("insert"), _pos, _bytes),
    "delete": st.tuples(st.just("delete"), _pos, st.integers(1, 16)),
    "overwrite": st.tuples(st.just("overwrite"), _pos, _bytes),
    "header_number": st.tuples(st.just("header_number"), st.integers(0, 63), st.sampled_from(fuzz.INTERESTING_NUMBERS)),
    "header_line": st.tuples(st.just("header_line"), st.integers(0, 63), st.sampled_from(fuzz.HEADER_ACTIONS)),
}


def test_the_fuzz_registry_covers_every_format_and_mutation():
    from inputs.formats.readers import FORMATS

    assert set(FORMATS) <= set(fuzz.CASES)
    assert set(MUTATIONS) == set(fuzz.OPS)


@pytest.mark.parametrize("name", list(fuzz.CASES))
def test_fuzz_every_case_gives_sane_output_or_our_error(tmp_path, name):
    """Mutated valid files (bit flips, cuts, inserted/deleted bytes, header numbers and lines):
    a reader returns sane events (EVENT_DTYPE, polarity 0/1, inside the sensor, in time order), a
    model file loads and runs with sane counts, or a SnnDeployError is raised; anything else fails."""
    case = fuzz.CASES[name]
    seeds = case.seeds(EVENTDATA if EVENTDATA.is_dir() else None, tmp_path)
    if not seeds:
        pytest.skip(f"fuzz case {name} needs the real recordings at {EVENTDATA}")
    path = tmp_path / f"fuzz{case.suffix}"

    @FUZZ
    @given(which=st.integers(0, len(seeds) - 1), ops=st.lists(st.one_of(*MUTATIONS.values()), min_size=1, max_size=6))
    def check(which, ops):
        path.write_bytes(fuzz.apply_ops(seeds[which], ops, case.header))
        with contextlib.suppress(SnnDeployError):
            case.call(path)

    check()


def test_fuzz_bench_runs_and_writes_its_counts(tmp_path):
    """``python -m bench.fuzz`` for two seconds on two cases: counts per case, written atomically."""
    out = tmp_path / "fuzz"
    assert fuzz.main(["--seconds", "2", "--cases", "npy", "nmnist", "--timeout", "20", "--out", str(out)]) == 0
    results = json.loads((out / "fuzz.json").read_text())
    for name in ("npy", "nmnist"):
        r = results["cases"][name]
        assert r["tried"] > 0 and r["tried"] == r["ok"] + sum(r["errors"].values())
        assert r["foreign"] == r["hangs"] == r["crashes"] == r["insane"] == 0
    assert fuzz.main(["--cases", "nope"]) == 2
    assert fuzz.apply_ops(b"#a 1\n#b 22\nrest", [("header_number", 1, -5)], b"#") == b"#a 1\n#b -5\nrest"
    assert fuzz.apply_ops(b"abc", [("truncate", 2), ("insert", 0, b"x"), ("flip", 0, 0)]) == b"yab"
