"""Every malformed field of an ``alchemist.infer`` request or a rating gets a reply naming it.

One parametrized case per field: through :func:`parse_request` in both codecs,
then all of them at once through a real daemon (real nats-server, fake
provider), where the reply must carry the code, the message and the NATS
micro error headers. Feedback is checked the same way through
:func:`parse_feedback` (its daemon path is in tests/test_feedback.py).
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client

from alchemist.daemon.learning.feedback import FeedbackError, parse_feedback
from alchemist.daemon.serving.wire import (
    MAX_MESSAGES,
    MAX_TAGS,
    InferError,
    InferRequest,
    decode,
    parse_request,
)
from tests.conftest import DaemonFactory

MAX_DEADLINE_MS = 120_000  # the config default, which the daemon below runs with
USER = {"role": "user", "content": "q"}
ACCEPTED = ("accepted fields: messages, prompt, recipe, skill, answer, max_tokens, temperature, "
            "deadline_ms, user, session, tags, include_candidates")

#: (field, body, a fragment of the message): each body is valid but for that one field
BAD_FIELDS: list[tuple[str, Any, str]] = [
    ("prompt", {"prompt": 5}, "prompt must be a non-empty string, got 5"),
    ("prompt", {"prompt": ""}, "prompt must be a non-empty string, got ''"),
    ("prompt", {"prompt": "  \n"}, "prompt must be a non-empty string, got only whitespace"),
    ("prompt", {"prompt": "q", "messages": [USER]}, "give exactly one of 'prompt' (a string) "
                                                    "or 'messages'"),
    ("prompt", {}, "give exactly one of 'prompt' (a string) or 'messages'"),
    ("messages", {"messages": "hi"},
     f"messages must be a list of 1 to {MAX_MESSAGES} items, got 'hi'"),
    ("messages", {"messages": []},
     f"messages must be a list of 1 to {MAX_MESSAGES} items, got a list of 0 items"),
    ("messages", {"messages": [USER] * (MAX_MESSAGES + 1)},
     f"got a list of {MAX_MESSAGES + 1} items"),
    ("messages", {"messages": [{"role": "system", "content": "be brief"}]},
     "messages must contain at least one 'user' message"),
    ("messages[i]", {"messages": [USER, "hi"]}, "messages[1] must be a map, got 'hi'"),
    ("messages[i]", {"messages": [USER, {"role": "user", "content": "q", "lang": "en"}]},
     "unknown field 'lang' in messages[1]; accepted fields: role, content, name"),
    ("messages[i].role", {"messages": [USER, {"role": "bot", "content": "q"}]},
     "messages[1].role must be one of 'assistant', 'system', 'user'; got 'bot'"),
    ("messages[i].role", {"messages": [{"content": "q"}]}, "messages[0].role is required"),
    ("messages[i].content", {"messages": [{"role": "user", "content": None}]},
     "messages[0].content must be a string, got null"),
    ("messages[i].content", {"messages": [{"role": "user"}]}, "messages[0].content is required"),
    ("recipe", {"prompt": "q", "recipe": ""},
     "recipe must be a non-empty string of at most 64 characters, got ''"),
    ("skill", {"prompt": "q", "skill": "s" * 65},
     "skill must be a non-empty string of at most 64 characters, got 'sss"),
    ("answer", {"prompt": "q", "answer": 3}, "answer must be a string or a map, got 3"),
    ("answer", {"prompt": "q", "answer": {"kind": "bogus"}},
     "answer: The answer kind must be one of"),
    ("answer", {"prompt": "q", "answer": "json"}, "answer: The json answer kind needs a field"),
    ("max_tokens", {"prompt": "q", "max_tokens": 0},
     "max_tokens must be an integer between 1 and 1000000, got 0"),
    ("max_tokens", {"prompt": "q", "max_tokens": 1.5}, "max_tokens must be an integer between"),
    ("max_tokens", {"prompt": "q", "max_tokens": True}, "max_tokens must be an integer between "
                                                        "1 and 1000000, got true"),
    ("temperature", {"prompt": "q", "temperature": "hot"},
     "temperature must be a number between 0 and 2, got 'hot'"),
    ("temperature", {"prompt": "q", "temperature": 2.5},
     "temperature must be a number between 0 and 2, got 2.5"),
    ("deadline_ms", {"prompt": "q", "deadline_ms": 0},
     f"deadline_ms must be an integer between 1 and {MAX_DEADLINE_MS} (service.max_deadline_ms), "
     "got 0"),
    ("deadline_ms", {"prompt": "q", "deadline_ms": -10 ** 18},
     f"deadline_ms must be an integer between 1 and {MAX_DEADLINE_MS} (service.max_deadline_ms), "
     "got an integer of 19 digits"),
    ("deadline_ms", {"prompt": "q", "deadline_ms": "soon"},
     "deadline_ms must be an integer between 1 and service.max_deadline_ms, got 'soon'"),
    ("deadline_ms", {"prompt": "q", "deadline_ms": MAX_DEADLINE_MS + 1},
     f"deadline_ms must be an integer between 1 and {MAX_DEADLINE_MS} "
     f"(service.max_deadline_ms), got {MAX_DEADLINE_MS + 1}"),
    ("user", {"prompt": "q", "user": ""}, "user must be a non-empty string of at most 256 "
                                          "characters, got ''"),
    ("session", {"prompt": "q", "session": 5}, "session must be a non-empty string of at most "
                                               "256 characters, got 5"),
    ("tags", {"prompt": "q", "tags": "t"}, f"tags must be a list of at most {MAX_TAGS} items"),
    ("tags", {"prompt": "q", "tags": ["t"] * (MAX_TAGS + 1)},
     f"tags must be a list of at most {MAX_TAGS} items, got a list of {MAX_TAGS + 1} items"),
    ("tags", {"prompt": "q", "tags": ["ok", ""]}, "tags[1] must be a non-empty string of at "
                                                  "most 64 characters, got ''"),
    ("include_candidates", {"prompt": "q", "include_candidates": "yes"},
     "include_candidates must be true or false, got 'yes'"),
    ("include_candidates", {"prompt": "q", "include_candidates": None},
     "include_candidates must be true or false, got null"),
    ("unknown field", {"prompt": "q", "promt": "q"}, f"unknown field 'promt'; {ACCEPTED}"),
    ("wrong top-level type", [USER], "the request must be a map, got a list of 1 item"),
    ("wrong top-level type", "q", "the request must be a map, got 'q'"),
]

#: (case, as_json, raw body, fragment): bodies that are not a document of the format at all
BAD_BODIES: list[tuple[str, bool, bytes, str]] = [
    ("bad JSON", True, b'{"prompt": "q"', "the body is not valid JSON: "),
    ("bad JSON", True, b'{"prompt": "\\ud800"}', "prompt is not valid UTF-8 text (it contains "
                                                 "a lone surrogate escape"),
    ("bad JSON", True, b'{"messages": [{"role": "user", "content": "\\udc00"}]}',
     "messages[0].content is not valid UTF-8 text"),
    ("bad JSON", True, b'{"prompt": "q", "temperature": NaN}',
     "temperature must be a finite number: NaN and Infinity are not JSON"),
    ("bad JSON", True, b"[" * 5000 + b"]" * 5000, "the request must be a map, got a list"),
    ("bad msgpack", False, b"\xc1", "the body is not valid msgpack (send Content-Type: "
                                    "application/json for a JSON body): "),
    ("bad msgpack", False, msgpack.packb({"prompt": "q"})[:-1], "the body is not valid msgpack"),
    ("bad msgpack", False, b"\x81\xa6prompt\xa2\xff\xfe", "the body is not valid msgpack"),
    ("bad msgpack", False, msgpack.packb({"prompt": "q", 7: 1}),
     "the request has a key 7 that is not a string"),
    ("bad msgpack", False, msgpack.packb({"prompt": b"q"}),
     "prompt must be a non-empty string, got bytes"),
    ("empty body", False, b"", "empty request body; send a msgpack map"),
    ("empty body", True, b"", "empty request body; send a msgpack map"),
]


def _encode(body: Any, as_json: bool) -> bytes:
    return json.dumps(body).encode() if as_json else msgpack.packb(body)


def _parse(data: bytes, as_json: bool) -> InferRequest:
    return parse_request(decode(data, as_json), MAX_DEADLINE_MS)


def _cases() -> list[tuple[str, bool, bytes, str]]:
    out = [(f, j, _encode(body, j), frag) for f, body, frag in BAD_FIELDS for j in (True, False)]
    return out + BAD_BODIES


@pytest.mark.parametrize(("field", "as_json", "data", "fragment"), _cases(),
                         ids=[f"{c[0]}-{'json' if c[1] else 'msgpack'}-{i}"
                              for i, c in enumerate(_cases())])
def test_parse_request_names_the_field(field: str, as_json: bool, data: bytes,
                                       fragment: str) -> None:
    with pytest.raises(InferError) as info:
        _parse(data, as_json)
    assert info.value.code == "bad_request"
    assert fragment in info.value.message, info.value.message


def test_a_valid_request_keeps_its_values() -> None:
    body = {"messages": [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": "q", "name": "ann"}],
            "recipe": "r", "skill": "math", "answer": "json:answer", "max_tokens": 5,
            "temperature": 1, "deadline_ms": 500, "user": "u", "session": "s", "tags": ["a"],
            "include_candidates": True}
    for as_json in (True, False):
        req = _parse(_encode(body, as_json), as_json)
        assert [(m.role, m.content) for m in req.messages] == [("system", "be brief"),
                                                               ("user", "q")]
        assert (req.recipe, req.skill, req.max_tokens, req.deadline_ms) == ("r", "math", 5, 500)
        assert req.temperature == 1.0 and isinstance(req.temperature, float)
        assert req.answer is not None and (req.answer.kind, req.answer.field) == ("json", "answer")
        assert (req.user, req.session, req.tags, req.include_candidates) == ("u", "s", ("a",), True)
    req = _parse(_encode({"prompt": "q", "recipe": None}, True), True)
    assert req.recipe == "default" and req.tags == () and req.answer is None


async def test_the_daemon_replies_with_the_field(daemon_factory: DaemonFactory,
                                                 nc: Client) -> None:
    await daemon_factory(models=["a"])
    for field, as_json, data, fragment in _cases():
        headers = {"Content-Type": "application/json"} if as_json else None
        msg = await nc.request("alchemist.infer", data, timeout=5, headers=headers)
        reply = json.loads(msg.data) if as_json else msgpack.unpackb(msg.data)
        assert reply["error"]["code"] == "bad_request", (field, reply)
        assert fragment in reply["error"]["message"], (field, reply)
        assert msg.headers and msg.headers["Nats-Service-Error-Code"] == "400", field
        assert msg.headers["Nats-Service-Error"] == reply["error"]["message"][:256], field


# -- feedback ------------------------------------------------------------------------------

RATING = {"request_id": "r1", "rating": "up"}
BAD_FEEDBACK: list[tuple[str, Any, str]] = [
    ("request_id", {"rating": 1}, "request_id is required"),
    ("request_id", {"request_id": "", "rating": 1},
     "request_id must be the request_id string from the infer reply (1 to 128 characters), "
     "got ''"),
    ("request_id", {"request_id": 7, "rating": 1}, "request_id must be the request_id string"),
    ("request_id", {"request_id": "r" * 129, "rating": 1}, "request_id must be the request_id"),
    ("rating", {"request_id": "r1"}, "rating is required"),
    ("rating", {**RATING, "rating": 5},
     "rating must be one of -1, 1, '+1', '-1', 'down', 'up'; got 5"),
    ("rating", {**RATING, "rating": True}, "rating must be one of -1, 1, '+1', '-1', 'down', "
                                           "'up'; got true"),
    ("rating", {**RATING, "rating": "UP"}, "rating must be one of -1, 1, '+1', '-1', 'down', "
                                           "'up'; got 'UP'"),
    ("rating", {**RATING, "rating": 1.0}, "rating must be one of"),
    ("user", {**RATING, "user": ""}, "user must be a non-empty string of at most 256 "
                                     "characters, got ''"),
    ("user", {**RATING, "user": ["u"]}, "user must be a non-empty string"),
    ("ts", {**RATING, "ts": -1}, "ts must be a number of seconds since the epoch (0 to 1e11), "
                                 "got -1"),
    ("ts", {**RATING, "ts": "now"}, "ts must be a number of seconds since the epoch"),
    ("ts", {**RATING, "ts": 1e12}, "ts must be a number of seconds since the epoch"),
    ("comment", {**RATING, "comment": "c" * 4001},
     "comment must be a string of at most 4000 characters"),
    ("comment", {**RATING, "comment": 5}, "comment must be a string of at most 4000 characters, "
                                          "got 5"),
    ("unknown field", {**RATING, "stars": 5},
     "unknown field 'stars'; accepted fields: request_id, rating, user, ts, comment"),
]


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "msgpack"])
@pytest.mark.parametrize(("field", "body", "fragment"), BAD_FEEDBACK,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_FEEDBACK)])
def test_parse_feedback_names_the_field(field: str, body: Any, fragment: str,
                                        as_json: bool) -> None:
    with pytest.raises(FeedbackError) as info:
        parse_feedback(_encode(body, as_json))
    assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize(("data", "fragment"), [
    (b"[1, 2]", "payload is neither a msgpack nor a JSON map"),
    (msgpack.packb([1, 2]), "payload is neither a msgpack nor a JSON map"),
    (b"", "payload is neither a msgpack nor a JSON map"),
    (b'{"request_id": "r1", "rating": 1', "payload is neither a msgpack nor a JSON map (Input "
                                          "data was truncated)"),
    (msgpack.packb(RATING)[:-1], "payload is neither a msgpack nor a JSON map (Input data was "
                                 "truncated)"),
    (msgpack.packb({**RATING, "ts": float("nan")}), "ts must be a number of seconds since the "
                                                   "epoch (0 to 1e11), got nan"),
])
def test_parse_feedback_names_the_format(data: bytes, fragment: str) -> None:
    with pytest.raises(FeedbackError) as info:
        parse_feedback(data)
    assert fragment in str(info.value), str(info.value)


def test_parse_feedback_reads_both_codecs() -> None:
    for as_json in (True, False):
        fb = parse_feedback(_encode({**RATING, "rating": "-1", "user": "u", "ts": 12,
                                     "comment": "ok"}, as_json))
        assert (fb.request_id, fb.rating, fb.user, fb.ts, fb.comment) == ("r1", -1, "u", 12.0,
                                                                         "ok")
        fb = parse_feedback(b" \n" + _encode(RATING, True) if as_json else _encode(RATING, False))
        assert fb.rating == 1 and fb.user == "anonymous" and fb.ts > 1e9 and fb.comment is None
