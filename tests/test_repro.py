"""Reproducible learning: steps at evidence boundaries, seeded steps, the lockstep bench."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import structlog
from nats.aio.client import Client

from alchemist.adapters import ChatRequest, Message, ProviderSpec, build_provider, make_session
from alchemist.answers.extract import AnswerSpec
from alchemist.daemon.config import ConfigError, parse_config
from alchemist.daemon.learning.snapshot import evidence, step_seed
from alchemist.daemon.runtime.app import Daemon
from alchemist.daemon.serving.fanout import FanOut
from alchemist.daemon.serving.reply import Votes
from alchemist.daemon.sim.fleet import specialist_fleet
from alchemist.daemon.sim.harness import Harness, LoopSettings, ordered
from alchemist.daemon.sim.replay import Latency
from alchemist.daemon.storage.experience import Experience, Rated
from alchemist.daemon.telemetry import logs as logs_config
from tests.conftest import DaemonFactory, infer, rate, until
from tests.fakes import Behaviour, FakeOpenAI

QUIET = {"min_new_ratings": 10, "min_ratings": 1000, "population": 16, "generations": 3}


def _rated(i: int, recipe: str = "default") -> Rated:
    exp = Experience(f"r{i}", recipe, 1, "*", "vote", ("a",), (True,), ("1",), (1.0,), 0)
    return Rated(exp, 1, "u", 0.0)


def test_evidence_is_the_first_records_of_the_stream_with_stable_keys() -> None:
    stream = [_rated(i) for i in range(30)]
    held = stream[12:]  # a bounded index forgot the first 12
    records, keys = evidence(held, 30, 20, None, "default")
    assert records == stream[12:20]  # the first 20 of the stream, as far as they are held
    assert keys == [r.key for r in records]  # unseeded: the records' own keys
    _, seeded = evidence(held, 30, 20, 7, "default")
    assert seeded == [f"7:default:{i}" for i in range(12, 20)]  # positions: the same every run
    assert evidence(held, 30, 10, 7, "default") == ([], [])  # all forgotten
    assert evidence(stream, 30, 30, None, "x")[0] == stream
    # a step's randomness depends on the seed, the recipe and where the step is, nothing else
    draw = step_seed(7, "default", 20).generate_state(4)
    assert (draw == step_seed(7, "default", 20).generate_state(4)).all()
    for other in (step_seed(8, "default", 20), step_seed(7, "other", 20),
                  step_seed(7, "default", 30)):
        assert not (draw == other.generate_state(4)).all()


def test_seed_and_interval_config() -> None:
    assert parse_config({}).evolver.seed is None
    assert parse_config({}).evolver.interval_s == 0.0  # evidence only, by default
    cfg = parse_config({"evolver": {"seed": 3, "interval_s": 15}})
    assert (cfg.evolver.seed, cfg.evolver.interval_s) == (3, 15.0)
    for bad, why in (({"seed": -1}, "evolver.seed"), ({"seed": "1"}, "evolver.seed"),
                     ({"interval_s": -1}, "evolver.interval_s")):
        with pytest.raises(ConfigError, match=why):
            parse_config({"evolver": bad})


async def _rate_requests(nc: Client, n: int, start: int = 0) -> list[str]:
    """``n`` answered and rated requests; their ids in the order the ratings were sent."""
    ids = []
    for i in range(start, start + n):
        rid = (await infer(nc, {"prompt": f"q{i}", "skill": "math"}))["request_id"]
        await rate(nc, rid, "up" if i % 3 else "down", user=f"u{i % 7}")
        ids.append(rid)
    return ids


@pytest.fixture
def two_answers(fake: FakeOpenAI) -> FakeOpenAI:
    fake.set("a", Behaviour(text="1"))
    fake.set("b", Behaviour(text="2"))
    return fake


@pytest.fixture
def steps() -> Iterator[list[dict[str, Any]]]:
    """The ``evolver_step`` events logged during the test."""
    logs_config.configure("info")  # evolver_step is an info event
    with structlog.testing.capture_logs() as logs:
        yield logs


def _steps(logs: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(e["records"], e["upto"]) for e in logs if e["event"] == "evolver_step"]


async def test_a_step_learns_from_exactly_its_boundary(
        daemon_factory: DaemonFactory, nc: Client, two_answers: FakeOpenAI,
        steps: list[dict[str, Any]]) -> None:
    d = await daemon_factory(models=["a", "b"], evolver=QUIET)
    assert d.evolver is not None
    ids = await _rate_requests(nc, 17)  # the step at 10 starts while the others arrive
    await d.evolver.settled("default", 17)
    # the index keeps the rated stream's order: the order the ratings were sent in
    assert [r.experience.request_id for r in d.index.streamed_for("default")] == ids
    assert _steps(steps) == [(10, 10)]  # not 17: the rest waits for the next boundary
    await _rate_requests(nc, 5, start=17)
    await d.evolver.settled("default", 22)
    assert _steps(steps) == [(10, 10), (20, 20)]
    assert d.evolver.state["default"].done == 20
    await d.stop()
    # a restart resumes at the position it got to: no step is repeated
    again = await daemon_factory(models=["a", "b"], evolver=QUIET)
    assert again.evolver is not None and again.evolver.state["default"].seen == 20
    await again.evolver.settled("default", 22)
    assert _steps(steps) == [(10, 10), (20, 20)]


async def test_interval_is_a_fallback_for_quiet_traffic(
        daemon_factory: DaemonFactory, nc: Client, two_answers: FakeOpenAI,
        steps: list[dict[str, Any]]) -> None:
    d = await daemon_factory(models=["a", "b"], evolver={**QUIET, "interval_s": 1.0})
    assert d.evolver is not None
    await _rate_requests(nc, 4)
    await until(lambda: bool(_steps(steps)))  # no new evidence for 1 s: learn from 4
    assert _steps(steps) == [(4, 4)]
    await _rate_requests(nc, 8, start=4)  # 12: the boundary at 10 is still the 10th record
    await d.evolver.settled("default", 12)
    assert _steps(steps)[:2] == [(4, 4), (10, 10)]


async def test_steps_far_behind_skip_to_the_latest_boundary(
        daemon_factory: DaemonFactory, nc: Client, two_answers: FakeOpenAI,
        steps: list[dict[str, Any]]) -> None:
    # stepping off: the records pile up as if steps were much slower than the ratings
    d = await daemon_factory(models=["a", "b"],
                             evolver={**QUIET, "min_new_ratings": 2, "enabled": False})
    assert d.evolver is not None
    await _rate_requests(nc, 9)
    await until(lambda: d.evolver is not None and d.evolver.total("default") == 9)
    await d.evolver.maybe_step("default")  # 3 boundaries behind: the next one, in turn
    await _rate_requests(nc, 10, start=9)
    await until(lambda: d.evolver is not None and d.evolver.total("default") == 19)
    await d.evolver.maybe_step("default")  # 6 behind: skip to the latest, and say so
    assert _steps(steps) == [(2, 2), (18, 18)]
    assert [e["upto"] for e in steps if e["event"] == "evolver_behind"] == [18]


async def test_a_seed_gives_the_same_population_for_the_same_evidence(
        daemon_factory: DaemonFactory, nc: Client, two_answers: FakeOpenAI) -> None:
    # no lease (lease_s = 0): every instance learns, so their populations can be compared
    seeded = {**QUIET, "seed": 11, "lease_s": 0}
    one = await daemon_factory(models=["a", "b"], state="one", evolver=seeded)
    two = await daemon_factory(models=["a", "b"], state="two", evolver=seeded)
    other = await daemon_factory(models=["a", "b"], state="other",
                                 evolver={**QUIET, "seed": 12, "lease_s": 0})
    await _rate_requests(nc, 20)
    daemons = [one, two, other]
    for d in daemons:
        assert d.evolver is not None
        await d.evolver.settled("default", 20)
    # one joins late: it replays the stream and runs the same two steps on it
    late = await daemon_factory(models=["a", "b"], state="late", evolver=seeded)
    assert late.evolver is not None
    await late.evolver.settled("default", 20)

    def population(d: Daemon) -> np.ndarray:
        assert d.evolver is not None
        pop = d.evolver.state["default"].population
        assert pop is not None
        return pop

    assert np.array_equal(population(one), population(two))
    assert np.array_equal(population(one), population(late))
    assert not np.array_equal(population(one), population(other))


@pytest.mark.parametrize("slow", ["a", "c"])
async def test_ordered_fan_out_records_the_same_answers_whoever_is_slow(
        fake: FakeOpenAI, slow: str) -> None:
    loop = asyncio.get_running_loop()
    for m in "abc":
        fake.set(m, Behaviour("slow", text="7", delay_s=0.3) if m == slow else Behaviour(text="7"))
    async with make_session() as session:
        providers = {m: build_provider(ProviderSpec(name=m, kind="openai", base_url=fake.base_url,
                                                    model=m, max_retries=0), session)
                     for m in "abc"}
        votes = Votes("vote", dict.fromkeys("abc", 1.0), AnswerSpec.parse("number"))
        chat = ChatRequest((Message("user", "q"),))
        fanout = FanOut(providers)
        fanout.ordered = True
        outcomes = await fanout.run(list("abc"), chat, loop.time() + 5, settled=votes.settled)
        for provider in providers.values():
            await provider.aclose()
    # a and b agreeing decide it (2 > the 1 still out): c's answer is dropped even when it
    # came first, so the record is the same whoever was slow
    assert [(o.name, o.result is not None, o.error) for o in outcomes] == [
        ("a", True, None), ("b", True, None), ("c", False, "not_needed")]


async def _specialists(seed: int, busy: bool) -> tuple[list[tuple[int, int]], float, float]:
    """The issue's fleet: promotions, served accuracy overall and over the last 200."""
    replay = specialist_fleet(400, seed=1)
    settings = LoopSettings(answer=AnswerSpec.parse("json:answer"), rated=0.5, noise=0.05,
                            seed=seed, concurrency=8, lockstep=True,
                            latency=Latency(5.0, "lognormal", 4.0))
    # a CPU-bound process beside the daemon for the whole run
    spinner = await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass") \
        if busy else None
    try:
        async with Harness(replay, settings) as h:
            await h.drive(ordered(replay, 900, seed))
    finally:
        if spinner is not None:
            spinner.kill()
            await spinner.wait()

    def accuracy(served: list[Any]) -> float:
        return sum(replay.score(s.item_id, s.provider) for s in served if s.provider) / len(served)

    return h.progress.promotions, accuracy(h.served), accuracy(h.served[-200:])


@pytest.mark.slow  # two runs of 900 requests, one beside a CPU-bound process
async def test_specialist_fleet_learns_the_same_on_a_busy_machine() -> None:
    idle = await _specialists(seed=3, busy=False)
    busy = await _specialists(seed=3, busy=True)
    assert idle == busy
    promotions, _, _ = idle
    assert promotions and all(version > 1 for _, version in promotions)


@pytest.mark.slow  # ten runs of 900 requests (about 7 s each)
async def test_specialist_fleet_learns_whom_to_trust_for_every_seed() -> None:
    """Issue 12: the last 200 requests served at >= 0.85 in 10 of 10 runs (busy and idle
    runs are identical, see the test above)."""
    last = [(await _specialists(seed=seed, busy=False))[2] for seed in range(10)]
    assert min(last) >= 0.85, last
