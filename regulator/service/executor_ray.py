"""The ``ray`` executor: jobs as Ray tasks, on a local Ray instance or an existing cluster.

Registered in :data:`regulator.service.executor.EXECUTORS` beside ``inline``, ``local``
and ``process``; callers see the same :class:`~regulator.service.executor.Executor`
interface. A job is a pure function of its arguments (every draw seeded by them) and
runs with one torch thread, so the same job gives the same result here as inline.

Ray is an optional dependency (the ``fleet`` extra): importing this module does not
import it; the first :class:`RayExecutor` does. :func:`connect` starts a loopback-only
local instance (no dashboard) unless ``address`` names a cluster (``"auto"``,
``"ray://host:10001"``, ``"host:6379"``) or Ray is already initialised in this process
(inside a Ray actor, or a caller that initialised it itself), which it then leaves
running.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, ClassVar, TypeVar

from regulator.errors import AdaptationError, ConfigError
from regulator.service.executor import EXECUTORS, Executor

__all__ = ["RayExecutor", "connect"]

log = logging.getLogger(__name__)

T = TypeVar("T")

LOOPBACK = "127.0.0.1"


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Make sure this process is connected to Ray; True if this call started it (and
    so the caller should ``ray.shutdown()`` it when done).

    Without ``address``, a local instance bound to loopback with ``num_cpus`` CPUs
    (default: all of them) and no dashboard.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "the ray executor needs Ray: pip install 'regulator[fleet]' (ray>=2.40)"
        ) from None
    if ray.is_initialized():
        return False
    if address is None:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            _node_ip_address=LOOPBACK,
            log_to_driver=False,
            configure_logging=False,
        )
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    return True


def _call(fn: Callable[..., T], *args: Any) -> T:
    """Runs in a Ray worker: one torch, BLAS and OpenMP thread (as the daemon's worker),
    Norse quiet."""
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*")  # Future/Deprecation
    from regulator.service.threads import pin_threads

    pin_threads()
    return fn(*args)


class RayExecutor(Executor):
    """Each job a Ray task of ``cpus_per_job`` CPUs (retried ``max_retries`` times if its
    worker dies); a timeout cancels it (force-kills the worker).

    ``address`` and ``num_cpus`` are :func:`connect`'s.
    """

    name: ClassVar[str] = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        cpus_per_job: float = 1.0,
        max_retries: int = 2,
    ) -> None:
        if cpus_per_job < 0:
            raise ConfigError(f"cpus_per_job must be >= 0, got {cpus_per_job}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        self._owns = connect(address, num_cpus)
        import ray

        self._ray = ray
        self._remote = ray.remote(_call).options(num_cpus=cpus_per_job, max_retries=max_retries)
        self._lock = threading.Lock()
        self._running: set[Any] = set()  # ObjectRefs not yet done

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        ref = self._remote.remote(fn, *args)
        with self._lock:
            self._running.add(ref)
        fut: Future[T] = ref.future()
        fut.add_done_callback(lambda _f: self._forget(ref))
        return fut

    def _forget(self, ref: Any) -> None:
        with self._lock:
            self._running.discard(ref)

    def run(self, fn: Callable[..., T], *args: Any, timeout_s: float) -> T:
        """As :meth:`Executor.run`; a job whose worker died (past its retries) or that
        Ray could not run raises :class:`AdaptationError`, the job's own exception is
        raised as itself."""
        from ray.exceptions import RayError, RayTaskError

        try:
            return super().run(fn, *args, timeout_s=timeout_s)
        except RayTaskError as err:
            raise err.as_instanceof_cause() from None
        except RayError as err:
            raise AdaptationError(f"the Ray task failed: {type(err).__name__}: {err}") from None

    def abandon(self) -> None:
        with self._lock:
            refs, self._running = list(self._running), set()
        for ref in refs:
            try:
                self._ray.cancel(ref, force=True)
            except Exception as err:  # a task that finished meanwhile
                log.debug("cancel: %s", err)

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        """Cancel running jobs if asked; disconnect from Ray if this executor started it."""
        if cancel_pending:
            self.abandon()
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False


EXECUTORS[RayExecutor.name] = RayExecutor
