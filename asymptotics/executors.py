"""Executors for sweeps: in-process, a local process pool, or a Dask distributed cluster.

A sweep is a list of :class:`Task`: a top-level (picklable) function applied to a plain dict
of parameters that holds everything the task needs, its seed included, and that returns
plain rows.  The numbers therefore do not depend on which executor runs a task, on which
worker or in which order.  Every executor offers one call,
``map_unordered(fn, tasks, on_partial=None)``, that yields ``(task.key, result)`` as tasks
finish.

A task may report rows before it finishes with :func:`report_partial` (the curve chains do,
one row per α).  The serial executor and the process pool pass them to ``on_partial``
as they come; on a Dask cluster they are dropped and the task's rows arrive with its result.

Lost workers: the process pool is rebuilt and the unfinished tasks resubmitted (at most
``retries`` times); on Dask the scheduler reruns the lost worker's tasks and ``retries``
covers tasks that raised.  Dask is imported only by :class:`DaskExecutor`.
"""

from __future__ import annotations

import contextvars
import importlib
import itertools
import multiprocessing
import os
import queue as queue_mod
import re
import signal
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

KINDS = ("serial", "process", "dask")
ADDRESS_RE = re.compile(r"^(tcp|tls)://[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


class ExecutorError(Exception):
    """Bad executor options, or no cluster to connect to: a one-line message."""


@dataclass(frozen=True)
class Task:
    """One unit of a sweep: ``key`` is unique in the sweep and stable across runs."""

    key: str
    params: dict = field(default_factory=dict)


_SINK: contextvars.ContextVar[Callable[[Any], None] | None] = contextvars.ContextVar(
    "smi_partial_sink", default=None
)


def report_partial(item: Any) -> None:
    """Report one finished piece of the running task (a row) to the parent, if it listens."""
    sink = _SINK.get()
    if sink is not None:
        sink(item)


def _call_with_sink(fn, params, sink):
    token = _SINK.set(sink)
    try:
        return fn(params)
    finally:
        _SINK.reset(token)


class Executor:
    """Common interface; use as a context manager so workers and connections are closed."""

    kind = "serial"
    workers = 1

    def map_unordered(
        self,
        fn: Callable[[dict], Any],
        tasks: Sequence[Task],
        on_partial: Callable[[str, int, Any], None] | None = None,
    ) -> Iterator[tuple[str, Any]]:
        """Yield ``(key, fn(task.params))`` for every task as it finishes.  ``on_partial``
        gets ``(key, index, item)`` for the items a task reports while it runs."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind

    def close(self) -> None:
        """Release workers and connections."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SerialExecutor(Executor):
    """Tasks in order, in this process (partial items reach ``on_partial`` at once)."""

    def map_unordered(self, fn, tasks, on_partial=None):
        for task in tasks:
            sink = None
            if on_partial is not None:
                counter = itertools.count()

                def sink(item, key=task.key, counter=counter):
                    on_partial(key, next(counter), item)

            yield task.key, _call_with_sink(fn, task.params, sink)


# ----------------------------------------------------------------------- process pool

_WORKER_QUEUE = None


def _worker_init(q, threads: int) -> None:
    global _WORKER_QUEUE
    _WORKER_QUEUE = q
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if threads > 0:
        import numba  # in the workers only: the parent need not load it to run a pool

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def _process_call(fn, key, params, listen: bool):
    sink = None
    if listen and _WORKER_QUEUE is not None:
        counter = itertools.count()

        def sink(item):
            _WORKER_QUEUE.put((key, next(counter), item))

    return _call_with_sink(fn, params, sink)


class ProcessExecutor(Executor):
    """A local pool of ``workers`` spawned processes (numba threads split between them).

    A pool broken by a lost worker is rebuilt and the unfinished tasks are resubmitted, at
    most ``retries`` times; an exception raised by a task is raised here.
    """

    kind = "process"

    def __init__(self, workers: int | None = None, retries: int = 2):
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.retries = retries
        self._ctx = multiprocessing.get_context("spawn")
        self._pool: ProcessPoolExecutor | None = None
        self._queue = None

    def describe(self) -> str:
        return f"process pool ({self.workers} workers)"

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._queue = self._ctx.Queue()
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=self._ctx, initializer=_worker_init,
                initargs=(self._queue, threads),
            )
        return self._pool

    def _drain(self, on_partial, finished: set) -> None:
        if on_partial is None or self._queue is None:
            return
        while True:
            try:
                key, index, item = self._queue.get_nowait()
            except queue_mod.Empty:
                return
            if key not in finished:
                on_partial(key, index, item)

    def map_unordered(self, fn, tasks, on_partial=None):
        left = {t.key: t for t in tasks}
        finished: set = set()
        restarts = 0
        while left:
            pool = self._get_pool()
            futures = {pool.submit(_process_call, fn, t.key, t.params, on_partial is not None):
                       t.key for t in left.values()}
            try:
                while futures:
                    done, _ = wait(futures, timeout=0.1, return_when=FIRST_COMPLETED)
                    self._drain(on_partial, finished)
                    for fut in done:
                        key = futures.pop(fut)
                        result = fut.result()
                        self._drain(on_partial, finished)
                        finished.add(key)
                        del left[key]
                        yield key, result
            except BrokenProcessPool:
                restarts += 1
                self._shutdown()
                if restarts > self.retries:
                    raise
            finally:
                for fut in futures:
                    fut.cancel()

    def _shutdown(self, kill: bool = False) -> None:
        if self._pool is not None:
            if kill:  # interrupted: running tasks are not waited for
                for proc in list(getattr(self._pool, "_processes", {}).values()):
                    proc.terminate()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._queue is not None:
            self._queue.close()
            self._queue = None

    def close(self) -> None:
        self._shutdown()

    def __exit__(self, exc_type, *exc) -> None:
        self._shutdown(kill=exc_type is not None and issubclass(exc_type, KeyboardInterrupt))


