"""Fuzz ``alchemist.infer``: every malformed or random payload gets a structured reply.

One async test starts a real daemon (real nats-server, fake providers that answer
"42" at once) and a client, then runs hypothesis from a worker thread: each
``@given`` example is sent over the test's event loop with
``asyncio.run_coroutine_threadsafe`` and its reply is checked there and then.

A reply must be decodable in the request's format (JSON when the request said
``Content-Type: application/json``, msgpack otherwise) and be either a valid
answer or ``{"error": {"code", "message"}}`` with a DESIGN.md code, a non-empty
message and the NATS micro error headers; an ``internal`` error counts as a
failure too (see ``FORBIDDEN_CODES``). A payload that breaks that is recorded
with a short repr and the run goes on, so one run reports every kind of
failure; the test fails at the end listing them. If the daemon stops answering
even a valid request, the run stops at once. After the run the daemon must
still answer a valid request, in both codecs, with no request left in flight.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import nats.errors
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.aio.msg import Msg

from tests.conftest import DaemonFactory, infer
from tests.fakes import Behaviour, FakeOpenAI

SUBJECT = "alchemist.infer"
JSON_HEADERS = {"Content-Type": "application/json"}
#: the request fields of DESIGN.md "Wire contract"
FIELDS = ("messages", "prompt", "recipe", "skill", "answer", "max_tokens", "temperature",
          "deadline_ms", "user", "session", "tags", "include_candidates")
#: the error codes of DESIGN.md "Wire contract"
ERROR_CODES = frozenset({"bad_request", "unknown_recipe", "payload_too_large", "no_providers",
                         "deadline_exceeded", "overloaded", "internal"})
#: DESIGN.md: "A bad request never crashes ... the message says what was wrong and what is
#: accepted". The fakes always answer, so nothing sent here has a legitimate reason to end
#: in ``internal``: it means a handler raised on some input, and is reported as a failure.
FORBIDDEN_CODES = frozenset({"internal"})
ERROR_CODE_HEADER = "Nats-Service-Error-Code"
ERROR_HEADER = "Nats-Service-Error"
MODELS = ("a", "b")

REPLY_TIMEOUT = 3.0  # the fakes answer at once; a valid request takes milliseconds
MAX_SHOWN_PER_GROUP = 4  # failures listed per group (all are counted)
MAX_SILENT = 5  # unanswered payloads cost REPLY_TIMEOUT each: past this many, stop sending
MAX_SIZE = 512 << 10  # stay under service.max_payload (1 MiB): this is not a size test
SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                    phases=(Phase.explicit, Phase.generate), print_blob=False,
                    suppress_health_check=list(HealthCheck))


# -- strategies ------------------------------------------------------------------------------

def _huge_ints() -> st.SearchStrategy[int]:
    """Integers far past 64 bits (JSON only; Python prints at most 4300 digits)."""
    return st.builds(lambda n, neg: -(10 ** n) if neg else 10 ** n,
                     st.integers(19, 4000), st.booleans())


#: classic numeric edge values: type-width limits, just past the float range, NaN, infinities
EDGE_INTS = [0, 1, -1, 2 ** 31, 2 ** 32, 2 ** 53 + 1, 2 ** 63 - 1, 2 ** 63, -(2 ** 63),
             2 ** 64 - 1, 2 ** 64, 10 ** 309, -(10 ** 309)]
EDGE_FLOATS = [0.0, -0.0, 2.0, 2.0000001, 1e308, -1e308, 5e-324, math.inf, -math.inf, math.nan]
INT64 = st.one_of(st.integers(-(2 ** 63), 2 ** 64 - 1),
                  st.sampled_from([i for i in EDGE_INTS if -(2 ** 63) <= i < 2 ** 64]))
JSON_INTS = st.one_of(st.integers(), st.sampled_from(EDGE_INTS), _huge_ints())
FLOATS = st.one_of(st.floats(), st.sampled_from(EDGE_FLOATS))


def json_values(ints: st.SearchStrategy[int] = JSON_INTS) -> st.SearchStrategy[Any]:
    """Any JSON value (NaN and Infinity included: Python's json reads them)."""
    scalars = st.one_of(st.none(), st.booleans(), ints, FLOATS, st.text(max_size=40))
    return st.recursive(scalars, lambda c: st.one_of(
        st.lists(c, max_size=6), st.dictionaries(st.text(max_size=12), c, max_size=6)),
        max_leaves=24)


def msgpack_values() -> st.SearchStrategy[Any]:
    """Any msgpack value: bin, ext, timestamps, 64-bit edge ints, non-string map keys."""
    keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=12), INT64, st.binary(max_size=12),
                     st.booleans(), st.none(), FLOATS)
    scalars = st.one_of(
        st.none(), st.booleans(), INT64, FLOATS, st.text(max_size=40), st.binary(max_size=64),
        st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=32)),
        st.builds(msgpack.Timestamp, st.integers(-(2 ** 63), 2 ** 63 - 1),
                  st.integers(0, 999_999_999)))
    return st.recursive(scalars, lambda c: st.one_of(
        st.lists(c, max_size=6), st.dictionaries(keys, c, max_size=6)), max_leaves=24)


