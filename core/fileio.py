"""Writing files safely: atomic writes (a reader sees the old file or the whole new one, never half
of one), output paths checked before any work is done, staging folders that a kill cannot leave
inside an output folder, and locks that keep two processes from writing the same files."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from core.errors import ConfigError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result should look like any other file
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, writer: Callable[[IO[bytes]], Any]) -> None:
    """Call ``writer(binary_file)`` on a temporary file, then move it onto ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        writer(f)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line and flush it to disk, in one write to a file opened for appending: a kill
    leaves every line that was written whole (JSON-lines logs survive a kill)."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        view = memoryview(data)
        while view:  # (a regular file takes it in one write; a short write only continues the same line)
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def torch_save_head(head: bytes) -> bool:
    """Whether a file's first bytes can start a file ``torch.save`` wrote: a zip archive (its default
    format) or a pickle of protocol 2-5 (its legacy format)."""
    return head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> str:
    """Save a matplotlib figure as PNG atomically, close it, and return the path."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return str(path)


def _probe_folder(folder: Path, what: str) -> None:
    """Prove that ``folder`` can be made (if missing) and written: its nearest existing ancestor is a
    folder in which a file can be created. Nothing is left behind, not even the folder."""
    existing = next(p for p in (folder, *folder.parents, Path(".")) if p.exists() or p == Path("."))
    if not existing.is_dir():
        raise ConfigError(f"{what} {folder} cannot be made: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{what} {folder} cannot be written ({e.strerror or e})") from None


def writable_file(
    path: str | os.PathLike, what: str = "output file", inputs: dict[str, str | os.PathLike | None] | None = None
) -> Path:
    """Check, before any work is done, that ``path`` can be written as a file (its folder may be
    missing: writers create it) and is none of the command's ``inputs`` (``{what it is: path}``);
    a :class:`ConfigError` names the path and the reason otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; name a file")
    not_an_input(path, what, inputs or {})
    _probe_folder(path.parent if str(path.parent) else Path("."), f"the folder of {what} {path}:")
    return path


def not_an_input(path: Path, what: str, inputs: dict[str, str | os.PathLike | None]) -> None:
    """A :class:`ConfigError` when the output ``path`` is one of the command's ``inputs`` (``{what it is:
    path}``): writing it would replace it."""
    for role, other in inputs.items():
        if other is not None and path.exists() and Path(other).exists() and os.path.samefile(path, other):
            raise ConfigError(f"{what} {path} is {role}: writing it would replace it; name another file")


def writable_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Check, before any work is done, that ``path`` is (or can be made) a folder files can be written into."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file, not a folder")
    _probe_folder(path, what)
    return path


STAGING_ROOT = Path(tempfile.gettempdir()) / "snn-deploy-staging"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_staging(root: Path = STAGING_ROOT) -> None:
    """Remove staging folders left by processes that no longer run (killed before they finished)."""
    if not root.is_dir():
        return
    for folder in root.iterdir():
        pid = folder.name.split("-", 1)[0]
        if folder.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def staging_folder(root: Path = STAGING_ROOT) -> Iterator[Path]:
    """A fresh folder outside every output folder for files that are not finished yet; removed on
    exit, and by a later call if this process is killed first (its name starts with the pid)."""
    root.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(root)
    folder = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def move_into(src: Path, dst: Path) -> None:
    """Move a finished file onto ``dst`` atomically (a copy beside it first when they lie on different disks)."""
    try:
        os.replace(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)


def read_text(path: Path, what: str, kind: str, error: type[Exception]) -> str:
    """A small text file's contents (UTF-8); a missing file, a folder, bytes that are not text and a file
    that cannot be read raise ``error`` naming ``what`` it is and the file (``kind``: JSON, TOML, CSV)."""
    if not path.is_file():
        raise error(f"{what} {path} {'is a folder' if path.is_dir() else 'does not exist'}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what} {path} is not {kind} text (byte {e.start} is not UTF-8)") from None
    except OSError as e:
        raise error(f"{what} {path} cannot be read: {e.strerror or e}") from None


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block ends, then deliver it as the process would have (a
    ``KeyboardInterrupt`` as a rule; nothing where it is ignored): a set of files moved in together is
    all there or none of it. Only in the main thread (elsewhere Python delivers no signal)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        signal.raise_signal(signal.SIGINT)  # (to the handler restored above)


@contextlib.contextmanager
def exclusive(key: str, what: str, root: Path = STAGING_ROOT) -> Iterator[None]:
    """Hold a lock named by ``key`` (released when the process ends, even when killed); a second
    holder is refused with a :class:`ConfigError` that says ``what`` is busy and who holds it."""
    import fcntl
    import hashlib

    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise ConfigError(f"{what} is being written by {holder} right now; wait for it to finish") from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
