"""Experience records into JetStream in batches, with asynchronous acks (daemon/storage/journal.py)."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client
from nats.js.api import DeliverPolicy

from alchemist.daemon.learning.feedback import BEHIND_RETRIES, LANDS_WITHIN_S
from alchemist.daemon.storage.journal import RETRY_HORIZON_S, Journal
from alchemist.daemon.storage.streams import stream_name
from tests.conftest import DaemonFactory, infer, until
from tests.fakes import Behaviour, FakeOpenAI


async def _stored_ids(nc: Client, subject: str, expected: int) -> list[str]:
    """The ``Nats-Msg-Id`` of every message on ``subject``'s stream, in stream order."""
    sub = await nc.jetstream().subscribe(subject, ordered_consumer=True,
                                         deliver_policy=DeliverPolicy.ALL)
    ids: list[str] = []
    try:
        while len(ids) < expected:
            msg = await sub.next_msg(timeout=5.0)
            ids.append((msg.headers or {}).get("Nats-Msg-Id", ""))
        try:  # and nothing more
            extra = await sub.next_msg(timeout=0.3)
            ids.append((extra.headers or {}).get("Nats-Msg-Id", ""))
        except TimeoutError:
            pass
    finally:
        await sub.unsubscribe()
    return ids


async def test_records_arrive_in_order_in_batches_and_close_flushes_the_rest(nc: Client) -> None:
    await nc.jetstream().add_stream(name="JT", subjects=["jt.exp"])
    journal = Journal(nc, "jt.exp", max_batch=100, interval_s=60.0)  # only full batches
    await journal.start()
    ids = [f"r{i:04d}" for i in range(250)]
    for i, msg_id in enumerate(ids[:200]):
        journal.add(f"record {i}".encode(), msg_id)
    await until(lambda: journal.acked == 200)  # full batches go out, acked without waiting
    for i, msg_id in enumerate(ids[200:], start=200):
        journal.add(f"record {i}".encode(), msg_id)
    await asyncio.sleep(0.1)
    assert journal.published == 200 and journal.pending == 50  # the rest waits for its timer
    await journal.close()  # a graceful stop publishes them and waits for their acks
    assert (journal.published, journal.acked, journal.dropped, journal.pending) == (250, 250, 0, 0)
    assert await _stored_ids(nc, "jt.exp", 250) == ids


async def test_the_interval_flushes_a_partial_batch(nc: Client) -> None:
    await nc.jetstream().add_stream(name="JT", subjects=["jt.exp"])
    journal = Journal(nc, "jt.exp", interval_s=0.01)
    await journal.start()
    journal.add(b"one", "only")
    await until(lambda: journal.acked == 1, timeout=2.0)
    await journal.close()


async def test_a_full_buffer_and_a_missing_stream_are_counted_losses(nc: Client) -> None:
    lost: list[int] = []
    journal = Journal(nc, "jt.nowhere", max_batch=100, interval_s=60.0, max_buffered=10)
    journal.on_drop = lost.append
    await journal.start()
    for i in range(15):
        journal.add(b"x", f"id{i}")
    assert sum(lost) == 5 and journal.pending == 10  # bounded: the 5 over the limit are dropped
    await journal.flush(timeout=5.0)
    await until(lambda: journal.dropped == 15)  # no stream answers: every record is a loss
    assert journal.acked == 0 and sum(lost) == 15
    await journal.close()


async def test_the_daemon_journals_every_answer_in_order_and_loses_none_at_stop(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    fake.set("a", Behaviour(text="42"))
    d = await daemon_factory(models=["a"])
    assert d.streams is not None and d.service is not None
    d.streams.journal.interval_s = 60.0  # records stay buffered until the stop flushes them
    request_ids = [(await infer(nc, {"prompt": f"q{i}"}))["request_id"] for i in range(20)]
    assert d.streams.journal.pending == 20 and d.streams.journal.published == 0
    await d.stop()
    assert d.streams.journal.acked == 20 and d.service.counts["experience_dropped"] == 0
    subject = "alchemist.experience"
    assert stream_name("alchemist", "EXPERIENCE") == "ALCHEMIST_EXPERIENCE"
    assert await _stored_ids(nc, subject, 20) == request_ids


async def test_a_stream_that_is_not_there_yet_gets_its_records_on_a_retry(nc: Client) -> None:
    """A stream electing a leader (after a node's loss) answers "no responders" for a moment:
    the records are published again with their message ids, and none is lost or doubled."""
    journal = Journal(nc, "jt.late", max_batch=10, interval_s=0.01)
    await journal.start()
    ids = [f"late{i}" for i in range(25)]
    for msg_id in ids:
        journal.add(msg_id.encode(), msg_id)
    await until(lambda: journal.retried >= 25, timeout=5.0)  # every record failed once
    await nc.jetstream().add_stream(name="JL", subjects=["jt.late"])
    await until(lambda: journal.acked == 25, timeout=10.0)
    assert journal.dropped == 0 and journal.pending == 0
    assert sorted(await _stored_ids(nc, "jt.late", 25)) == sorted(ids)
    await journal.close()


def test_a_rating_waits_longer_than_its_records_retries() -> None:
    """A rating of a request whose record another instance is still retrying waits for it:
    for a young request, the consumer's patience for unknown requests (1 s between
    deliveries) outlasts the ack timeout and the retries, so such a rating is rejected only
    if its record was dropped."""
    assert BEHIND_RETRIES * 1.0 >= LANDS_WITHIN_S > RETRY_HORIZON_S
