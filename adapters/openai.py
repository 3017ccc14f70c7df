"""The OpenAI chat-completions dialect (OpenAI, vLLM, llama.cpp, LM Studio, ...).

``POST {base_url}/chat/completions`` with ``Authorization: Bearer``. The POST,
the retries and the translation of failures are :class:`alchemist.adapters.http.JsonEndpoint`'s;
this module holds the dialect: the wire types, the request body and :func:`_parse`.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict, cast

import aiohttp

from .base import ChatRequest, ProviderSpec
from .http import MAX_BODY_BYTES, Answer, JsonAdapter, bearer, parse_retry_after
from .wire import json_object, mean, token_counts

__all__ = ["MAX_BODY_BYTES", "OpenAIAdapter", "parse_retry_after"]


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


# --- parsing --------------------------------------------------------------------------

def _parse(body: bytes) -> Answer | str:
    """The answer, or a short description of what is wrong with the body."""
    data = json_object(body)
    if isinstance(data, str):
        return data
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "response has no choices"
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        return "response has no choices[0].message.content"
    wire = cast(_WireResponse, data)
    prompt, completion = token_counts(wire.get("usage"), "prompt_tokens", "completion_tokens")
    return Answer(text=content, prompt_tokens=prompt, completion_tokens=completion,
                  logprob=_mean_logprob(wire["choices"][0].get("logprobs")))


def _mean_logprob(logprobs: _WireLogprobs | None) -> float | None:
    if not isinstance(logprobs, dict):
        return None
    tokens = logprobs.get("content")
    if not isinstance(tokens, list):
        return None
    return mean([t.get("logprob") for t in tokens if isinstance(t, dict)])


# --- the adapter ----------------------------------------------------------------------

class OpenAIAdapter(JsonAdapter):
    """A :class:`alchemist.adapters.base.Provider` for OpenAI-compatible chat-completions servers."""

    def __init__(self, spec: ProviderSpec, session: aiohttp.ClientSession) -> None:
        super().__init__(spec, session, spec.base_url.rstrip("/") + "/chat/completions",
                         bearer(spec), _parse)

    def wire_request(self, request: ChatRequest) -> _WireRequest:
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
