"""Fake provider servers, shared by every test suite, in each adapter's dialect.

A real aiohttp app on ``127.0.0.1``, on a port the kernel picks while binding;
the request's model selects a :class:`Behaviour` (ok, slow, 429, error status,
malformed body, connection reset, hang, blocked), so one server plays many
providers at once::

    async with FakeOpenAI() as fake:
        fake.set("flaky", Behaviour(kind="error", status=503, times=2))
        spec = ProviderSpec(name="p", kind="openai", base_url=fake.base_url, model="flaky")

:class:`FakeProvider` speaks any dialect (``FakeProvider(dialect="gemini")``)
with the same behaviours; :class:`FakeOpenAI` is the OpenAI one. The wire
formats live in :mod:`tests.fake_dialects`.

Usage in answers: prompt tokens = total characters of the messages (system
included) // 4, completion tokens = ``len(text) // 4``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol, Self

from aiohttp import web

from tests.fake_dialects import DIALECTS, Dialect

__all__ = ["Behaviour", "Dialect", "FakeOpenAI", "FakeProvider", "FakeServer"]

_MAX_REQUESTS_KEPT = 200


@dataclass
class Behaviour:
    """How the fake answers one model.

    ``text`` is the answer (or a function of the request's messages, each a
    ``{"role", "content"}`` dict whatever the dialect); for ``"error"`` it is
    also put in the error body's message, so tests can make a server echo
    something back, and for ``"blocked"`` it is the block reason. ``"blocked"``
    is a 200 without an answer: Gemini's ``promptFeedback.blockReason``,
    OpenAI's ``refusal``, Anthropic's ``stop_reason: "refusal"``, Ollama's
    ``done_reason``.
    """

    kind: Literal["ok", "slow", "rate_limit", "error", "malformed", "reset", "hang",
                  "blocked"] = "ok"
    text: str | Callable[[list[dict[str, Any]]], str] = "ok"
    delay_s: float = 0.0  # for "slow" (then answers ok)
    retry_after: float | None = None  # for "rate_limit": the dialect's retry hint, in seconds
    status: int = 500  # for "error"
    times: int | None = None  # fail this many times, then behave "ok" (None = always)
    logprob: float | None = None  # token logprob value, when the request asks for logprobs


class FakeServer(Protocol):
    """What the adapter contract (``AdapterContract``) needs of a dialect's fake server."""

    base_url: str
    calls: collections.Counter[str]
    peak_in_flight: collections.Counter[str]

    def set(self, model: str, behaviour: Behaviour) -> None: ...
    async def wait_for_calls(self, model: str, n: int = 1) -> None: ...
    async def stop(self) -> None: ...


class FakeProvider:
    """Serves one dialect's chat route; the request's model selects the behaviour.

    ``calls`` counts requests per model, ``requests`` keeps the last 200 bodies
    (each with a ``"headers"`` key), ``in_flight``/``peak_in_flight`` count
    concurrent requests per model, and :meth:`wait_for_calls` lets a test wait
    for requests to arrive.
    """

    def __init__(self, default: Behaviour | None = None, *, dialect: Dialect = "openai") -> None:
        self.dialect = dialect
        self._wire = DIALECTS[dialect]
        self.default = default if default is not None else Behaviour()
        self.behaviours: dict[str, Behaviour] = {}
        self.calls: collections.Counter[str] = collections.Counter()
        self.requests: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=_MAX_REQUESTS_KEPT)
        self.in_flight: collections.Counter[str] = collections.Counter()
        self.peak_in_flight: collections.Counter[str] = collections.Counter()
        self.base_url = ""
        self._failures: collections.Counter[str] = collections.Counter()
        self._stopping = asyncio.Event()
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def set(self, model: str, behaviour: Behaviour) -> None:
        """Answer requests for ``model`` with ``behaviour`` (resets its failure count)."""
        self.behaviours[model] = behaviour
        self._failures[model] = 0

    async def wait_for_calls(self, model: str, n: int = 1) -> None:
        """Return once ``n`` requests for ``model`` have arrived (no polling)."""
        while self.calls[model] < n:
            self._arrived.clear()
            await self._arrived.wait()

    async def start(self) -> str:
        """Listen on a free port of 127.0.0.1; return the dialect's base URL.

        ``http://127.0.0.1:PORT/v1`` for OpenAI and Anthropic, ``.../v1beta``
        for Gemini, and the bare ``http://127.0.0.1:PORT`` for Ollama.
        """
        app = web.Application()
        app.router.add_post(self._wire.route, self._handle)
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, handle_signals=False,
                                     access_log=None)
        await self._runner.setup()
        # port 0: the kernel picks a free port while binding, and the socket stays
        # open, so no other process can take it between choosing and listening
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}{self._wire.prefix}"
        return self.base_url

    async def stop(self) -> None:
        """Release hanging requests and shut the server down; idempotent."""
        self._stopping.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: dict[str, Any] = json.loads(raw)
        except ValueError:
            return web.json_response(self._wire.error(400, "body is not JSON"), status=400)
        # Gemini names the model in the path, the others in the body
        model = request.match_info.get("model") or str(body.get("model", ""))
        self.calls[model] += 1
        self.requests.append({**body, "headers": dict(request.headers)})
        self._arrived.set()
        self.in_flight[model] += 1
        self.peak_in_flight[model] = max(self.peak_in_flight[model], self.in_flight[model])
        try:
            return await self._respond(request, model, body)
        finally:
            self.in_flight[model] -= 1

    async def _respond(self, request: web.Request, model: str,
                       body: dict[str, Any]) -> web.StreamResponse:
        b = self.behaviours.get(model, self.default)
        wire = self._wire
        kind = b.kind
        if kind not in ("ok", "slow") and b.times is not None:
            if self._failures[model] >= b.times:
                kind = "ok"
            else:
                self._failures[model] += 1
        if kind == "slow":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), b.delay_s)
        elif kind == "hang":
            await self._stopping.wait()
            return self._abort(request)
        elif kind == "reset":
            return self._abort(request)
        elif kind == "malformed":
            return web.Response(status=200, text="<html>not json {",
                                content_type="application/json")
        elif kind == "rate_limit":
            headers, error = wire.rate_limited(b.retry_after)
            return web.json_response(error, status=429, headers=headers)
        elif kind == "error":
            message = b.text if isinstance(b.text, str) else "error"
            return web.json_response(wire.error(b.status, message), status=b.status)
        messages = wire.messages(body)
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in messages) // 4
        if kind == "blocked":
            reason = b.text if isinstance(b.text, str) else "SAFETY"
            return web.json_response(wire.blocked(model, reason, prompt_tokens))
        text = b.text(messages) if callable(b.text) else b.text
        logprob = b.logprob if wire.wants_logprobs(body) else None
        return web.json_response(wire.answer(model, text, prompt_tokens, logprob))

    @staticmethod
    def _abort(request: web.Request) -> web.StreamResponse:
        """Drop the connection without a response (the client sees a reset)."""
        if request.transport is not None:
            request.transport.abort()
        # aiohttp will not write to an aborted transport; this response goes nowhere
        raise asyncio.CancelledError


class FakeOpenAI(FakeProvider):
    """The fake in the OpenAI chat-completions dialect (``/v1/chat/completions``)."""

    def __init__(self, default: Behaviour | None = None) -> None:
        super().__init__(default, dialect="openai")
