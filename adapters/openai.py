"""The OpenAI chat-completions dialect (OpenAI, vLLM, llama.cpp, LM Studio, ...).

``POST {base_url}/chat/completions``; every failure is translated to the
:mod:`adapters.errors` taxonomy in one place, :func:`_edge_error`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict, cast

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
from .http import call_with_retries

__all__ = ["MAX_BODY_BYTES", "OpenAIAdapter"]

#: a response body larger than this is refused (a chat answer is far smaller)
MAX_BODY_BYTES = 4 * 1024 * 1024
_EXCERPT_CHARS = 200
_CHUNK = 64 * 1024


# --- wire JSON ------------------------------------------------------------------------

class _WireMessage(TypedDict):
    role: str
    content: str


class _WireRequest(TypedDict):
    model: str
    messages: list[_WireMessage]
    max_tokens: NotRequired[int]
    temperature: NotRequired[float]
    logprobs: NotRequired[bool]


class _WireTokenLogprob(TypedDict):
    token: str
    logprob: float


class _WireLogprobs(TypedDict):
    content: list[_WireTokenLogprob] | None


class _WireChoice(TypedDict):
    message: _WireMessage
    logprobs: NotRequired[_WireLogprobs | None]


class _WireUsage(TypedDict):
    prompt_tokens: int
    completion_tokens: int


class _WireResponse(TypedDict):
    choices: list[_WireChoice]
    usage: NotRequired[_WireUsage]


@dataclass(frozen=True, slots=True)
class _HttpReply:
    """What came back from one attempt, before interpretation."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class _Parsed:
    text: str
    prompt_tokens: int
    completion_tokens: int
    logprob: float | None


# --- the one place errors are classified ---------------------------------------------

def _edge_error(provider: str, *, exc: Exception | None = None, reply: _HttpReply | None = None,
                problem: str = "", secret: str | None = None) -> ProviderError:
    """Translate an aiohttp exception, an HTTP status or an unreadable body."""
    if exc is not None:
        # ServerTimeoutError is also a ClientConnectionError: test timeouts first
        if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
            return ProviderTimeout(provider, "no answer within the attempt's time budget")
        if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
            return ProviderUnavailable(provider, f"transport failure ({type(exc).__name__})")
        # an unreadable response (bad status line, headers) or an invalid URL: retrying won't help
        return ProviderBadResponse(provider, f"unusable HTTP exchange ({type(exc).__name__})")
    assert reply is not None, "_edge_error needs an exception or a reply"
    status = reply.status
    excerpt = _excerpt(reply.body, secret)
    if status == 429:
        retry_after = parse_retry_after(reply.headers.get("Retry-After"))
        return ProviderRateLimited(provider, "rate limited (HTTP 429)", retry_after)
    if status in (401, 403):
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


# --- parsing --------------------------------------------------------------------------

def _parse(body: bytes) -> _Parsed | str:
    """The answer, or a short description of what is wrong with the body."""
    try:
        data: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "response body is not JSON"
    if not isinstance(data, dict):
        return "response JSON is not an object"
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "response has no choices"
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        return "response has no choices[0].message.content"
    wire = cast(_WireResponse, data)
    usage = wire.get("usage")
    if not isinstance(usage, dict):
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
    return _Parsed(text=content,
                   prompt_tokens=_count(usage.get("prompt_tokens")),
                   completion_tokens=_count(usage.get("completion_tokens")),
                   logprob=_mean_logprob(wire["choices"][0].get("logprobs")))


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _mean_logprob(logprobs: _WireLogprobs | None) -> float | None:
    if not isinstance(logprobs, dict):
        return None
    tokens = logprobs.get("content")
    if not isinstance(tokens, list):
        return None
    values = [float(t["logprob"]) for t in tokens
              if isinstance(t, dict) and isinstance(t.get("logprob"), int | float)]
    return sum(values) / len(values) if values else None


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


# --- the adapter ----------------------------------------------------------------------

class OpenAIAdapter:
    """A :class:`adapters.base.Provider` for OpenAI-compatible chat-completions servers."""

    def __init__(self, spec: ProviderSpec, session: aiohttp.ClientSession) -> None:
        self.name = spec.name
        self.spec = spec
        self._session = session
        self._url = spec.base_url.rstrip("/") + "/chat/completions"
        self._semaphore = asyncio.Semaphore(spec.max_concurrency)
        self._secret = spec.api_key.reveal() if spec.api_key is not None else None
        headers = dict(spec.headers)
        if self._secret is not None:
            headers["Authorization"] = f"Bearer {self._secret}"
        self._headers = headers

    def __repr__(self) -> str:
        return f"OpenAIAdapter(name={self.name!r}, url={self._url!r})"

    async def complete(self, request: ChatRequest, *, deadline: float) -> ChatResult:
        """Ask the provider, retrying transient failures inside ``deadline``."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        body = self._wire_request(request)
        parsed, attempts = await call_with_retries(
            self.spec, lambda timeout_s: self._attempt(body, timeout_s), deadline=deadline)
        cost = self.spec.cost(parsed.prompt_tokens, parsed.completion_tokens)
        return ChatResult(
            text=parsed.text,
            usage=Usage(parsed.prompt_tokens, parsed.completion_tokens, cost),
            latency_ms=(loop.time() - started) * 1000.0,
            attempts=attempts,
            logprob=parsed.logprob)

    async def aclose(self) -> None:
        """Nothing to release: the session belongs to the daemon."""

    def _wire_request(self, request: ChatRequest) -> _WireRequest:
        body: _WireRequest = {
            "model": self.spec.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.logprobs or self.spec.logprobs:
            body["logprobs"] = True
        return body

    async def _attempt(self, body: _WireRequest, timeout_s: float) -> _Parsed:
        """One HTTP try; the slot wait counts against the attempt's timeout."""
        try:
            async with asyncio.timeout(timeout_s), self._semaphore, self._session.post(
                    self._url, json=body, headers=self._headers) as response:
                raw = await _read_limited(response)
                reply = _HttpReply(response.status, response.headers, raw or b"")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _edge_error(self.name, exc=exc) from exc
        if raw is None:
            raise _edge_error(self.name, reply=reply, secret=self._secret,
                              problem=f"response body larger than {MAX_BODY_BYTES} bytes")
        if not 200 <= reply.status < 300:
            raise _edge_error(self.name, reply=reply, secret=self._secret)
        parsed = _parse(reply.body)
        if isinstance(parsed, str):
            raise _edge_error(self.name, reply=reply, secret=self._secret, problem=parsed)
        return parsed
