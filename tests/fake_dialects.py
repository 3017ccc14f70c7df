"""How each provider dialect looks on the wire, for the fake servers in :mod:`tests.fakes`.

One :class:`Wire` per dialect: its route, how to read the messages and the
logprobs flag from a request, and how to write an answer, a blocked answer,
an error and a 429, each shaped like the real API's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["DIALECTS", "Dialect", "Wire"]

Dialect = Literal["openai", "anthropic", "gemini", "ollama"]
JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Wire:
    """One dialect's shapes. Messages are read as ``{"role", "content"}`` dicts."""

    route: str  # the POST route on the fake server
    prefix: str  # the path part of the base URL an adapter is given
    messages: Callable[[JsonObject], list[JsonObject]]
    wants_logprobs: Callable[[JsonObject], bool]
    #: (model, text, prompt_tokens, logprob or None) -> answer body
    answer: Callable[[str, str, int, float | None], JsonObject]
    #: (model, reason, prompt_tokens) -> a 200 body without an answer
    blocked: Callable[[str, str, int], JsonObject]
    #: (status, message) -> error body
    error: Callable[[int, str], JsonObject]
    #: retry hint in seconds -> (headers, body) of a 429
    rate_limited: Callable[[float | None], tuple[dict[str, str], JsonObject]]


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _retry_after_header(retry_after: float | None) -> dict[str, str]:
    return {} if retry_after is None else {"Retry-After": _num(retry_after)}


def _tokens(text: str) -> list[str]:
    return text.split() or [text]


# --- OpenAI chat completions -----------------------------------------------------------

def _openai_answer(model: str, text: str, prompt_tokens: int,
                   logprob: float | None) -> JsonObject:
    choice: JsonObject = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": "stop",
        "logprobs": None,
    }
    if logprob is not None:
        choice["logprobs"] = {"content": [
            {"token": t, "logprob": logprob, "bytes": None, "top_logprobs": []}
            for t in _tokens(text)]}
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": model,
        "choices": [choice],
        "usage": {"prompt_tokens": prompt_tokens,
                  "completion_tokens": len(text) // 4,
                  "total_tokens": prompt_tokens + len(text) // 4},
    }


OPENAI = Wire(
    route="/v1/chat/completions", prefix="/v1",
    messages=lambda body: list(body.get("messages", [])),
    wants_logprobs=lambda body: bool(body.get("logprobs")),
    answer=_openai_answer,
    blocked=lambda model, reason, prompt_tokens: {
        "id": "chatcmpl-fake", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": None, "refusal": reason}}]},
    error=lambda status, message: {"error": {"message": message, "code": status}},
    rate_limited=lambda retry_after: (_retry_after_header(retry_after),
                                      {"error": {"message": "rate limited"}}),
)


# --- Anthropic messages ----------------------------------------------------------------

_ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error",
                     403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                     429: "rate_limit_error", 529: "overloaded_error"}


def _anthropic_messages(body: JsonObject) -> list[JsonObject]:
    system = body.get("system")
    head = [{"role": "system", "content": system}] if isinstance(system, str) else []
    return head + [{"role": m.get("role"), "content": m.get("content")}
                   for m in body.get("messages", [])]


