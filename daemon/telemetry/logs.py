"""Logging: structlog key-value events as JSON lines (journald-friendly), secrets redacted.

Two guards keep credentials out of logs: keys whose name says secret are
masked, and every value registered with :func:`register_secret` (API keys,
NATS passwords and tokens, as they are loaded) is replaced wherever it shows
up in a string.
"""

from __future__ import annotations

import json as json_module
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_KEYS = ("password", "token", "api_key", "apikey", "authorization", "secret", "seed",
                "creds")
_SECRETS: set[str] = set()
MASK = "***"


def register_secret(value: str | None) -> None:
    """Never print ``value`` in any log line from now on (values shorter than 6 are ignored)."""
    if value and len(value) >= 6:
        _SECRETS.add(value)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _SECRETS:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    return value


_SECRET_KEY = re.compile("|".join(_SECRET_KEYS), re.IGNORECASE)


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-named keys and registered secret values.

    Runs on every log line, so it stays cheap: one regex per key, and values
    are scanned only when a secret has been registered.
    """
    for key, value in event.items():
        if value is not None and _SECRET_KEY.search(key):
            event[key] = MASK
        elif _SECRETS and isinstance(value, str | dict | list | tuple):
            event[key] = _scrub(value)
    return event


def configure(level: str = "info", stream: TextIO | None = None, *, json: bool = True) -> None:
    """Route structlog (and the stdlib loggers of our dependencies) to one JSON stream."""
    lvl = getattr(logging, level.upper())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    # nats-py, aiohttp and pygad log through the stdlib: same JSON lines, same redaction
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(lvl, logging.WARNING))


class _JsonFormatter(logging.Formatter):
    """Stdlib records as the same JSON lines structlog writes, secrets scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {"event": record.getMessage(), "level": record.levelname.lower(),
                                 "logger": record.name}
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json_module.dumps(redact(None, "", event))