def field_values(any_value: st.SearchStrategy[Any],
                 ints: st.SearchStrategy[int]) -> dict[str, st.SearchStrategy[Any]]:
    """Per request field, values near the valid ones: right and wrong types, edges, bounds."""
    def maybe(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(s, any_value)

    text = st.text(max_size=80)
    long_text = st.integers(60, 300).map(lambda n: "s" * n)
    role = maybe(st.sampled_from(["system", "user", "assistant", "wizard", "", "USER"]))
    message = st.fixed_dictionaries({}, optional={"role": role, "content": maybe(text),
                                                  "name": any_value, "extra": any_value})
    messages = st.one_of(st.lists(maybe(message), max_size=5),
                         st.integers(255, 258).map(lambda n: [{"role": "user", "content": "q"}] * n))
    bounds = st.sampled_from([0, 1, -1, 1_000_000, 1_000_001, 120_000, 120_001, 30_000])
    numbers = st.one_of(ints, FLOATS, st.booleans())
    pattern = st.one_of(
        st.text(alphabet="()[]{}?*+|\\^$.aA019,:<>P=!-#", max_size=24),
        st.integers(0, 2 ** 40).map(lambda n: f"4{{{n}}}"),  # a quantifier with a random count
        st.integers(1, 1500).map(lambda n: "(" * n + "4" + ")" * n),  # group nesting depth
        text)
    kinds = st.sampled_from(["text", "choice", "number", "json", "regex", "", "JSON", "bogus"])
    answer = st.one_of(
        st.fixed_dictionaries({}, optional={"kind": maybe(kinds), "field": maybe(text),
                                            "pattern": maybe(pattern), "extra": any_value}),
        st.builds(lambda p: {"kind": "regex", "pattern": p}, maybe(pattern)),
        pattern.map(lambda p: f"regex:{p}"),
        st.builds(lambda k, sep, rest: f"{k}{sep}{rest}", kinds, st.sampled_from(["", ":"]), text))
    return {
        "messages": maybe(messages),
        "prompt": maybe(st.one_of(text, st.sampled_from(["", "   ", "\x00", "\ud800"]))),
        "recipe": maybe(st.one_of(st.just("default"), text, long_text)),
        "skill": maybe(st.one_of(st.sampled_from(["math", "*", ""]), text, long_text)),
        "answer": maybe(answer),
        "max_tokens": maybe(st.one_of(numbers, bounds)),
        "temperature": maybe(st.one_of(numbers, st.sampled_from([0, 2, 3]))),
        "deadline_ms": maybe(st.one_of(numbers, bounds)),
        "user": maybe(st.one_of(text, long_text)),
        "session": maybe(st.one_of(text, long_text)),
        "tags": maybe(st.one_of(st.lists(maybe(text), max_size=40),
                                st.lists(st.text(min_size=60, max_size=70), max_size=3))),
        "include_candidates": maybe(st.booleans()),
    }


BASES = [{"prompt": "What is 6*7?"}, {"messages": [{"role": "user", "content": "What is 6*7?"}]}]


def many_fields(any_value: st.SearchStrategy[Any], ints: st.SearchStrategy[int],
                extra_keys: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[Any, Any]]:
    """Maps with any subset of the request fields, sometimes on a valid base or with extra keys."""
    fields = st.fixed_dictionaries({}, optional=field_values(any_value, ints))
    extras = st.dictionaries(extra_keys, any_value, max_size=2)
    return st.builds(lambda base, f, x, use_x: {**base, **f, **(x if use_x else {})},
                     st.sampled_from([{}, *BASES]), fields, extras,
                     st.integers(0, 7).map(lambda n: n == 0))


def one_field(any_value: st.SearchStrategy[Any],
              ints: st.SearchStrategy[int]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid request with one field fuzzed: reaches every field's validator and the answer path."""
    values = field_values(any_value, ints)
    return st.builds(lambda base, kv: {**base, **kv}, st.sampled_from(BASES),
                     st.sampled_from(FIELDS).flatmap(lambda k: values[k].map(lambda v: {k: v})))


JSON_ANY = json_values()
MSGPACK_ANY = msgpack_values()
JSON_MANY_FIELDS = many_fields(JSON_ANY, JSON_INTS, st.text(max_size=12))
MSGPACK_MANY_FIELDS = many_fields(
    MSGPACK_ANY, INT64,
    st.one_of(st.text(max_size=12), INT64, st.binary(max_size=8), st.sampled_from([b"prompt"])))
JSON_ONE_FIELD = one_field(JSON_ANY, JSON_INTS)
MSGPACK_ONE_FIELD = one_field(MSGPACK_ANY, INT64)


def _mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    """Flip, insert, delete or truncate bytes of a valid payload."""
    out = bytearray(data)
    for op, pos, byte in ops:
        if not out:
            break
        i = pos % len(out)
        if op == 0:
            out[i] = byte
        elif op == 1:
            out.insert(i, byte)
        elif op == 2:
            del out[i]
        else:
            del out[i:]
    return bytes(out)


VALID_BODIES = [{"prompt": "What is 6*7?", "recipe": "default", "skill": "math",
                 "answer": {"kind": "number"}, "max_tokens": 64, "temperature": 0.5,
                 "deadline_ms": 5000, "user": "u", "session": "s", "tags": ["t"],
                 "include_candidates": True},
                {"messages": [{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "What is 6*7?"}]}]
MUTATION_OPS = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 16), st.integers(0, 255)),
                        min_size=1, max_size=6)
