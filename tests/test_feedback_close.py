"""Stopping the feedback consumer ends its loop, however the broker's fetch is timed.

Found by running ``alchemist bench replay`` repeatedly: about one shutdown in
three took 10 s more, because cancelling nats-py's pull ``fetch`` at an unlucky
moment left it waiting on its queue with no timeout, until the shutdown's own
time box gave up on it.
"""

from __future__ import annotations

import asyncio

from nats.aio.client import Client

from tests.conftest import DaemonFactory, infer, rate, until


async def test_close_ends_the_loop_between_fetches_without_cancelling_it(
        daemon_factory: DaemonFactory, nc: Client) -> None:
    d = await daemon_factory(models=["a"])
    assert d.feedback is not None
    for i in range(20):
        rid = (await infer(nc, {"prompt": f"q{i}"}))["request_id"]
        await rate(nc, rid, "up")
        if i % 5 == 4:  # close lands mid-fetch, right after ratings, or while idle
            await asyncio.sleep(0)
    await until(lambda: d.feedback is not None and d.feedback.counts.get("accepted", 0) == 20)
    task = d.feedback._task
    assert task is not None and not task.done()
    await d.feedback.close()
    assert task.done() and not task.cancelled(), "the loop had to be cancelled: it did not end"
    assert task.exception() is None
    await d.feedback.close()  # idempotent
