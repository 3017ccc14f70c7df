"""The daemon's one HTTP session, the retry loop, and the POST every JSON dialect makes.

Retries live here, not in the adapters: an adapter supplies one ``attempt``
(a single HTTP try that raises :mod:`alchemist.adapters.errors` types) and
:func:`call_with_retries` decides whether, when and how long to try again,
inside the request's absolute deadline.

A JSON dialect (OpenAI, Anthropic, Gemini, Ollama) needs even less: its URL,
auth headers, request body and a ``parse`` function for a 2xx body.
:class:`JsonEndpoint` does the rest (concurrency slots, per-attempt timeout,
body-size cap, and the one translation of failures, :func:`edge_error`).
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import aiohttp

from .base import ChatRequest, ChatResult, ProviderSpec, Usage
from .errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from .wire import encoded

__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_CAP_S",
    "MAX_BODY_BYTES",
    "Answer",
    "ErrorHint",
    "HttpReply",
    "JsonEndpoint",
    "call_with_retries",
    "edge_error",
    "make_session",
    "parse_retry_after",
]

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


# --- one POST of a JSON dialect ---------------------------------------------------------

#: a response body larger than this is refused (a chat answer is far smaller)
MAX_BODY_BYTES = 4 * 1024 * 1024
_EXCERPT_CHARS = 200
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class HttpReply:
    """What came back from one attempt, before interpretation."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    """A dialect's answer, read from a 2xx body by the dialect's parse function."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    logprob: float | None = None


@dataclass(frozen=True, slots=True)
class ErrorHint:
    """What a dialect reads from an error body that the HTTP status does not say."""

    #: seconds to wait, for dialects that put it in the body rather than ``Retry-After``
    retry_after: float | None = None
    #: the body says the credentials were refused, whatever the status
    auth: bool = False


#: a dialect's reader of a 2xx body: the answer, or a short description of what is wrong
ParseBody = Callable[[bytes], Answer | str]
#: a dialect's reader of an error body
ReadErrorHint = Callable[[bytes], ErrorHint]


def edge_error(provider: str, *, exc: Exception | None = None, reply: HttpReply | None = None,
               problem: str = "", secret: str | None = None,
               hint: ErrorHint = ErrorHint()) -> ProviderError:
    """Translate an aiohttp exception, an HTTP status or an unreadable body: the one place."""
    if exc is not None:
        # ServerTimeoutError is also a ClientConnectionError: test timeouts first
        if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
            return ProviderTimeout(provider, "no answer within the attempt's time budget")
        if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
            return ProviderUnavailable(provider, f"transport failure ({type(exc).__name__})")
        # an unreadable response (bad status line, headers) or an invalid URL: retrying won't help
        return ProviderBadResponse(provider, f"unusable HTTP exchange ({type(exc).__name__})")
    assert reply is not None, "edge_error needs an exception or a reply"
    status = reply.status
    excerpt = _excerpt(reply.body, secret)
    if status == 429:
        retry_after = parse_retry_after(reply.headers.get("Retry-After"))
        if retry_after is None:
            retry_after = hint.retry_after
        return ProviderRateLimited(provider, "rate limited (HTTP 429)", retry_after)
    if status in (401, 403) or (hint.auth and 400 <= status < 500):
        return ProviderAuthError(provider, f"credentials refused (HTTP {status}): {excerpt}")
    if status >= 500:
        return ProviderUnavailable(provider, f"server error (HTTP {status}): {excerpt}")
    what = problem or f"request refused (HTTP {status})"
    return ProviderBadResponse(provider, f"{what}: {excerpt}", status=status, excerpt=excerpt)


def _excerpt(body: bytes, secret: str | None) -> str:
    text = body[: _EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
    if secret:
        # some servers echo the request headers back in their error bodies
        text = text.replace(secret, "***")
    return text[:_EXCERPT_CHARS]


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - time.time()
        return max(0.0, seconds)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


async def _read_limited(response: aiohttp.ClientResponse) -> bytes | None:
    """The body, or None when it is larger than :data:`MAX_BODY_BYTES`."""
    if (response.content_length or 0) > MAX_BODY_BYTES:
        return None
    buf = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK):
        buf += chunk
        if len(buf) > MAX_BODY_BYTES:
            return None
    return bytes(buf)


def _no_hint(body: bytes) -> ErrorHint:
    return ErrorHint()


class RateLimiter:
    """At most ``rate_per_s`` starts per second for one provider, evenly spaced (no bursts).

    Waiters are served in arrival order. A slot that could only start after the
    caller's budget is refused at once (a timeout) without being reserved, and a
    caller cancelled while waiting gives its slot back when it was the last one.
    """

    def __init__(self, rate_per_s: float) -> None:
        self.interval = 1.0 / rate_per_s
        self._next = 0.0

    async def acquire(self, budget_s: float) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self._next)
        if start - now > budget_s:
            raise TimeoutError("the provider's rate limit leaves no slot before the deadline")
        self._next = start + self.interval
        if start > now:
            try:
                await asyncio.sleep(start - now)
            except asyncio.CancelledError:
                if self._next == start + self.interval:  # nobody queued behind us
                    self._next = start
                raise


