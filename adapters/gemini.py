"""The Google Gemini ``generateContent`` dialect.

``POST {base_url}/models/{model}:generateContent`` (``base_url`` like
``https://generativelanguage.googleapis.com/v1beta``) with ``x-goog-api-key``
(never in the URL, so the key cannot reach an error message). Turns become
``contents`` with roles ``user`` / ``model``; system turns become
``systemInstruction``. The answer is ``candidates[0].content.parts[*].text``; a
response with no candidates was blocked and is a
:class:`alchemist.adapters.errors.ProviderBadResponse` naming the block reason.

Google puts two things in error bodies that the status does not say: the
retry delay of a 429 (``google.rpc.RetryInfo``) and an invalid key (HTTP 400
with reason ``API_KEY_INVALID``); :func:`_error_hint` reads both.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict, cast
from urllib.parse import quote

import aiohttp

from .base import ChatRequest, ProviderSpec
from .http import Answer, ErrorHint, JsonAdapter
from .wire import json_object, mean, token_counts

__all__ = ["GeminiAdapter"]

_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_AUTH_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})


# --- wire JSON ------------------------------------------------------------------------

class _WirePart(TypedDict):
    text: str
    thought: NotRequired[bool]


class _WireContent(TypedDict):
    parts: list[_WirePart]
    role: NotRequired[str]


class _WireGenerationConfig(TypedDict, total=False):
    maxOutputTokens: int
    temperature: float
    responseLogprobs: bool


class _WireRequest(TypedDict):
    contents: list[_WireContent]
    systemInstruction: NotRequired[_WireContent]
    generationConfig: NotRequired[_WireGenerationConfig]


class _WireLogprobCandidate(TypedDict):
    token: str
    logProbability: float


class _WireLogprobsResult(TypedDict):
    chosenCandidates: list[_WireLogprobCandidate]


class _WireCandidate(TypedDict):
    content: NotRequired[_WireContent]
    finishReason: NotRequired[str]
    logprobsResult: NotRequired[_WireLogprobsResult]


class _WireUsage(TypedDict, total=False):
    promptTokenCount: int
    candidatesTokenCount: int
    thoughtsTokenCount: int


class _WireResponse(TypedDict):
    candidates: NotRequired[list[_WireCandidate]]
    promptFeedback: NotRequired[dict[str, Any]]
    usageMetadata: NotRequired[_WireUsage]


# --- parsing --------------------------------------------------------------------------

def _parse(body: bytes) -> Answer | str:
    """The answer, or a short description of what is wrong with the body."""
    data = json_object(body)
    if isinstance(data, str):
        return data
    candidates = data.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        feedback = data.get("promptFeedback")
        reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
        if isinstance(reason, str):
            return f"prompt blocked (blockReason {reason})"
        return "response has no candidates"
    first = candidates[0]
    content = first.get("content") if isinstance(first, dict) else None
    parts = content.get("parts") if isinstance(content, dict) else None
    texts = ([p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
              and not p.get("thought")]  # thought summaries are not the answer
             if isinstance(parts, list) else [])
    if not texts:
        reason = first.get("finishReason") if isinstance(first, dict) else None
        return f"response has no candidates[0].content.parts text (finishReason {reason!r})"
    wire = cast(_WireResponse, data)
    prompt, answer, thoughts = token_counts(wire.get("usageMetadata"), "promptTokenCount",
                                            "candidatesTokenCount", "thoughtsTokenCount")
    return Answer(text="".join(texts), prompt_tokens=prompt,
                  completion_tokens=answer + thoughts,  # thinking tokens are billed as output
                  logprob=_mean_logprob(first))


def _mean_logprob(candidate: dict[str, Any]) -> float | None:
    # only logprobsResult, which comes only when asked: some models send avgLogprobs unasked
    result = candidate.get("logprobsResult")
    chosen = result.get("chosenCandidates") if isinstance(result, dict) else None
    if not isinstance(chosen, list):
        return None
    return mean([c.get("logProbability") for c in chosen if isinstance(c, dict)])


def _error_hint(body: bytes) -> ErrorHint:
    """The retry delay and the auth verdict that a Google error body carries in ``details``."""
    data = json_object(body)
    error = data.get("error") if isinstance(data, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    retry_after: float | None = None
    auth = False
    for detail in details if isinstance(details, list) else []:
        if not isinstance(detail, dict):
            continue
        if detail.get("@type") == _RETRY_INFO:
            retry_after = _duration_s(detail.get("retryDelay"))
        if detail.get("reason") in _AUTH_REASONS:
            auth = True
    return ErrorHint(retry_after=retry_after, auth=auth)


def _duration_s(value: object) -> float | None:
    """Seconds from a protobuf Duration in JSON (``"37s"``, ``"0.300s"``), or None."""
    if not isinstance(value, str) or not value.endswith("s"):
        return None
    try:
        seconds = float(value[:-1])
    except ValueError:
        return None
    return seconds if 0 <= seconds < float("inf") else None


# --- the adapter ----------------------------------------------------------------------

class GeminiAdapter(JsonAdapter):
    """A :class:`alchemist.adapters.base.Provider` for Google's Gemini API (``generateContent``)."""

    def __init__(self, spec: ProviderSpec, session: aiohttp.ClientSession) -> None:
        headers = {"x-goog-api-key": spec.api_key.reveal()} if spec.api_key is not None else {}
        url = f"{spec.base_url.rstrip('/')}/models/{quote(spec.model, safe='')}:generateContent"
        super().__init__(spec, session, url, headers, _parse, _error_hint)

    def wire_request(self, request: ChatRequest) -> _WireRequest:
        body: _WireRequest = {
            "contents": [{"role": "model" if m.role == "assistant" else "user",
                          "parts": [{"text": m.content}]}
                         for m in request.messages if m.role != "system"],
        }
        system: list[_WirePart] = [{"text": m.content} for m in request.messages
                                   if m.role == "system"]
        if system:
            body["systemInstruction"] = {"parts": system}
        config: _WireGenerationConfig = {}
        if request.max_tokens is not None:
            config["maxOutputTokens"] = request.max_tokens
        if request.temperature is not None:
            config["temperature"] = request.temperature
        if request.logprobs or self.spec.logprobs:
            config["responseLogprobs"] = True
        if config:
            body["generationConfig"] = config
        return body
