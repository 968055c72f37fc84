"""Fuzz every file reader and every model file for a time budget: mutate small valid files (bit
flips, cuts, inserted, deleted and overwritten bytes, header numbers and lines) and count what each
reader does with them. Model files: checkpoints (``.pt``, loaded and rebuilt), graphs (``.nir``,
loaded and, when small, run by the reference) and step ONNX files (run by ONNX Runtime).

    python -m bench.fuzz --seconds 300 --out runs/fuzz
    python -m bench.fuzz --seconds 60 --cases aedat4 evt3

Allowed outcomes: the project's own error (a :class:`~core.errors.SnnDeployError`, counted by class)
or success with sane output (:data:`~inputs.events.EVENT_DTYPE`, polarity 0/1, coordinates inside
the sensor when its size is known, time order). Anything else is a finding: a foreign exception
(traceback saved), insane output, a hang (an input that takes longer than ``--timeout`` seconds) or
a crash (the worker process dies). Inputs run in a worker process that is replaced after a hang or
a crash; the first few failing inputs of each kind are saved beside ``fuzz.json`` to rerun them.

The cases form a registry (:data:`CASES`, :func:`register`): each names how to make valid seed
inputs, which header marker its mutations may edit, and what to call. ``tests/test_hardening_readers.py``
runs every registered case under hypothesis for a few seconds, so a new case (a model file format,
say) is fuzzed in CI the day it is registered.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import os
import random
import re
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import at_least
from core.errors import SnnDeployError
from core.fileio import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
EVENTDATA = ROOT.parent / "shared" / "eventdata"
SAVED_PER_KIND = 5  # failing inputs (and tracebacks) kept per case and kind of failure


class InsaneOutput(AssertionError):
    """A reader returned without an error but its output breaks the contract."""


@dataclass(frozen=True)
class FuzzCase:
    """One thing to fuzz.

    ``seeds(eventdata, workdir)`` returns valid inputs (bytes) to mutate; ``eventdata`` is the folder of
    real recordings or None when absent (a case may then return fewer seeds, or none: it is skipped).
    ``call(path)`` reads the file and returns a small JSON-able summary; it raises the project's own
    errors on bad input and :class:`InsaneOutput` when its output breaks the contract.
    ``header`` is the byte that starts the format's text header lines (``b"#"``, ``b"%"``), or ``b""``.
    """

    name: str
    suffix: str  # file name suffix of the inputs
    seeds: Callable[[Path | None, Path], list[bytes]]
    call: Callable[[Path], dict[str, Any]]
    header: bytes = b""


CASES: dict[str, FuzzCase] = {}


def register(case: FuzzCase) -> FuzzCase:
    if case.name in CASES:
        raise ValueError(f"fuzz case {case.name!r} is registered twice")
    CASES[case.name] = case
    return case


# --- mutations: tuples so that hypothesis and random.Random can draw the same ones ---------------

INTERESTING_BYTES = (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00",
                     b"\x00\x00\x01\x00", b"%", b"#", b"\n", b"\r\n", b"PK\x03\x04")  # fmt: skip
INTERESTING_NUMBERS = (0, -1, 1, 65535, 65536, 65537, 2**31, 2**32, 2**63, 10**30)
HEADER_ACTIONS = ("drop", "dup", "long", "many", "unterminated")
OPS = ("flip", "truncate", "insert", "delete", "overwrite", "header_number", "header_line")


def _header_span(data: bytes, marker: bytes) -> int:
    """Bytes of leading ``marker`` text lines (the first 256 bytes for formats without text lines)."""
    if not marker:
        return min(len(data), 256)
    end = 0
    while data.startswith(marker, end):
        nl = data.find(b"\n", end)
        if nl < 0:
            return len(data)
        end = nl + 1
    return end


def apply_ops(data: bytes, ops: Sequence[tuple], marker: bytes = b"") -> bytes:
    """``data`` with each mutation applied in turn; positions and indices wrap around its length."""
    b = bytearray(data)
    for op in ops:
        kind = op[0]
        if kind == "flip":
            if b:
                b[op[1] % len(b)] ^= 1 << (op[2] % 8)
        elif kind == "truncate":
            del b[op[1] % (len(b) + 1) :]
        elif kind == "insert":
            at = op[1] % (len(b) + 1)
            b[at:at] = op[2]
        elif kind == "delete":
            at = op[1] % (len(b) + 1)
            del b[at : at + op[2]]
        elif kind == "overwrite":
            at = op[1] % (len(b) + 1)
            b[at : at + len(op[2])] = op[2]
        elif kind == "header_number":
            span = _header_span(bytes(b), marker)
            nums = list(re.finditer(rb"-?\d+", bytes(b[:span])))
            if nums:
                m = nums[op[1] % len(nums)]
                b[m.start() : m.end()] = str(op[2]).encode()
        elif kind == "header_line":
            if not marker:
                continue
            span = _header_span(bytes(b), marker)
            starts = [m.start() for m in re.finditer(rb"(?m)^", bytes(b[:span])) if m.start() < span]
            if not starts:
                continue
            at = starts[op[1] % len(starts)]
            nl = b.find(b"\n", at)
            end = span if nl < 0 else nl + 1
            line, action = bytes(b[at:end]), op[2]
            if action == "drop":
                del b[at:end]
            elif action == "dup":
                b[at:at] = line
            elif action == "long":  # a line longer than any header line limit
                b[at:at] = marker + b"x" * 70_000 + b"\n"
            elif action == "many":  # more header lines than any limit
                b[at:at] = (marker + b"\n") * 70_000
            elif action == "unterminated":
                b[at:] = marker + b" no end of line"
        else:
            raise ValueError(f"unknown mutation {op!r}; known: {', '.join(OPS)}")
    return bytes(b)


def random_ops(rng: random.Random, size: int) -> list[tuple]:
    """A few mutations drawn at random (mostly small ones: a valid file with a small defect)."""
    ops: list[tuple] = []
    for _ in range(rng.choice((1, 1, 1, 2, 3, 5, 10))):
        kind = rng.choices(OPS, weights=(8, 2, 2, 2, 3, 2, 1))[0]
        pos = rng.randrange(max(size, 1))
        if kind == "flip":
            ops.append((kind, pos, rng.randrange(8)))
        elif kind == "truncate":
            ops.append((kind, pos))
        elif kind in ("insert", "overwrite"):
            value = rng.choice(INTERESTING_BYTES) if rng.random() < 0.5 else rng.randbytes(rng.randrange(1, 17))
            ops.append((kind, pos, value))
        elif kind == "delete":
            ops.append((kind, pos, rng.randrange(1, 17)))
        elif kind == "header_number":
            ops.append((kind, rng.randrange(64), rng.choice(INTERESTING_NUMBERS)))
        else:
            ops.append((kind, rng.randrange(64), rng.choice(HEADER_ACTIONS)))
    return ops


# --- what a reader may return --------------------------------------------------------------------


def check_events(chunk: np.ndarray, sensor: tuple[int, int] | None, t_last: int | None, where: str) -> int | None:
    """Raise :class:`InsaneOutput` unless ``chunk`` is sane; return its last time (for the next chunk)."""
    from inputs.events import EVENT_DTYPE

    if not isinstance(chunk, np.ndarray) or chunk.dtype != EVENT_DTYPE or chunk.ndim != 1:
        raise InsaneOutput(f"{where}: a chunk of type {type(chunk).__name__}, dtype {getattr(chunk, 'dtype', None)}")
    if not len(chunk):
        return t_last
    p = chunk["p"]
    if not np.all((p == 0) | (p == 1)):
        raise InsaneOutput(f"{where}: polarity values {sorted(set(np.unique(p).tolist()))}")
    if sensor is not None and (chunk["x"].max() >= sensor[0] or chunk["y"].max() >= sensor[1]):
        raise InsaneOutput(
            f"{where}: event at x {chunk['x'].max()} / y {chunk['y'].max()} outside the sensor {sensor[0]}x{sensor[1]}"
        )
    t = chunk["t"]
    if np.any(t[1:] < t[:-1]) or (t_last is not None and t[0] < t_last):
        raise InsaneOutput(f"{where}: times go backwards")
    return int(t[-1])


def read_checked(path: Path, fmt: str | None) -> dict[str, Any]:
    """:func:`inputs.formats.readers.open_events` on ``path``, every chunk checked by :func:`check_events`."""
    from inputs.formats.readers import open_events

    s = open_events(path, fmt, chunk_events=4096)
    if s.sensor_size is not None and not all(1 <= v <= 1 << 16 for v in s.sensor_size):
        raise InsaneOutput(f"{path}: sensor size {s.sensor_size}")
    n, t_last = 0, None
    for chunk in s.chunks():
        t_last = check_events(chunk, s.sensor_size, t_last, str(path))
        n += len(chunk)
    return {"events": n, "sensor_size": s.sensor_size}


# --- seeds -----------------------------------------------------------------------------------------


def random_events(n: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    from inputs.events import EVENT_DTYPE

    rng = np.random.default_rng(seed)
    ev = np.empty(n, EVENT_DTYPE)
    ev["t"] = np.sort(rng.integers(0, 20 * n + 1, n))
    ev["x"], ev["y"], ev["p"] = rng.integers(0, width, n), rng.integers(0, height, n), rng.integers(0, 2, n)
    return ev


def _real(eventdata: Path | None, rel: str) -> Path | None:
    return eventdata / rel if eventdata is not None and (eventdata / rel).is_file() else None


def _nmnist_seeds(eventdata: Path | None, work: Path) -> list[bytes]:
    from inputs.formats.nmnist import encode_nmnist

    out = [encode_nmnist(random_events(200, 34, 34))]
    if real := _real(eventdata, "nmnist/single_sample.bin"):
        out.append(real.read_bytes()[:1500])
    return out


AEDAT2_DVS128 = b"#!AER-DAT2.0\r\n# This is a raw AE data file\r\n# AEChip: ch.unizh.ini.jaer.chip.retina.DVS128\r\n"
AEDAT2_DAVIS = b"#!AER-DAT2.0\r\n# AEChip: eu.seebetter.ini.chips.davis.DAVIS240C\r\n#End Of ASCII Header\r\n"


def aedat2_bytes(events: np.ndarray, davis: bool = False) -> bytes:
    """A jAER AEDAT 2.0 file of ``events`` (DVS128 or DAVIS240 address layout; y counted from the bottom)."""
    from inputs.formats.aedat2 import RECORD, SENSORS

    x, y, p = (events[k].astype(np.uint32) for k in "xyp")
    if davis:
        h = SENSORS["DAVIS240"][1]
        address = (x << 12) | ((h - 1 - y) << 22) | (p << 11)
    else:
        address = ((127 - x) << 1) | ((127 - y) << 8) | p
    rec = np.empty(len(events), RECORD)
    rec["address"], rec["t"] = address, events["t"]
    return (AEDAT2_DAVIS if davis else AEDAT2_DVS128) + rec.tobytes()


def _aedat2_seeds(eventdata: Path | None, work: Path) -> list[bytes]:
    out = [aedat2_bytes(random_events(200, 128, 128)), aedat2_bytes(random_events(200, 240, 180, 1), davis=True)]
    if real := _real(eventdata, "aedat2/dvs128_walking.aedat"):
        out.append(real.read_bytes()[: 4612 + 8 * 300])  # the whole header and 300 records
    return out


def _aedat3_seeds(eventdata: Path | None, work: Path) -> list[bytes]:
    from inputs.formats.aedat3 import encode_aedat3

    return [
        encode_aedat3(random_events(300, 128, 128), packet_events=100),
        encode_aedat3(random_events(200, 50, 40, 1), source="Mystery", sensor_size=(50, 40), packet_events=64),
    ]


def _aedat4_seeds(eventdata: Path | None, work: Path) -> list[bytes]:
    """The real DVXplorer file cut after its first packets (no writer exists for AEDAT 4)."""
    import struct

    real = _real(eventdata, "aedat4/dvxplorer_sample.aedat4")
    if real is None:
        return []
    data = real.read_bytes()
    pos = 14 + 4 + struct.unpack_from("<I", data, 14)[0]
    for _ in range(6):
        pos += 8 + struct.unpack_from("<iI", data, pos)[1]
    return [data[:pos]]


def _prophesee_seeds(encoding: str) -> Callable[[Path | None, Path], list[bytes]]:
    real_files = {"evt2": ("evt2/gen3_sample.raw", 4000), "evt3": ("evt3/gen41_sample.raw", 3000),
                  "dat": ("dat/ncars_sample.dat", 2000)}  # fmt: skip

    def seeds(eventdata: Path | None, work: Path) -> list[bytes]:
        from expelliarmus import Wizard

        w, h = (640, 480) if encoding != "evt3" else (1280, 720)
        ev = random_events(300, w, h, 2)
        arr = np.zeros(len(ev), [("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "u1")])
        for k in "txyp":
            arr[k] = ev[k]
        path = work / f"seed_{encoding}{'.dat' if encoding == 'dat' else '.raw'}"
        Wizard(encoding=encoding).save(path, arr)
        data = path.read_bytes()
        out = [b"% geometry 640x480\n" + data if encoding == "dat" else data]
        rel, cut = real_files[encoding]
        if real := _real(eventdata, rel):
            out.append(real.read_bytes()[:cut])
        return out

    return seeds


def _array_seeds(fmt: str) -> Callable[[Path | None, Path], list[bytes]]:
    def seeds(eventdata: Path | None, work: Path) -> list[bytes]:
        from inputs.formats import arrays

        ev = random_events(300, 128, 128, 3)
        path = work / f"seed.{fmt}"
        if fmt == "npy":
            arrays.write_npy(path, ev)
        elif fmt == "npz":
            arrays.write_npz(path, ev, compressed=True, sensor_size=(128, 128))
            data = path.read_bytes()
            arrays.write_npz(path, ev, columns=True, sensor_size=(128, 128))
            return [data, path.read_bytes()]
        else:
            arrays.write_hdf5(path, ev, sensor_size=(128, 128))
        return [path.read_bytes()]

    return seeds


def _register_readers() -> None:
    from inputs.formats.readers import FORMATS

    seeds = {"nmnist": _nmnist_seeds, "aedat2": _aedat2_seeds, "aedat3": _aedat3_seeds, "aedat4": _aedat4_seeds,
             "evt2": _prophesee_seeds("evt2"), "evt3": _prophesee_seeds("evt3"), "dat": _prophesee_seeds("dat"),
             "npy": _array_seeds("npy"), "npz": _array_seeds("npz"), "hdf5": _array_seeds("hdf5")}  # fmt: skip
    header = {"aedat2": b"#", "aedat3": b"#", "evt2": b"%", "evt3": b"%", "dat": b"%"}
    missing = set(FORMATS) - set(seeds)
    if missing:  # a format readers.py reads but nobody fuzzes
        raise ValueError(f"bench.fuzz has no seeds for the event formats {sorted(missing)}")
    for fmt, spec in FORMATS.items():
        register(
            FuzzCase(fmt, spec.extensions[0], seeds[fmt], lambda p, fmt=fmt: read_checked(p, fmt), header.get(fmt, b""))
        )
    # the same files, format detected from their bytes (as a user calls it), under a neutral name
    register(FuzzCase("detect", ".bin", _detect_seeds, lambda p: read_checked(p, None)))


def _detect_seeds(eventdata: Path | None, work: Path) -> list[bytes]:
    out = []
    for fmt in ("aedat2", "aedat3", "evt2", "evt3", "dat", "npy"):
        out += CASES[fmt].seeds(eventdata, work)[:1]
    return out


_register_readers()


# --- model files: checkpoints, graphs, ONNX files ----------------------------------------------------

_MODEL_SEEDS: dict[str, list[bytes]] = {}
RUN_ELEMENTS = 1 << 20  # a mutated graph is run only when its nodes hold at most this many values per sample


def _model_seeds(work: Path) -> dict[str, list[bytes]]:
    """A small digits CSNN (random weights) as files: checkpoints (sealed, and version 1 without a
    checksum, so that mutations reach the structure checks), float and fixed graphs, a step ONNX file."""
    if _MODEL_SEEDS:
        return _MODEL_SEEDS
    import torch

    from convert.build import build_nir
    from convert.nirgraph import write_graph
    from convert.to_onnx import export_step_onnx
    from targets.plan import load_plan
    from train.checkpoint import neuron_parameters, save_checkpoint
    from train.models import build_model

    torch.manual_seed(0)
    args = {"in_channels": 1, "num_classes": 10, "input_size": 8, "channels": (4, 8)}
    model = build_model("digits_csnn", **args).eval()
    payload = {"kind": "student", "arch": "digits_csnn", "arch_args": args, "state_dict": model.state_dict(),
               "neurons": neuron_parameters(model), "dataset": {"name": "digits", "steps": 4}}  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    save_checkpoint(work / "seed.pt", payload)
    torch.save({"format": "snn-deploy-checkpoint", "version": 1, **payload}, work / "seed-v1.pt")
    x = (np.random.default_rng(0).random((4, 16, 1, 8, 8)) < 0.4).astype(np.float32)
    graphs = []
    for precision in ("float", "fixed"):
        graph, _ = build_nir(model, (1, 8, 8), precision=precision, steps=4, calibration=x)
        write_graph(work / f"seed-{precision}.nir", graph)
        graphs.append((work / f"seed-{precision}.nir").read_bytes())
    export_step_onnx(load_plan(work / "seed-float.nir"), work / "seed.step.onnx")
    _MODEL_SEEDS.update(
        checkpoint=[(work / "seed.pt").read_bytes(), (work / "seed-v1.pt").read_bytes()],
        graph=graphs,
        onnx=[(work / "seed.step.onnx").read_bytes()],
        plan_source=[graphs[0]],
    )
    return _MODEL_SEEDS


def _checked_checkpoint(path: Path) -> dict[str, Any]:
    from train.checkpoint import load_checkpoint, model_from_checkpoint

    model = model_from_checkpoint(load_checkpoint(path), source=str(path))
    return {"parameters": sum(p.numel() for p in model.parameters())}


def _checked_graph(path: Path) -> dict[str, Any]:
    """Load the graph; run a small one on one sample (spike counts must be whole and non-negative)."""
    from targets import reference
    from targets.plan import load_plan

    plan = load_plan(path)
    size = sum(int(np.prod(n.out_shape)) for n in plan.nodes)
    if size > RUN_ELEMENTS:
        return {"nodes": len(plan.nodes), "run": False}
    x = (np.random.default_rng(0).random((plan.steps or 2, 1, *plan.input_shape)) < 0.3).astype(np.float32)
    res = reference.run(plan, x)
    for name, c in res.layer_counts.items():
        if not (np.all(c >= 0) and np.array_equal(c, np.rint(c))):
            raise InsaneOutput(f"{path}: layer {name} spike counts {c}")
    return {"nodes": len(plan.nodes), "run": True}


@functools.lru_cache(maxsize=1)
def _seed_plan(path: str):
    """The clean seed graph's plan, read once (each read forks a child: not once per input)."""
    from targets.plan import load_plan

    return load_plan(path)


