"""A small Python client for the daemon's HTTP API (httpx, bearer token, typed errors).

Reading routes need no token; mutating ones send ``Authorization: Bearer <token>``,
taken from ``token`` or else the ``REGULATOR_TOKEN`` environment variable. Every
answer that is not a success raises one of :mod:`regulator.errors`' client errors::

    ClientError(RegulatorError)
    ├── DaemonUnreachableError(ClientError, ConnectionError)  no answer (refused, timeout)
    └── ApiError(ClientError, RuntimeError)                   an HTTP error status
        ├── AuthError(ApiError, PermissionError)              401, or 503: no token set
        ├── RequestRejectedError(ApiError, ValueError)        400, 413, 422: a bad body
        └── ConflictError(ApiError)                           409: the runtime refused

Example (with a daemon on 127.0.0.1:9890 whose source is ``http``)::

    from regulator.client import Client

    with Client("http://127.0.0.1:9890", token="...") as c:
        pushed = c.push_samples([[0.1, 0.2, 0.3]], ids=["s1"])   # one sample, [C] values
        c.label("s1", 2)                                          # its class, later
        print(c.status()["monitors"]["accuracy"])

Nothing here raises on a 2xx answer; a 200 from ``/v1/samples`` may still list
per-sample refusals in :attr:`PushResult.rejected`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from regulator.errors import (
    ApiError,
    AuthError,
    ConflictError,
    DaemonUnreachableError,
    RequestRejectedError,
)

__all__ = ["Client", "FeedbackResult", "PushResult"]

DEFAULT_URL = "http://127.0.0.1:9890"
Values = Sequence[float] | Sequence[Sequence[float]]
"""One sample's input: ``[C]`` values, or ``[C][L]`` channels by time steps."""


@dataclass(frozen=True)
class PushResult:
    """What ``POST /v1/samples`` answered (``SamplesResponse``): the ids of the accepted
    samples, the refused ones as ``{"index", "reason", ...}`` (index into what was
    sent), the served ones' ``predictions`` (``{"sample_id", "prediction", "outputs",
    "ood_p_value", "version"}``, in order), the ids not served within the wait, and the
    recalibration phase after serving."""

    accepted: int
    ids: list[str]
    rejected: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    recalibration: str = "idle"


@dataclass(frozen=True)
class FeedbackResult:
    """How many labels ``POST /v1/feedback`` accepted, and the refused ones as
    ``{"index", "reason", ...}`` (index into what was sent)."""

    accepted: int
    rejected: list[dict[str, Any]] = field(default_factory=list)


def _error(resp: httpx.Response) -> ApiError:
    """The typed error for an error answer, carrying its status and ``detail``."""
    try:
        detail: Any = resp.json().get("detail", resp.text)
    except ValueError:
        detail = resp.text
    status = resp.status_code
    where = f"{resp.request.method} {resp.request.url.path}"
    cls: type[ApiError]
    if status == 401 or status == 403 or (status == 503 and "token" in str(detail)):
        cls = AuthError
    elif status in (400, 413, 422):
        cls = RequestRejectedError
    elif status == 409:
        cls = ConflictError
    else:
        cls = ApiError
    return cls(f"{where}: {status}: {detail}", status=status, detail=detail)


