"""Feedback: nothing lost, duplicates once, bad events rejected and counted."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client

from alchemist.daemon.learning.feedback import FeedbackError, parse_feedback
from alchemist.daemon.runtime.app import Daemon
from alchemist.daemon.storage.broker import EmbeddedNats
from tests.conftest import DaemonFactory, infer, rate, until
from tests.fakes import Behaviour, FakeOpenAI


def counts(d: Daemon) -> dict[str, int]:
    assert d.feedback is not None
    return dict(d.feedback.counts)


@pytest.mark.parametrize(("payload", "fragment"), [
    (b"\x00garbage", "neither a msgpack nor a JSON map"),
    (b'{"rating": 1}', "request_id"),
    (b'{"request_id": "x", "rating": 5}', "rating must be"),
    (b'{"request_id": "x", "rating": true}', "rating must be"),
    (b'{"request_id": "x", "rating": "up", "extra": 1}', "unknown field 'extra'"),
    (b'{"request_id": "x", "rating": "up", "ts": 1' + b"0" * 400 + b"}", "ts must be"),
])
def test_parse_feedback_rejects_with_reasons(payload: bytes, fragment: str) -> None:
    with pytest.raises(FeedbackError) as info:
        parse_feedback(payload)
    assert fragment in str(info.value)


def test_parse_feedback_accepts_words_and_numbers() -> None:
    assert parse_feedback(b'{"request_id": "r", "rating": "up"}').rating == 1
    assert parse_feedback(b'{"request_id": "r", "rating": -1, "user": "x"}').rating == -1


async def test_duplicates_unknown_and_malformed(daemon_factory: DaemonFactory, nc: Client) -> None:
    d = await daemon_factory(models=["a"])
    rid = (await infer(nc, {"prompt": "q"}))["request_id"]
    await rate(nc, rid, "up", "u1")
    await rate(nc, rid, 1, "u1")       # duplicate: same request and user
    await rate(nc, rid, "down", "u2")  # another user: counts
    await rate(nc, "no-such-request", "up")
    await nc.jetstream().publish("alchemist.feedback", b"not a rating")
    await until(lambda: counts(d).get("accepted", 0) == 2 and counts(d).get("duplicate", 0) == 1
                and counts(d).get("rejected_malformed", 0) == 1
                and counts(d).get("rejected_unknown", 0) == 1)
    assert len(list(d.index.rated_for("default"))) == 2


async def test_no_rating_lost_across_daemon_restart(daemon_factory: DaemonFactory,
                                                    nc: Client) -> None:
    first = await daemon_factory(models=["a"])
    ids = [(await infer(nc, {"prompt": f"q{i}"}))["request_id"] for i in range(5)]
    await first.stop()
    for rid in ids:  # published while no daemon runs: JetStream keeps them
        await rate(nc, rid, "up")
    second = await daemon_factory(models=["a"])  # same state dir and broker
    await until(lambda: counts(second).get("accepted", 0) == 5)
    assert {r.experience.request_id for r in second.index.rated_for("default")} == set(ids)


async def test_no_rating_lost_across_broker_restart(daemon_factory: DaemonFactory, nc: Client,
                                                    nats_server: EmbeddedNats) -> None:
    d = await daemon_factory(models=["a"])
    ids = [(await infer(nc, {"prompt": f"q{i}"}))["request_id"] for i in range(4)]
    assert d.feedback is not None
    await d.feedback.close()  # ratings pile up unprocessed in the stream...
    for rid in ids:
        await rate(nc, rid, "down")
    await nats_server.stop()   # ...then the broker goes away and comes back
    await nats_server.start()
    await until(lambda: d.nc is not None and d.nc.is_connected)
    await d.feedback.start()
    await until(lambda: counts(d).get("accepted", 0) == 4, timeout=20)


async def test_a_flood_from_one_user_is_capped(daemon_factory: DaemonFactory, nc: Client) -> None:
    d = await daemon_factory(models=["a"], evolver={"user_cap": 5, "user_window_s": 3600})
    ids = [(await infer(nc, {"prompt": f"q{i}"}))["request_id"] for i in range(12)]
    for rid in ids:
        await rate(nc, rid, "down", "flooder")
    await rate(nc, ids[0], "up", "someone-else")
    await until(lambda: counts(d).get("accepted", 0) == 6
                and counts(d).get("rejected_user_cap", 0) == 7)


async def test_cli_feedback_verb(daemon_factory: DaemonFactory, fake: FakeOpenAI,
                                 nc: Client, nats_server: EmbeddedNats,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from alchemist.daemon.cli import main

    fake.set("a", Behaviour(text="x"))
    d = await daemon_factory(models=["a"])
    rid = (await infer(nc, {"prompt": "q"}))["request_id"]
    code = await asyncio.to_thread(main, ["feedback", rid, "up", "--url", nats_server.url])
    assert code == 0 and "stored rating up" in capsys.readouterr().out
    await until(lambda: counts(d).get("accepted", 0) == 1)