def _checked_onnx(path: Path) -> dict[str, Any]:
    """The mutated step file run against the clean seed graph's plan: our error or sane counts."""
    from targets.onnx_target import check_onnx

    src = path.with_name("plan-source.nir")
    if not src.is_file():
        src.write_bytes(_MODEL_SEEDS["plan_source"][0])
    plan = _seed_plan(str(src))
    x = (np.random.default_rng(0).random((2, 1, *plan.input_shape)) < 0.3).astype(np.float32)
    res = check_onnx(plan, path, x, threads=1)
    if not np.all(res["counts"] >= 0):
        raise InsaneOutput(f"{path}: negative output counts")
    return {"counts": int(res["counts"].sum())}


def _register_models() -> None:
    for name, suffix, call in (("checkpoint", ".pt", _checked_checkpoint), ("graph", ".nir", _checked_graph),
                               ("onnx", ".onnx", _checked_onnx)):  # fmt: skip
        register(FuzzCase(name, suffix, lambda eventdata, work, name=name: _model_seeds(work / "models")[name], call))


_register_models()


# --- the run: a worker process per stretch of inputs, replaced after a hang or a crash --------------


def _classify(case: FuzzCase, path: Path) -> tuple[str, str, str]:
    """``(outcome, detail, traceback)``: outcome is ok, error, foreign or insane."""
    try:
        case.call(path)
        return "ok", "", ""
    except SnnDeployError as e:
        # a library's MemoryError wrapped in our error: the worker's memory limit was hit, worth a look
        return "error", type(e).__name__ + (" (MemoryError)" if "MemoryError" in str(e) else ""), ""
    except InsaneOutput as e:
        return "insane", str(e), traceback.format_exc()
    except BaseException as e:  # noqa: BLE001 - a finding, whatever it is
        if isinstance(e, KeyboardInterrupt):
            raise
        return "foreign", f"{type(e).__name__}: {e}"[:300], traceback.format_exc()