class JsonEndpoint:
    """One provider URL that answers a JSON POST: the part every JSON dialect shares.

    It owns the provider's concurrency slots, sends ``spec.headers`` plus the
    dialect's ``headers``, caps the body at :data:`MAX_BODY_BYTES`, maps every
    failure with :func:`edge_error` (redacting the API key from excerpts), and
    retries with :func:`call_with_retries`. The dialect supplies the URL, its
    auth headers, its request body and its ``parse`` function.
    """

    def __init__(self, spec: ProviderSpec, session: aiohttp.ClientSession, url: str,
                 headers: Mapping[str, str], parse: ParseBody,
                 error_hint: ReadErrorHint = _no_hint) -> None:
        self.spec = spec
        self.url = url
        self._session = session
        self._headers = {**spec.headers, **headers}
        if not any(k.lower() == "content-type" for k in self._headers):
            self._headers["Content-Type"] = "application/json"
        self._parse = parse
        self._error_hint = error_hint
        self._semaphore = asyncio.Semaphore(spec.max_concurrency)
        self._limiter = RateLimiter(spec.rate_per_s) if spec.rate_per_s else None
        self._rng = random.Random()  # backoff jitter; one per endpoint, not one per call
        self._secret = spec.api_key.reveal() if spec.api_key is not None else None

    async def complete(self, body: Mapping[str, object], *, deadline: float) -> ChatResult:
        """POST ``body``, retrying transient failures inside ``deadline``."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer, attempts = await call_with_retries(
            self.spec, lambda timeout_s: self._attempt(body, timeout_s), deadline=deadline,
            rng=self._rng)
        cost = self.spec.cost(answer.prompt_tokens, answer.completion_tokens)
        return ChatResult(
            text=answer.text,
            usage=Usage(answer.prompt_tokens, answer.completion_tokens, cost),
            latency_ms=(loop.time() - started) * 1000.0,
            attempts=attempts,
            logprob=answer.logprob)

    async def _attempt(self, body: Mapping[str, object], timeout_s: float) -> Answer:
        """One HTTP try; the slot wait counts against the attempt's timeout."""
        name = self.spec.name
        try:
            async with asyncio.timeout(timeout_s):
                if self._limiter is not None:
                    await self._limiter.acquire(timeout_s)
                async with self._semaphore, self._session.post(
                        self.url, data=encoded(body), headers=self._headers) as response:
                    raw = await _read_limited(response)
                    reply = HttpReply(response.status, response.headers, raw or b"")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise edge_error(name, exc=exc) from exc
        if raw is None:
            raise edge_error(name, reply=reply, secret=self._secret,
                             problem=f"response body larger than {MAX_BODY_BYTES} bytes")
        if not 200 <= reply.status < 300:
            raise edge_error(name, reply=reply, secret=self._secret,
                             hint=self._error_hint(reply.body))
        answer = self._parse(reply.body)
        if isinstance(answer, str):
            raise edge_error(name, reply=reply, secret=self._secret, problem=answer)
        return answer


class JsonAdapter(ABC):
    """The shell every JSON-over-HTTP dialect shares: a name, one endpoint, ``aclose``.

    A dialect subclasses it, passes its URL, auth headers and parse function to
    ``__init__`` and implements :meth:`wire_request`.
    """

    def __init__(self, spec: ProviderSpec, session: aiohttp.ClientSession, url: str,
                 headers: Mapping[str, str], parse: ParseBody,
                 error_hint: ReadErrorHint = _no_hint) -> None:
        self.name = spec.name
        self.spec = spec
        self._endpoint = JsonEndpoint(spec, session, url, headers, parse, error_hint)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, url={self._endpoint.url!r})"

    @abstractmethod
    def wire_request(self, request: ChatRequest) -> Mapping[str, object]:
        """The dialect's JSON body for one request."""

    async def complete(self, request: ChatRequest, *, deadline: float) -> ChatResult:
        """Ask the provider, retrying transient failures inside ``deadline``."""
        return await self._endpoint.complete(self.wire_request(request), deadline=deadline)

    async def aclose(self) -> None:  # noqa: B027 - a deliberate no-op default, not a missing abstract
        """Nothing to release: the session belongs to the daemon."""


def bearer(spec: ProviderSpec) -> dict[str, str]:
    """``Authorization: Bearer <key>`` when the provider has a key (OpenAI style)."""
    return {"Authorization": f"Bearer {spec.api_key.reveal()}"} if spec.api_key is not None else {}