MUTATED_JSON = st.builds(_mutate, st.sampled_from([json.dumps(b).encode() for b in VALID_BODIES]),
                         MUTATION_OPS)
MUTATED_MSGPACK = st.builds(_mutate, st.sampled_from([msgpack.packb(b) for b in VALID_BODIES]),
                            MUTATION_OPS)

#: JSON-ish fragments, so random text often gets past the first byte of the parser
JSON_TOKENS = st.lists(st.sampled_from(
    ["{", "}", "[", "]", ":", ",", '"', '"prompt"', '"messages"', '"tags"', '"temperature"',
     '"answer"', "1", "-0", "1e999", "-1e400", "NaN", "Infinity", "null", "true", '"\\ud800"',
     '"\\u0000"', '"x"', "\\", " ", "\n", "\x00", "\xff", "\ufeff"]), max_size=40).map(
    lambda parts: "".join(parts).encode("utf-8", "surrogatepass"))


def _mp_str(raw: bytes) -> bytes:
    return bytes([0xA0 | len(raw)]) + raw if len(raw) < 32 else b"\xd9" + bytes([len(raw)]) + raw


#: msgpack tokens, valid and not: maps that claim more entries than follow, strings with
#: invalid UTF-8, timestamps of the wrong length, a float NaN, 64-bit ints, reserved 0xc1
MSGPACK_TOKENS = st.builds(
    lambda head, parts: head + b"".join(parts),
    st.sampled_from([b"\x81", b"\x82", b"\x8f", b"\xde\xff\xff", b"\xdf\xff\xff\xff\xff", b""]),
    st.lists(st.one_of(
        st.sampled_from([_mp_str(f.encode()) for f in FIELDS]),
        st.binary(max_size=20).map(_mp_str),
        st.binary(max_size=12).map(lambda b: b"\xc4" + bytes([len(b)]) + b),
        st.sampled_from([b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff", b"\xc7\x05\xff",
                         b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00", b"\xcf", b"\xd3", b"\xc1",
                         b"\xc0", b"\xc2", b"\xc3", b"\x90", b"\x80", b"\xdd\xff\xff\xff\xff"]),
        st.binary(min_size=1, max_size=8)), max_size=16))


