"""The HTTP front door: an aiohttp server in the daemon, speaking OpenAI's dialect.

| route                        | what                                                   |
| ---------------------------- | ------------------------------------------------------ |
| ``POST /v1/chat/completions`` | a fused answer (``stream: true``: SSE chunks)          |
| ``GET /v1/models``           | the recipes, as models ``alchemist/<recipe>``          |
| ``POST /v1/feedback``        | a rating, into the feedback stream (after its ack)     |
| ``GET /``, ``/static/*``     | the status page (HTML, CSS, JS shipped in the package) |
| ``GET /status/*``            | the JSON the status page reads (:mod:`.status`,        |
|                              | :mod:`.timeline`)                                      |

Every answer goes through :func:`alchemist.daemon.serving.direct.answer`,
the same path as ``alchemist.infer``. Every error is OpenAI's error shape
(:func:`.dialect.error_body`) with the contract's code. With keys configured,
everything but the page's own files needs ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import structlog
from aiohttp import web

from alchemist.daemon.config import HttpConfig
from alchemist.daemon.http.dialect import (
    ChatBody,
    chunks,
    completion,
    decode_body,
    error_body,
    infer_body,
    status_of,
)
from alchemist.daemon.http.keys import Keys
from alchemist.daemon.http.status import Parts, providers_status, recipes_status
from alchemist.daemon.http.timeline import Timeline
from alchemist.daemon.learning.feedback import FeedbackBody
from alchemist.daemon.serving.direct import answer
from alchemist.daemon.serving.wire import InferError, encode, parse_hops
from alchemist.daemon.telemetry.metrics import bound_port

__all__ = ["FrontDoor"]

log = structlog.get_logger("alchemist.http")
STATIC = Path(__file__).resolve().parent / "static"
PAGE_FILES = {"index.html": "text/html", "status.css": "text/css", "status.js": "text/javascript"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=encode(obj, True), status=status, content_type="application/json")


def _error(code: str, message: str, status: int | None = None) -> web.Response:
    return _json(error_body(code, message), status or status_of(code))


class FrontDoor:
    """The aiohttp application and its listening socket."""

    def __init__(self, cfg: HttpConfig, parts: Parts, keys: Keys) -> None:
        self.cfg, self.parts, self.keys = cfg, parts, keys
        self.inflight = 0
        self.timeline = Timeline(parts)
        self.runner: web.AppRunner | None = None
        self.port = 0
        app = web.Application(client_max_size=cfg.max_body_bytes, middlewares=[self._guard])
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/feedback", self._feedback)
        app.router.add_get("/status/recipes", self._recipes)
        app.router.add_get("/status/providers", self._providers)
        app.router.add_get("/status/timeline", self._timeline)
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._page)
        self.app = app

    @property
    def url(self) -> str:
        host = self.cfg.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def start(self) -> None:
        """Listen on ``http.listen`` (port 0: any free port, see :attr:`port`)."""
        # no access log: request lines are not secret, but nothing here needs them per request
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                    shutdown_timeout=5.0)
        await self.runner.setup()
        try:
            await web.TCPSite(self.runner, self.cfg.host, self.cfg.port).start()
        except BaseException:
            await self.stop()
            raise
        self.port = bound_port(self.runner)
        await self.timeline.start()
        log.info("http_serving", url=self.url, auth="open" if self.keys.open else "bearer keys")

    async def stop(self) -> None:
        """Stop listening, let requests in flight finish (bounded), close."""
        await self.timeline.stop()
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()

    # -- the guard: auth, load, errors ------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        page = request.path == "/" or request.path.startswith("/static/")
        if not page and not self.keys.allows(request.headers.get("Authorization")):
            return _json({"error": {"message": "missing or wrong API key: send the header "
                                    "Authorization: Bearer <key>", "type": "invalid_request_error",
                                    "param": None, "code": "invalid_api_key"}}, 401)
        if self.inflight >= self.cfg.max_concurrency:
            return _error("overloaded", f"{self.inflight} HTTP requests are in flight, the limit "
                          f"is {self.cfg.max_concurrency} (http.max_concurrency); retry shortly")
        self.inflight += 1
        try:
            return await handler(request)
        except InferError as exc:
            return _error(exc.code, exc.message)
        except web.HTTPRequestEntityTooLarge:
            return _error("payload_too_large", f"the body is larger than "
                          f"{self.cfg.max_body_bytes} bytes (http.max_body_bytes)")
        except web.HTTPNotFound:
            return _error("not_found", f"no such route: {request.method} {request.path}")
        except web.HTTPMethodNotAllowed as exc:
            return _error("method_not_allowed", f"{request.method} is not allowed on "
                          f"{request.path}; use {', '.join(sorted(exc.allowed_methods))}")
        except web.HTTPException as exc:
            return _error("bad_request" if exc.status < 500 else "internal", exc.reason, exc.status)
        except Exception:
            log.exception("http_internal_error", path=request.path)
            return _error("internal", "internal error; it is logged")
        finally:
            self.inflight -= 1

    # -- routes ----------------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        service = self.parts.service
        if service is None:
            raise InferError("overloaded", "the daemon is starting; retry shortly")
        data = await request.read()
        chat: ChatBody = decode_body(data, ChatBody)
        body = infer_body(chat)
        reply = await answer(service, body, len(data), hops=parse_hops(request.headers))
        if not chat.stream:
            return _json(completion(reply))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        usage = chat.stream_options is not None and chat.stream_options.include_usage
        for event in chunks(reply, usage):
            await response.write(b"data: " + encode(event, True) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _models(self, _: web.Request) -> web.Response:
        recipes = self.parts.recipes.current if self.parts.recipes else {}
        data = [{"id": f"alchemist/{r.name}", "object": "model", "created": int(r.created_at),
                 "owned_by": "llm-alchemist", "version": r.version, "strategy": r.strategy}
                for r in sorted(recipes.values(), key=lambda r: r.name)]
        return _json({"object": "list", "data": data})

    async def _feedback(self, request: web.Request) -> web.Response:
        streams = self.parts.streams
        if streams is None:
            raise InferError("overloaded", "the daemon is starting; retry shortly")
        rating: FeedbackBody = decode_body(await request.read(), FeedbackBody)
        payload = msgspec.to_builtins(rating)
        payload["ts"] = payload.get("ts") or time.time()
        try:
            ack = await streams.js.publish(streams.feedback_subject, json.dumps(payload).encode(),
                                           headers={"Content-Type": "application/json"})
        except Exception as exc:  # noqa: BLE001 - the broker's reason, told as a 503
            raise InferError("overloaded", f"the rating was not stored ({type(exc).__name__}); "
                             "retry shortly") from None
        return _json({"stored": True, "request_id": rating.request_id, "stream": ack.stream,
                      "seq": ack.seq})

    async def _recipes(self, _: web.Request) -> web.Response:
        return _json(await recipes_status(self.parts))

    async def _providers(self, _: web.Request) -> web.Response:
        return _json(providers_status(self.parts))

    async def _timeline(self, _: web.Request) -> web.Response:
        return _json(self.timeline.to_json())

    async def _page(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name", "index.html")
        if name not in PAGE_FILES:
            raise web.HTTPNotFound()
        return web.FileResponse(STATIC / name, headers={"Content-Type": PAGE_FILES[name],
                                                        "Cache-Control": "no-cache"})
