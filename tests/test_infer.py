"""alchemist.infer end to end: real nats-server, fake provider servers, real daemon."""

from __future__ import annotations

import asyncio
import json
import time

import msgpack
import pytest
from nats.aio.client import Client

from alchemist.daemon.storage.recipe_store import RecipeStore
from tests.conftest import DaemonFactory, infer
from tests.fakes import Behaviour, FakeOpenAI


async def test_fan_out_fuses_by_weighted_vote(daemon_factory: DaemonFactory, fake: FakeOpenAI,
                                              nc: Client) -> None:
    # c answers first, so nothing is decided before every provider has answered
    fake.set("a", Behaviour(kind="slow", delay_s=0.1, text="The answer is 42."))
    fake.set("b", Behaviour(kind="slow", delay_s=0.1, text="I think it is 42"))
    fake.set("c", Behaviour(text="It's 17"))
    await daemon_factory(recipes={"default": {"answer": {"kind": "number"}}})
    reply = await infer(nc, {"prompt": "What is 6*7?", "include_candidates": True})
    assert reply["answer"] == "42"
    assert reply["provider"] in ("a", "b")
    assert reply["confidence"] == pytest.approx(2 / 3, abs=1e-3)
    assert reply["recipe"] == {"name": "default", "version": 1}
    assert {p["name"] for p in reply["providers"]} == {"a", "b", "c"}
    assert all(p["ok"] for p in reply["providers"])
    assert len(reply["candidates"]) == 3
    assert reply["usage"]["completion_tokens"] > 0
    assert len(reply["request_id"]) >= 16
    assert fake.calls["a"] == fake.calls["b"] == fake.calls["c"] == 1


async def test_msgpack_is_the_default_codec(daemon_factory: DaemonFactory, fake: FakeOpenAI,
                                            nc: Client) -> None:
    fake.set("a", Behaviour(text="Paris"))
    await daemon_factory(models=["a"])
    reply = await infer(nc, {"messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Capital of France?"}]},
                        as_json=False)
    assert reply["text"] == "Paris" and reply["answer"] == "paris"
    sent = fake.requests[-1]
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]


async def test_weights_beat_headcount(daemon_factory: DaemonFactory, fake: FakeOpenAI,
                                      nc: Client) -> None:
    fake.set("a", Behaviour(text="B"))
    fake.set("b", Behaviour(text="B"))
    fake.set("c", Behaviour(text="The answer is (C)"))
    weights = {"*": {"a": 0.2, "b": 0.2, "c": 0.9}}
    await daemon_factory(recipes={"default": {"answer": {"kind": "choice"}, "weights": weights}})
    reply = await infer(nc, {"prompt": "Pick one"})
    assert reply["answer"] == "C" and reply["provider"] == "c"
    assert reply["confidence"] == pytest.approx(0.9 / 1.3, abs=1e-3)


async def test_skill_rows_and_min_weight_sparsity(daemon_factory: DaemonFactory,
                                                  fake: FakeOpenAI, nc: Client) -> None:
    weights = {"*": {"a": 1.0, "b": 1.0, "c": 1.0}, "math": {"a": 1.0, "b": 0.01, "c": 0.01}}
    await daemon_factory(recipes={"default": {"weights": weights, "params": {"min_weight": 0.05}}})
    reply = await infer(nc, {"prompt": "2+2?", "skill": "math"})
    assert [p["name"] for p in reply["providers"]] == ["a"]
    assert fake.calls["b"] == 0 and fake.calls["c"] == 0
    reply = await infer(nc, {"prompt": "Hello", "skill": "chat"})  # unknown skill -> "*"
    assert len(reply["providers"]) == 3


