"""JSON-lines logging with the device id; secrets never reach the output."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from regulator.service.logging import configure_logging, unconfigure_logging

TOKEN = "tok-8f3a9c1d2e"


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    h = configure_logging("chip-3", level="DEBUG", stream=buf, secrets=lambda: [TOKEN, None])
    yield buf
    unconfigure_logging(h)
    logging.getLogger().setLevel(logging.WARNING)
    logging.captureWarnings(False)


def lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_one_json_object_per_line(out: io.StringIO) -> None:
    log = logging.getLogger("regulator.test")
    log.info("recalibrated %s in %.1f s", "v000002", 2.5, extra={"trigger": "drift"})
    log.debug("multi\nline")
    [a, b] = lines(out)
    assert a["msg"] == "recalibrated v000002 in 2.5 s"
    assert a["device"] == "chip-3" and a["level"] == "INFO" and a["logger"] == "regulator.test"
    assert a["trigger"] == "drift" and isinstance(a["ts"], float)
    assert b["msg"] == "multi\nline"


def test_exceptions_included(out: io.StringIO) -> None:
    try:
        raise RuntimeError(f"bad token {TOKEN}")
    except RuntimeError:
        logging.getLogger("x").exception("job failed")
    [rec] = lines(out)
    assert "RuntimeError" in str(rec["exc"])
    assert TOKEN not in out.getvalue()


def test_secrets_redacted(out: io.StringIO) -> None:
    log = logging.getLogger("regulator.api")
    log.warning("got %s", TOKEN)
    log.warning("headers: Authorization: Bearer abc.def-123 from 127.0.0.1")
    log.warning("raw bearer xyz987654 seen")
    log.warning(
        "request",
        extra={
            "headers": {"authorization": "Bearer q", "host": "h"},
            "token": "anything",
            "note": f"t={TOKEN}",
        },
    )
    text = out.getvalue()
    assert TOKEN not in text and "abc.def-123" not in text and "xyz987654" not in text
    recs = lines(out)
    assert recs[1]["msg"] == "headers: Authorization: Bearer [REDACTED] from 127.0.0.1"
    assert recs[3]["headers"] == {"authorization": "[REDACTED]", "host": "h"}
    assert recs[3]["token"] == "[REDACTED]" and recs[3]["note"] == "t=[REDACTED]"


def test_reconfigure_does_not_duplicate() -> None:
    a, b = io.StringIO(), io.StringIO()
    h1 = configure_logging("d", stream=a)
    h2 = configure_logging("d", stream=b)
    try:
        logging.getLogger("y").warning("once")
        assert a.getvalue() == "" and len(b.getvalue().splitlines()) == 1
    finally:
        unconfigure_logging(h1)
        unconfigure_logging(h2)
        logging.captureWarnings(False)
