"""The daemon's one HTTP session, and the retry loop every adapter shares.

Retries live here, not in the adapters: an adapter supplies one ``attempt``
(a single HTTP try that raises :mod:`adapters.errors` types) and
:func:`call_with_retries` decides whether, when and how long to try again,
inside the request's absolute deadline.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp

from .base import ProviderSpec
from .errors import ProviderError, ProviderRateLimited, ProviderTimeout

__all__ = ["BACKOFF_BASE_S", "BACKOFF_CAP_S", "call_with_retries", "make_session"]

T = TypeVar("T")

#: first backoff ceiling; doubles per retry (full jitter draws below it)
BACKOFF_BASE_S = 0.1
#: the backoff ceiling never grows past this
BACKOFF_CAP_S = 2.0

# Per-provider semaphores bound concurrency; this is only a safety net
# against file-descriptor exhaustion if many providers are configured.
_CONNECTION_LIMIT = 1024
_DNS_TTL_S = 300


def make_session() -> aiohttp.ClientSession:
    """The shared client session: pooled connections, cached DNS, no default timeout.

    Every call sets its own timeout (clipped to the request's deadline), so the
    session has none. Create it inside the running loop; the daemon closes it
    last at shutdown.
    """
    connector = aiohttp.TCPConnector(limit=_CONNECTION_LIMIT, limit_per_host=0,
                                     ttl_dns_cache=_DNS_TTL_S)
    return aiohttp.ClientSession(connector=connector,
                                 timeout=aiohttp.ClientTimeout(total=None),
                                 raise_for_status=False)


def backoff_s(retry: int, rng: random.Random) -> float:
    """Full-jitter backoff before retry number ``retry`` (0-based)."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2 ** retry))
    return rng.uniform(0.0, ceiling)


async def call_with_retries(spec: ProviderSpec, attempt: Callable[[float], Awaitable[T]], *,
                            deadline: float,
                            rng: random.Random | None = None) -> tuple[T, int]:
    """Run ``attempt(timeout_s)`` until it succeeds; return ``(result, attempts)``.

    Only errors with ``retryable=True`` are retried, at most
    ``spec.max_retries`` times, after a full-jitter exponential backoff that is
    never shorter than a 429's ``retry_after``. Each attempt gets
    ``min(spec.timeout_s, deadline - now)``; when the next wait would end at or
    past ``deadline`` (loop time), the last error is raised instead. Raises
    :class:`ProviderTimeout` if the deadline has passed before the first try.
    """
    loop = asyncio.get_running_loop()
    rng = rng if rng is not None else random.Random()
    attempts = 0
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            # only reachable before the first attempt: later waits are checked below
            raise ProviderTimeout(spec.name, "the deadline passed before the call started")
        attempts += 1
        try:
            return await attempt(min(spec.timeout_s, remaining)), attempts
        except ProviderError as exc:
            if not exc.retryable or attempts > spec.max_retries:
                raise
            wait = backoff_s(attempts - 1, rng)
            if isinstance(exc, ProviderRateLimited) and exc.retry_after is not None:
                wait = max(wait, exc.retry_after)
            if loop.time() + wait >= deadline:
                raise
        await asyncio.sleep(wait)
