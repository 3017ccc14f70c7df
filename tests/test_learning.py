"""The learning loop end to end: ratings in, better recipes out, for every instance."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest
from nats.aio.client import Client

from alchemist.adapters import Message
from alchemist.answers.extract import AnswerSpec, extract
from alchemist.daemon.cli import main
from alchemist.daemon.sim.harness import Harness, LoopSettings, ordered
from alchemist.daemon.sim.replay import RecordedAnswer, ReplayItem, ReplaySet
from alchemist.daemon.sim.report import build_report
from alchemist.daemon.storage.recipe_store import RecipeStore
from tests.conftest import DaemonFactory, until

#: per-skill accuracy of four providers; the two weak ones make the same mistakes
ACCURACY = {"mathwiz": {"math": 0.92, "code": 0.35}, "coder": {"math": 0.35, "code": 0.92},
            "echo1": {"math": 0.4, "code": 0.4}, "echo2": {"math": 0.4, "code": 0.4}}


def skewed_replay(n: int, seed: int) -> ReplaySet:
    """Prompts whose uniform vote is poor: weak providers share their wrong answers."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        skill = "math" if i % 2 else "code"
        gold = str(rng.randint(100, 999))
        common_wrong = str(int(gold) + 1)
        answers = {}
        for model, acc in ACCURACY.items():
            right = rng.random() < acc[skill]
            if right:
                text = gold
            elif model.startswith("echo") and rng.random() < 0.85:
                text = common_wrong
            else:
                text = str(rng.randint(1000, 9999))
            answers[model] = RecordedAnswer(f'{{"answer": "{text}"}}', 1.0 if right else 0.0)
        items.append(ReplayItem(f"t{i}", skill, (Message("user", f"task {i}: {gold[::-1]}?"),),
                                gold, answers))
    return ReplaySet(tuple(items), tuple(ACCURACY))


@pytest.mark.slow  # 1,100 simulated requests while the evolver learns
async def test_ratings_teach_the_recipe_whom_to_trust_per_skill() -> None:
    replay = skewed_replay(400, seed=1)
    spec = AnswerSpec.parse("json:answer")
    settings = LoopSettings(answer=spec, rated=0.8, noise=0.1, seed=3, concurrency=4,
                            explore=0.05, lockstep=True,
                            evolver={"min_new_ratings": 15, "min_ratings": 20, "population": 48,
                                     "generations": 20})
    items = ordered(replay, 1100, seed=3)
    async with Harness(replay, settings) as h:
        await h.drive(items)
        assert h.daemon is not None and h.daemon.recipes is not None
        final = h.daemon.recipes.get("default")
    assert final is not None
    report = build_report(replay, h.served, extract=lambda t: extract(t, spec))
    last_third = h.served[-300:]
    served_last = 100 * sum(replay.score(s.item_id, s.provider) for s in last_third
                            if s.provider) / len(last_third)
    # what users get at the end is clearly better than a uniform vote...
    assert served_last >= report["plurality_vote"] + 8, (served_last, report)  # type: ignore[operator]
    # ...because promoted recipes trust the right provider for each skill
    assert final.version > 1 and final.reason == "evolved"
    math, code = final.row("math", replay.models), final.row("code", replay.models)
    assert math["mathwiz"] > math["coder"] and code["coder"] > code["mathwiz"]
    assert any(r.reason == "evolved" for r in h.progress.versions)


