"""``$SRV.STATS.alchemist`` measures the work: requests, error replies, processing time."""

from __future__ import annotations

import asyncio
import json

from nats.aio.client import Client

from tests.conftest import DaemonFactory, infer, until
from tests.fakes import Behaviour, FakeOpenAI

DELAY_S = 0.2  # each fake provider's latency


async def stats(nc: Client) -> dict[str, object]:
    """The ``infer`` endpoint's entry of the service's stats reply."""
    msg = await nc.request("$SRV.STATS.alchemist", b"", timeout=5.0)
    reply = json.loads(msg.data)
    assert reply["name"] == "alchemist"
    (endpoint,) = [e for e in reply["endpoints"] if e["name"] == "infer"]
    out: dict[str, object] = endpoint
    return out


async def test_stats_count_requests_errors_and_the_time_the_work_took(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    fake.set("a", Behaviour(kind="slow", delay_s=DELAY_S, text="42"))
    fake.set("b", Behaviour(kind="slow", delay_s=DELAY_S, text="42"))
    await daemon_factory(models=["a", "b"])
    before = await stats(nc)
    assert before["num_requests"] == before["num_errors"] == 0  # the start-up check is not counted
    good, bad = 6, 3
    replies = await asyncio.gather(
        *(infer(nc, {"prompt": f"q{i}"}) for i in range(good)),
        *(infer(nc, {"prompt": "q", "recipe": f"missing{i}"}) for i in range(bad - 1)),
        infer(nc, {"messages": "not a list"}))
    assert [r.get("text") for r in replies[:good]] == ["42"] * good
    assert [r["error"]["code"] for r in replies[good:]] == ["unknown_recipe"] * (bad - 1) + [
        "bad_request"]
    # the requests ran side by side: metering the work did not serialize them
    assert fake.peak_in_flight["a"] > 1
    # a request is metered when its work ends, which is after its reply (the experience
    # record is journaled then): wait for the last ones
    endpoint = await stats(nc)
    for _ in range(100):
        if endpoint["num_requests"] == good + bad:
            break
        await asyncio.sleep(0.05)
        endpoint = await stats(nc)
    assert endpoint["num_requests"] == good + bad
    assert endpoint["num_errors"] == bad
    assert str(endpoint["last_error"]).split(":")[0] in {"unknown_recipe", "bad_request"}
    # every good request waited for its providers; nanoseconds, like nats.micro
    processing = endpoint["processing_time"]
    average = endpoint["average_processing_time"]
    assert isinstance(processing, int) and isinstance(average, int)
    assert processing >= good * DELAY_S * 1e9
    assert average == processing // (good + bad)


async def test_an_answered_request_never_waits_for_its_journal(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    """The experience stream stops acknowledging: the answer goes out and the request ends
    with it, no error; its record waits in the journal, which counts it lost at its bound."""
    fake.set("a", Behaviour(text="42"))
    d = await daemon_factory(models=["a"])
    assert d.service is not None and d.streams is not None
    # the experience stream goes away and a silent subscriber takes its subject: the
    # journal's publish now waits for an acknowledgement that never comes
    await nc.jetstream().delete_stream(d.streams.experience_stream)

    async def silent(msg: object) -> None:
        return None

    await nc.subscribe(f"{d.streams.prefix}.experience", cb=silent)
    await nc.flush()
    reply = await infer(nc, {"prompt": "6*7?"})
    assert reply["text"] == "42"
    await until(lambda: d.service is not None and d.service.inflight == 0, timeout=1.0)
    assert await d.service.drain(0.1) == 0  # nothing left to cancel
    endpoint = await stats(nc)
    assert endpoint["num_requests"] == 1
    assert endpoint["num_errors"] == 0 and endpoint["last_error"] == ""
    journal = d.streams.journal
    await until(lambda: journal.published == 1)
    assert journal.pending == 1 and journal.acked == 0
    assert not await journal.flush(timeout=0.2)  # no ack within the bound: counted as lost
    assert journal.pending == 0 and d.service.counts["experience_dropped"] == 1
