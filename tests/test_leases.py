"""Leases on a real broker: one holder, take-over after expiry, and fenced recipe writes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from nats.aio.client import Client

from alchemist.daemon.config import parse_config
from alchemist.daemon.storage.lease import Leases, LeaseValue, lease_key
from alchemist.daemon.storage.recipe_store import RecipeStore
from alchemist.daemon.telemetry import logs as logs_config
from tests.conftest import DaemonFactory, infer, rate, until
from tests.fakes import Behaviour, FakeOpenAI


async def _store(nc: Client) -> RecipeStore:
    store = RecipeStore(nc, "alchemist")
    await store.open()
    return store


def _leases(store: RecipeStore, instance: str, lease_s: float, names: list[str]) -> Leases:
    return Leases(store.kv, instance, host="h", slot=f"slot-{instance}", lease_s=lease_s,
                  names=lambda: names)


async def test_one_holder_then_take_over_after_expiry(nc: Client) -> None:
    store = await _store(nc)
    a = _leases(store, "a", 1.0, ["r"])
    b = _leases(store, "b", 1.0, ["r"])
    await a.tick()
    await b.tick()
    assert a.holds("r") and not b.holds("r")
    value = LeaseValue.decode((await store.kv.get(lease_key("r"))).value)
    assert value.holder == "a" and value.lease_s == 1.0
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await a.tick()  # a renews once, then stops (dead, paused, cut off)
    while not b.holds("r"):
        await b.tick()
        await asyncio.sleep(0.05)
    waited = loop.time() - t0
    assert 1.0 <= waited < 1.6  # one lease of silence, then at the next check
    assert not a.holds("r")  # its own clock says so too
    assert b.terms["r"] > 0


async def test_a_released_lease_is_taken_at_once(nc: Client) -> None:
    store = await _store(nc)
    a = _leases(store, "a", 30.0, ["r"])
    b = _leases(store, "b", 30.0, ["r"])
    await a.tick()
    await b.tick()
    assert a.holds("r") and not b.holds("r")
    await a.release()
    await b.tick()
    assert b.holds("r") and not a.holds("r")


async def test_a_paused_holder_cannot_write_after_its_lease_was_taken(nc: Client) -> None:
    """The writer renewed its lease (and would write right after) when it was paused; by the
    time it resumes another instance holds the lease. The server refuses the old holder's
    write although nobody has written the recipe since (its compare-and-set on the recipe
    would pass) and whatever its own clock believes (its lease_s is an hour)."""
    store = await _store(nc)
    await store.ensure(parse_config({}).recipes, ["x", "y"])
    base = store.current["default"]
    old = _leases(store, "old", 3600.0, ["default"])
    new = _leases(store, "new", 0.5, ["default"])
    await old.tick()
    revision = store.revision("default")

    class Paused:
        """``old``'s fence, with a pause between its renewal and its write."""

        @contextlib.asynccontextmanager
        async def fenced(self, name: str) -> AsyncIterator[int | None]:
            async with old.fenced(name) as sequence:
                while not new.holds(name):  # meanwhile: the lease expires and is taken
                    await new.tick()
                    await asyncio.sleep(0.05)
                yield sequence

    stale = base.successor(weights={"*": {"x": 1.0, "y": 0.1}}, reason="evolved")
    with structlog.testing.capture_logs() as logs:
        assert not await store.publish(stale, expected_revision=revision, fence=Paused())
    assert store.revision("default") == revision  # nothing was written
    assert [e["reason"] for e in logs if e["event"] == "lease_lost"] == ["taken"]
    assert [e["event"] for e in logs if e["event"].startswith("recipe_")] == ["recipe_write_fenced"]
    assert not old.holds("default")
    # the new holder's write lands; the old one, resumed, still cannot write
    newer = base.successor(weights={"*": {"x": 0.1, "y": 1.0}}, reason="evolved")
    assert await store.publish(newer, expected_revision=revision, fence=new)
    assert not await store.publish(stale, expected_revision=store.revision("default"), fence=old)
    latest = await store.refresh("default")
    assert latest is not None and latest.weights["*"]["y"] == 1.0


def _two_answers(fake: FakeOpenAI) -> None:
    fake.set("a", Behaviour(text="1"))
    fake.set("b", Behaviour(text="2"))


async def test_one_instance_learns_and_the_next_resumes_its_population(
        daemon_factory: DaemonFactory, nc: Client, fake: FakeOpenAI) -> None:
    _two_answers(fake)
    evolver: dict[str, Any] = {"min_new_ratings": 10, "min_ratings": 1000, "population": 16,
                               "generations": 3, "lease_s": 1.0}
    first = await daemon_factory(models=["a", "b"], state="first", evolver=evolver)
    second = await daemon_factory(models=["a", "b"], state="second", evolver=evolver)
    assert first.evolver and second.evolver
    assert first.evolver.leadership.leads("default")
    assert not second.evolver.leadership.leads("default")
    for i in range(20):
        rid = (await infer(nc, {"prompt": f"q{i}", "skill": "math"}))["request_id"]
        await rate(nc, rid, "up" if i % 3 else "down", user=f"u{i % 7}")
    await first.evolver.settled("default", 20)
    assert first.evolver.counts["steps"] == 2 and second.evolver.counts["steps"] == 0
    generation = first.evolver.state["default"].generation
    logs_config.configure("info")
    with structlog.testing.capture_logs() as logs:
        await first.stop()  # releases its leases: the other takes them at its next check
        await until(lambda: second.evolver is not None
                    and second.evolver.leadership.leads("default"), timeout=3.0)
        await until(lambda: any(e["event"] == "evolver_took_over" for e in logs), timeout=3.0)
    resumed = second.evolver.state["default"]
    assert resumed.generation == generation and resumed.done == 20
    for i in range(20, 30):
        rid = (await infer(nc, {"prompt": f"q{i}", "skill": "math"}))["request_id"]
        await rate(nc, rid, "up", user=f"u{i % 7}")
    await second.evolver.settled("default", 30)
    assert second.evolver.counts["steps"] == 1  # the step at 30, not those at 10 and 20 again


async def test_one_instance_probes_and_the_next_one_counts_what_it_spent(
        daemon_factory: DaemonFactory, fake: FakeOpenAI) -> None:
    probes = {"enabled": True, "first_run_s": 0.0, "interval_s": 1.0, "jitter": 0.0, "sample": 1,
              "calls_per_hour": 100}
    a = await daemon_factory(models=["a", "b"], state="a", probes=probes, evolver={"lease_s": 1.0})
    b = await daemon_factory(models=["a", "b"], state="b", probes=probes, evolver={"lease_s": 1.0})
    assert a.prober is not None and b.prober is not None
    await until(lambda: a.prober is not None and a.prober.counts["runs"] >= 2, timeout=10)
    assert b.prober.counts["runs"] == 0  # the prober lease is a's
    await a.stop()
    await until(lambda: b.prober is not None and b.prober.counts["runs"] >= 1, timeout=10)
    # b's budget started from the journal: a's calls count against the hour's allowance
    assert b.prober.budget.calls_last_hour >= 2 * 2 + 2