# ----------------------------------------------------------------------------- dask


def import_distributed():
    """``dask.distributed``, or an :class:`ExecutorError` saying how to install it."""
    try:
        return importlib.import_module("dask.distributed")
    except ImportError:
        raise ExecutorError(
            'the Dask executor needs dask.distributed: pip install "smi-asymptotics[dask]"'
        ) from None


class DaskExecutor(Executor):
    """Tasks on a Dask distributed cluster (``address`` tcp://HOST:PORT, a scheduler file,
    or an existing ``client``).  Each task gets a unique key, ``pure=False`` and
    ``retries``; results are gathered as they complete, all within ``timeout`` seconds
    (None: no limit)."""

    kind = "dask"

    def __init__(self, address: str | None = None, scheduler_file: str | None = None,
                 client=None, retries: int = 3, connect_timeout: float = 30.0,
                 timeout: float | None = None):
        distributed = import_distributed()
        self._distributed = distributed
        self._own = client is None
        if client is None:
            try:
                if scheduler_file is not None:
                    client = distributed.Client(scheduler_file=scheduler_file,
                                                timeout=connect_timeout)
                else:
                    client = distributed.Client(address, timeout=connect_timeout)
            except (OSError, TimeoutError, ValueError) as exc:
                where = address or scheduler_file
                raise ExecutorError(f"cannot connect to the Dask scheduler {where}: "
                                    f"{str(exc).splitlines()[0] if str(exc) else exc!r}") \
                    from None
        self.client = client
        self.retries = retries
        self.timeout = timeout
        workers = client.scheduler_info().get("workers", {})
        self.workers = max(1, len(workers))

    def describe(self) -> str:
        return f"dask cluster {self.client.scheduler.address} ({self.workers} workers)"

    def map_unordered(self, fn, tasks, on_partial=None):
        token = uuid.uuid4().hex[:10]
        name = getattr(fn, "__name__", "task").replace("_", "-")
        futures = {}
        for i, t in enumerate(tasks):
            fut = self.client.submit(fn, t.params, key=f"smi-{name}-{token}-{i}", pure=False,
                                     retries=self.retries)
            futures[fut] = t.key
        try:
            for fut in self._distributed.as_completed(list(futures), timeout=self.timeout):
                yield futures[fut], fut.result(timeout=self.timeout)
        finally:
            for fut in futures:
                if not fut.done():
                    fut.cancel()

    def close(self) -> None:
        if self._own:
            self.client.close()


def noop_task(params: dict) -> dict:
    """A task that does nothing (returns its parameters): measures the overhead per task."""
    return params


# -------------------------------------------------------------------------- factory


def check_options(workers: int | None = None, cluster: str | None = None,
                  scheduler_file: str | None = None) -> str:
    """Validate executor options before any work; the executor kind, or ExecutorError
    naming the option (``--workers``, ``--cluster``, ``--scheduler-file``)."""
    if cluster is not None and scheduler_file is not None:
        raise ExecutorError("--cluster and --scheduler-file: give one of them")
    if cluster is not None:
        if not ADDRESS_RE.match(cluster):
            raise ExecutorError(f"--cluster: expected tcp://HOST:PORT, got {cluster!r}")
    if scheduler_file is not None and not os.path.isfile(scheduler_file):
        raise ExecutorError(f"--scheduler-file: no such file {scheduler_file!r}")
    if workers is not None and workers < 1:
        raise ExecutorError(f"--workers: must be >= 1, got {workers}")
    if cluster is not None or scheduler_file is not None:
        if workers is not None:
            raise ExecutorError("--workers: the cluster's workers are used with "
                                f"{'--cluster' if cluster else '--scheduler-file'}")
        import_distributed()
        return "dask"
    return "process" if workers is not None and workers > 1 else "serial"


def make_executor(kind: str | None = None, workers: int | None = None,
                  cluster: str | None = None, scheduler_file: str | None = None,
                  **options) -> Executor:
    """The executor for ``kind`` (``serial``, ``process`` or ``dask``); by default the one
    the options call for (:func:`check_options`)."""
    kind = kind or check_options(workers, cluster, scheduler_file)
    if kind == "serial":
        return SerialExecutor()
    if kind == "process":
        return ProcessExecutor(workers, **options)
    if kind == "dask":
        return DaskExecutor(cluster, scheduler_file, **options)
    raise ExecutorError(f"unknown executor {kind!r}; choose from {', '.join(KINDS)}")


def default_workers(n_tasks: int) -> int:
    """Workers of the default local pool: one per core, no more than there are tasks."""
    return max(1, min(n_tasks, os.cpu_count() or 1))


def run_ordered(executor: Executor, fn, tasks: Sequence[Task],
                on_partial=None) -> Iterator[tuple[Task, Any]]:
    """Yield ``(task, result)`` in the order of ``tasks`` as soon as each prefix is done."""
    position = {t.key: i for i, t in enumerate(tasks)}
    waiting: dict[int, Any] = {}
    nxt = 0
    for key, result in executor.map_unordered(fn, tasks, on_partial):
        waiting[position[key]] = result
        while nxt in waiting:
            yield tasks[nxt], waiting.pop(nxt)
            nxt += 1


__all__ = ["Task", "Executor", "SerialExecutor", "ProcessExecutor", "DaskExecutor",
           "ExecutorError", "make_executor", "check_options", "report_partial",
           "run_ordered", "default_workers", "import_distributed", "noop_task"]