async def test_rollback_restores_and_announces(daemon_factory: DaemonFactory, nc: Client,
                                               nats_server, tmp_path: Path,  # type: ignore[no-untyped-def]
                                               capsys: pytest.CaptureFixture[str]) -> None:
    d = await daemon_factory(models=["a", "b"])
    events: list[dict[str, object]] = []

    async def on_event(msg):  # type: ignore[no-untyped-def]
        events.append(json.loads(msg.data))

    await nc.subscribe("alchemist.recipes.default", cb=on_event)
    store = RecipeStore(nc, "alchemist")
    await store.open(create=False)
    await store.write_new_version("default", lambda cur: cur.successor(
        weights={"*": {"a": 0.9, "b": 0.1}}, templates={"math": {"a": "json"}}, reason="manual"))
    url = nats_server.url
    assert await asyncio.to_thread(main, ["recipe", "show", "--url", url]) == 0
    assert "templates math: a -> json" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["recipe", "rollback", "default", "--url", url]) == 0
    await until(lambda: d.recipes is not None and d.recipes.get("default").version == 3)  # type: ignore[union-attr]
    restored = d.recipes.get("default")  # type: ignore[union-attr]
    assert restored.reason == "rollback" and restored.weights["*"] == {"a": 1.0, "b": 1.0}
    assert restored.templates == {}  # v1 had none: the rollback restores that too
    await until(lambda: any(e["version"] == 3 and e["reason"] == "rollback" for e in events))
    # export -> edit -> import round trip, through the CLI
    out = tmp_path / "r.toml"
    assert await asyncio.to_thread(main, ["recipe", "export", "--url", url, "-o", str(out)]) == 0
    out.write_text(out.read_text().replace("a = 1.0", "a = 0.25")
                   + '\n[templates.math]\nb = "reasoning"\n')
    assert await asyncio.to_thread(main, ["recipe", "import", str(out), "--url", url]) == 0
    await until(lambda: d.recipes.get("default").version == 4)  # type: ignore[union-attr]
    assert d.recipes.get("default").weights["*"]["a"] == 0.25  # type: ignore[union-attr]
    assert d.recipes.get("default").templates == {"math": {"b": "reasoning"}}  # type: ignore[union-attr]
    assert await asyncio.to_thread(main, ["recipe", "history", "--url", url]) == 0
    history = capsys.readouterr().out
    assert "v1" in history and "rollback" in history and "manual" in history


async def test_two_instances_converge_on_one_version(daemon_factory: DaemonFactory) -> None:
    a = await daemon_factory(models=["a", "b"], state="a")
    b = await daemon_factory(models=["a", "b"], state="b")
    assert a.recipes is not None and b.recipes is not None
    rev = a.recipes.revision("default")
    base = a.recipes.get("default")
    assert base is not None
    one = base.successor(weights={"*": {"a": 1.0, "b": 0.2}}, reason="evolved")
    two = base.successor(weights={"*": {"a": 0.2, "b": 1.0}}, reason="evolved")
    won = await asyncio.gather(a.recipes.publish(one, expected_revision=rev),
                               b.recipes.publish(two, expected_revision=rev))
    assert sorted(won) == [False, True]  # compare-and-set: exactly one promotion lands
    winner = one if won[0] else two
    await until(lambda: a.recipes.get("default") == b.recipes.get("default"))  # type: ignore[union-attr]
    assert a.recipes.get("default").weights == winner.weights  # type: ignore[union-attr]


async def test_population_persists_and_resumes(daemon_factory: DaemonFactory, nc: Client,
                                               fake) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import infer, rate
    from tests.fakes import Behaviour

    fake.set("a", Behaviour(text="1"))
    fake.set("b", Behaviour(text="2"))
    first = await daemon_factory(models=["a", "b"], evolver={"min_new_ratings": 1000, "interval_s": 1e6})
    for i in range(12):
        rid = (await infer(nc, {"prompt": f"q{i}", "skill": "math"}))["request_id"]
        await rate(nc, rid, "up" if i % 3 else "down", user=f"u{i}")
    await until(lambda: first.index.rated_total["default"] == 12)
    assert first.evolver is not None
    decision = await first.evolver.maybe_step("default", force=True)
    assert decision is not None and not decision.promote  # 12 ratings: far too few
    saved = first.evolver.state["default"]
    assert saved.population is not None and saved.generation > 0
    await first.stop()
    second = await daemon_factory(models=["a", "b"], evolver={"min_new_ratings": 1000, "interval_s": 1e6})
    assert second.evolver is not None
    resumed = second.evolver.state["default"]
    assert resumed.generation == saved.generation
    assert resumed.skills == saved.skills == ("*", "math")
    assert resumed.population is not None
    assert (resumed.population == saved.population).all()