def _anthropic_message(model: str, content: list[JsonObject], stop_reason: str,
                       prompt_tokens: int, output_tokens: int) -> JsonObject:
    return {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": output_tokens}}


def _anthropic_error(status: int, message: str) -> JsonObject:
    kind = _ANTHROPIC_ERRORS.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


ANTHROPIC = Wire(
    route="/v1/messages", prefix="/v1",
    messages=_anthropic_messages,
    wants_logprobs=lambda body: False,  # the Messages API has no logprobs
    answer=lambda model, text, prompt_tokens, logprob: _anthropic_message(
        model, [{"type": "text", "text": text}], "end_turn", prompt_tokens, len(text) // 4),
    blocked=lambda model, reason, prompt_tokens: _anthropic_message(
        model, [], "refusal", prompt_tokens, 0),
    error=_anthropic_error,
    rate_limited=lambda retry_after: (_retry_after_header(retry_after),
                                      _anthropic_error(429, "rate limited")),
)


# --- Gemini generateContent -----------------------------------------------------------

_GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                  404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                  503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def _parts_text(content: object) -> str:
    parts = content.get("parts", []) if isinstance(content, dict) else []
    return "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


def _gemini_messages(body: JsonObject) -> list[JsonObject]:
    system = body.get("systemInstruction")
    head = [{"role": "system", "content": _parts_text(system)}] if system else []
    return head + [{"role": "assistant" if c.get("role") == "model" else "user",
                    "content": _parts_text(c)} for c in body.get("contents", [])]


def _gemini_usage(prompt_tokens: int, output_tokens: int) -> JsonObject:
    return {"promptTokenCount": prompt_tokens, "candidatesTokenCount": output_tokens,
            "totalTokenCount": prompt_tokens + output_tokens}


def _gemini_answer(model: str, text: str, prompt_tokens: int,
                   logprob: float | None) -> JsonObject:
    candidate: JsonObject = {"content": {"role": "model", "parts": [{"text": text}]},
                             "finishReason": "STOP", "index": 0}
    if logprob is not None:
        chosen = [{"token": t, "logProbability": logprob} for t in _tokens(text)]
        candidate["avgLogprobs"] = logprob
        candidate["logprobsResult"] = {"topCandidates": [], "chosenCandidates": chosen}
    return {"candidates": [candidate], "usageMetadata": _gemini_usage(prompt_tokens, len(text) // 4),
            "modelVersion": model}


def _google_error(status: int, message: str, *details: JsonObject) -> JsonObject:
    error: JsonObject = {"code": status, "message": message,
                         "status": _GOOGLE_STATUS.get(status, "UNKNOWN")}
    if details:
        error["details"] = list(details)
    return {"error": error}


def _gemini_rate_limited(retry_after: float | None) -> tuple[dict[str, str], JsonObject]:
    # Google sends no Retry-After header: the delay is a RetryInfo detail in the body
    details = [] if retry_after is None else [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after}s"}]
    return {}, _google_error(429, "Resource has been exhausted (e.g. check quota).", *details)


GEMINI = Wire(
    route="/v1beta/models/{model}:generateContent", prefix="/v1beta",
    messages=_gemini_messages,
    wants_logprobs=lambda body: bool(body.get("generationConfig", {}).get("responseLogprobs")),
    answer=_gemini_answer,
    blocked=lambda model, reason, prompt_tokens: {
        "promptFeedback": {"blockReason": reason, "safetyRatings": []},
        "usageMetadata": _gemini_usage(prompt_tokens, 0), "modelVersion": model},
    error=lambda status, message: _google_error(status, message),
    rate_limited=_gemini_rate_limited,
)


# --- Ollama /api/chat --------------------------------------------------------------------

def _ollama_answer(model: str, text: str, prompt_tokens: int,
                   logprob: float | None) -> JsonObject:
    answer: JsonObject = {
        "model": model, "created_at": "2025-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": text},
        "done": True, "done_reason": "stop",
        "prompt_eval_count": prompt_tokens, "eval_count": len(text) // 4,
    }
    if logprob is not None:
        answer["logprobs"] = [{"token": t, "logprob": logprob} for t in _tokens(text)]
    return answer


OLLAMA = Wire(
    route="/api/chat", prefix="",
    messages=lambda body: list(body.get("messages", [])),
    wants_logprobs=lambda body: bool(body.get("logprobs")),
    answer=_ollama_answer,
    blocked=lambda model, reason, prompt_tokens: {
        "model": model, "done": True, "done_reason": reason, "prompt_eval_count": prompt_tokens},
    error=lambda status, message: {"error": message},
    rate_limited=lambda retry_after: (_retry_after_header(retry_after), {"error": "rate limited"}),
)


DIALECTS: dict[Dialect, Wire] = {"openai": OPENAI, "anthropic": ANTHROPIC,
                                 "gemini": GEMINI, "ollama": OLLAMA}
