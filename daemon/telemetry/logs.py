"""Logging: structlog key-value events as JSON lines (journald-friendly), secrets redacted.

Our own events go through structlog; the stdlib records of our dependencies
(nats-py, aiohttp, pygad) go through structlog's ``ProcessorFormatter``, whose
``foreign_pre_chain`` runs the same processors (context, level, timestamp,
exception text, redaction) and the same renderer, so every line on the stream
has one shape.

Three guards keep credentials out of logs: keys whose name says secret are
masked; every value registered with :func:`register_secret` (API keys, NATS
passwords and tokens, as they are loaded) is replaced wherever it shows up in a
string value; and the rendered line is scanned once more for those values, for
the ones that hid inside an object's ``repr``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, ProcessorReturnValue

_SECRET_KEYS = ("password", "token", "api_key", "apikey", "authorization", "secret", "seed",
                "creds")
_SECRETS: set[str] = set()
#: the registered secrets, longest first (so a secret that contains another is masked whole)
_ordered: tuple[str, ...] = ()
MASK = "***"


def register_secret(value: str | None) -> None:
    """Never print ``value`` in any log line from now on (values shorter than 6 are ignored)."""
    global _ordered  # one process-wide set: a secret is secret for every logger
    if value and len(value) >= 6 and value not in _SECRETS:
        _SECRETS.add(value)
        _ordered = tuple(sorted(_SECRETS, key=len, reverse=True))


def _scrub_text(text: str) -> str:
    for secret in _ordered:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _scrub_text(value)
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
        elif _ordered and isinstance(value, str | dict | list | tuple):
            event[key] = _scrub(value)
    return event


def scrubbed(renderer: Processor) -> Processor:
    """``renderer``, then registered secrets out of the finished line.

    :func:`redact` sees only strings and containers; a value the renderer turns
    into text itself (an object's ``repr``, bytes) is caught here.
    """

    def render(logger: Any, method: str, event: EventDict) -> ProcessorReturnValue:
        line = renderer(logger, method, event)
        return _scrub_text(line) if _ordered and isinstance(line, str) else line

    return render


#: whether debug lines are printed: True until :func:`configure` sets a level (structlog's
#: default prints every level)
_debug = True


def debug_enabled() -> bool:
    """Whether a ``log.debug`` line would be printed: the hot path asks before it builds
    one, so per-request lines cost nothing at info level."""
    return _debug


def configure(level: str = "info", stream: TextIO | None = None, *, json: bool = True) -> None:
    """Route structlog and the stdlib loggers of our dependencies to one stream of JSON lines.

    Stdlib records show from ``warning`` up (or from ``level`` if higher): our
    dependencies are chatty at info.
    """
    global _debug  # one process-wide level, as structlog's configuration is
    lvl = getattr(logging, level.upper())
    _debug = lvl <= logging.DEBUG
    out = stream or sys.stderr
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
    ]
    renderer = scrubbed(structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        # a stdlib record names its logger (our events don't: they say what happened)
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(lvl, logging.WARNING))