# -- sending and checking -------------------------------------------------------------------

def describe(obj: object, depth: int = 0) -> str:
    """A short repr of a payload: long ints, strings, bytes, lists and deep nesting abridged."""
    if depth > 6:
        return "..."
    if isinstance(obj, int) and not isinstance(obj, bool) and abs(obj) >= 10 ** 24:
        return f"<{'-' if obj < 0 else ''}int of {len(str(abs(obj)))} digits>"
    if isinstance(obj, str | bytes) and len(obj) > 80:
        return f"{obj[:60]!r}...<{len(obj)} {'chars' if isinstance(obj, str) else 'bytes'}>"
    if isinstance(obj, list | tuple):
        items = [describe(x, depth + 1) for x in obj[:6]]
        more = [f"...<{len(obj)} items>"] if len(obj) > 6 else []
        return "[" + ", ".join(items + more) + "]"
    if isinstance(obj, dict):
        pairs = [f"{describe(k, depth + 1)}: {describe(v, depth + 1)}"
                 for k, v in list(obj.items())[:14]]
        return "{" + ", ".join(pairs) + "}"
    return repr(obj)


class DaemonDownError(AssertionError):
    """The daemon stopped answering even a valid request: stop the whole run."""


@dataclass
class Fuzzer:
    """Sends examples from the hypothesis thread over the test's loop; records failures."""

    nc: Client
    loop: asyncio.AbstractEventLoop
    failures: dict[str, list[str]] = field(default_factory=dict)  # group -> shown failures
    failed: dict[str, set[bytes]] = field(default_factory=dict)  # group -> distinct bodies
    silent: dict[str, int] = field(default_factory=dict)  # group -> unanswered payloads
    sent: dict[str, int] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)
    down: str = ""  # set once the daemon stops answering valid requests

    async def _request(self, body: bytes, headers: dict[str, str] | None) -> Msg | str:
        try:
            return await self.nc.request(SUBJECT, body, timeout=REPLY_TIMEOUT, headers=headers)
        except nats.errors.TimeoutError:
            return f"no reply within {REPLY_TIMEOUT} s"
        except nats.errors.NoRespondersError:
            return "no responders on the subject (the endpoint is gone)"

    def request(self, body: bytes, headers: dict[str, str] | None) -> Msg | str:
        fut = asyncio.run_coroutine_threadsafe(self._request(body, headers), self.loop)
        return fut.result(timeout=REPLY_TIMEOUT + 5)

    def send(self, group: str, payload: object, body: bytes, as_json: bool) -> None:
        """Send one example and check its reply; a bad reply is recorded with the payload."""
        if self.down:  # stays raised, so hypothesis's replay of the example fails the same way
            raise DaemonDownError(self.down)
        failed = self.failed.setdefault(group, set())
        if len(body) > MAX_SIZE or body in failed or sum(self.silent.values()) >= MAX_SILENT:
            return
        self.sent[group] = self.sent.get(group, 0) + 1
        reply = self.request(body, JSON_HEADERS if as_json else None)
        problem = check_reply(reply, as_json, self.codes)
        if problem is None:
            return
        failed.add(body)
        shown = describe(payload)
        report = (f"[{group}] {problem}\n    payload ({len(body)} bytes, "
                  f"{'JSON' if as_json else 'msgpack'}): {shown}")
        shown_so_far = self.failures.setdefault(group, [])
        if len(shown_so_far) < MAX_SHOWN_PER_GROUP:
            shown_so_far.append(report)
        if isinstance(reply, str):  # no reply at all: is the daemon still there?
            self.silent[group] = self.silent.get(group, 0) + 1
            probe = self.request(json.dumps({"prompt": "ping"}).encode(), JSON_HEADERS)
            if check_reply(probe, True, {}) is not None:
                self.down = f"the daemon no longer answers a valid request after this payload:\n{report}"
                raise DaemonDownError(self.down)


