"""Log lines: structlog events and our dependencies' stdlib records share one JSON shape, no secrets."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from alchemist.daemon.telemetry import logs

SECRET = "nats-pass-7d1e0c95b2a4"  # registered once here; stays registered for the session
LONGER = SECRET + "-and-more"  # a secret that contains another is masked whole


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert SECRET not in text
    return [json.loads(line) for line in text.splitlines()]


def recent(stamp: str) -> bool:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return moment.tzinfo is not None and abs(datetime.now(UTC) - moment) < timedelta(minutes=5)


def configured(level: str = "info") -> io.StringIO:
    stream = io.StringIO()
    logs.configure(level, stream)
    logs.register_secret(SECRET)
    logs.register_secret(LONGER)
    return stream


def test_a_stdlib_record_is_a_json_line_with_a_timestamp_and_no_secret() -> None:
    stream = configured()
    logging.getLogger("nats.aio.client").warning("reconnect to nats://alice:%s@host failed", SECRET)
    [line] = lines(stream)
    assert line["event"] == f"reconnect to nats://alice:{logs.MASK}@host failed"
    assert line["level"] == "warning" and line["logger"] == "nats.aio.client"
    assert recent(line["timestamp"])


def test_a_stdlib_exception_is_rendered_and_scrubbed() -> None:
    stream = configured()
    try:
        raise ConnectionError(f"auth failed for {LONGER}")
    except ConnectionError:
        logging.getLogger("aiohttp.client").exception("request failed")
    [line] = lines(stream)
    assert line["event"] == "request failed" and line["level"] == "error"
    assert "ConnectionError: auth failed for ***" in line["exception"]
    assert "-and-more" not in line["exception"]
    assert recent(line["timestamp"])


def test_stdlib_records_below_warning_stay_out() -> None:
    stream = configured("debug")
    logging.getLogger("nats.aio.client").info("connected")
    logging.getLogger("nats.aio.client").error("gone")
    assert [line["event"] for line in lines(stream)] == ["gone"]


def test_a_structlog_event_keeps_its_shape_and_loses_its_secrets() -> None:
    stream = configured()

    class Url:
        def __repr__(self) -> str:
            return f"Url(nats://bob:{SECRET}@host)"

    with structlog.contextvars.bound_contextvars(request_id="r1"):
        structlog.get_logger("alchemist.test").info(
            "connected", url=Url(), detail=[f"x{SECRET}"], nats_password="plain", attempt=2)
    [line] = lines(stream)
    assert set(line) == {"event", "url", "detail", "nats_password", "attempt", "request_id", "level",
                         "timestamp"}
    assert line["event"] == "connected" and line["level"] == "info" and line["attempt"] == 2
    assert line["request_id"] == "r1" and line["nats_password"] == logs.MASK
    assert line["detail"] == ["x***"] and line["url"] == "Url(nats://bob:***@host)"
    assert recent(line["timestamp"])


def test_both_kinds_share_one_stream_in_order() -> None:
    stream = configured()
    structlog.get_logger().warning("first")
    logging.getLogger("pygad").warning("second")
    structlog.get_logger().error("third")
    assert [(line["event"], line["level"]) for line in lines(stream)] == [
        ("first", "warning"), ("second", "warning"), ("third", "error")]


def test_events_are_captured_for_tests() -> None:
    configured()
    with structlog.testing.capture_logs() as events:
        structlog.get_logger().info("ready", providers=["a"])
    assert events == [{"event": "ready", "providers": ["a"], "log_level": "info"}]