class Client:
    """The daemon at ``base_url``; ``timeout`` in seconds per request.

    ``transport`` is handed to :class:`httpx.Client` (tests can pass an
    ``httpx.MockTransport``; everything else goes over real HTTP).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token if token is not None else os.environ.get("REGULATOR_TOKEN")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    # -- plumbing ----------------------------------------------------------------------------

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _request(
        self, method: str, path: str, body: Any = None, auth: bool = False
    ) -> httpx.Response:
        headers = {}
        if auth and self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            resp = self._http.request(method, path, json=body, headers=headers)
        except httpx.TransportError as err:
            raise DaemonUnreachableError(f"{method} {self.base_url}{path}: {err}") from err
        if resp.is_error:
            raise _error(resp)
        return resp

    def _json(self, method: str, path: str, body: Any = None, auth: bool = False) -> Any:
        return self._request(method, path, body, auth).json()

    # -- reading -----------------------------------------------------------------------------

    def _probe(self, path: str) -> bool:
        try:
            self._request("GET", path)
        except ApiError as err:
            if err.status == 503:
                return False
            raise
        return True

    def healthy(self) -> bool:
        """``/healthz``: the main loop ticked recently (False on 503)."""
        return self._probe("/healthz")

    def ready(self) -> bool:
        """``/readyz``: model loaded, policy valid, scheduler running (False on 503)."""
        return self._probe("/readyz")

    def status(self) -> dict[str, Any]:
        """``/v1/status``: served version, monitors, drift explanation, recalibrations."""
        out: dict[str, Any] = self._json("GET", "/v1/status")
        return out

    def models(self) -> list[dict[str, Any]]:
        """``/v1/models``: every registry version with its lineage, newest last."""
        out: list[dict[str, Any]] = self._json("GET", "/v1/models")["versions"]
        return out

    def metrics(self) -> str:
        """``/metrics``: the Prometheus exposition text."""
        return self._request("GET", "/metrics").text

    # -- acting (bearer token) -----------------------------------------------------------

    def push_samples(
        self,
        xs: Sequence[Values],
        ids: Sequence[str] | None = None,
        t: Sequence[float] | None = None,
        wait: bool = True,
    ) -> PushResult:
        """Send samples for inference (the daemon's source must be ``http``).

        ``xs[i]`` is one sample (``[C]`` or ``[C][L]``); ``ids`` name them for later
        labels (the daemon makes ids otherwise, returned in :attr:`PushResult.ids`);
        ``t`` are their times in seconds. With ``wait`` the answer comes once they are
        served, with their predictions; without, once they are queued. Raises
        :class:`RequestRejectedError` when every sample is refused."""
        samples = []
        for i, x in enumerate(xs):
            item: dict[str, Any] = {"x": _plain(x)}
            if ids is not None:
                item["sample_id"] = ids[i]
            if t is not None:
                item["t"] = float(t[i])
            samples.append(item)
        body: dict[str, Any] = {"samples": samples}
        if not wait:
            body["wait"] = False
        out = self._json("POST", "/v1/samples", body, auth=True)
        return PushResult(
            int(out["accepted"]),
            list(out["ids"]),
            list(out.get("rejected", [])),
            list(out.get("predictions", [])),
            list(out.get("pending", [])),
            str(out.get("recalibration", "idle")),
        )

    def feedback(self, items: Sequence[Mapping[str, Any]]) -> FeedbackResult:
        """Send labels: ``{"sample_id", "y"}`` for an earlier sample, or ``{"x", "y"}``
        for a labelled calibration sample (``y``: class index or regression target).
        Raises :class:`RequestRejectedError` when no item is accepted."""
        body = {"items": [{k: _plain(v) for k, v in it.items()} for it in items]}
        out = self._json("POST", "/v1/feedback", body, auth=True)
        return FeedbackResult(int(out["accepted"]), list(out.get("rejected") or []))

    def label(self, sample_id: str, y: int | float) -> FeedbackResult:
        """The label of one earlier sample."""
        return self.feedback([{"sample_id": sample_id, "y": y}])

    def recalibrate(self, reason: str | None = None) -> dict[str, Any]:
        """Schedule a recalibration now (idempotent while one is pending)."""
        body = {} if reason is None else {"reason": reason}
        out: dict[str, Any] = self._json("POST", "/v1/recalibrate", body, auth=True)
        return out

    def rollback(self) -> dict[str, Any]:
        """Serve the previous good version."""
        out: dict[str, Any] = self._json("POST", "/v1/rollback", {}, auth=True)
        return out


def _plain(value: Any) -> Any:
    """numpy arrays and scalars as plain JSON lists and numbers."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
