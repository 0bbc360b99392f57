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

import multiprocessing
import multiprocessing.context
import os
import signal
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any, ClassVar, TypeVar

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
        except BrokenProcessPool:
            self.abandon()
            raise AdaptationError("the worker process died") from None


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
    import torch

    torch.set_num_threads(1)
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


class _KeepingSpawn(multiprocessing.context.SpawnContext):
    """The spawn context, keeping the processes it starts (the pool's worker), so that
    a timeout or a stop can kill them at once, even before they have started up."""

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[multiprocessing.context.SpawnProcess] = []

    def Process(  # type: ignore[override]  # the pool calls it as the context's class
        self, *args: Any, **kwargs: Any
    ) -> multiprocessing.context.SpawnProcess:
        proc = multiprocessing.context.SpawnProcess(*args, **kwargs)
        self.processes.append(proc)
        return proc


class ProcessExecutor(Executor):
    """One spawned worker process; a timeout kills it and the next job starts another."""

    name = "process"

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._ctx: _KeepingSpawn | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._ctx = _KeepingSpawn()
                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=self._ctx,
                    initializer=_worker_init,
                    initargs=(os.getpid(),),
                )
            return self._pool

    def warm(self, timeout_s: float = 120.0) -> int:
        """Start the worker now (imports take seconds), so the first job does not pay
        for them; returns its pid."""
        return int(self._ensure().submit(_ping).result(timeout=timeout_s))

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self._ensure().submit(fn, *args)

    def abandon(self) -> None:
        self.shutdown(cancel_pending=True, wait=False)

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        """Stop the worker; without ``wait``, at once (killing a running job)."""
        with self._lock:
            pool, self._pool = self._pool, None
            ctx, self._ctx = self._ctx, None
        if pool is None:
            return
        if not wait and ctx is not None:
            for proc in ctx.processes:  # still importing, or running a job
                if proc.is_alive():
                    proc.kill()
        pool.shutdown(wait=wait, cancel_futures=cancel_pending)


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