def _decode(msg: Msg, as_json: bool) -> Any:
    if as_json:
        return json.loads(msg.data)
    return msgpack.unpackb(msg.data, raw=False, strict_map_key=False)


def check_reply(msg: Msg | str, as_json: bool, codes: dict[str, int]) -> str | None:
    """None when ``msg`` is a structured reply; otherwise what is wrong with it."""
    if isinstance(msg, str):
        return msg
    try:
        reply = _decode(msg, as_json)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the finding
        return f"reply is not valid {'JSON' if as_json else 'msgpack'} " \
               f"({type(exc).__name__}): {msg.data[:200]!r}"
    headers = msg.headers or {}
    if not isinstance(reply, dict):
        return f"reply is not a map: {reply!r:.200}"
    if "error" in reply:
        err = reply["error"]
        if set(reply) != {"error"} or not isinstance(err, dict):
            return f"malformed error reply: {reply!r:.300}"
        code, message = err.get("code"), err.get("message")
        codes[str(code)] = codes.get(str(code), 0) + 1
        if code not in ERROR_CODES:
            return f"error code {code!r} is not one of DESIGN.md's: {reply!r:.300}"
        if not isinstance(message, str) or not message.strip():
            return f"error without a message: {reply!r:.300}"
        if not headers.get(ERROR_CODE_HEADER):
            return f"error reply {code!r} without the {ERROR_CODE_HEADER} header " \
                   f"(headers: {headers!r})"
        if not headers.get(ERROR_HEADER):
            return f"error reply {code!r} without the {ERROR_HEADER} header (headers: {headers!r})"
        if code in FORBIDDEN_CODES:
            return f"a malformed request crashed the handler: {code!r}: {message!r:.300}"
        return None
    codes["ok"] = codes.get("ok", 0) + 1
    if ERROR_CODE_HEADER in headers:
        return f"an answer carries {ERROR_CODE_HEADER}={headers[ERROR_CODE_HEADER]!r}"
    problems = []
    if not (isinstance(reply.get("request_id"), str) and len(reply["request_id"]) >= 16):
        problems.append("request_id")
    if reply.get("text") != "42":
        problems.append("text")
    if not (reply.get("answer") is None or isinstance(reply.get("answer"), str)):
        problems.append("answer")
    conf = reply.get("confidence")
    if isinstance(conf, bool) or not isinstance(conf, int | float) or not 0.0 <= conf <= 1.0:
        problems.append("confidence")
    if reply.get("provider") not in MODELS:
        problems.append("provider")
    if not (isinstance(reply.get("recipe"), dict) and reply["recipe"].get("name") == "default"
            and isinstance(reply["recipe"].get("version"), int)):
        problems.append("recipe")
    if not (isinstance(reply.get("providers"), list) and reply["providers"]
            and all(isinstance(p, dict) and p.get("name") in MODELS for p in reply["providers"])):
        problems.append("providers")
    if not isinstance(reply.get("usage"), dict) or not isinstance(reply.get("latency_ms"), float):
        problems.append("usage/latency_ms")
    if "candidates" in reply and not isinstance(reply["candidates"], list):
        problems.append("candidates")
    if problems:
        return f"answer with bad field(s) {', '.join(problems)}: {reply!r:.400}"
    return None


