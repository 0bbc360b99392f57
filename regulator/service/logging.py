"""JSON-lines logs on stderr, one event a line, with secrets redacted.

Each line holds ``ts`` (seconds since the epoch), ``level``, ``logger``, ``msg``, the
``device`` id, any ``extra={...}`` fields, and ``exc`` with the traceback if there is
one. :class:`RedactFilter` replaces the API token's value wherever it appears, and any
``Authorization``/bearer credential, in the message and the extra fields.

>>> import io, logging, json
>>> buf = io.StringIO()
>>> h = configure_logging("chip0", stream=buf, secrets=lambda: ["s3cr3t-token"])
>>> logging.getLogger("regulator.demo").warning("token is %s", "s3cr3t-token",
...                                            extra={"job": "recal"})
>>> line = json.loads(buf.getvalue())
>>> line["msg"], line["device"], line["job"], line["level"]
('token is [REDACTED]', 'chip0', 'recal', 'WARNING')
>>> unconfigure_logging(h)
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Iterable
from typing import IO, Any

__all__ = ["JsonFormatter", "RedactFilter", "configure_logging", "unconfigure_logging"]

REDACTED = "[REDACTED]"

# attributes every LogRecord has; anything else came in through ``extra``
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)
_SENSITIVE_KEY = re.compile(r"(?i)authorization|token|secret|password|api[_-]?key|cookie")
_AUTH_HEADER = re.compile(
    r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?:(bearer|basic)\s+)?[^\s\"',;}\]]+"
)
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
_MIN_SECRET = 4  # shorter "secrets" would shred ordinary text


class RedactFilter(logging.Filter):
    """Rewrites records so that secrets never reach a handler.

    ``secrets`` is called for every record (the token may change on reload); values
    shorter than 4 characters are ignored.
    """

    def __init__(self, secrets: Callable[[], Iterable[str | None]] = lambda: ()) -> None:
        super().__init__()
        self._secrets = secrets

    def redact(self, text: str) -> str:
        try:
            values = [s for s in self._secrets() if s and len(s) >= _MIN_SECRET]
        except Exception:  # a failing provider must not lose the log line
            values = []
        for value in sorted(values, key=len, reverse=True):
            text = text.replace(value, REDACTED)
        text = _AUTH_HEADER.sub(
            lambda m: m.group(1) + (m.group(2) + " " if m.group(2) else "") + REDACTED, text
        )
        return _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)

    def _value(self, key: str, value: Any) -> Any:
        if _SENSITIVE_KEY.search(key) and value is not None:
            return REDACTED
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self._value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._value("", v) for v in value]
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        for key in [k for k in vars(record) if k not in _STANDARD]:
            setattr(record, key, self._value(key, getattr(record, key)))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record; extra fields that are not JSON become strings."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device = device

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "device": self.device,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(
    device: str,
    level: int | str = "INFO",
    stream: IO[str] | None = None,
    secrets: Callable[[], Iterable[str | None]] = lambda: (),
) -> logging.Handler:
    """Send every log record (ours, uvicorn's, APScheduler's) as JSON lines to
    ``stream`` (stderr by default). Replaces a handler installed earlier by this
    function, so calling it again (reload) does not duplicate lines. Returns the handler.
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_regulator", False):
            unconfigure_logging(h)
        else:
            # The daemon owns its process's log output. Norse 1.1 calls basicConfig at
            # import, which would print every record a second time, unstructured.
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler._regulator = True  # type: ignore[attr-defined]
    handler.addFilter(RedactFilter(secrets))
    handler.setFormatter(JsonFormatter(device))
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    logging.captureWarnings(True)
    return handler


def unconfigure_logging(handler: logging.Handler) -> None:
    """Remove a handler installed by :func:`configure_logging` (tests, shutdown)."""
    logging.getLogger().removeHandler(handler)
    handler.close()
    logging.captureWarnings(False)
