"""Logging as JSON lines or text with the device id; secrets never reach the output;
journald priorities when stderr is the journal."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from regulator.service.logging import configure_logging, unconfigure_logging

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

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
    assert a["trigger"] == "drift" and ISO.match(str(a["ts"]))
    assert abs(datetime.fromisoformat(str(a["ts"])).timestamp() - time.time()) < 60
    assert b["msg"] == "multi\nline"


def test_uvicorn_colour_never_reaches_the_output(out: io.StringIO) -> None:
    # uvicorn passes the message again with ANSI colours as extra 'color_message'
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]",
        42,
        extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"},
    )
    logging.getLogger("x").warning("\x1b[31mred\x1b[0m text")
    assert "\x1b" not in out.getvalue() and "\\u001b" not in out.getvalue()
    [a, b] = lines(out)
    assert a["msg"] == "Started server process [42]" and "color_message" not in a
    assert b["msg"] == "red text"


def test_text_format_is_readable_lines() -> None:
    buf = io.StringIO()
    h = configure_logging("chip-3", stream=buf, fmt="text", secrets=lambda: [TOKEN])
    try:
        log = logging.getLogger("regulator.daemon")
        log.info("serving %s", "v000001", extra={"trigger": "drift", "note": "two words"})
        log.warning("token %s", TOKEN)
        try:
            raise KeyError("k")
        except KeyError:
            log.exception("job failed")
    finally:
        unconfigure_logging(h)
    first, second, third, *trace = buf.getvalue().splitlines()
    ts, level, logger, device, rest = first.split(" ", 4)
    assert ISO.match(ts) and (level, logger, device) == ("INFO", "regulator.daemon", "[chip-3]")
    assert rest == 'serving v000001 trigger=drift note="two words"'
    assert second.endswith("WARNING regulator.daemon [chip-3] token [REDACTED]")
    assert third.endswith("ERROR regulator.daemon [chip-3] job failed")
    assert trace[0] == "    Traceback (most recent call last):" and "KeyError" in trace[-1]
    assert not buf.getvalue().lstrip().startswith("{")


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="valid: json, text"):
        configure_logging("d", fmt="xml")  # type: ignore[arg-type]


_CHILD = """
import logging, sys
from regulator.service.logging import configure_logging
configure_logging("chip-9", level="DEBUG", fmt=sys.argv[1])
for name in ("debug", "info", "warning", "error", "critical"):
    getattr(logging.getLogger("regulator.child"), name)("at %s", name)
"""


def _child_lines(tmp_path: Path, fmt: str, journal: bool) -> list[str]:
    """Run a real process whose stderr is a file, as journald's stream would be."""
    err = tmp_path / f"stderr-{fmt}-{journal}"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with err.open("w") as fh:
        if journal:
            st = os.fstat(fh.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        subprocess.run(
            [sys.executable, "-c", _CHILD, fmt], stderr=fh, env=env, check=True, timeout=60
        )
    return err.read_text().splitlines()


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_journald_priorities_when_stderr_is_the_journal(tmp_path: Path, fmt: str) -> None:
    got = _child_lines(tmp_path, fmt, journal=True)
    assert [line[:3] for line in got] == ["<7>", "<6>", "<4>", "<3>", "<2>"]
    body = got[2][3:]
    if fmt == "json":
        assert json.loads(body)["msg"] == "at warning"
    else:
        assert body.endswith("WARNING regulator.child [chip-9] at warning")
    plain = _child_lines(tmp_path, fmt, journal=False)
    assert len(plain) == 5 and not any(line.startswith("<") for line in plain)


def test_journal_stream_of_another_file_adds_no_prefix(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.write_text("")
    st = os.stat(other)
    env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    err = tmp_path / "stderr"
    with err.open("w") as fh:
        subprocess.run(
            [sys.executable, "-c", _CHILD, "json"], stderr=fh, env=env, check=True, timeout=60
        )
    assert all(line.startswith("{") for line in err.read_text().splitlines())


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


def test_private_record_attributes_stay_out_of_the_line() -> None:
    # Ray installs a record factory that adds ``_ray_timestamp_ns`` to every record.
    old = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = old(*args, **kwargs)  # type: ignore[arg-type]
        record._ray_timestamp_ns = 123  # type: ignore[attr-defined]
        return record

    logging.setLogRecordFactory(factory)
    buf = io.StringIO()
    h = configure_logging("chip-3", stream=buf, fmt="text")
    try:
        logging.getLogger("regulator.daemon").info("up", extra={"job": "recal"})
    finally:
        unconfigure_logging(h)
        logging.setLogRecordFactory(old)
    assert buf.getvalue().rstrip().endswith("up job=recal")
