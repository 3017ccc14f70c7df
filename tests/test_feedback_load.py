"""Ratings keep flowing while the daemon is busy serving (found by benchmarks/soak.py).

Under load, the feedback consumer took one awaited publish per rating, in turn,
and every await waited for a turn of an event loop shared with hundreds of
request tasks: about 20 ratings/s at 600 requests/s, so it fell behind and
ratings for requests older than ``experience.max_records`` were rejected as
unknown. And a fetch whose no-wait request alone outlasted its timeout raised
asyncio's ``TimeoutError``, which the loop took for broker trouble: a second's
pause and a resubscription, again and again.
"""

from __future__ import annotations

import asyncio
import json
import time

import structlog
from nats.aio.client import Client

from tests.conftest import DaemonFactory, infer, until
from tests.fakes import FakeOpenAI

RATINGS = 200
HOGS = 50  # tasks sharing the daemon's loop, each holding it 2 ms at a time: ~100 ms a turn


async def test_ratings_keep_up_while_the_loop_is_busy(daemon_factory: DaemonFactory,
                                                      fake: FakeOpenAI, nc: Client) -> None:
    d = await daemon_factory(evolver={"enabled": False})
    assert d.feedback is not None
    ids = [(await infer(nc, {"prompt": f"q{i}"}))["request_id"] for i in range(RATINGS)]
    await d.feedback.close()  # the ratings wait in the stream until the loop is busy
    js = nc.jetstream()
    for i, rid in enumerate(ids):
        await js.publish("alchemist.feedback", json.dumps(
            {"request_id": rid, "rating": "up", "user": f"u{i}"}).encode())
    stop = asyncio.Event()

    async def hog() -> None:
        while not stop.is_set():
            time.sleep(0.002)  # noqa: ASYNC251 - holding the loop is the point: a busy daemon
            await asyncio.sleep(0)

    hogs = [asyncio.create_task(hog()) for _ in range(HOGS)]
    try:
        with structlog.testing.capture_logs() as logs:
            t0 = time.monotonic()
            await d.feedback.start()
            await until(lambda: d.feedback is not None
                        and d.feedback.counts["accepted"] >= RATINGS, timeout=60)
            elapsed = time.monotonic() - t0
    finally:
        stop.set()
        await asyncio.gather(*hogs)
    # before: 400 ratings were not all in after 60 s (and fetches "failed"); after: ~10 s
    assert elapsed < 20, f"{RATINGS} ratings took {elapsed:.1f} s on a busy loop"
    assert not [e for e in logs if e["event"] in ("feedback_fetch_failed", "feedback_resubscribed")]
    assert dict(d.feedback.counts) == {"accepted": RATINGS}