def _worker(conn, memory_limit: int) -> None:
    if memory_limit:  # a reader that tries to hold a hostile file's claims in memory fails here, counted
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        soft = _vm_size() + memory_limit
        resource.setrlimit(resource.RLIMIT_AS, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    devnull = os.open(os.devnull, os.O_WRONLY)  # what libraries print on bad input is not our output
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    while True:
        job = conn.recv()
        if job is None:
            return
        name, path = job
        outcome = _classify(CASES[name], Path(path))
        conn.send((*outcome, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


class Worker:
    def __init__(self, memory_limit: int) -> None:
        self.memory_limit = memory_limit
        self.proc = None

    def start(self) -> None:
        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, self.memory_limit), daemon=True)
        self.proc.start()
        child.close()

    def run(self, name: str, path: Path, timeout: float) -> tuple[str, str, str, int]:
        if self.proc is None or not self.proc.is_alive():
            self.start()
        self.conn.send((name, str(path)))
        if self.conn.poll(timeout):
            try:
                return self.conn.recv()
            except EOFError:
                pass
        else:
            self.stop()
            return "hang", f"no answer within {timeout:g} s", "", 0
        self.proc.join(1)
        code = self.proc.exitcode
        self.proc = None
        return "crash", f"worker died (exit code {code})", "", 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.proc = None


def fuzz(cases: list[FuzzCase], seconds: float, out: Path, timeout: float, seed: int, memory_limit: int) -> dict:
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    results: dict[str, Any] = {"seconds": seconds, "per_input_timeout_s": timeout, "seed": seed,
                               "memory_limit_mib": memory_limit >> 20, "cases": {}}  # fmt: skip
    worker = Worker(memory_limit)
    with tempfile.TemporaryDirectory(prefix="snn-fuzz-") as tmp:
        work = Path(tmp)
        plan = []
        for case in cases:
            seeds = case.seeds(EVENTDATA if EVENTDATA.is_dir() else None, work)
            if not seeds:
                results["cases"][case.name] = {"skipped": f"no seed inputs (real recordings not found at {EVENTDATA})"}
            else:
                plan.append((case, seeds))
        per_case = seconds / max(len(plan), 1)
        bar = tqdm(total=round(seconds), desc="fuzz", unit="s", file=sys.stderr, dynamic_ncols=True)
        try:
            for case, seeds in plan:
                r = results["cases"][case.name] = {"tried": 0, "ok": 0, "errors": {}, "foreign": 0, "insane": 0,
                                                   "hangs": 0, "crashes": 0, "max_rss_mib": 0, "failures": []}  # fmt: skip
                path = work / f"input{case.suffix}"
                start = last = time.monotonic()
                while time.monotonic() - start < per_case:
                    seed_data = seeds[rng.randrange(len(seeds))]
                    data = apply_ops(seed_data, random_ops(rng, len(seed_data)), case.header)
                    path.write_bytes(data)
                    outcome, detail, tb, rss = worker.run(case.name, path, timeout)
                    r["tried"] += 1
                    r["max_rss_mib"] = max(r["max_rss_mib"], rss >> 10)
                    if outcome == "ok":
                        r["ok"] += 1
                    elif outcome == "error":
                        r["errors"][detail] = r["errors"].get(detail, 0) + 1
                    else:
                        key = {"hang": "hangs", "crash": "crashes"}.get(outcome, outcome)
                        r[key] += 1
                        if sum(f["kind"] == outcome for f in r["failures"]) < SAVED_PER_KIND:
                            saved = out / "failures" / f"{case.name}-{outcome}-{r[key]}{case.suffix}"
                            saved.parent.mkdir(parents=True, exist_ok=True)
                            saved.write_bytes(data)
                            r["failures"].append(
                                {"kind": outcome, "detail": detail, "input": str(saved), "traceback": tb}
                            )
                    now = time.monotonic()
                    bar.update(int(now - start) - int(last - start))
                    bar.set_postfix_str(f"{case.name}: {r['tried']} tried, {_bad(r)} findings", refresh=False)
                    last = now
                write_json_atomic(out / "fuzz.json", results)
        finally:
            bar.close()
            worker.stop()
    write_json_atomic(out / "fuzz.json", results)
    return results


def _bad(r: dict) -> int:
    return r["foreign"] + r["insane"] + r["hangs"] + r["crashes"]


def table(results: dict) -> str:
    lines = ["| case | tried | ok | our errors | foreign | insane | hangs | crashes | max RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in results["cases"].items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} |||||||")
            continue
        errors = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items())) or "0"
        lines.append(f"| {name} | {r['tried']} | {r['ok']} | {errors} | {r['foreign']} | {r['insane']} | "
                     f"{r['hangs']} | {r['crashes']} | {r['max_rss_mib']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument(
        "--seconds", type=at_least(1.0), default=300.0, help="time budget in all, shared equally by the cases"
    )
    p.add_argument("--cases", nargs="+", default=None, help=f"cases to run (default: all: {', '.join(CASES)})")
    p.add_argument(
        "--timeout", type=at_least(0.1), default=10.0, help="seconds one input may take before it counts as a hang"
    )
    p.add_argument(
        "--memory-mib", type=at_least(0), default=2048, help="address space the worker may add (0: no limit)"
    )
    p.add_argument("--seed", type=at_least(0), default=0)
    p.add_argument("--out", default="runs/fuzz")
    args = p.parse_args(argv)
    unknown = sorted(set(args.cases or ()) - set(CASES))
    if unknown:
        print(f"error: unknown fuzz case(s) {', '.join(unknown)}; known: {', '.join(CASES)}", file=sys.stderr)
        return 2
    cases = [CASES[n] for n in (args.cases or CASES)]
    out = Path(args.out)
    results = fuzz(cases, args.seconds, out, args.timeout, args.seed, args.memory_mib << 20)
    print(table(results))
    print(f"written: {out / 'fuzz.json'}")
    return 1 if any("skipped" not in r and _bad(r) for r in results["cases"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
