"""Fuzz the HTTP front door's bodies: every one gets a 200 or a clear 4xx, and it keeps serving.

A real daemon (real nats-server, fake providers answering "42") with ``[http]``
on; hypothesis runs in a worker thread and sends each example over the test's
event loop (as ``test_fuzz.py`` does for NATS). Bodies: random bytes, random
JSON values, valid requests with fields replaced by values of any type, and
the named cases (malformed JSON, a body over ``http.max_body_bytes``, wrong
types). A reply must be JSON: a ``chat.completion`` for 200, else OpenAI's
error shape with a contract code and a 4xx status. After the run the daemon
still answers, over HTTP and over NATS.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client

from tests.conftest import DaemonFactory, infer
from tests.fakes import Behaviour, FakeOpenAI

MAX_BODY = 64 << 10
VALID: dict[str, Any] = {"model": "default", "messages": [{"role": "user", "content": "6*7?"}]}
FIELDS = ("model", "messages", "stream", "max_tokens", "temperature", "user", "n", "alchemist",
          "stream_options", "max_completion_tokens")
SETTINGS = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                    phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


def _with(**fields: Any) -> bytes:
    return json.dumps({**VALID, **fields}).encode()


bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.tuples(st.sampled_from(FIELDS), json_values).map(lambda kv: _with(**{kv[0]: kv[1]})),
    st.lists(json_values, max_size=3).map(lambda m: _with(messages=m)),
)


def check(status: int, body: bytes) -> str | None:
    """What is wrong with a reply (None: fine)."""
    if status == 200 and body.startswith(b"data: "):  # a streamed answer
        return None if body.endswith(b"data: [DONE]\n\n") else "a stream without [DONE]"
    try:
        reply = json.loads(body)
    except ValueError:
        return f"{status}: not JSON: {body[:80]!r}"
    if status == 200:
        return None if reply.get("object") == "chat.completion" else "200 without completion"
    error = reply.get("error") if isinstance(reply, dict) else None
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        return f"{status}: not OpenAI's error shape: {reply!r:.120}"
    if not 400 <= status < 500 or not error["message"]:
        return f"{status}: {error['code']}: {error['message']:.120}"
    return None


async def test_http_bodies_get_a_clear_4xx_and_the_daemon_keeps_serving(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    for model in ("a", "b"):
        fake.set(model, Behaviour(text="42"))
    d = await daemon_factory(models=["a", "b"], http={"enabled": True, "listen": "127.0.0.1:0",
                                                      "max_body_bytes": MAX_BODY})
    assert d.http is not None
    url = d.http.url + "/v1/chat/completions"
    loop = asyncio.get_running_loop()
    failures: list[str] = []
    async with aiohttp.ClientSession() as session:

        async def post(data: bytes) -> tuple[int, bytes]:
            async with session.post(url, data=data,
                                    headers={"Content-Type": "application/json"}) as r:
                return r.status, await r.read()

        @SETTINGS
        @given(bodies)
        @example(b"{not json")
        @example(b"")
        @example(b"x" * (MAX_BODY + 1))
        @example(_with(messages=[{"role": "user", "content": "y" * MAX_BODY}]))
        @example(_with(messages="hello"))
        @example(_with(temperature="hot"))
        @example(_with(max_tokens=-3))
        @example(_with(stream="yes"))
        @example(_with(stream=True))
        @example(_with(n=3))
        @example(_with(model=7))
        @example(_with(messages=[{"role": "user", "content": [{"type": "image_url"}]}]))
        @example(_with(alchemist={"prompt": "x"}))
        @example(_with(alchemist={"deadline_ms": 10**20}))
        @example(json.dumps([VALID]).encode())
        def run(data: bytes) -> None:
            status, body = asyncio.run_coroutine_threadsafe(post(data), loop).result(timeout=10)
            problem = check(status, body)
            if problem is not None:
                failures.append(f"{data[:60]!r}: {problem}")

        await asyncio.to_thread(run)
        assert not failures, "\n".join(failures[:20])
        status, body = await post(json.dumps(VALID).encode())
        assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "42"
        async with session.post(url, data=b"x" * (MAX_BODY + 1)) as r:
            assert r.status == 413 and (await r.json())["error"]["code"] == "payload_too_large"
    assert (await infer(nc, {"prompt": "still there?"}))["text"] == "42"
    assert d.service is not None and d.service.inflight == 0 and d.http.inflight == 0
    assert d.service.counts.get("error_internal", 0) == 0


@pytest.mark.parametrize("method,path,status", [("GET", "/v1/chat/completions", 405),
                                                ("POST", "/v1/nothing", 404)])
async def test_wrong_routes_get_openai_errors(daemon_factory: DaemonFactory, method: str,
                                              path: str, status: int) -> None:
    d = await daemon_factory(models=["a"], http={"enabled": True, "listen": "127.0.0.1:0"})
    assert d.http is not None
    async with aiohttp.ClientSession() as s, s.request(method, d.http.url + path) as r:
        assert r.status == status
        assert set((await r.json())["error"]) == {"message", "type", "param", "code"}
