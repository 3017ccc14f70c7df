"""A fake OpenAI-compatible provider server, shared by every test suite.

A real aiohttp app on ``127.0.0.1`` and a free port; the request's ``model``
selects a :class:`Behaviour` (ok, slow, 429, error status, malformed body,
connection reset, hang), so one server plays many providers at once::

    async with FakeOpenAI() as fake:
        fake.set("flaky", Behaviour(kind="error", status=503, times=2))
        spec = ProviderSpec(name="p", kind="openai", base_url=fake.base_url, model="flaky")

Usage in answers: ``prompt_tokens`` = total characters of the messages // 4,
``completion_tokens`` = ``len(text) // 4``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol

from aiohttp import web

__all__ = ["Behaviour", "FakeOpenAI", "FakeServer"]

_MAX_REQUESTS_KEPT = 200


@dataclass
class Behaviour:
    """How the fake answers one model.

    ``text`` is the answer (or a function of the request's messages); for
    ``"error"`` it is also put in the error body's message, so tests can make a
    server echo something back.
    """

    kind: Literal["ok", "slow", "rate_limit", "error", "malformed", "reset", "hang"] = "ok"
    text: str | Callable[[list[dict[str, Any]]], str] = "ok"
    delay_s: float = 0.0  # for "slow" (then answers ok)
    retry_after: float | None = None  # for "rate_limit": Retry-After header seconds
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


class FakeOpenAI:
    """Serves /v1/chat/completions; the request's ``model`` selects the behaviour.

    ``calls`` counts requests per model, ``requests`` keeps the last 200 bodies
    (each with a ``"headers"`` key), ``in_flight``/``peak_in_flight`` count
    concurrent requests per model, and :meth:`wait_for_calls` lets a test wait
    for requests to arrive.
    """

    def __init__(self, default: Behaviour | None = None) -> None:
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
        """Listen on a free port of 127.0.0.1; return the base URL ``http://.../v1``."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, handle_signals=False,
                                     access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        assert isinstance(server, asyncio.Server)
        port = server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    async def stop(self) -> None:
        """Release hanging requests and shut the server down; idempotent."""
        self._stopping.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeOpenAI:
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
            return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
        model = str(body.get("model", ""))
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
            headers = {} if b.retry_after is None else {"Retry-After": _num(b.retry_after)}
            return web.json_response({"error": {"message": "rate limited"}},
                                     status=429, headers=headers)
        elif kind == "error":
            message = b.text if isinstance(b.text, str) else "error"
            return web.json_response({"error": {"message": message, "code": b.status}},
                                     status=b.status)
        return web.json_response(_completion(model, body, b))

    @staticmethod
    def _abort(request: web.Request) -> web.StreamResponse:
        """Drop the connection without a response (the client sees a reset)."""
        if request.transport is not None:
            request.transport.abort()
        # aiohttp will not write to an aborted transport; this response goes nowhere
        raise asyncio.CancelledError


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _completion(model: str, body: dict[str, Any], b: Behaviour) -> dict[str, Any]:
    messages: list[dict[str, Any]] = list(body.get("messages", []))
    text = b.text(messages) if callable(b.text) else b.text
    prompt_chars = sum(len(str(m.get("content", ""))) for m in messages)
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": "stop",
        "logprobs": None,
    }
    if b.logprob is not None and body.get("logprobs"):
        tokens = text.split() or [text]
        choice["logprobs"] = {"content": [
            {"token": t, "logprob": b.logprob, "bytes": None, "top_logprobs": []}
            for t in tokens]}
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": model,
        "choices": [choice],
        "usage": {"prompt_tokens": prompt_chars // 4,
                  "completion_tokens": len(text) // 4,
                  "total_tokens": prompt_chars // 4 + len(text) // 4},
    }
