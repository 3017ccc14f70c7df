"""The HTTP front door, called with the real OpenAI SDK: real daemon, nats-server, fake providers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from nats.aio.client import Client

from alchemist.daemon.config import ConfigError, parse_config
from alchemist.daemon.runtime.app import Daemon
from tests.conftest import DaemonFactory, infer, rate, until
from tests.fakes import Behaviour, FakeOpenAI

KEY = "sk-test-front-door-0123456789"


def door(d: Daemon) -> str:
    assert d.http is not None
    return d.http.url


async def keyed(daemon_factory: DaemonFactory, tmp_path: Path, **sections: Any) -> Daemon:
    keys = tmp_path / "keys"
    keys.write_text(f"# one key a line\n{KEY}\n\nsk-another-key-98765\n")
    return await daemon_factory(http={"enabled": True, "listen": "127.0.0.1:0",
                                      "api_keys_file": str(keys)}, **sections)


def client(d: Daemon, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=door(d) + "/v1", api_key=key, max_retries=0)


async def test_a_completion_through_the_sdk(daemon_factory: DaemonFactory, fake: FakeOpenAI,
                                            tmp_path: Path) -> None:
    fake.set("a", Behaviour(text="The answer is 42."))
    fake.set("b", Behaviour(text="42"))
    fake.set("c", Behaviour(text="17"))
    d = await keyed(daemon_factory, tmp_path, recipes={"default": {"answer": {"kind": "number"}}})
    async with client(d) as oa:
        out = await oa.chat.completions.create(
            model="alchemist/default", messages=[{"role": "user", "content": "6*7?"}])
    assert out.object == "chat.completion"
    assert out.choices[0].message.content in ("The answer is 42.", "42")
    assert out.choices[0].finish_reason == "stop"
    assert out.usage is not None and out.usage.completion_tokens > 0
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    ext = (out.model_extra or {})["alchemist"]
    assert ext["confidence"] == pytest.approx(2 / 3, abs=1e-3)
    assert ext["recipe"] == {"name": "default", "version": 1}
    assert {p["name"] for p in ext["providers"]} == {"a", "b", "c"}
    assert out.id == f"chatcmpl-{ext['request_id']}"
    assert d.service is not None and d.service.counts["ok"] == 1
    await until(lambda: ext["request_id"] in d.index.experiences)  # same experience records


async def test_a_streamed_completion(daemon_factory: DaemonFactory, fake: FakeOpenAI,
                                     tmp_path: Path) -> None:
    fake.set("a", Behaviour(text="Paris"))
    d = await keyed(daemon_factory, tmp_path, models=["a"])
    async with client(d) as oa:
        stream = await oa.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "Capital of France?"}],
            stream=True, stream_options={"include_usage": True})
        events = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in events if c.choices)
    assert text == "Paris"
    assert [c.choices[0].finish_reason for c in events if c.choices][-1] == "stop"
    assert events[-1].usage is not None and events[-1].usage.completion_tokens > 0
    last = [c for c in events if c.choices][-1]
    assert (last.model_extra or {})["alchemist"]["provider"] == "a"


async def test_the_model_list_is_the_recipes(daemon_factory: DaemonFactory,
                                             tmp_path: Path) -> None:
    d = await keyed(daemon_factory, tmp_path, recipes={"math": {"answer": {"kind": "number"}}})
    async with client(d) as oa:
        models = [m.id async for m in oa.models.list()]
    assert models == ["alchemist/default", "alchemist/math"]


async def test_a_wrong_or_missing_key_is_an_authentication_error(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, tmp_path: Path) -> None:
    d = await keyed(daemon_factory, tmp_path)
    async with client(d, key="sk-wrong") as oa:
        with pytest.raises(openai.AuthenticationError) as caught:
            await oa.chat.completions.create(model="default",
                                             messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    async with aiohttp.ClientSession() as s, s.get(door(d) + "/v1/models") as resp:
        assert resp.status == 401
        assert set((await resp.json())["error"]) == {"message", "type", "param", "code"}
    assert sum(fake.calls.values()) == 0


async def test_contract_errors_in_openai_shape(daemon_factory: DaemonFactory, fake: FakeOpenAI,
                                               tmp_path: Path) -> None:
    fake.set("a", Behaviour(kind="error", status=500))
    d = await keyed(daemon_factory, tmp_path, models=["a"])
    async with client(d) as oa:
        with pytest.raises(openai.NotFoundError) as missing:
            await oa.chat.completions.create(model="alchemist/nope",
                                             messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.InternalServerError) as failed:
            await oa.chat.completions.create(model="default",
                                             messages=[{"role": "user", "content": "hi"}])
    assert missing.value.code == "unknown_recipe" and "known recipes: default" in str(missing.value)
    assert failed.value.status_code == 502 and failed.value.code == "no_providers"


async def test_feedback_over_http_lands_in_the_rated_stream(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.set("a", Behaviour(text="4"))
    d = await keyed(daemon_factory, tmp_path, models=["a"])
    auth = {"Authorization": f"Bearer {KEY}"}
    async with client(d) as oa:
        out = await oa.chat.completions.create(model="default",
                                               messages=[{"role": "user", "content": "2+2?"}])
    request_id = (out.model_extra or {})["alchemist"]["request_id"]
    await until(lambda: request_id in d.index.experiences)
    async with aiohttp.ClientSession(headers=auth) as s:
        async with s.post(door(d) + "/v1/feedback",
                          json={"request_id": request_id, "rating": "up", "user": "ann"}) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
        assert body["stored"] is True and body["stream"] == "ALCHEMIST_FEEDBACK"
        async with s.post(door(d) + "/v1/feedback", json={"request_id": request_id,
                                                          "rating": 7}) as r:
            assert r.status == 400 and "rating" in (await r.json())["error"]["message"]

    def rated() -> list[Any]:
        return [r for r in d.index.rated_for("default") if r.experience.request_id == request_id]

    await until(lambda: len(rated()) == 1)
    # the consumer counts a rating once its batch is durable, which the follower may see first
    assert d.feedback is not None
    await until(lambda: d.feedback is not None and d.feedback.counts["accepted"] == 1)


async def test_status_json(daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    fake.set("a", Behaviour(text="yes"))
    weights = {"*": {"a": 0.7, "b": 0.2}, "math": {"a": 0.9, "b": 0.4}}
    d = await daemon_factory(models=["a", "b"], recipes={"default": {"weights": weights}},
                             http={"enabled": True, "listen": "127.0.0.1:0"})
    await infer(nc, {"prompt": "hello"})
    async with aiohttp.ClientSession() as s:
        async with s.get(door(d) + "/status/recipes") as r:
            recipes = (await r.json())["recipes"]
        async with s.get(door(d) + "/status/providers") as r:
            providers = await r.json()
        async with s.get(door(d) + "/") as r:
            assert r.status == 200 and "status.js" in await r.text()
    (recipe,) = recipes
    assert recipe["weights"]["math"] == {"a": 0.9, "b": 0.4}
    assert recipe["history"][0]["version"] == 1 and recipe["history"][0]["reason"] == "init"
    by_name = {p["name"]: p for p in providers["providers"]}
    assert by_name["a"]["breaker"] == "closed" and by_name["a"]["calls_per_request"] == 1.0
    assert by_name["a"]["p50_ms"] is not None and providers["requests"]["answered"] == 1


async def test_the_timeline_samples_confidence_and_ratings(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    fake.set("a", Behaviour(text="4"))
    fake.set("b", Behaviour(text="5"))
    d = await daemon_factory(models=["a", "b"], http={"enabled": True, "listen": "127.0.0.1:0"})
    assert d.http is not None and d.feedback is not None
    timeline = d.http.timeline
    timeline.sample()  # closes the interval since start-up: nothing served in it
    ids = [(await infer(nc, {"prompt": f"2+2? {i}"}))["request_id"] for i in range(4)]
    for rid in ids[:3]:
        await rate(nc, rid, "up")
    await until(lambda: d.feedback is not None and d.feedback.counts["accepted"] == 3)
    point = timeline.sample()
    assert point is not None and point.rated_share == 0.75
    assert point.confidence == 0.5  # two providers, two answers: each pick holds half the weight
    async with aiohttp.ClientSession() as s, s.get(door(d) + "/status/timeline") as r:
        body = await r.json()
    assert body["interval_s"] == 10.0 and body["points"][-1]["rated_share"] == 0.75
    assert body["points"][0]["confidence"] is None  # an interval with no answer has no mean
    assert timeline.points.maxlen == 360  # an hour at 10 s, whatever the uptime


def test_the_http_section_is_checked() -> None:
    with pytest.raises(ConfigError, match="not a loopback address and no API key"):
        parse_config({"http": {"enabled": True, "listen": "0.0.0.0:8080"}})
    assert parse_config({"http": {"enabled": True, "listen": "0.0.0.0:8080",
                                  "allow_open": True}}).http.port == 8080
    with pytest.raises(ConfigError, match=r"http\.max_body_bytes must be an integer"):
        parse_config({"http": {"max_body_bytes": "1M"}})
    with pytest.raises(ConfigError, match='listen must be "host:port"'):
        parse_config({"http": {"listen": "8080"}})
    with pytest.raises(ConfigError, match="at most one of api_keys_env, api_keys_file"):
        parse_config({"http": {"api_keys_env": "K", "api_keys_file": "/k"}})


async def test_an_unreadable_key_source_stops_start_up(daemon_factory: DaemonFactory,
                                                       tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds no API key"):
        await daemon_factory(http={"enabled": True, "listen": "127.0.0.1:0",
                                   "api_keys_env": "ALCHEMIST_TEST_NO_SUCH_VARIABLE"})


