"""The wire contract of ``alchemist.infer``: decoding, validation, replies, errors.

Payloads are msgpack maps, or JSON when the request carries
``Content-Type: application/json`` (and then the reply is JSON too). Every
problem with a request becomes an :class:`InferError` with one of the codes
of DESIGN.md and a message that says what was wrong and what is accepted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from alchemist.adapters import Message
from alchemist.adapters.base import HOPS_HEADER, MAX_HOPS
from alchemist.answers.extract import AnswerSpec

#: error code -> the status-like code set in the NATS micro error header
ERROR_STATUS = {
    "bad_request": "400", "unknown_recipe": "404", "payload_too_large": "413",
    "no_providers": "502", "deadline_exceeded": "504", "overloaded": "503", "internal": "500",
}
MAX_MESSAGES = 256
MAX_TAGS = 32
_FIELDS = ("messages", "prompt", "recipe", "skill", "answer", "max_tokens", "temperature",
           "deadline_ms", "user", "session", "tags", "include_candidates")
_ROLES = ("system", "user", "assistant")


class InferError(Exception):
    """A request that gets an error reply instead of an answer."""

    def __init__(self, code: str, message: str) -> None:
        assert code in ERROR_STATUS, code
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A validated ``alchemist.infer`` request."""

    messages: tuple[Message, ...]
    recipe: str = "default"
    skill: str | None = None
    answer: AnswerSpec | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    deadline_ms: int | None = None
    user: str | None = None
    session: str | None = None
    tags: tuple[str, ...] = ()
    include_candidates: bool = False


def is_json(headers: Mapping[str, str] | None) -> bool:
    """True when the request asked for JSON (``Content-Type: application/json``)."""
    if not headers:
        return False
    for key, value in headers.items():
        if key.lower() == "content-type":
            return value.split(";")[0].strip().lower() == "application/json"
    return False


def decode(data: bytes, as_json: bool) -> object:
    """Parse a payload; a parse failure is a ``bad_request`` saying which format was expected."""
    if not data:
        raise InferError("bad_request", "empty request body; send a msgpack map (or JSON with "
                         "the header Content-Type: application/json) with 'prompt' or 'messages'")
    try:
        if as_json:
            return json.loads(data)
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
            TypeError, UnicodeDecodeError, RecursionError) as exc:
        fmt = "JSON" if as_json else ("msgpack (send Content-Type: application/json "
                                      "for a JSON body)")
        raise InferError("bad_request", f"the body is not valid {fmt}: "
                         f"{type(exc).__name__}") from None


def encode(obj: Mapping[str, Any], as_json: bool) -> bytes:
    """Serialize a reply in the request's format."""
    if as_json:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def error_body(code: str, message: str) -> dict[str, Any]:
    """The body of an error reply."""
    return {"error": {"code": code, "message": message}}


def _utf8(value: str, where: str) -> str:
    """Refuse strings that are not valid Unicode text (lone surrogates from JSON escapes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InferError("bad_request", f"{where} is not valid UTF-8 text (it contains a lone "
                         "surrogate escape such as \\ud800)") from None
    return value


def _str(raw: Mapping[str, Any], key: str, limit: int = 256) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InferError("bad_request", f"'{key}' must be a non-empty string of at most "
                         f"{limit} characters")
    return _utf8(value, f"'{key}'")


def _int(raw: Mapping[str, Any], key: str, lo: int, hi: int) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InferError("bad_request", f"'{key}' must be an integer between {lo} and {hi}, "
                         f"got {value!r}"[:300])
    return value


def _messages(raw: Mapping[str, Any]) -> tuple[Message, ...]:
    has_m, has_p = raw.get("messages") is not None, raw.get("prompt") is not None
    if has_m == has_p:
        raise InferError("bad_request", "give exactly one of 'prompt' (a string) or 'messages' "
                         "(a list of {role, content})")
    if has_p:
        prompt = raw["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise InferError("bad_request", "'prompt' must be a non-empty string")
        return (Message("user", _utf8(prompt, "'prompt'")),)
    items = raw["messages"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_MESSAGES:
        raise InferError("bad_request", f"'messages' must be a list of 1 to {MAX_MESSAGES} "
                         "{role, content} maps")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) - {"role", "content", "name"}:
            raise InferError("bad_request", f"messages[{i}] must be a map with 'role' and "
                             "'content' (and optionally 'name')")
        role, content = item.get("role"), item.get("content")
        if role not in _ROLES:
            raise InferError("bad_request", f"messages[{i}].role must be one of "
                             f"{', '.join(_ROLES)}, got {role!r}"[:300])
        if not isinstance(content, str):
            raise InferError("bad_request", f"messages[{i}].content must be a string")
        out.append(Message(role, _utf8(content, f"messages[{i}].content")))
    if not any(m.role == "user" for m in out):
        raise InferError("bad_request", "'messages' must contain at least one 'user' message")
    return tuple(out)


def parse_request(raw: object, max_deadline_ms: int) -> InferRequest:
    """Validate a decoded payload into an :class:`InferRequest`."""
    if not isinstance(raw, dict):
        raise InferError("bad_request", f"the request must be a map, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in _FIELDS)
    if unknown:
        raise InferError("bad_request", f"unknown field {unknown[0]!r}"[:200]
                         + f"; accepted fields: {', '.join(_FIELDS)}")
    messages = _messages(raw)
    answer = None
    if raw.get("answer") is not None:
        try:
            answer = AnswerSpec.parse(raw["answer"])
        except ValueError as exc:
            raise InferError("bad_request", f"'answer': {exc}") from None
    temperature = raw.get("temperature")
    if temperature is not None and (isinstance(temperature, bool)
                                    or not isinstance(temperature, int | float)
                                    or not 0.0 <= temperature <= 2.0):  # NaN fails this too
        raise InferError("bad_request", "'temperature' must be a number between 0 and 2")
    tags = raw.get("tags")
    if tags is not None and (not isinstance(tags, list) or len(tags) > MAX_TAGS
                             or not all(isinstance(t, str) and 0 < len(t) <= 64 for t in tags)):
        raise InferError("bad_request", f"'tags' must be a list of at most {MAX_TAGS} strings "
                         "of 1 to 64 characters")
    for i, tag in enumerate(tags or ()):
        _utf8(tag, f"tags[{i}]")
    include = raw.get("include_candidates", False)
    if not isinstance(include, bool):
        raise InferError("bad_request", "'include_candidates' must be true or false")
    return InferRequest(
        messages=messages, recipe=_str(raw, "recipe", 64) or "default",
        skill=_str(raw, "skill", 64), answer=answer,
        max_tokens=_int(raw, "max_tokens", 1, 1_000_000),
        temperature=None if temperature is None else float(temperature),
        deadline_ms=_int(raw, "deadline_ms", 1, max_deadline_ms),
        user=_str(raw, "user"), session=_str(raw, "session"), tags=tuple(tags or ()),
        include_candidates=include,
    )




def parse_hops(headers: Mapping[str, str] | None) -> int:
    """How many alchemists this request crossed (``Alchemist-Hops``); refuse a loop."""
    raw = (headers or {}).get(HOPS_HEADER)
    if raw is None:
        return 0
    if not raw.isdigit():
        raise InferError("bad_request", f"header {HOPS_HEADER} must be a small integer")
    hops = int(raw)
    if hops > MAX_HOPS:
        raise InferError("bad_request", f"this request already crossed {hops} llm-alchemist "
                         f"daemons (limit {MAX_HOPS}): a loop of alchemists calling each other?")
    return hops
