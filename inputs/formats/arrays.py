"""Event arrays in numpy (``.npy``, ``.npz``) and HDF5 files: readers (chunked) and writers (atomic).

Accepted layouts, all with times in integer microseconds:

- ``.npy``: one 1-D structured array with fields ``t``, ``x``, ``y``, ``p`` or their common aliases
  (:data:`ALIASES`: ``ts``/``timestamp``, ``pol``/``polarity``, ...). Read a chunk at a time with
  plain reads, so a multi-gigabyte file costs one chunk of memory.
- ``.npz``: a structured member (the only one, or the one named ``events``, or the one you name),
  or four column members (``t.npy``, ``x.npy``, ... or aliases). Members are streamed from the zip
  a chunk at a time, compressed or not. Optional members ``sensor_size`` (width, height) or
  ``width`` and ``height`` give the sensor size.
- HDF5 (``.h5``/``.hdf5``, read with h5py): a compound dataset with those fields, or a group holding
  1-D datasets ``t``, ``x``, ``y``, ``p`` (e.g. ``events/t``, ``events/x``, ...); found by search
  (the only candidate, else the one named ``events``) or named by ``dataset``. Attributes
  ``width``/``height`` or ``sensor_size`` on the dataset, its group or the file give the sensor size.

Polarity: any value > 0 (1, True) is ON, anything else (0, -1, False) OFF. Coordinates that are
negative or do not fit uint16 are dropped and counted as ``outside_sensor``. Float times raise
:class:`DataError` (we never guess a unit). A ``.npy`` file shorter than its header states keeps
its complete records and counts the missing bytes in ``truncated_bytes`` (or raises with
``strict=True``); a damaged zip or HDF5 file raises :class:`DataError` naming the file. ``.npy`` headers
of versions 1.0, 2.0 and 3.0 are parsed without unpickling; object (pickled) arrays are refused. A
sensor size outside ``1..65536`` per side is a :class:`DataError`.

Writers (:func:`write_npy`, :func:`write_npz`, :func:`write_hdf5`, and :class:`NpyEventWriter`, which
appends chunks to a ``.npy`` of any size without holding it in memory) write atomically.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DataError
from core.fileio import atomic_path
from inputs.events import EVENT_DTYPE, as_events, check_sensor_size

ALIASES = {
    "t": ("t", "ts", "timestamp", "timestamps", "time", "times"),
    "x": ("x", "xs", "x_addr", "xaddr"),
    "y": ("y", "ys", "y_addr", "yaddr"),
    "p": ("p", "pol", "polarity", "polarities", "ps", "on"),
}
NPY_MAGIC = b"\x93NUMPY"
_NPY_HEADER_BYTES = 256  # fixed header size of NpyEventWriter files, so the count can be rewritten
MAX_NPY_HEADER = 1 << 16  # bytes of .npy header text we parse (numpy's own np.load refuses more than 10,000)


def match_fields(names: Any) -> dict[str, str] | None:
    """Map ``t, x, y, p`` to the given names (exact or alias, case-insensitive); None if one is missing."""
    lower = {str(n).lower(): n for n in names}
    out = {}
    for key, aliases in ALIASES.items():
        hit = next((lower[a] for a in aliases if a in lower), None)
        if hit is None:
            return None
        out[key] = hit
    return out


@dataclass
class ArrayInfo:
    path: Path
    layout: str  # "structured" (one record array) or "columns" (four arrays)
    source: str  # the npz member or HDF5 path that holds the events ("" for .npy)
    fields: dict[str, str]  # our field -> the file's name
    count: int  # events the file holds (complete records)
    t_bits: int  # width of the stored time field; <= 32 means it can wrap
    width: int | None = None
    height: int | None = None
    record_dtype: np.dtype | None = None  # .npy only: the stored record type
    data_offset: int = 0  # .npy only: byte offset of the first record
    counters: dict[str, int] = field(default_factory=dict)


def _check_dtypes(dtypes: dict[str, np.dtype], where: str) -> None:
    for key, dt in dtypes.items():
        ok = dt.kind in "iu" or (key == "p" and dt.kind == "b")
        if not ok:
            hint = " (float times: convert them to integer microseconds first)" if key == "t" and dt.kind == "f" else ""
            raise DataError(f"{where}: field {key!r} has dtype {dt}; expected integers{hint}")


def columns_to_events(cols: dict[str, np.ndarray], counters: dict[str, int]) -> np.ndarray:
    """Arrays ``t, x, y, p`` of any integer type -> :data:`EVENT_DTYPE` (unstorable coordinates dropped, counted)."""
    x = cols["x"].astype(np.int64, copy=False)
    y = cols["y"].astype(np.int64, copy=False)
    ok = (x >= 0) & (x <= 0xFFFF) & (y >= 0) & (y <= 0xFFFF)
    bad = len(ok) - int(ok.sum())
    if bad:
        counters["outside_sensor"] = counters.get("outside_sensor", 0) + bad
    ev = np.empty(int(ok.sum()), EVENT_DTYPE)
    ev["t"] = cols["t"][ok] if bad else cols["t"]
    ev["x"] = x[ok] if bad else x
    ev["y"] = y[ok] if bad else y
    p = cols["p"][ok] if bad else cols["p"]
    ev["p"] = p.astype(np.int64) > 0
    return ev


def _records_to_events(rec: np.ndarray, info: ArrayInfo) -> np.ndarray:
    return columns_to_events({k: rec[v] for k, v in info.fields.items()}, info.counters)


# --- .npy ------------------------------------------------------------------------------------


def _read_npy_header(fp: Any, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of a ``.npy`` header, versions 1.0, 2.0 and 3.0; ``fp`` is left
    at the first record. The format is numpy's documented one (NEP 1): magic, version, a little-endian
    header length (2 bytes in 1.0, 4 in 2.0 and 3.0) and a Python dict literal (latin-1, or UTF-8 in
    3.0) parsed with :func:`ast.literal_eval`, never unpickled. Object (pickled) arrays are refused."""
    head = fp.read(8)
    if len(head) < 8 or not head.startswith(NPY_MAGIC):
        raise DataError(f"{where}: not a .npy file (it starts with {head!r}, expected {NPY_MAGIC!r})")
    version = (head[6], head[7])
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise DataError(f"{where}: .npy format version {version[0]}.{version[1]} (known: 1.0, 2.0, 3.0)")
    size_bytes = 2 if version == (1, 0) else 4
    raw = fp.read(size_bytes)
    if len(raw) < size_bytes:
        raise DataError(f"{where}: truncated .npy header at byte offset 8")
    (length,) = struct.unpack("<H" if size_bytes == 2 else "<I", raw)
    if length > MAX_NPY_HEADER:
        raise DataError(
            f"{where}: .npy header at byte offset {8 + size_bytes} claims {length} bytes (at most {MAX_NPY_HEADER})"
        )
    text = fp.read(length)
    if len(text) < length:
        raise DataError(f"{where}: truncated .npy header: {length} bytes stated at byte offset 8, {len(text)} present")
    try:
        d = ast.literal_eval(text.decode("utf-8" if version == (3, 0) else "latin-1"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, UnicodeDecodeError) as e:
        raise DataError(f"{where}: not a readable .npy header ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise DataError(f"{where}: .npy header is not a dict of descr, fortran_order and shape: {str(d)[:200]}")
    shape, fortran = d["shape"], d["fortran_order"]
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise DataError(f"{where}: .npy header has shape {str(shape)[:200]}, not a tuple of sizes")
    if not isinstance(fortran, bool):
        raise DataError(f"{where}: .npy header has fortran_order {fortran!r}, not True or False")
    try:
        dtype = np.lib.format.descr_to_dtype(d["descr"])
    except (ValueError, TypeError, KeyError, IndexError, SyntaxError, RecursionError) as e:
        raise DataError(f"{where}: .npy header has an unreadable dtype ({type(e).__name__}: {e})") from None
    if dtype.hasobject:
        raise DataError(
            f"{where}: the array holds Python objects (dtype {dtype}), which only unpickling could read; "
            "refused: event files hold integer fields t, x, y, p"
        )
    if dtype.itemsize == 0:
        raise DataError(f"{where}: .npy dtype {dtype} has no bytes per record")
    return shape, fortran, dtype


def _structured_info(path: Path, source: str, shape: tuple, dtype: np.dtype, where: str) -> ArrayInfo:
    fields = match_fields(dtype.names or ())
    if fields is None or len(shape) != 1 or dtype.hasobject:
        raise DataError(
            f"{where}: expected a 1-D structured array with fields t, x, y, p (or aliases); "
            f"got shape {shape} and dtype {dtype}"
        )
    _check_dtypes({k: dtype[v] for k, v in fields.items()}, where)
    return ArrayInfo(path, "structured", source, fields, int(shape[0]), dtype[fields["t"]].itemsize * 8)


def read_npy_info(path: str | os.PathLike, strict: bool = False) -> ArrayInfo:
    """Header of a ``.npy`` event file (truncation handled as the module docstring says)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        shape, _, dtype = _read_npy_header(f, str(path))
        offset = f.tell()
    info = _structured_info(path, "", shape, dtype, str(path))
    info.record_dtype, info.data_offset = dtype, offset
    have = (size - offset) // dtype.itemsize
    if have < info.count:
        missing = info.count * dtype.itemsize - (size - offset)
        if strict:
            raise DataError(
                f"{path}: truncated .npy file: the header states {info.count} records, the data ends "
                f"at byte {size} inside record {have} (byte offset {offset + have * dtype.itemsize})"
            )
        info.counters["truncated_bytes"] = missing
        info.count = have
    return info


def iter_npy(
    path: str | os.PathLike, chunk_events: int = 1 << 18, strict: bool = False, info: ArrayInfo | None = None
) -> Iterator[np.ndarray]:
    """Yield the events of a ``.npy`` file in chunks.

    Plain sequential reads, not a memory map: mapped pages count in the process's resident memory
    until the kernel reclaims them, so a memory map would make a multi-gigabyte file look like a leak.
    """
    info = info or read_npy_info(path, strict)
    with open(info.path, "rb") as f:
        f.seek(info.data_offset)
        for start in range(0, info.count, chunk_events):
            rec = np.fromfile(f, dtype=info.record_dtype, count=min(chunk_events, info.count - start))
            yield _records_to_events(rec, info)


def _npy_header(count: int) -> bytes:
    descr = EVENT_DTYPE.descr
    text = repr({"descr": descr, "fortran_order": False, "shape": (count,)}).encode("latin-1")
    pad = _NPY_HEADER_BYTES - len(NPY_MAGIC) - 4 - len(text) - 1
    return NPY_MAGIC + b"\x01\x00" + struct.pack("<H", _NPY_HEADER_BYTES - 10) + text + b" " * pad + b"\n"


class NpyEventWriter:
    """Append event chunks to a ``.npy`` file of any size; the file appears (atomically) on close.

    >>> with NpyEventWriter("big.npy") as w:
    ...     for chunk in chunks:
    ...         w.write(chunk)
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.count = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> NpyEventWriter:
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._f = self._stack.enter_context(open(tmp, "wb"))
        self._f.write(_npy_header(0))
        return self

    def write(self, events: np.ndarray) -> None:
        ev = as_events(events, source=str(self.path))
        self._f.write(ev.tobytes())
        self.count += len(ev)

    def __exit__(self, *exc: Any) -> bool:
        if exc[0] is None:
            self._f.seek(0)
            self._f.write(_npy_header(self.count))
        return self._stack.__exit__(*exc)


def write_npy(path: str | os.PathLike, events: np.ndarray) -> None:
    """Write events as a structured ``.npy`` (:data:`EVENT_DTYPE`), atomically."""
    with NpyEventWriter(path) as w:
        w.write(events)


# --- .npz ------------------------------------------------------------------------------------


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise DataError(f"{path}: not a readable .npz (zip) file ({type(e).__name__}: {e})") from None


def _member_header(zf: zipfile.ZipFile, name: str, where: str) -> tuple[tuple, np.dtype]:
    with zf.open(name) as fp:
        shape, _, dtype = _read_npy_header(fp, where)
    return shape, dtype


def _small_member(zf: zipfile.ZipFile, name: str) -> np.ndarray | None:
    if zf.getinfo(name).file_size > 4096:
        return None
    with zf.open(name) as fp:
        return np.load(io.BytesIO(fp.read()), allow_pickle=False)


def read_npz_info(path: str | os.PathLike, member: str | None = None) -> ArrayInfo:
    """Choose the member(s) holding the events (see the module docstring) and read their headers."""
    path = Path(path)
    zf = _open_zip(path)
    with zf:
        try:
            names = {n[:-4] if n.endswith(".npy") else n: n for n in zf.namelist()}
            info = _choose_npz(path, zf, names, member)
            size = None
            with contextlib.suppress(DataError, ValueError, KeyError, TypeError, OverflowError):
                if "sensor_size" in names and (s := _small_member(zf, names["sensor_size"])) is not None:
                    size, what = tuple(int(v) for v in np.ravel(s)[:2]), "member sensor_size"
                elif "width" in names and "height" in names:
                    w, h = _small_member(zf, names["width"]), _small_member(zf, names["height"])
                    size, what = (int(w), int(h)), "members width and height"
            if size is not None and len(size) == 2:
                info.width, info.height = check_sensor_size(*size, f"{path}: {what}")
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as e:
            raise DataError(f"{path}: damaged .npz file ({type(e).__name__}: {e})") from None
    return info


def _choose_npz(path: Path, zf: zipfile.ZipFile, names: dict[str, str], member: str | None) -> ArrayInfo:
    if member is not None:
        key = member[:-4] if member.endswith(".npy") else member
        if key not in names:
            raise DataError(f"{path}: no member {member!r}; members: {', '.join(sorted(names)) or 'none'}")
        shape, dtype = _member_header(zf, names[key], f"{path}[{key}]")
        return _structured_info(path, names[key], shape, dtype, f"{path}[{key}]")
    structured = []
    for key, name in names.items():
        shape, dtype = _member_header(zf, name, f"{path}[{key}]")
        if dtype.names and match_fields(dtype.names):
            structured.append((key, name, shape, dtype))
    if len(structured) > 1:
        structured = [s for s in structured if s[0] == "events"] or structured
    if len(structured) == 1:
        key, name, shape, dtype = structured[0]
        return _structured_info(path, name, shape, dtype, f"{path}[{key}]")
    if len(structured) > 1:
        raise DataError(
            f"{path}: several members hold events ({', '.join(s[0] for s in structured)}); name one with the member flag"
        )
    cols = match_fields(names)
    if cols is None:
        raise DataError(
            f"{path}: no member holds events (a structured t, x, y, p array, or t, x, y, p columns); "
            f"members: {', '.join(sorted(names)) or 'none'}"
        )
    shapes, dtypes = {}, {}
    for k, key in cols.items():
        shapes[k], dtypes[k] = _member_header(zf, names[key], f"{path}[{key}]")
    if any(len(s) != 1 for s in shapes.values()) or len({s[0] for s in shapes.values()}) != 1:
        raise DataError(f"{path}: the t, x, y, p members must be 1-D and equally long; shapes {shapes}")
    _check_dtypes(dtypes, str(path))
    fields = {k: names[v] for k, v in cols.items()}
    return ArrayInfo(path, "columns", ",".join(fields.values()), fields, shapes["t"][0], dtypes["t"].itemsize * 8)


def _read_records(fp: Any, dtype: np.dtype, n: int, where: str) -> np.ndarray:
    raw = fp.read(n * dtype.itemsize)
    if len(raw) < n * dtype.itemsize:
        raise DataError(f"{where}: member ends early ({len(raw)} of {n * dtype.itemsize} bytes)")
    return np.frombuffer(raw, dtype)


def iter_npz(
    path: str | os.PathLike, chunk_events: int = 1 << 18, member: str | None = None, info: ArrayInfo | None = None
) -> Iterator[np.ndarray]:
    """Yield the events of an ``.npz`` file in chunks, streaming the member(s) out of the zip."""
    info = info or read_npz_info(path, member)
    where = f"{info.path}[{info.source}]"
    try:
        with _open_zip(info.path) as zf, contextlib.ExitStack() as stack:
            if info.layout == "structured":
                streams = {"": stack.enter_context(zf.open(info.source))}
            else:
                streams = {k: stack.enter_context(zf.open(v)) for k, v in info.fields.items()}
            dtypes = {k: _read_npy_header(fp, where)[2] for k, fp in streams.items()}
            for start in range(0, info.count, chunk_events):
                n = min(chunk_events, info.count - start)
                if info.layout == "structured":
                    yield _records_to_events(_read_records(streams[""], dtypes[""], n, where), info)
                else:
                    cols = {k: _read_records(fp, dtypes[k], n, where) for k, fp in streams.items()}
                    yield columns_to_events(cols, info.counters)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as e:
        raise DataError(f"{where}: damaged .npz file ({type(e).__name__}: {e})") from None


def write_npz(
    path: str | os.PathLike,
    events: np.ndarray,
    *,
    columns: bool = False,
    compressed: bool = False,
    sensor_size: tuple[int, int] | None = None,
) -> None:
    """Write events to ``.npz``: one ``events`` member, or ``t, x, y, p`` columns; atomically."""
    ev = as_events(events, source=str(path))
    arrays: dict[str, np.ndarray] = {k: ev[k] for k in EVENT_DTYPE.names} if columns else {"events": ev}
    if sensor_size is not None:
        arrays["sensor_size"] = np.asarray(sensor_size, np.int64)
    save = np.savez_compressed if compressed else np.savez
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        save(f, **arrays)


# --- HDF5 ------------------------------------------------------------------------------------


def _h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover - a dependency, but keep the message clear
        raise DataError("reading HDF5 event files needs the package 'h5py' (pip install h5py)") from None
    return h5py


def _h5_candidates(f: Any) -> list[tuple[str, str]]:
    """``(path, layout)`` of every compound dataset or group that holds t, x, y, p (at most 1,000 items looked at)."""
    h5py = _h5py()
    found: list[tuple[str, str]] = []
    seen = 0

    def look(name: str, obj: Any) -> bool | None:
        nonlocal seen
        seen += 1
        if isinstance(obj, h5py.Dataset) and obj.dtype.names and match_fields(obj.dtype.names):
            found.append((name, "structured"))
        elif isinstance(obj, h5py.Group) and match_fields(obj.keys()):
            found.append((name, "columns"))
        return True if seen > 1000 else None

    look("/", f)
    f.visititems(look)
    return found


def _h5_sensor(*objs: Any) -> tuple[int | None, int | None]:
    for obj in objs:
        attrs = obj.attrs
        with contextlib.suppress(Exception):
            if "width" in attrs and "height" in attrs:
                return int(attrs["width"]), int(attrs["height"])
            if "sensor_width" in attrs and "sensor_height" in attrs:
                return int(attrs["sensor_width"]), int(attrs["sensor_height"])
            if "sensor_size" in attrs:
                w, h = np.ravel(attrs["sensor_size"])[:2]
                return int(w), int(h)
    return None, None


def _h5_info(path: Path, f: Any, dataset: str | None) -> tuple[ArrayInfo, Any]:
    h5py = _h5py()
    if dataset is None:
        cands = _h5_candidates(f)
        if len(cands) > 1:
            cands = [c for c in cands if c[0].strip("/").split("/")[-1] == "events"] or cands
        if len(cands) != 1:
            what = ", ".join(c[0] for c in cands) if cands else "none"
            graph = "; it is a NIR graph: name it with --model" if not cands and "node" in f and "version" in f else ""
            raise DataError(
                f"{path}: cannot tell which HDF5 dataset holds the events (candidates: {what}); "
                f"expected a compound t, x, y, p dataset or a group with t, x, y, p datasets{graph}"
            )
        dataset = cands[0][0]
    if dataset not in f:
        raise DataError(f"{path}: no HDF5 object {dataset!r}; top level: {', '.join(f.keys()) or 'none'}")
    obj = f[dataset]
    where = f"{path}[{dataset}]"
    if isinstance(obj, h5py.Dataset):
        info = _structured_info(path, dataset, obj.shape, obj.dtype, where)
        parent = obj.parent
    else:
        fields = match_fields(obj.keys())
        if fields is None:
            raise DataError(
                f"{where}: the group has no t, x, y, p datasets; it holds {', '.join(obj.keys()) or 'nothing'}"
            )
        cols = {k: obj[v] for k, v in fields.items()}
        if (
            not all(isinstance(c, h5py.Dataset) and c.ndim == 1 for c in cols.values())
            or len({c.shape[0] for c in cols.values()}) != 1
        ):
            raise DataError(f"{where}: the t, x, y, p datasets must be 1-D and equally long")
        _check_dtypes({k: c.dtype for k, c in cols.items()}, where)
        info = ArrayInfo(path, "columns", dataset, fields, cols["t"].shape[0], cols["t"].dtype.itemsize * 8)
        parent = obj
    width, height = _h5_sensor(obj, parent, f)
    if width is not None:
        info.width, info.height = check_sensor_size(width, height, f"{where}: sensor size attributes")
    return info, obj


def _h5_open(path: Path) -> Any:
    try:
        return _h5py().File(path, "r")
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise DataError(f"{path}: not a readable HDF5 file ({type(e).__name__}: {e})") from None


def read_hdf5_info(path: str | os.PathLike, dataset: str | None = None) -> ArrayInfo:
    """Find the events in an HDF5 file (see the module docstring)."""
    path = Path(path)
    with _h5_open(path) as f:
        try:
            return _h5_info(path, f, dataset)[0]
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
            raise DataError(f"{path}: damaged HDF5 file ({type(e).__name__}: {e})") from None


def iter_hdf5(
    path: str | os.PathLike, chunk_events: int = 1 << 18, dataset: str | None = None, info: ArrayInfo | None = None
) -> Iterator[np.ndarray]:
    """Yield the events of an HDF5 file in chunks (slices of the dataset(s))."""
    info = info or read_hdf5_info(path, dataset)
    with _h5_open(info.path) as f:
        start = 0
        try:
            obj = f[info.source]
            while start < info.count:
                stop = min(start + chunk_events, info.count)
                if info.layout == "structured":
                    chunk = _records_to_events(obj[start:stop], info)
                else:
                    chunk = columns_to_events({k: obj[v][start:stop] for k, v in info.fields.items()}, info.counters)
                yield chunk
                start = stop
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
            raise DataError(
                f"{info.path}[{info.source}]: damaged HDF5 data at event {start} ({type(e).__name__}: {e})"
            ) from None


def write_hdf5(
    path: str | os.PathLike,
    events: np.ndarray,
    *,
    layout: str = "columns",
    group: str = "events",
    sensor_size: tuple[int, int] | None = None,
    compression: str | None = None,
) -> None:
    """Write events to HDF5, atomically: ``group/t``, ``group/x``, ... (``layout="columns"``) or one
    compound dataset named ``group`` (``layout="compound"``); sensor size as ``width``/``height`` attributes."""
    h5py = _h5py()
    if layout not in ("columns", "compound"):
        raise DataError(f"unknown HDF5 layout {layout!r}; known: columns, compound")
    ev = as_events(events, source=str(path))
    chunks = (min(max(len(ev), 1), 1 << 16),)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        if layout == "compound":
            obj = f.create_dataset(group, data=ev, chunks=chunks, compression=compression)
        else:
            obj = f.create_group(group)
            for k in EVENT_DTYPE.names:
                obj.create_dataset(k, data=ev[k], chunks=chunks, compression=compression)
        if sensor_size is not None:
            obj.attrs["width"], obj.attrs["height"] = int(sensor_size[0]), int(sensor_size[1])
