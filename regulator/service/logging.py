"""Logs on stderr, one event a line, as JSON or readable text, with secrets redacted.

``json`` (the default): one object a line with ``ts`` (ISO 8601, UTC, milliseconds),
``level``, ``logger``, ``msg``, the ``device`` id, any ``extra={...}`` fields, and
``exc`` with the traceback if there is one. ``text``: ``TIME LEVEL LOGGER [device]
message key=value …``. Neither carries ANSI escapes (uvicorn's ``color_message`` is
dropped, escapes in messages are stripped). When stderr is the journal
(``JOURNAL_STREAM`` names its device and inode, as systemd sets it), every line starts
with its syslog priority ``<N>`` so that journald files it at that level.
:class:`RedactFilter` replaces the API token's value wherever it appears, and any
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
>>> buf = io.StringIO()
>>> h = configure_logging("chip0", stream=buf, fmt="text")
>>> logging.getLogger("regulator.demo").info("swapped in %s", "v000002", extra={"job": "recal"})
>>> buf.getvalue().rstrip().split(" ", 1)[1]
'INFO regulator.demo [chip0] swapped in v000002 job=recal'
>>> unconfigure_logging(h)
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import IO, Any, Literal

__all__ = [
    "DaemonHandler",
    "JsonFormatter",
    "LogFormat",
    "RedactFilter",
    "TextFormatter",
    "configure_logging",
    "is_journal",
    "unconfigure_logging",
]

REDACTED = "[REDACTED]"
LogFormat = Literal["json", "text"]

# attributes every LogRecord has; anything else came in through ``extra``; uvicorn's
# ``color_message`` is the message again with ANSI colours, never wanted in a log
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName", "color_message"}
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# syslog priorities (sd-daemon(3) prefixes) of the logging levels
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
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


def iso_time(created: float) -> str:
    """``created`` (seconds since the epoch) as ISO 8601 UTC with milliseconds."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def priority(levelno: int) -> int:
    """The syslog priority (0 emerg .. 7 debug) of a logging level number."""
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


class _Formatter(logging.Formatter):
    """What both formats share: the device, extra fields, the traceback, the prefix."""

    def __init__(self, device: str, journal: bool = False) -> None:
        super().__init__()
        self.device = device
        self.journal = journal

    def _extras(self, record: logging.LogRecord) -> dict[str, Any]:
        # Names with a leading underscore are other libraries' private attributes (Ray's
        # record factory adds ``_ray_timestamp_ns`` to every record once it is imported),
        # never fields a caller passed in ``extra``.
        return {
            k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")
        }

    def _exc(self, record: logging.LogRecord) -> str | None:
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        return _ANSI.sub("", record.exc_text) if record.exc_text else None

    def _line(self, record: logging.LogRecord, text: str) -> str:
        return f"<{priority(record.levelno)}>{text}" if self.journal else text


class JsonFormatter(_Formatter):
    """One JSON object per record; extra fields that are not JSON become strings."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": _ANSI.sub("", record.getMessage()),
            "device": self.device,
        }
        for key, value in self._extras(record).items():
            out.setdefault(key, value)
        exc = self._exc(record)
        if exc:
            out["exc"] = exc
        return self._line(record, json.dumps(out, default=str, ensure_ascii=False))


def _text_value(value: Any) -> str:
    """A bare word stays bare; anything else (spaces, quotes, ``=``, non-strings) as JSON."""
    if isinstance(value, str) and value and not any(c.isspace() or c in '"=' for c in value):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


class TextFormatter(_Formatter):
    """``TIME LEVEL LOGGER [device] message key=value …``; a traceback follows indented."""

    def format(self, record: logging.LogRecord) -> str:
        extras = "".join(f" {k}={_text_value(v)}" for k, v in self._extras(record).items())
        text = (
            f"{iso_time(record.created)} {record.levelname} {record.name} [{self.device}] "
            f"{_ANSI.sub('', record.getMessage())}{extras}"
        )
        exc = self._exc(record)
        if exc:
            text += "\n" + "\n".join("    " + line for line in exc.splitlines())
        return self._line(record, text)


def is_journal(stream: IO[str]) -> bool:
    """True when ``stream`` is the journal: ``JOURNAL_STREAM`` (``DEVICE:INODE``, set by
    systemd for a unit whose output goes to journald) names the file it writes to."""
    want = os.environ.get("JOURNAL_STREAM", "")
    if not want:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


class DaemonHandler(logging.StreamHandler[IO[str]]):
    """The handler :func:`configure_logging` installs (so that a second call replaces
    it rather than adding another)."""


def configure_logging(
    device: str,
    level: int | str = "INFO",
    stream: IO[str] | None = None,
    secrets: Callable[[], Iterable[str | None]] = lambda: (),
    fmt: LogFormat = "json",
) -> logging.Handler:
    """Send every log record (ours, uvicorn's, APScheduler's) to ``stream`` (stderr by
    default), one line each, as ``fmt`` (``json`` or ``text``), with journald priority
    prefixes when the stream is the journal. Replaces a handler installed earlier by this
    function, so calling it again (reload) does not duplicate lines. Returns the handler.
    """
    if fmt not in ("json", "text"):
        raise ValueError(f"unknown log format {fmt!r}; valid: json, text")
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, DaemonHandler):
            unconfigure_logging(h)
        else:
            # The daemon owns its process's log output. Norse 1.1 calls basicConfig at
            # import, which would print every record a second time, unstructured.
            root.removeHandler(h)
    out = sys.stderr if stream is None else stream
    handler = DaemonHandler(out)
    handler.addFilter(RedactFilter(secrets))
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    handler.setFormatter(formatter(device, journal=is_journal(out)))
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