# -- the hypothesis runs (called in a worker thread) --------------------------------------------

def _packb(obj: object) -> bytes | None:
    try:
        out: bytes = msgpack.packb(obj, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):  # not representable in msgpack: skip
        return None
    return out


def _dumps(obj: object, ascii_only: bool) -> bytes:
    return json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def run_all(fz: Fuzzer) -> None:
    """Every strategy group, one after the other; each @given runs 300 examples."""

    @SETTINGS
    @given(st.binary(max_size=1024))
    @example(b"")
    @example(b"\xc1")
    @example(b"\x91" * 5000 + b"\x90")  # msgpack nesting deeper than its unpacker's stack
    def random_bytes(data: bytes) -> None:
        fz.send("random bytes (msgpack)", data, data, as_json=False)

    @SETTINGS
    @given(st.one_of(st.binary(max_size=1024), JSON_TOKENS))
    @example(b"")
    @example(b"\xef\xbb\xbf{}")
    def random_json_bytes(data: bytes) -> None:
        fz.send("random bytes (JSON header)", data, data, as_json=True)

    @SETTINGS
    @given(JSON_ANY, st.booleans())
    @example(None, True)
    @example([1, 2, 3], True)
    @example({"prompt": "x", "max_tokens": 10 ** 4000}, True)
    def random_json_values(value: object, ascii_only: bool) -> None:
        fz.send("JSON values", value, _dumps(value, ascii_only), as_json=True)

    @SETTINGS
    @given(JSON_MANY_FIELDS, st.booleans())
    @example({"prompt": "\ud800", "skill": "\ud800", "user": "\ud800"}, True)
    def json_many_fields(value: dict[Any, Any], ascii_only: bool) -> None:
        fz.send("field maps (JSON)", value, _dumps(value, ascii_only), as_json=True)

    @SETTINGS
    @given(JSON_ONE_FIELD, st.booleans())
    @example({"prompt": "What is 6*7?", "temperature": 10 ** 309}, True)
    @example({"prompt": "What is 6*7?", "answer": "regex:4{4294967296}"}, True)
    @example({"prompt": "What is 6*7?", "answer": {"kind": "regex",
                                                   "pattern": "(" * 1000 + "4" + ")" * 1000}}, True)
    def json_one_field(value: dict[Any, Any], ascii_only: bool) -> None:
        fz.send("one fuzzed field (JSON)", value, _dumps(value, ascii_only), as_json=True)

    @SETTINGS
    @given(MSGPACK_MANY_FIELDS)
    @example({"prompt": "x", "max_tokens": 2 ** 64 - 1, "tags": [b"bin"]})
    def msgpack_many_fields(value: dict[Any, Any]) -> None:
        body = _packb(value)
        if body is not None:
            fz.send("field maps (msgpack)", value, body, as_json=False)

    @SETTINGS
    @given(MSGPACK_ONE_FIELD)
    @example({"prompt": "What is 6*7?", "answer": "regex:4{4294967296}"})
    def msgpack_one_field(value: dict[Any, Any]) -> None:
        body = _packb(value)
        if body is not None:
            fz.send("one fuzzed field (msgpack)", value, body, as_json=False)

    @SETTINGS
    @given(MSGPACK_ANY)
    def random_msgpack_values(value: object) -> None:
        body = _packb(value)
        if body is not None:
            fz.send("msgpack values", value, body, as_json=False)

    @SETTINGS
    @given(st.one_of(MSGPACK_TOKENS, MUTATED_MSGPACK))
    def msgpack_tokens(data: bytes) -> None:
        fz.send("msgpack tokens and mutations", data, data, as_json=False)

    @SETTINGS
    @given(MUTATED_JSON)
    def json_mutations(data: bytes) -> None:
        fz.send("JSON mutations", data, data, as_json=True)

    @SETTINGS
    @given(st.integers(1, 30_000), st.sampled_from(["list", "map"]),
           st.sampled_from(["top", "prompt", "tags", "answer", "messages", "temperature"]),
           st.booleans())
    @example(3000, "list", "tags", True)
    @example(3000, "list", "tags", False)
    def deep_nesting(depth: int, kind: str, where: str, as_json: bool) -> None:
        # built as bytes: json.dumps and msgpack.packb would hit their own recursion limits
        if as_json:
            opener, closer = (b"[", b"]") if kind == "list" else (b'{"prompt":', b"}")
            inner = opener * depth + b'"x"' + closer * depth
            if where == "top":
                body = inner
            elif where == "prompt":
                body = b'{"prompt":' + inner + b"}"
            else:
                body = b'{"prompt":"q","' + where.encode() + b'":' + inner + b"}"
        else:
            inner = (b"\x91" if kind == "list" else b"\x81\xa6prompt") * depth + b"\xa1x"
            if where == "top":
                body = inner
            elif where == "prompt":
                body = b"\x81\xa6prompt" + inner
            else:
                body = b"\x82\xa6prompt\xa1q" + _mp_str(where.encode()) + inner
        fz.send("deep nesting", f"{kind} x{depth} at {where!r}", body, as_json=as_json)

    groups: list[Callable[[], None]] = [
        random_bytes, random_json_bytes, random_json_values, json_many_fields, json_one_field,
        msgpack_many_fields, msgpack_one_field, random_msgpack_values, msgpack_tokens,
        json_mutations, deep_nesting]
    for run in groups:
        run()


