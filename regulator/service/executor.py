"""Where heavy jobs run: one :class:`Executor` interface (DESIGN §7), looked up by name.

``inline`` runs a job in the caller's thread (replay, tests); ``local`` on a thread
pool; ``process`` in one worker process, where adaptation's CPU work neither holds the
daemon's GIL nor competes with inference at the same priority (it runs at nice 5);
``ray`` as Ray tasks on a local instance or a cluster
(:mod:`regulator.service.executor_ray`; Ray itself is imported only when one is made).

:meth:`Executor.run` waits for a job at most ``timeout_s`` seconds; past it the job is
abandoned (the ``process`` executor kills its worker; a fresh one takes the next job)
and :class:`~regulator.errors.AdaptationError` is raised.

>>> ex = create_executor("inline")
>>> ex.run(pow, 6, 2, timeout_s=1.0)
36
>>> create_executor("dask")
Traceback (most recent call last):
...
regulator.errors.UnknownNameError: unknown executor 'dask'; valid: inline, local, process, ray
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.context
import os
import pickle
import signal
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from multiprocessing.connection import Connection
from typing import Any, ClassVar, TypeVar, cast

from regulator.errors import AdaptationError, ConfigError, UnknownNameError

__all__ = [
    "EXECUTORS",
    "Executor",
    "InlineExecutor",
    "LocalExecutor",
    "ProcessExecutor",
    "create_executor",
]

T = TypeVar("T")


class Executor(ABC):
    """Runs jobs somewhere. ``submit`` returns a Future; ``shutdown`` stops taking work."""

    name: ClassVar[str]

    @abstractmethod
    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]: ...

    @abstractmethod
    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None: ...

    def abandon(self) -> None:
        """Give up on running jobs (after a timeout); by default they run on unseen."""
        return None

    def run(self, fn: Callable[..., T], *args: Any, timeout_s: float) -> T:
        """``fn(*args)`` here or there, waited for at most ``timeout_s`` seconds."""
        fut = self.submit(fn, *args)
        try:
            return fut.result(timeout=timeout_s)
        except FutureTimeout:
            self.abandon()
            raise AdaptationError(f"job timed out after {timeout_s:.0f} s") from None


class InlineExecutor(Executor):
    """Runs each job at once, in the caller's thread (the timeout cannot interrupt it)."""

    name = "inline"

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        fut: Future[T] = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as err:
            fut.set_exception(err)
        return fut

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        return None


class LocalExecutor(Executor):
    """Runs jobs on a local thread pool of ``max_workers`` threads.

    >>> ex = LocalExecutor(max_workers=1)
    >>> ex.submit(lambda: 6 * 7).result(timeout=5)
    42
    >>> ex.shutdown()
    """

    name = "local"

    def __init__(self, max_workers: int = 1) -> None:
        if max_workers < 1:
            raise ConfigError(f"max_workers must be >= 1, got {max_workers}")
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="regulator-job")

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self._pool.submit(fn, *args)

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_pending)


def _worker_init(parent: int) -> None:
    from regulator.service.threads import pin_threads

    pin_threads()  # one core for the worker, one for serving
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*")  # Future/Deprecation
    # Ctrl-C in a terminal, and systemd's stop (SIGTERM to the whole cgroup), reach this
    # worker too: the daemon decides when it stops (it lets a running recalibration
    # finish within its timeout, then kills it), and it leaves if the daemon dies.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.nice(5)  # adaptation yields the CPU to inference
    # If the daemon dies (kill -9), nothing would tell this worker: leave with it.
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(1.0)


def _ping() -> int:
    return os.getpid()


def _serve(conn: Connection, parent: int) -> None:
    """The worker process: run each ``(fn, args)`` received, send back ``(True, value)``
    or ``(False, exception)``, until the pipe closes."""
    _worker_init(parent)
    while True:
        try:
            fn, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[bool, Any] = (True, fn(*args))
        except BaseException as err:  # the job's failure is the caller's to raise
            reply = (False, err)
        try:
            conn.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError) as err:  # an unpicklable value
            conn.send((False, RuntimeError(f"the job's result cannot be sent back: {err!r}")))


