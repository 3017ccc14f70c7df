"""The ``alchemist`` dialect: another llm-alchemist, over NATS, as one provider.

A fused model can itself be a provider of another one (recursive fusion).
``base_url`` is the other deployment's NATS URL, optionally with its subject
prefix as the path (``nats://nats.internal:4222/team-b``; default
``alchemist``); ``model`` names the recipe to ask for. Every request carries
the header ``Alchemist-Hops``; a daemon refuses a request that has already
crossed ``MAX_HOPS`` alchemists, so a loop of alchemists calling each other
ends with an error instead of running forever.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import nats.errors
from nats.aio.client import Client

from .base import HOPS_HEADER, MAX_HOPS, ChatRequest, ChatResult, ProviderSpec, Usage
from .errors import ProviderBadResponse, ProviderTimeout, ProviderUnavailable


class AlchemistAdapter:
    """Calls ``<prefix>.infer`` of another llm-alchemist and returns its fused answer."""

    def __init__(self, spec: ProviderSpec, session: aiohttp.ClientSession | None = None) -> None:
        self.name = spec.name
        self.spec = spec
        parts = urlsplit(spec.base_url)
        self._url = f"{parts.scheme}://{parts.netloc}"
        self.subject = f"{parts.path.strip('/') or 'alchemist'}.infer"
        self._nc: Client | None = None
        self._lock = asyncio.Lock()

    async def _client(self, budget_s: float) -> Client:
        async def quiet(exc: Exception) -> None:  # nats-py's default prints tracebacks
            return None

        async with self._lock:
            if self._nc is None or self._nc.is_closed:
                kwargs: dict[str, Any] = {}
                if self.spec.api_key is not None:
                    kwargs["token"] = self.spec.api_key.reveal()
                nc = Client()
                try:
                    # the first connect retries forever with reconnects on: bound it
                    await asyncio.wait_for(nc.connect(
                        self._url, name=f"alchemist-provider-{self.name}", connect_timeout=2,
                        max_reconnect_attempts=-1, allow_reconnect=True, error_cb=quiet,
                        **kwargs), timeout=budget_s)
                except Exception as exc:  # noqa: BLE001 - nats-py raises many types; one code
                    await nc.close()
                    raise ProviderUnavailable(self.name, f"cannot reach NATS at {self._url}: "
                                              f"{type(exc).__name__}") from None
                self._nc = nc
            return self._nc

    async def complete(self, request: ChatRequest, *, deadline: float) -> ChatResult:
        """Ask the other alchemist; its fused answer is this provider's answer."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        if request.hops + 1 > MAX_HOPS:
            raise ProviderBadResponse(self.name, f"refused: the request already crossed "
                                      f"{request.hops} alchemists (limit {MAX_HOPS}); a loop?")
        remaining = min(self.spec.timeout_s, deadline - started)
        if remaining <= 0:
            raise ProviderTimeout(self.name, "no time left before the deadline")
        body: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "recipe": self.spec.model, "deadline_ms": max(1, int(remaining * 1000) - 5)}
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        nc = await self._client(remaining)
        try:
            msg = await nc.request(self.subject, json.dumps(body).encode(), timeout=remaining,
                                   headers={"Content-Type": "application/json",
                                            HOPS_HEADER: str(request.hops + 1)})
        except nats.errors.TimeoutError:
            raise ProviderTimeout(self.name, f"no reply within {remaining:.1f} s") from None
        except nats.errors.NoRespondersError:
            raise ProviderUnavailable(self.name, f"no alchemist serves {self.subject}") from None
        except nats.errors.MaxPayloadError:
            raise ProviderBadResponse(self.name, "the request is larger than the peer's "
                                      "NATS max_payload") from None
        except nats.errors.Error as exc:  # closed, draining, ...: the peer is unreachable
            raise ProviderUnavailable(self.name, f"NATS said {type(exc).__name__}") from None
        try:
            reply = json.loads(msg.data)
            if "error" in reply:
                error = reply["error"]
                raise ProviderBadResponse(self.name, f"{error['code']}: {error['message']}"[:300])
            usage = reply.get("usage") or {}
            return ChatResult(
                text=str(reply["text"]),
                usage=Usage(int(usage.get("prompt_tokens") or 0),
                            int(usage.get("completion_tokens") or 0), usage.get("cost")),
                latency_ms=(loop.time() - started) * 1000)
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderBadResponse(self.name, f"unreadable reply: {type(exc).__name__}",
                                      excerpt=msg.data[:200].decode(errors="replace")) from None

    async def aclose(self) -> None:
        """Close this adapter's own NATS connection."""
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