# -- the test ----------------------------------------------------------------------------------

@pytest.mark.slow  # hundreds of fuzzed payloads per group through a live daemon
async def test_every_payload_gets_a_structured_reply(daemon_factory: DaemonFactory,
                                                     fake: FakeOpenAI, nc: Client) -> None:
    for m in MODELS:
        fake.set(m, Behaviour(text="42"))
    daemon = await daemon_factory(models=list(MODELS))
    fz = Fuzzer(nc, asyncio.get_running_loop())
    t0 = time.monotonic()
    await asyncio.to_thread(run_all, fz)
    elapsed = time.monotonic() - t0

    failures = [f for group in fz.failures.values() for f in group]
    n_failed = {g: len(b) for g, b in fz.failed.items() if b}
    summary = (f"{sum(fz.sent.values())} payloads in {elapsed:.1f} s; sent per group {fz.sent}; "
               f"reply codes {dict(sorted(fz.codes.items()))}")
    assert not failures, (f"{sum(n_failed.values())} distinct payload(s) without a proper "
                          f"structured reply, per group {n_failed} (at most "
                          f"{MAX_SHOWN_PER_GROUP} shown per group; {summary}):\n"
                          + "\n".join(failures))
    assert fz.codes.get("ok", 0) > 0 and fz.codes.get("bad_request", 0) > 0, summary

    # after the whole run the daemon still answers correctly, in both codecs, with nothing stuck
    for as_json in (True, False):
        reply = await infer(nc, {"prompt": "What is 6*7?", "answer": {"kind": "number"}},
                            as_json=as_json, timeout=5)
        assert reply.get("answer") == "42" and reply.get("text") == "42", reply
        assert reply["provider"] in MODELS and 0.0 < reply["confidence"] <= 1.0, reply
    for _ in range(100):  # a reply goes out before its experience is journaled: allow that
        if daemon.service.inflight == 0:
            break
        await asyncio.sleep(0.02)
    assert daemon.service.inflight == 0, f"requests stuck in flight after the run; {summary}"
    # every answered request was journaled for learning (none lost to an unencodable field)
    assert daemon.service.counts["experience_dropped"] == 0, summary
