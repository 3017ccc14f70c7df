"""The Ollama native chat dialect.

``POST {base_url}/api/chat`` (``base_url`` like ``http://127.0.0.1:11434``)
with ``stream: false``; ``max_tokens`` and ``temperature`` travel in
``options`` as ``num_predict`` and ``temperature``. The answer is
``message.content``; usage is ``prompt_eval_count`` / ``eval_count``. Local
Ollama needs no key; when one is configured (a proxy, Ollama's cloud) it is
sent as ``Authorization: Bearer``. Log-probabilities (``logprobs: true``,
Ollama 0.12.11 and later) come back as a top-level ``logprobs`` token list.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict, cast

import aiohttp

from .base import ChatRequest, ProviderSpec
from .http import Answer, JsonAdapter, bearer
from .wire import json_object, mean, token_counts

__all__ = ["OllamaAdapter"]


# --- wire JSON ------------------------------------------------------------------------

class _WireMessage(TypedDict):
    role: str
    content: str


class _WireOptions(TypedDict, total=False):
    num_predict: int
    temperature: float


class _WireRequest(TypedDict):
    model: str
    messages: list[_WireMessage]
    stream: bool
    options: NotRequired[_WireOptions]
    logprobs: NotRequired[bool]


class _WireTokenLogprob(TypedDict):
    token: str
    logprob: float


class _WireResponse(TypedDict):
    message: _WireMessage
    prompt_eval_count: NotRequired[int]  # absent when the whole prompt was cached
    eval_count: NotRequired[int]
    logprobs: NotRequired[list[_WireTokenLogprob] | None]


# --- parsing --------------------------------------------------------------------------

def _parse(body: bytes) -> Answer | str:
    """The answer, or a short description of what is wrong with the body."""
    data = json_object(body)
    if isinstance(data, str):
        return data
    message = data.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        return "response has no message.content"
    wire = cast(_WireResponse, data)
    tokens = wire.get("logprobs")
    logprob = (mean([t.get("logprob") for t in tokens if isinstance(t, dict)])
               if isinstance(tokens, list) else None)
    prompt, completion = token_counts(wire, "prompt_eval_count", "eval_count")
    return Answer(text=content, prompt_tokens=prompt, completion_tokens=completion, logprob=logprob)


# --- the adapter ----------------------------------------------------------------------

class OllamaAdapter(JsonAdapter):
    """A :class:`alchemist.adapters.base.Provider` for Ollama's native ``/api/chat``."""

    def __init__(self, spec: ProviderSpec, session: aiohttp.ClientSession) -> None:
        super().__init__(spec, session, spec.base_url.rstrip("/") + "/api/chat", bearer(spec),
                         _parse)

    def wire_request(self, request: ChatRequest) -> _WireRequest:
        body: _WireRequest = {
            "model": self.spec.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": False,
        }
        options: _WireOptions = {}
        if request.max_tokens is not None:
            options["num_predict"] = request.max_tokens
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if options:
            body["options"] = options
        if request.logprobs or self.spec.logprobs:
            body["logprobs"] = True
        return body
