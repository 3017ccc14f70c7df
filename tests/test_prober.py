"""The prober end to end: probes map provider strengths, respect the budget, seed recipes."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest
from nats.aio.client import Client

from alchemist.daemon.learning.budget import COST_SLOT_S, Budget
from alchemist.daemon.learning.prober import accuracy_table
from alchemist.daemon.storage.experience import PROBES_KEY, Experience, Rated
from tests.conftest import DaemonFactory, infer, until
from tests.fakes import Behaviour, FakeOpenAI
from tests.scenarios import math_and_code, specialist


@pytest.fixture
def two_specialists(fake: FakeOpenAI) -> FakeOpenAI:
    fake.set("mathy", Behaviour(text=specialist("math")))
    fake.set("coder", Behaviour(text=specialist("code")))
    fake.set("broken", Behaviour(kind="error", status=500))
    return fake


async def test_probes_map_each_providers_strengths(daemon_factory: DaemonFactory, nc: Client,
                                                   two_specialists: FakeOpenAI) -> None:
    events: list[dict[str, Any]] = []

    async def on_event(msg):  # type: ignore[no-untyped-def]
        events.append(json.loads(msg.data))

    await nc.subscribe("alchemist.probes.results", cb=on_event)
    d = await daemon_factory(models=["mathy", "coder", "broken"], probes={"sample": 32})
    assert d.prober is not None
    d.prober.suites = math_and_code()
    results = await d.prober.run_once()
    main = [r for r in results if not r.trial]  # the rest are template trials
    assert len(main) == 32
    table = accuracy_table(main)
    assert table["mathy"]["math"] == (16, 16) and table["mathy"]["code"] == (0, 16)
    assert table["coder"]["code"] == (16, 16) and table["coder"]["math"] == (0, 16)
    assert table["broken"]["math"] == (0, 16)  # a failing provider does not stop the prober
    await until(lambda: len(events) == 6)
    by = {(e["provider"], e["suite"]): e for e in events}
    mathy = by["mathy", "arithmetic"]  # probes and trials, right whatever the template
    assert mathy["passed"] == mathy["total"] >= 16
    assert by["coder", "code_output"]["skill"] == "code"
    await until(lambda: d.index.rated_total["*probes*"] == len(results))
    probes = [r for r in d.index.rated.values() if r.truth is not None and r.user == "probe"]
    assert len(probes) == 32


async def test_probes_alone_earn_a_prior_recipe(daemon_factory: DaemonFactory,
                                                two_specialists: FakeOpenAI) -> None:
    d = await daemon_factory(models=["mathy", "coder"], probes={"sample": 32, "weight": 3.0},
                             evolver={"min_ratings": 5, "min_new_ratings": 1000,
                                      "interval_s": 1e6})  # steps only when the test says
    assert d.prober is not None and d.evolver is not None and d.recipes is not None
    d.prober.suites = math_and_code()
    records = 0
    for _ in range(3):
        records += len(await d.prober.run_once())  # 32 probes each
    await until(lambda: d.index.rated_total["*probes*"] == records)
    # the evolver learns from the records the rated stream's follower delivered
    await until(lambda: d.evolver is not None and d.evolver.total("default") == records)
    decision = await d.evolver.maybe_step("default", force=True)
    assert decision is not None and decision.promote, decision
    recipe = d.recipes.get("default")
    assert recipe is not None and recipe.version == 2 and recipe.n_ratings == records
    math, code = recipe.row("math", ["mathy", "coder"]), recipe.row("code", ["mathy", "coder"])
    assert math["mathy"] > math["coder"] and code["coder"] > code["mathy"]


async def test_the_budget_is_never_exceeded(daemon_factory: DaemonFactory,
                                            two_specialists: FakeOpenAI) -> None:
    d = await daemon_factory(models=["mathy", "coder", "broken"],
                             recipes={"default": {"answer": "number"}},  # so templates are tried
                             probes={"sample": 32, "calls_per_hour": 10, "template_explore": 0.5})
    assert d.prober is not None
    d.prober.suites = math_and_code()
    d.prober.rng = random.Random(3)
    before = sum(two_specialists.calls.values())
    runs = [await d.prober.run_once() for _ in range(3)]
    asks = [o for run in runs for r in run for o in r.outcomes]  # probes and template trials
    assert 9 <= len(asks) <= 10  # 3 probes, and trials only while they fit
    assert any(r.trial for run in runs for r in run)
    assert runs[-1] == [] and d.prober.counts["skipped_budget"] >= 2
    sent = sum(two_specialists.calls.values()) - before
    broken = sum(o.name == "broken" for o in asks)
    assert sent <= len(asks) + broken  # plus one retry each of the failing provider


def test_a_smaller_budget_still_counts_what_was_spent() -> None:
    """Lowering calls_per_hour on reload keeps the whole day's costs."""
    budget = Budget(calls_per_hour=100, cost_per_day=1.0)
    for i in range(50):  # one probe every 10 minutes for 8 hours: 1.0 USD in all
        budget.spend(1, 0.02, now=i * 600.0)
    later = 50 * 600.0 + 3601  # an hour after the last: no call counts against the hour
    assert budget.spent(later) == pytest.approx(1.0)
    assert not budget.allows(1, later)
    budget.resize(calls_per_hour=2, cost_per_day=1.0)
    assert budget.spent(later) == pytest.approx(1.0)
    assert not budget.allows(1, later)  # the day's money is spent, whatever the call limit
    budget.resize(calls_per_hour=2, cost_per_day=2.0)
    assert budget.allows(2, later) and not budget.allows(3, later)
    # a day (and at most one slot) after the last cost, all of it has left the window
    assert budget.spent(49 * 600.0 + 86400 + COST_SLOT_S + 1) == 0.0


async def test_requests_without_a_skill_are_routed(daemon_factory: DaemonFactory, nc: Client,
                                                   two_specialists: FakeOpenAI) -> None:
    d = await daemon_factory(models=["mathy"])
    reply = await infer(nc, {"prompt": "A shop sells 4 boxes of 12 eggs each. How many eggs "
                                       "does it sell in total?"})
    exp = d.index.get(reply["request_id"])
    assert exp is not None and exp.skill == "math"


def test_a_budget_from_the_journal_counts_what_was_spent_before() -> None:
    """A restarted prober, or the next holder of the prober lease, starts from the probe
    records of the rated stream: the last hour's calls and the last day's costs."""
    now = time.time()

    def record(age_s: float, n: int, cost: float, truth: bool = True) -> Rated:
        exp = Experience(request_id=f"p{age_s}", recipe=PROBES_KEY, version=0, skill="math",
                         strategy="vote", providers=tuple("abc"[:n]), answered=(True,) * n,
                         answers=("1",) * n, sim=(1.0,) * (n * n), served=0,
                         cost=(cost / n,) * n)
        return Rated(exp, 0, "probe" if truth else "u1", now - age_s,
                     (1.0,) * n if truth else None)

    journal = [record(60, 3, 0.3), record(7200, 2, 0.2), record(90_000, 3, 5.0),
               record(30, 3, 9.0, truth=False)]  # a day old; a user's rating: not probes
    budget = Budget.from_journal(4, 1.0, journal)
    assert budget.allows(1, time.monotonic()) and not budget.allows(2, time.monotonic())
    assert budget.calls_last_hour == 3
    assert abs(budget.spent(time.monotonic()) - 0.5) < 1e-9
