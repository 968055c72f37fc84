"""Batches and recordings spread over worker processes on this machine, or over a Ray cluster.

``runtime.run``, ``runtime.verify`` and ``runtime.stream`` (many files) send work here when
``--workers`` is above 1 or ``--cluster ray``. A worker receives a small job (the graph's path and
load options, the target's name and options) and the batch's spikes; it loads the plan itself
(cached per process) and runs the batch exactly as the one-process run does, so the batch
boundaries, and with them every result, are the same whatever the worker count. Results come back
in submission order and are joined as before: reports are identical to the one-process run.

Local workers start from a ``forkserver`` (a clean process that has started no torch or numba
threads, unlike ``fork``, and is quicker than ``spawn`` per worker); each runs one CPU thread of
torch, ONNX Runtime and numba, since the processes themselves are the parallelism. Each worker is
its own process group, so that Ctrl-C reaches only the main process, which cancels the pending
batches and ends every worker and what it started (a Lava worker process) before exiting 130.

A batch that raises becomes one line naming its samples; a worker that dies (killed, out of
memory) ends the run with :class:`WorkerError`. Nothing is written until every batch is back.

Ray (the optional ``ray`` extra): ``--cluster ray`` connects to ``RAY_ADDRESS`` (or a
``ray://host:port`` given as ``--cluster``) or, with neither, starts a local instance with
``--workers`` CPUs; each batch is a Ray task. Every node needs the project at the same path (and
``.venv-lava`` for the lava target: a node without it fails the batch with its reason and name).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import multiprocessing as mp
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError, SnnDeployError

ROOT = Path(__file__).resolve().parents[1]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
RAY_HINT = "pip install 'snn-deploy[ray]'"
MIN_SAMPLES_PER_WORKER = 32  # below this a worker's start (a second or two: torch's import) outweighs its share
WORKERS_RULE = (
    "default: one worker per CPU core this process may use, at most one per batch, and 1 when a worker would "
    f"get fewer than {MIN_SAMPLES_PER_WORKER} samples"
)


class WorkerError(SnnDeployError):
    """A worker process died, or a batch failed with an error that is not already the project's."""


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_workers(
    requested: int | None, samples: int, batch_size: int, cluster: str = "local", min_per_worker: int | None = None
) -> int:
    """``requested`` when given; else :data:`WORKERS_RULE` (a Ray cluster: one per batch up to the
    cluster's CPUs, which the pool caps). ``min_per_worker``: the samples a worker must get to be
    worth starting (default :data:`MIN_SAMPLES_PER_WORKER`; a recording: 1)."""
    batches = -(-samples // batch_size)
    if requested is not None:
        return max(1, min(requested, batches))
    if cluster != "local":
        return max(1, batches)
    return max(1, min(cores(), batches, samples // (min_per_worker or MIN_SAMPLES_PER_WORKER)))


# ---------------------------------------------------------------------------------------------
# What a worker runs


@dataclass(frozen=True)
class BatchJob:
    """One target's run over batches: small enough to send to every worker with each batch."""

    graph: str  # the .nir path; the worker loads the plan itself
    target: str
    dt: float | None = None
    steps: int | None = None
    dialect: str | None = None
    record: bool = False
    margins: bool = False  # the reference with margins (runtime.verify's baseline)
    options: dict[str, Any] = field(default_factory=dict)  # the target's run() options (device)


@functools.lru_cache(maxsize=8)
def _plan(graph: str, dt: float | None, steps: int | None, dialect: str | None):
    from targets.plan import load_plan

    return load_plan(graph, dt=dt, steps=steps, dialect=dialect)


def run_one(info, plan, spikes, *, record: bool, margins: bool, options: dict[str, Any]) -> Any:
    """One batch on one target, as the one-process loop and every worker run it."""
    from runtime.latency import run_aligned
    from targets import reference as ref_target

    if margins:
        return ref_target.run(plan, spikes, record=True, margins=True)
    return run_aligned(info, plan, spikes, record=record, **options)


def run_batch(job: BatchJob, spikes) -> Any:
    """One batch in a worker (or a Ray task): the plan loaded here, one thread, then :func:`run_one`."""
    from targets import get_target

    _one_thread()
    plan = _plan(job.graph, job.dt, job.steps, job.dialect)
    info = get_target(job.target)
    if not job.margins:
        reason = info.unavailable_reason()
        if reason:  # on a cluster node that lacks the target's environment
            raise ConfigError(f"target {job.target!r} is unavailable on node {socket.gethostname()}: {reason}")
    options = dict(job.options)
    if "threads" in inspect.signature(info.runner()).parameters:  # onnx: one ONNX Runtime thread per worker
        options["threads"] = 1
    _one_thread()  # torch: the target's module is imported by now
    return run_one(info, plan, spikes, record=job.record, margins=job.margins, options=options)


def _one_thread() -> None:
    os.environ.update(ONE_THREAD)
    # numpy's BLAS was loaded (by the forkserver) before the variables were set: limit its pool too,
    # or two workers run four BLAS threads on two cores
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    if "torch" in sys.modules:
        import torch

        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)


def _init_worker() -> None:
    """A local worker: its own process group (Ctrl-C goes to the main process only), one thread."""
    os.setsid()
    _one_thread()


# ---------------------------------------------------------------------------------------------
# Pools


class LocalPool:
    """``workers`` processes on this machine."""

    kind = "local"

    def __init__(self, workers: int, preload: Sequence[str] = ()) -> None:
        ctx = mp.get_context("forkserver")
        # Every worker re-runs the main module (spawn semantics): the forkserver imports what the
        # commands and the targets import once, so a worker forked from it starts in milliseconds.
        main = getattr(sys.modules["__main__"], "__spec__", None)  # (preloading it too makes runpy warn)
        wanted = ["numpy", "runtime.parallel", "runtime.run", *preload]
        ctx.set_forkserver_preload([m for m in wanted if main is None or m != main.name])
        self.workers = workers
        self._ex = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker)

    def submit(self, fn: Callable, *args: Any) -> Future:
        return self._ex.submit(fn, *args)

    def close(self, cancel: bool = False) -> None:
        if not cancel:
            self._ex.shutdown(wait=True)
            return
        procs = list((getattr(self._ex, "_processes", None) or {}).values())
        self._ex.shutdown(wait=False, cancel_futures=True)
        for p in procs:  # each worker leads its own process group: end it and whatever it started
            with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(timeout=5)


class RayPool:
    """Tasks on a Ray cluster (``address``: ``"auto"`` for ``RAY_ADDRESS``, a ``ray://`` URL, or None:
    a local instance with ``workers`` CPUs)."""

    kind = "ray"

    def __init__(self, workers: int, address: str | None) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(f"--cluster ray needs Ray, which is not installed: {RAY_HINT}") from None
        self._ray = ray
        self._started = not ray.is_initialized()
        env = {"env_vars": ONE_THREAD | {"PYTHONPATH": str(ROOT)}}
        if self._started:
            kwargs: dict[str, Any] = {"runtime_env": env, "log_to_driver": False, "include_dashboard": False}
            if address is None:
                kwargs["num_cpus"] = min(workers, cores())
            else:
                kwargs["address"] = address
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ConfigError(f"cannot reach the Ray cluster at {address or 'a new local instance'}: "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None  # fmt: skip
        self.workers = max(1, int(ray.cluster_resources().get("CPU", workers)))
        self._remote: dict[Callable, Any] = {}
        self._refs: list[Any] = []

    def submit(self, fn: Callable, *args: Any) -> Future:
        if fn not in self._remote:
            self._remote[fn] = self._ray.remote(num_cpus=1, max_retries=0)(fn)
        self._refs.append(self._remote[fn].remote(*args))
        return self._refs[-1].future()

    def close(self, cancel: bool = False) -> None:
        if cancel:  # tasks still queued or running on the cluster
            for ref in self._refs:
                with contextlib.suppress(Exception):
                    self._ray.cancel(ref, force=True)
        if self._started:
            self._ray.shutdown()


def cluster_address(cluster: str) -> str | None:
    """``--cluster`` as a Ray address: ``ray`` -> ``RAY_ADDRESS`` (None: start a local instance)."""
    if cluster.startswith("ray://"):
        return cluster
    return os.environ.get("RAY_ADDRESS") or None


@contextlib.contextmanager
def open_pool(
    workers: int, cluster: str = "local", preload: Sequence[str] = ()
) -> Iterator[LocalPool | RayPool | None]:
    """A pool for ``workers`` (None: run in this process) on ``cluster`` (``local``, ``ray``, ``ray://...``);
    ``preload``: modules local workers start with (the targets' modules). On an exception (Ctrl-C
    included) pending work is cancelled and the workers end."""
    if cluster not in ("local", "ray") and not cluster.startswith("ray://"):
        raise ConfigError(f"--cluster must be local, ray or ray://host:port, got {cluster!r}")
    if cluster == "local" and workers <= 1:
        yield None
        return
    pool = LocalPool(workers, preload) if cluster == "local" else RayPool(workers, cluster_address(cluster))
    try:
        yield pool
    except BaseException:
        pool.close(cancel=True)
        raise
    pool.close()


def map_ordered(
    pool: LocalPool | RayPool | None,
    fn: Callable,
    items: Sequence[tuple],
    names: Sequence[str],
    on_done: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """``[fn(*item) for item in items]`` over the pool (in this process when it is None), in
    submission order; ``on_done(i, result)`` as each finishes (a progress bar; output written as it
    comes). A failure names its item (``names[i]``, e.g. "samples 64-127 on lava") and cancels the
    rest; what finished before it has been handed to ``on_done``."""
    if pool is None:
        out = []
        for i, item in enumerate(items):
            out.append(_named(fn, item, names[i]))
            if on_done:
                on_done(i, out[-1])
        return out
    futures = [pool.submit(fn, *item) for item in items]
    index = {f: i for i, f in enumerate(futures)}
    pending = set(futures)
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        for f in sorted(done, key=index.get):
            i = index[f]
            try:
                result = f.result()
            except BaseException as e:  # noqa: BLE001 - every failure becomes one line naming the batch
                for g in pending:
                    g.cancel()
                raise _batch_error(e, names[i]) from None
            if on_done:
                on_done(i, result)
    return [f.result() for f in futures]


def _named(fn: Callable, item: tuple, name: str) -> Any:
    try:
        return fn(*item)
    except SnnDeployError as e:
        raise _prefixed(e, name) from None


def _prefixed(e: SnnDeployError, name: str) -> SnnDeployError:
    """The same error class, its message led by ``name`` (unless it already starts with it)."""
    if str(e).startswith(name):
        return e
    try:
        return type(e)(f"{name}: {e}")
    except TypeError:  # an error class with another signature: keep it as it is
        return e


def _batch_error(e: BaseException, name: str) -> BaseException:
    if isinstance(e, KeyboardInterrupt):
        return e
    if isinstance(e, BrokenProcessPool):
        return WorkerError(f"a worker process died (killed, or out of memory?) while the run had {name} and "
                           "others in flight; no report was written")  # fmt: skip
    cause = getattr(e, "cause", None)  # a Ray task error carries the task's own exception
    if cause is not None and isinstance(cause, BaseException):
        e = cause
    if isinstance(e, SnnDeployError):
        return _prefixed(e, name)
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return WorkerError(f"{name} failed: {type(e).__name__}: {first}")


def batch_name(start: int, stop: int, target: str) -> str:
    return f"samples {start}-{stop - 1} on {target}"
