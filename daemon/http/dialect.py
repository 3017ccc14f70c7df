"""The OpenAI chat-completions dialect, translated onto ``alchemist.infer`` and back.

:func:`infer_body` turns a ``POST /v1/chat/completions`` body into the very
:class:`InferBody` a NATS client would send (so the wire schema validates it,
with the same messages); :func:`completion` and :func:`chunks` turn a fused
reply into a ``chat.completion`` object or ``chat.completion.chunk`` events;
:func:`error_body` is OpenAI's error shape carrying the contract's codes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from alchemist.daemon.serving.wire import ERROR_STATUS, InferBody, InferError
from alchemist.schema import SchemaError, convert, decode_json

__all__ = ["ChatBody", "chunks", "completion", "decode_body", "error_body",
           "infer_body", "recipe_of", "status_of"]

MODEL_PREFIX = "alchemist/"
#: the request keys of ``alchemist.infer`` a client may set through the ``alchemist`` object
EXTENSION_KEYS = ("skill", "answer", "deadline_ms", "session", "tags", "include_candidates")
#: contract code -> OpenAI error type
_TYPES = {"bad_request": "invalid_request_error", "unknown_recipe": "invalid_request_error",
          "payload_too_large": "invalid_request_error", "overloaded": "server_error",
          "no_providers": "server_error", "deadline_exceeded": "server_error",
          "internal": "server_error", "unauthorized": "authentication_error",
          "not_found": "invalid_request_error", "method_not_allowed": "invalid_request_error"}
_STATUS = {**{code: int(s) for code, s in ERROR_STATUS.items()}, "unauthorized": 401,
           "not_found": 404, "method_not_allowed": 405}


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = False


class ChatBody(msgspec.Struct, frozen=True):
    """A chat-completions request. Keys of OpenAI's API not listed here (``top_p``,
    ``seed``, ...) are accepted and ignored, as an SDK sends them unasked."""

    model: Annotated[str, Meta(min_length=1, max_length=128)]
    messages: Annotated[list[dict[str, Any]], Meta(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    user: str | None = None
    n: Annotated[int, Meta(ge=1, le=1, description="1 (one fused answer)")] = 1
    #: the extension object: ``alchemist.infer`` keys (see :data:`EXTENSION_KEYS`)
    alchemist: dict[str, Any] | None = None


def decode_body(data: bytes, kind: type[Any]) -> Any:
    """``data`` as JSON of ``kind``; a ``bad_request`` that says what was wrong."""
    if not data:
        raise InferError("bad_request", "empty request body; send a JSON object")
    try:
        return decode_json(data, kind, document="the request")
    except SchemaError as exc:
        raise InferError("bad_request", str(exc)) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise InferError("bad_request", f"the body is not valid JSON: {exc}") from None


def recipe_of(model: str) -> str:
    """The recipe a ``model`` names: ``alchemist/<recipe>`` or the bare recipe name."""
    return model.removeprefix(MODEL_PREFIX) or "default"


def _content(index: int, content: object) -> object:
    """A message's content as one string: text parts joined; other parts refused."""
    if not isinstance(content, list):
        return content  # the wire schema checks it is a string
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text" \
                or not isinstance(part.get("text"), str):
            raise InferError("bad_request", f"messages[{index}].content: only text parts "
                             '({"type": "text", "text": "..."}) are accepted')
        texts.append(part["text"])
    return "\n".join(texts)


def infer_body(chat: ChatBody) -> InferBody:
    """The ``alchemist.infer`` request a chat-completions body stands for."""
    messages = []
    for i, m in enumerate(chat.messages):
        role = m.get("role")
        messages.append({"role": "system" if role == "developer" else role,
                         "content": _content(i, m.get("content"))})
    raw: dict[str, Any] = {"messages": messages, "recipe": recipe_of(chat.model)}
    tokens = chat.max_completion_tokens or chat.max_tokens
    for key, value in (("max_tokens", tokens), ("temperature", chat.temperature),
                       ("user", chat.user)):
        if value is not None:
            raw[key] = value
    for key, value in (chat.alchemist or {}).items():
        if key not in EXTENSION_KEYS:
            raise InferError("bad_request", f"alchemist.{key} is not accepted; the alchemist "
                             f"object may set {', '.join(EXTENSION_KEYS)}")
        raw[key] = value
    try:
        return convert(raw, InferBody, document="the request")
    except SchemaError as exc:
        raise InferError("bad_request", str(exc)) from None


def status_of(code: str) -> int:
    """The HTTP status of a contract error code."""
    return _STATUS.get(code, 500)


def error_body(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape; ``code`` is the contract's (``bad_request``, ...)."""
    return {"error": {"message": message, "type": _TYPES.get(code, "server_error"),
                      "param": param, "code": code}}


def _usage(reply: dict[str, Any]) -> dict[str, Any]:
    usage = reply.get("usage") or {}
    prompt, done = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}


def extension(reply: dict[str, Any]) -> dict[str, Any]:
    """The ``alchemist`` object of a reply: what the fusion did, for feedback and audits."""
    out = {key: reply.get(key) for key in ("request_id", "confidence", "answer", "provider",
                                           "recipe", "strategy", "providers", "latency_ms")}
    out["cost"] = (reply.get("usage") or {}).get("cost")
    if "candidates" in reply:
        out["candidates"] = reply["candidates"]
    return out


def _model(reply: dict[str, Any]) -> str:
    return MODEL_PREFIX + str(reply["recipe"]["name"])


def completion(reply: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` object with the fused text."""
    return {
        "id": f"chatcmpl-{reply['request_id']}", "object": "chat.completion",
        "created": int(time.time()), "model": _model(reply),
        "system_fingerprint": f"{reply['recipe']['name']}-v{reply['recipe']['version']}",
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": reply["text"]}}],
        "usage": _usage(reply), "alchemist": extension(reply),
    }


def chunks(reply: dict[str, Any], include_usage: bool) -> Iterator[dict[str, Any]]:
    """The fused answer as ``chat.completion.chunk`` events: the role, the text in one
    piece (fusion has decided it whole), the stop (with the ``alchemist`` object), and
    the usage when asked (``stream_options.include_usage``)."""
    head = {"id": f"chatcmpl-{reply['request_id']}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": _model(reply),
            "system_fingerprint": f"{reply['recipe']['name']}-v{reply['recipe']['version']}"}

    def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}], **extra}

    yield chunk({"role": "assistant", "content": ""}, None)
    yield chunk({"content": reply["text"]}, None)
    yield chunk({}, "stop", alchemist=extension(reply))
    if include_usage:
        yield {**head, "choices": [], "usage": _usage(reply)}
