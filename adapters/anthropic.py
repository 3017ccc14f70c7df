"""The Anthropic Messages dialect.

``POST {base_url}/messages`` (``base_url`` like ``https://api.anthropic.com/v1``)
with ``x-api-key`` and ``anthropic-version`` headers. System turns go to the
top-level ``system`` field, ``max_tokens`` is always sent (the API requires
it), and the answer is the ``text`` of the ``content`` blocks, joined. A 529
("overloaded") is a 5xx and so :class:`alchemist.adapters.errors.ProviderUnavailable`.
Anthropic returns no token log-probabilities; ``logprob`` is always None.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict, cast

import aiohttp

from .base import ChatRequest, ProviderSpec
from .http import Answer, JsonAdapter
from .wire import json_object, token_counts

__all__ = ["ANTHROPIC_VERSION", "DEFAULT_MAX_TOKENS", "AnthropicAdapter"]

#: the API version this module speaks
ANTHROPIC_VERSION = "2023-06-01"
#: sent when the request sets no ``max_tokens`` (the API has no default)
DEFAULT_MAX_TOKENS = 1024
# Anthropic's temperature range is [0, 1]; the daemon's requests use OpenAI's [0, 2]
_MAX_TEMPERATURE = 1.0


# --- wire JSON ------------------------------------------------------------------------

class _WireMessage(TypedDict):
    role: str
    content: str


class _WireRequest(TypedDict):
    model: str
    messages: list[_WireMessage]
    max_tokens: int
    system: NotRequired[str]
    temperature: NotRequired[float]


class _WireBlock(TypedDict):
    type: str
    text: NotRequired[str]


class _WireUsage(TypedDict):
    input_tokens: int
    output_tokens: int


class _WireResponse(TypedDict):
    content: list[_WireBlock]
    stop_reason: NotRequired[str | None]
    usage: NotRequired[_WireUsage]


# --- parsing --------------------------------------------------------------------------

def _parse(body: bytes) -> Answer | str:
    """The answer, or a short description of what is wrong with the body."""
    data = json_object(body)
    if isinstance(data, str):
        return data
    blocks = data.get("content")
    if not isinstance(blocks, list):
        return "response has no content list"
    texts = [b["text"] for b in blocks
             if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)]
    if not texts:
        return f"response has no text content (stop_reason {data.get('stop_reason')!r})"
    wire = cast(_WireResponse, data)
    prompt, completion = token_counts(wire.get("usage"), "input_tokens", "output_tokens")
    return Answer(text="".join(texts), prompt_tokens=prompt, completion_tokens=completion)


# --- the adapter ----------------------------------------------------------------------

class AnthropicAdapter(JsonAdapter):
    """A :class:`alchemist.adapters.base.Provider` for the Anthropic Messages API."""

    def __init__(self, spec: ProviderSpec, session: aiohttp.ClientSession) -> None:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if spec.api_key is not None:
            headers["x-api-key"] = spec.api_key.reveal()
        super().__init__(spec, session, spec.base_url.rstrip("/") + "/messages", headers, _parse)

    def wire_request(self, request: ChatRequest) -> _WireRequest:
        system = [m.content for m in request.messages if m.role == "system"]
        body: _WireRequest = {
            "model": self.spec.model,
            "messages": [{"role": "assistant" if m.role == "assistant" else "user",
                          "content": m.content}
                         for m in request.messages if m.role != "system"],
            "max_tokens": request.max_tokens if request.max_tokens is not None
            else DEFAULT_MAX_TOKENS,
        }
        if system:
            body["system"] = "\n\n".join(system)
        if request.temperature is not None:
            body["temperature"] = min(max(request.temperature, 0.0), _MAX_TEMPERATURE)
        return body
