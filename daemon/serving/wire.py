"""The wire contract of ``alchemist.infer``: decoding, validation, replies, errors.

Payloads are msgpack maps, or JSON when the request carries
``Content-Type: application/json`` (and then the reply is JSON too). The body
is declared once, as :class:`InferBody`, and decoded straight into it in one
pass (:func:`decode`); :func:`parse_request` adds the rules that depend on the
daemon's config and returns the :class:`InferRequest` the daemon works with.
Every problem with a request becomes an :class:`InferError` with one of the
codes of DESIGN.md and a message that says what was wrong and what is accepted.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from alchemist.adapters import Message
from alchemist.adapters.base import HOPS_HEADER, MAX_HOPS
from alchemist.answers.extract import AnswerSpec
from alchemist.schema import SchemaError, decode_json, decode_msgpack

#: error code -> the status-like code set in the NATS micro error header
ERROR_STATUS = {
    "bad_request": "400", "unknown_recipe": "404", "payload_too_large": "413",
    "no_providers": "502", "deadline_exceeded": "504", "overloaded": "503", "internal": "500",
}
MAX_MESSAGES = 256
MAX_TAGS = 32
MAX_TOKENS = 1_000_000

_Name = Annotated[str, Meta(min_length=1, max_length=64)]
_Label = Annotated[str, Meta(min_length=1, max_length=256)]


class InferError(Exception):
    """A request that gets an error reply instead of an answer."""

    def __init__(self, code: str, message: str) -> None:
        assert code in ERROR_STATUS, code
        super().__init__(message)
        self.code = code
        self.message = message


class WireMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One entry of ``messages``: ``{role, content}`` (a ``name`` is accepted and unused)."""

    role: Literal["system", "user", "assistant"]
    content: str
    name: str | None = None


class InferBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of an ``alchemist.infer`` request, as sent (DESIGN.md "Wire contract")."""

    messages: Annotated[tuple[WireMessage, ...], Meta(min_length=1, max_length=MAX_MESSAGES)] \
        | None = None
    prompt: Annotated[str, Meta(min_length=1)] | None = None
    recipe: _Name | None = None
    skill: _Name | None = None
    #: an answer spec: ``{"kind": ..., "field"/"pattern": ...}`` or ``"json:answer"``
    answer: str | dict[str, Any] | None = None
    max_tokens: Annotated[int, Meta(ge=1, le=MAX_TOKENS)] | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None
    #: its bounds are checked by :func:`parse_request`, which knows ``service.max_deadline_ms``,
    #: so that both bounds are told in one message
    deadline_ms: Annotated[int, Meta(description="an integer between 1 and "
                                                 "service.max_deadline_ms")] | None = None
    user: _Label | None = None
    session: _Label | None = None
    tags: Annotated[tuple[_Name, ...], Meta(max_length=MAX_TAGS)] | None = None
    include_candidates: bool = False

    def __post_init__(self) -> None:
        # lone surrogates need no rule here: msgspec's decoders refuse them (see _not_json)
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of 'prompt' (a string) or 'messages' "
                             "(a list of {role, content})")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("prompt must be a non-empty string, got only whitespace")
        if self.messages is not None and not any(m.role == "user" for m in self.messages):
            raise ValueError("messages must contain at least one 'user' message")


class InferRequest(msgspec.Struct, frozen=True):
    """A validated ``alchemist.infer`` request, as the daemon works with it.

    Never decoded (:class:`InferBody` is); a frozen Struct rather than a frozen
    dataclass because it is built once per request and builds ten times faster.
    """

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


def decode(data: bytes, as_json: bool) -> InferBody:
    """Decode and validate a body in one pass; any problem is a ``bad_request`` that says so."""
    if not data:
        raise InferError("bad_request", "empty request body; send a msgpack map (or JSON with "
                         "the header Content-Type: application/json) with 'prompt' or 'messages'")
    try:
        if as_json:
            return decode_json(data, InferBody, document="the request")
        return decode_msgpack(data, InferBody, document="the request")
    except SchemaError as exc:
        raise InferError("bad_request", str(exc)) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        if as_json:
            raise InferError("bad_request", _not_json(data, exc)) from None
        raise InferError("bad_request", "the body is not valid msgpack (send Content-Type: "
                         f"application/json for a JSON body): {_reason(exc)}") from None


def parse_request(body: InferBody, max_deadline_ms: int) -> InferRequest:
    """The checks that depend on the daemon (deadline bound, answer spec), then the request."""
    deadline = body.deadline_ms
    if deadline is not None and not 1 <= deadline <= max_deadline_ms:
        got = deadline if abs(deadline) < 10**15 else f"an integer of {len(str(abs(deadline)))} digits"
        raise InferError("bad_request", f"deadline_ms must be an integer between 1 and "
                         f"{max_deadline_ms} (service.max_deadline_ms), got {got}")
    answer = None
    if body.answer is not None:
        try:
            answer = AnswerSpec.parse(body.answer)
        except ValueError as exc:
            raise InferError("bad_request", f"answer: {exc}") from None
    if body.prompt is not None:
        messages: tuple[Message, ...] = (Message("user", body.prompt),)
    else:
        messages = tuple(Message(m.role, m.content) for m in body.messages or ())
    return InferRequest(
        messages=messages, recipe=body.recipe or "default", skill=body.skill, answer=answer,
        max_tokens=body.max_tokens, temperature=body.temperature, deadline_ms=body.deadline_ms,
        user=body.user, session=body.session, tags=body.tags or (),
        include_candidates=body.include_candidates,
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "it is nested too deeply"
    return str(exc) or type(exc).__name__


def _not_json(data: bytes, exc: BaseException) -> str:
    """Why msgspec refused a JSON body; the error path only, so it may parse twice.

    msgspec refuses lone UTF-16 surrogate escapes (``"\\ud800"``) and NaN as
    syntax errors; Python's parser reads them, which lets us name the field.
    """
    try:
        loose = json.loads(data)
    except (ValueError, RecursionError):
        return f"the body is not valid JSON: {_reason(exc)}"
    where = _find(loose, _lone_surrogate)
    if where is not None:
        return (f"{where or 'the request'} is not valid UTF-8 text (it contains a lone "
                "surrogate escape such as \\ud800)")
    where = _find(loose, lambda v: isinstance(v, float) and not math.isfinite(v))
    if where is not None:
        return f"{where or 'the request'} must be a finite number: NaN and Infinity are not JSON"
    return f"the body is not valid JSON: {_reason(exc)}"


def _lone_surrogate(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _find(value: object, bad: Any, path: str = "", depth: int = 0) -> str | None:
    """The path of the first value (or map key) in a JSON document for which ``bad`` is true."""
    if depth > 64:
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            if bad(k):
                return path
            found = _find(v, bad, sub, depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = _find(v, bad, f"{path}[{i}]", depth + 1)
            if found is not None:
                return found
        return None
    return path if bad(value) else None


def _plain(obj: object) -> object:
    """Numbers of other types (numpy scalars from fusion) as plain ints and floats."""
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    raise NotImplementedError(f"cannot encode a {type(obj).__name__} in a reply")


_JSON = msgspec.json.Encoder(enc_hook=_plain)
_MSGPACK = msgspec.msgpack.Encoder(enc_hook=_plain)


def encode(obj: Mapping[str, Any], as_json: bool) -> bytes:
    """Serialize a reply in the request's format (plain JSON: NaN becomes null)."""
    return _JSON.encode(obj) if as_json else _MSGPACK.encode(obj)


def error_body(code: str, message: str) -> dict[str, Any]:
    """The body of an error reply."""
    return {"error": {"code": code, "message": message}}


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