class ProcessExecutor(Executor):
    """One spawned worker process over a pipe; a timeout kills it and the next job starts
    another. Jobs run one at a time, in the order their callers get the worker.

    :meth:`run` sends the job and waits on the pipe in the caller's own thread, so no
    other thread of the daemon wakes while a candidate is built: with a
    ``ProcessPoolExecutor`` (a management thread and a queue feeder thread per job) the
    serving thread's p99 beside back-to-back jobs was 1.69x its p99 outside, over a
    pipe 1.46x (``bench/design/p99_floor.py``). :meth:`submit` (fan-out callers) runs
    :meth:`run` on a thread of its own.
    """

    name = "process"

    def __init__(self) -> None:
        self._job = threading.Lock()  # held while a job runs: one at a time
        self._state = threading.Lock()  # guards the worker's handles
        self._proc: multiprocessing.context.SpawnProcess | None = None
        self._conn: Connection | None = None
        self._closed = False

    def _ensure(self) -> Connection:
        with self._state:
            if self._closed:
                raise AdaptationError("the executor is shut down")
            if self._proc is None or not self._proc.is_alive() or self._conn is None:
                self._discard()
                ctx = multiprocessing.get_context("spawn")
                mine, theirs = ctx.Pipe()
                proc = ctx.Process(
                    target=_serve, args=(theirs, os.getpid()), name="regulator-worker", daemon=True
                )
                proc.start()
                theirs.close()
                self._proc, self._conn = proc, mine
            return self._conn

    def _discard(self) -> None:
        """Kill the worker (if any) and forget it; the next job starts a fresh one."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is not None and proc.is_alive():
            proc.kill()
        if conn is not None:
            conn.close()
        if proc is not None:
            proc.join(5.0)

    def warm(self, timeout_s: float = 120.0) -> int:
        """Start the worker now (imports take seconds), so the first job does not pay
        for them; returns its pid."""
        return int(self.run(_ping, timeout_s=timeout_s))

    def run(self, fn: Callable[..., T], *args: Any, timeout_s: float) -> T:
        forever = math.isinf(timeout_s)
        deadline = time.monotonic() + timeout_s
        if not self._job.acquire(timeout=-1 if forever else max(0.0, timeout_s)):
            raise AdaptationError(f"job timed out after {timeout_s:.0f} s (worker busy)")
        try:
            conn = self._ensure()
            try:
                conn.send((fn, args))
                if not conn.poll(None if forever else max(0.0, deadline - time.monotonic())):
                    self.abandon()
                    raise AdaptationError(f"job timed out after {timeout_s:.0f} s")
                ok, value = conn.recv()
            except (EOFError, OSError):  # killed, or died (shutdown, OOM, a crash)
                self.abandon()
                raise AdaptationError("the worker process died") from None
        finally:
            self._job.release()
        if ok:
            return cast(T, value)
        raise value

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        fut: Future[T] = Future()

        def job() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(self.run(fn, *args, timeout_s=float("inf")))
            except BaseException as err:
                fut.set_exception(err)

        threading.Thread(target=job, name="regulator-job", daemon=True).start()
        return fut

    def abandon(self) -> None:
        with self._state:
            self._discard()

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        """Stop the worker; without ``wait``, at once (killing a running job, whose
        caller gets AdaptationError); with it, after the running job."""
        if wait:
            with self._job, self._state:
                self._closed = True
                self._discard()
            return
        with self._state:
            self._closed = True
            self._discard()


EXECUTORS: dict[str, type[Executor]] = {
    cls.name: cls for cls in (InlineExecutor, LocalExecutor, ProcessExecutor)
}

# The ray executor registers itself here (it subclasses Executor, so it comes after).
import regulator.service.executor_ray  # noqa: E402, F401


def create_executor(name: str, **options: Any) -> Executor:
    """The executor registered under ``name``; UnknownNameError lists the valid ones."""
    try:
        cls = EXECUTORS[name]
    except KeyError:
        raise UnknownNameError("executor", name, EXECUTORS) from None
    return cls(**options)
