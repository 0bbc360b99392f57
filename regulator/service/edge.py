"""The HTTP edge: body size and JSON depth limits before parsing, a JSON parser that
bounds numbers, and a last-resort guard that turns any exception into a counted 500.

Python's ``json`` recurses once per nesting level (1,000 levels raise RecursionError)
and turns ``1e400`` into infinity and 400 digits into an int that no float can hold;
:func:`parse_json` refuses all three, with a :data:`~regulator.errors.RejectReason`:

>>> parse_json(b'{"a": [1, 2.5]}', max_depth=8)
{'a': [1, 2.5]}
>>> parse_json(b"[" * 100 + b"]" * 100, max_depth=32)
Traceback (most recent call last):
...
regulator.errors.InputError: body nested deeper than 32 levels
>>> parse_json(b'{"y": 1e400}', max_depth=8).__class__
Traceback (most recent call last):
...
regulator.errors.InputError: number out of range: 1e400
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from regulator.errors import InputError, RejectReason

__all__ = ["MAX_INT_DIGITS", "BodyLimit", "ServerErrorGuard", "parse_json", "send_json"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_INT_DIGITS = 18
"""Integers with more digits are refused (they exceed every int and float field)."""
MAX_ABS_FLOAT = 1e300

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def _depth_exceeds(raw: bytes, limit: int) -> bool:
    """True if brackets outside strings nest deeper than ``limit`` (linear, no recursion)."""
    brackets = _STRING.sub(b'""', raw).translate(None, _NOT_BRACKET)
    depth = 0
    for b in brackets:
        if b in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise InputError(f"number out of range: {text[:24]}…", "out_of_range")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or abs(value) > MAX_ABS_FLOAT:
        raise InputError(f"number out of range: {text[:24]}", "out_of_range")
    return value


def _constant(text: str) -> Any:
    raise InputError(f"{text} is not a JSON number", "non_finite")


def parse_json(raw: bytes, max_depth: int) -> Any:
    """Parse a request body; InputError with reason ``too_deep``, ``out_of_range``,
    ``non_finite`` or ``malformed_body`` (not UTF-8, not JSON)."""
    if _depth_exceeds(raw, max_depth):
        raise InputError(f"body nested deeper than {max_depth} levels", "too_deep")
    try:
        return json.loads(
            raw, parse_int=_int, parse_float=_float, parse_constant=_constant
        )  # fmt: skip
    except InputError:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(f"body is not valid JSON: {exc}", "malformed_body") from None


async def send_json(
    send: Send, status: int, detail: Any, reason: str | None = None, close: bool = True
) -> None:
    """Answer with ``{"detail": ..., "reason": ...}`` from plain ASGI."""
    payload: dict[str, Any] = {"detail": detail}
    if reason is not None:
        payload["reason"] = reason
    body = json.dumps(payload).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with 413: at once from Content-Length,
    or while streaming a chunked body. The accepted body is buffered and replayed.
    ``on_reject(reason)`` counts each refusal."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        on_reject: Callable[[RejectReason], None] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject

    async def _refuse(self, send: Send, status: int, detail: str, reason: RejectReason) -> None:
        if self.on_reject is not None:
            self.on_reject(reason)
        await send_json(send, status, detail, reason)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await self._refuse(send, 400, "invalid Content-Length", "malformed_body")
                return
            if size > self.max_bytes:
                detail = f"body of {size} bytes exceeds {self.max_bytes}"
                await self._refuse(send, 413, detail, "too_large")
                return
        chunks: list[bytes] = []
        total = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                await self._refuse(send, 413, f"body exceeds {self.max_bytes} bytes", "too_large")
                return
            chunks.append(body)
            more = bool(message.get("more_body", False))
        buffered = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": buffered, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class ServerErrorGuard:
    """Outermost middleware: any exception below becomes a 500 with no detail (logged
    with its traceback), and every 5xx answered is counted by ``on_error``; a 404 or
    405 (a route or method outside the contract) by ``on_no_route``."""

    def __init__(
        self,
        app: ASGIApp,
        on_error: Callable[[], None] | None = None,
        on_no_route: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.on_error = on_error
        self.on_no_route = on_no_route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                if status >= 500 and self.on_error is not None:
                    self.on_error()
                elif status in (404, 405) and self.on_no_route is not None:
                    self.on_no_route()
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await send_json(watch, 500, "internal error (logged)")