async def test_partial_failure_answers_from_the_healthy_one(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    fake.set("a", Behaviour(kind="hang"))
    fake.set("b", Behaviour(kind="rate_limit", retry_after=30))
    fake.set("c", Behaviour(kind="error", status=500))
    fake.set("d", Behaviour(text="healthy"))
    await daemon_factory(models=["a", "b", "c", "d"])
    t0 = time.monotonic()
    reply = await infer(nc, {"prompt": "hi", "deadline_ms": 800})
    elapsed = time.monotonic() - t0
    assert reply["text"] == "healthy" and reply["provider"] == "d"
    status = {p["name"]: p for p in reply["providers"]}
    assert status["a"]["error"] in ("deadline", "timeout")
    assert status["b"]["error"] == "rate_limited"
    assert status["c"]["error"] == "unavailable"
    # replied at the 0.8 s deadline, not after a's 5 s timeout or b's 30 s Retry-After
    # (a generous bound: a loaded machine may be slow, never that slow)
    assert elapsed < 4.0


async def test_retries_recover_a_flaky_provider(daemon_factory: DaemonFactory, fake: FakeOpenAI,
                                                nc: Client) -> None:
    fake.set("a", Behaviour(kind="error", status=503, times=1, text="x"))
    await daemon_factory(models=["a"])
    reply = await infer(nc, {"prompt": "hi"})
    assert reply["providers"][0]["ok"] and fake.calls["a"] == 2


async def test_slow_requests_run_concurrently(daemon_factory: DaemonFactory, fake: FakeOpenAI,
                                              nc: Client) -> None:
    fake.set("a", Behaviour(kind="slow", delay_s=1.0, text="slow"))
    await daemon_factory(models=["a"])
    replies = await asyncio.gather(*(infer(nc, {"prompt": f"q{i}"}) for i in range(10)))
    assert all(r["text"] == "slow" for r in replies)
    assert fake.peak_in_flight["a"] == 10  # all ten at the provider at once, none queued


async def test_overloaded_past_max_concurrency(daemon_factory: DaemonFactory, fake: FakeOpenAI,
                                               nc: Client) -> None:
    fake.set("a", Behaviour(kind="slow", delay_s=0.6, text="slow"))
    await daemon_factory(models=["a"], service={"max_concurrency": 2})
    replies = await asyncio.gather(*(infer(nc, {"prompt": f"q{i}"}) for i in range(6)))
    codes = sorted(r.get("error", {}).get("code", "ok") for r in replies)
    assert codes.count("ok") == 2 and codes.count("overloaded") == 4


@pytest.mark.parametrize(("body", "fragment"), [
    ({}, "exactly one of 'prompt'"),
    ({"prompt": "x", "messages": [{"role": "user", "content": "y"}]}, "exactly one"),
    ({"prompt": ""}, "non-empty"),
    ({"prompt": "x", "temperature": 9}, "temperature must be a number between 0 and 2, got 9"),
    ({"prompt": "x", "deadline_ms": -5}, "deadline_ms must be an integer between 1 and 120000 "
                                         "(service.max_deadline_ms), got -5"),
    ({"prompt": "x", "bogus": 1}, "unknown field 'bogus'"),
    ({"messages": [{"role": "wizard", "content": "y"}]}, "messages[0].role"),
    ({"messages": [{"role": "system", "content": "y"}]}, "at least one 'user'"),
    ({"prompt": "x", "answer": {"kind": "json"}}, "answer: The json answer kind needs a field"),
    ({"prompt": "x", "answer": "regex:a{100000000}"}, "unrolls to 100000000 nodes"),
    ({"prompt": "\ud800"}, "not valid UTF-8"),
    ({"prompt": "x", "tags": "notalist"}, "tags must be a list of at most 32 items"),
    ([1, 2, 3], "must be a map"),
])
async def test_bad_requests_say_what_is_wrong(daemon_factory: DaemonFactory, nc: Client,
                                              body: object, fragment: str) -> None:
    await daemon_factory(models=["a"])
    msg = await nc.request("alchemist.infer", json.dumps(body).encode(), timeout=5,
                           headers={"Content-Type": "application/json"})
    reply = json.loads(msg.data)
    assert reply["error"]["code"] == "bad_request"
    assert fragment in reply["error"]["message"]
    assert msg.headers and msg.headers["Nats-Service-Error-Code"] == "400"


async def test_garbage_bytes_and_json_mismatch(daemon_factory: DaemonFactory, nc: Client) -> None:
    await daemon_factory(models=["a"])
    msg = await nc.request("alchemist.infer", b"\xc1\xff not msgpack", timeout=5)
    assert msgpack.unpackb(msg.data)["error"]["code"] == "bad_request"
    msg = await nc.request("alchemist.infer", b"{not json", timeout=5,
                           headers={"Content-Type": "application/json"})
    assert "not valid JSON" in json.loads(msg.data)["error"]["message"]


async def test_unknown_recipe_lists_known_ones(daemon_factory: DaemonFactory, nc: Client) -> None:
    await daemon_factory(models=["a"])
    reply = await infer(nc, {"prompt": "x", "recipe": "nope"})
    assert reply["error"]["code"] == "unknown_recipe"
    assert "default" in reply["error"]["message"]


async def test_payload_too_large(daemon_factory: DaemonFactory, nc: Client) -> None:
    await daemon_factory(models=["a"], service={"max_payload": 4096})
    reply = await infer(nc, {"prompt": "x" * 10_000})
    assert reply["error"]["code"] == "payload_too_large"
    assert "4096" in reply["error"]["message"]


async def test_no_providers_when_all_fail(daemon_factory: DaemonFactory, fake: FakeOpenAI,
                                          nc: Client) -> None:
    fake.set("a", Behaviour(kind="error", status=400))
    fake.set("b", Behaviour(kind="malformed"))
    await daemon_factory(models=["a", "b"])
    reply = await infer(nc, {"prompt": "x"})
    assert reply["error"]["code"] == "no_providers"
    assert "a: bad_response" in reply["error"]["message"]


async def test_deadline_exceeded_when_all_hang(daemon_factory: DaemonFactory, fake: FakeOpenAI,
                                               nc: Client) -> None:
    fake.set("a", Behaviour(kind="hang"))
    fake.set("b", Behaviour(kind="hang"))
    await daemon_factory(models=["a", "b"])
    t0 = time.monotonic()
    reply = await infer(nc, {"prompt": "x", "deadline_ms": 300})
    assert reply["error"]["code"] == "deadline_exceeded"
    assert time.monotonic() - t0 < 3.0  # the 0.3 s deadline, not the providers' 5 s timeout


async def test_micro_service_is_discoverable(daemon_factory: DaemonFactory, nc: Client) -> None:
    await daemon_factory(models=["a"])
    ping = json.loads((await nc.request("$SRV.PING.alchemist", b"", timeout=5)).data)
    assert ping["name"] == "alchemist"
    info = json.loads((await nc.request("$SRV.INFO.alchemist", b"", timeout=5)).data)
    assert info["endpoints"][0]["subject"] == "alchemist.infer"
    assert info["endpoints"][0]["queue_group"] == "alchemist"


async def test_recipe_hot_swap_without_dropping_requests(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    fake.set("a", Behaviour(kind="slow", delay_s=0.3, text="A"))
    fake.set("b", Behaviour(kind="slow", delay_s=0.3, text="B"))
    daemon = await daemon_factory(models=["a", "b"])
    in_flight = [asyncio.create_task(infer(nc, {"prompt": f"q{i}"})) for i in range(5)]
    await fake.wait_for_calls("a", 5)
    store = RecipeStore(nc, "alchemist")
    await store.open(create=False)
    new = await store.write_new_version("default", lambda cur: cur.successor(
        weights={"*": {"a": 0.1, "b": 1.0}}, reason="manual"))
    assert new.version == 2
    replies = await asyncio.gather(*in_flight)
    assert all("error" not in r for r in replies)  # nothing dropped during the swap
    for _ in range(100):
        if daemon.recipes and daemon.recipes.get("default").version == 2:  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.02)
    reply = await infer(nc, {"prompt": "after"})
    assert reply["recipe"]["version"] == 2 and reply["text"] == "B"


async def test_serves_again_after_broker_restart(daemon_factory: DaemonFactory, nats_server,  # type: ignore[no-untyped-def]
                                                 fake: FakeOpenAI, nc: Client) -> None:
    fake.set("a", Behaviour(text="alive"))
    await daemon_factory(models=["a"])
    assert (await infer(nc, {"prompt": "before"}))["text"] == "alive"
    await nats_server.stop()
    await nats_server.start()
    for _ in range(100):  # both the daemon and this client reconnect on their own
        try:
            reply = await infer(nc, {"prompt": "after"}, timeout=1.0)
            break
        except Exception:  # noqa: BLE001 - not reconnected yet (no responders / timeout)
            await asyncio.sleep(0.1)
    else:
        pytest.fail("the daemon did not serve again after the broker came back")
    assert reply["text"] == "alive"


async def test_cli_ask_prints_the_answer_and_provider_status(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nats_server,  # type: ignore[no-untyped-def]
        capsys: pytest.CaptureFixture[str]) -> None:
    from alchemist.daemon.cli import main

    fake.set("a", Behaviour(text="Paris"))
    fake.set("b", Behaviour(kind="error", status=401))
    await daemon_factory(models=["a", "b"])
    code = await asyncio.to_thread(main, ["ask", "Capital of France?", "--url", nats_server.url])
    out = capsys.readouterr()
    assert code == 0 and out.out.strip() == "Paris"
    assert "b" in out.err and "auth" in out.err and "confidence" in out.err


async def test_cli_fails_in_one_line_when_no_daemon_runs(tmp_path, capsys, refused_url) -> None:  # type: ignore[no-untyped-def]
    from alchemist.daemon.cli import main

    code = await asyncio.to_thread(main, ["ask", "hi", "--url", refused_url])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("alchemist: could not connect to NATS")
    assert len(err.strip().splitlines()) == 1


async def test_early_answer_cancels_providers_that_cannot_matter(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    fake.set("a", Behaviour(text="42"))
    fake.set("b", Behaviour(text="42"))
    fake.set("c", Behaviour(kind="hang"))
    d = await daemon_factory(recipes={"default": {"answer": {"kind": "number"}}})
    t0 = time.monotonic()
    reply = await infer(nc, {"prompt": "6*7?", "deadline_ms": 5000})
    assert time.monotonic() - t0 < 3.0  # did not wait for the hanging provider (5 s deadline)
    status = {p["name"]: p for p in reply["providers"]}
    assert reply["answer"] == "42" and status["c"]["error"] == "not_needed"
    assert d.service is not None and d.service.fanout.counts["not_needed"] == 1
    # an undecided vote waits for everyone
    fake.set("b", Behaviour(text="17"))
    fake.set("c", Behaviour(kind="slow", delay_s=0.2, text="17"))
    reply = await infer(nc, {"prompt": "6*7?"})
    assert reply["answer"] == "17" and all(p["ok"] for p in reply["providers"])


async def test_breaker_opens_skips_and_recovers(daemon_factory: DaemonFactory, fake: FakeOpenAI,
                                                nc: Client) -> None:
    fake.set("a", Behaviour(text="fine"))
    fake.set("b", Behaviour(kind="error", status=500))
    d = await daemon_factory(models=["a", "b"],
                             breaker={"consecutive": 2, "cooldown_s": 0.3})
    for _ in range(2):
        await infer(nc, {"prompt": "x"})
    calls = fake.calls["b"]
    reply = await infer(nc, {"prompt": "x"})  # open: b is not called
    assert [p["name"] for p in reply["providers"]] == ["a"] and fake.calls["b"] == calls
    fake.set("b", Behaviour(text="fine"))
    await asyncio.sleep(0.35)  # the cooldown itself is what is tested here
    reply = await infer(nc, {"prompt": "x"})  # half-open trial succeeds: closed again
    assert {p["name"] for p in reply["providers"]} == {"a", "b"}
    assert d.service is not None
    assert d.service.fanout.breakers["b"].state == "closed"
    assert d.service.fanout.counts["breaker_open"] == 1


async def test_breakers_never_silence_the_last_provider(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    fake.set("a", Behaviour(kind="error", status=500))
    d = await daemon_factory(models=["a"], breaker={"consecutive": 2, "cooldown_s": 60})
    for _ in range(2):
        assert (await infer(nc, {"prompt": "x"}))["error"]["code"] == "no_providers"
    assert d.service is not None and d.service.fanout.breakers["a"].state == "open"
    calls = fake.calls["a"]
    fake.set("a", Behaviour(text="back"))
    reply = await infer(nc, {"prompt": "x"})  # open, but the only one: called anyway
    assert reply["text"] == "back" and fake.calls["a"] == calls + 1
    assert d.service.fanout.counts["breaker_bypassed"] == 1
    assert d.service.fanout.breakers["a"].state == "closed"  # it answered: trusted again
