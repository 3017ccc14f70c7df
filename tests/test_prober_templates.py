"""The template gene end to end: probes measure each provider's templates, the evolver picks
the one a provider follows, and the daemon then sends that provider its template."""

from __future__ import annotations

import asyncio
import json
import random
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from daemon.config import ProbesConfig
from daemon.experience import PROBE_USER, TRIAL_USER
from daemon.prober import Prober, accuracy_table, summarize
from probes.suites import load_suites, template_catalog
from tests.conftest import DaemonFactory, infer
from tests.fakes import Behaviour, FakeOpenAI
from tests.test_feedback import until

SUITES = Path(__file__).resolve().parents[1] / "probes" / "suites"
ARITHMETIC = tomllib.loads((SUITES / "arithmetic.toml").read_text())
REASONING = next(t for t in ARITHMETIC["templates"] if t["name"] == "reasoning")


def right_answer(content: str) -> str:
    """The expected number of the arithmetic probe whose prompt starts ``content``."""
    for probe in ARITHMETIC["probes"]:
        if content.startswith(probe["prompt"]):
            return str(probe["check"]["expected"])
    return "0"


def follows_the_format(messages: list[dict[str, Any]]) -> str:
    """Right only when told to end with 'Answer: <number>'; otherwise it rambles a wrong number."""
    content = messages[-1]["content"]
    if "'Answer: <number>'" in content:
        return f"Let me work it out.\nAnswer: {right_answer(content)}"
    return "I think it is about 7 or so, maybe 3."


def mostly_right(messages: list[dict[str, Any]]) -> str:
    """Right on two probes in three, whatever the template."""
    content = messages[-1]["content"]
    index = next((i for i, p in enumerate(ARITHMETIC["probes"]) if content.startswith(p["prompt"])), 0)
    return "0" if index % 3 == 0 else right_answer(content)


@pytest.fixture
def fleet(fake: FakeOpenAI) -> FakeOpenAI:
    fake.set("strict", Behaviour(text=follows_the_format))
    fake.set("steady", Behaviour(text=mostly_right))
    return fake


def arithmetic() -> list[Any]:
    return [s for s in load_suites() if s.name == "arithmetic"]


async def test_the_template_gene_picks_the_template_a_provider_follows(
        daemon_factory: DaemonFactory, nc: Client, fleet: FakeOpenAI) -> None:
    d = await daemon_factory(
        models=["strict", "steady"],
        probes={"sample": 16, "template_explore": 0.75, "calls_per_hour": 10_000},
        evolver={"min_ratings": 5, "min_new_ratings": 10_000, "interval_s": 1e6})
    assert d.prober is not None and d.evolver is not None and d.recipes is not None
    d.prober.suites = arithmetic()

    async def probe(rounds: int) -> list[Any]:
        before = d.index.rated_total["*probes*"]
        results = []
        for _ in range(rounds):
            results += await d.prober.run_once()  # type: ignore[union-attr]
        await until(lambda: d.index.rated_total["*probes*"] == before + len(results))
        return results

    table = accuracy_table(await probe(8), by_template=True)
    assert table["strict"]["math/reasoning"][0] == table["strict"]["math/reasoning"][1] > 0
    assert table["strict"]["math/none"][0] == 0 and table["strict"]["math/plain"][0] == 0
    steady = [table["steady"][c] for c in table["steady"]]
    assert 0.5 < sum(p for p, _ in steady) / sum(t for _, t in steady) < 0.85  # 2 in 3, any template
    # 1. the template: strict is measured right with "reasoning" only; steady keeps none
    decision = await d.evolver.maybe_step("default", force=True)
    assert decision is not None and decision.promote, decision
    recipe = d.recipes.get("default")
    assert recipe is not None and recipe.version == 2
    assert recipe.template("math", "strict") == "reasoning"
    assert recipe.template("math", "steady") is None  # alike under every option: left alone
    assert d.prober.current("math", "strict") is not None  # probes now ask it that way
    # 2. the weights: probes asked with the new template show strict right, and it earns
    # weight (the evidence grows with every round; a step promotes once it clears the gate)
    for _ in range(3):
        await probe(6)
        await d.evolver.maybe_step("default", force=True)
        recipe = d.recipes.get("default")
        assert recipe is not None and recipe.template("math", "strict") == "reasoning"
        row = recipe.row("math", ["strict", "steady"])
        if row["strict"] > row["steady"]:
            break
    assert row["strict"] > row["steady"], (recipe, d.evolver.last_gate)
    # the daemon renders strict's math requests with the reasoning template, and strict is right
    fleet.requests.clear()
    prompt = ARITHMETIC["probes"][1]["prompt"]  # one both get right
    reply = await infer(nc, {"prompt": prompt, "skill": "math", "answer": {"kind": "number"},
                             "include_candidates": True})
    sent = {r["model"]: r["messages"] for r in fleet.requests}
    assert sent["strict"][0] == {"role": "system", "content": REASONING["system"]}
    assert sent["strict"][-1]["content"].endswith(REASONING["suffix"])
    assert sent["steady"] == [{"role": "user", "content": prompt}]
    answers = {c["provider"]: c["answer"] for c in reply["candidates"]}
    assert answers["strict"] == answers["steady"] == right_answer(prompt)
    status = {p["name"]: p for p in reply["providers"]}
    assert status["strict"]["template"] == "reasoning" and "template" not in status["steady"]


async def test_probe_records_and_events_say_which_template(
        daemon_factory: DaemonFactory, nc: Client, fleet: FakeOpenAI) -> None:
    events: list[dict[str, Any]] = []

    async def on_event(msg: Any) -> None:
        events.append(json.loads(msg.data))

    await nc.subscribe("alchemist.probes.results", cb=on_event)
    d = await daemon_factory(models=["strict", "steady"],
                             probes={"sample": 16, "template_explore": 1.0})
    assert d.prober is not None
    d.prober.suites = arithmetic()
    results = await d.prober.run_once()
    assert d.prober.counts["template_trials"] == 32  # every provider tried another option
    await until(lambda: d.index.rated_total["*probes*"] == 32)
    records = [r for r in d.index.rated.values() if r.truth is not None]
    main = [r for r in records if r.user == PROBE_USER]
    trials = [r for r in records if r.user == TRIAL_USER]
    assert len(main) == len(trials) == 16
    # the recipe sends no template: the main records say so; the trials name the one they tried
    assert all(set(r.experience.templates) <= {None} for r in main)
    names = {t.name for t in template_catalog(load_suites())["math"]}
    assert all(set(r.experience.templates) <= names and r.experience.templates for r in trials)
    await until(lambda: len(events) == 2)
    strict = next(e for e in events if e["provider"] == "strict")
    assert strict["total"] == 32 and set(strict["templates"]) <= names | {"none"}
    assert strict["templates"]["none"] == [0, 16]
    assert summarize(results) == sorted(events, key=lambda e: e["provider"])


def test_template_trials_try_every_other_option_alike() -> None:
    suites = arithmetic()
    chosen = {"strict": "json"}
    prober = Prober(ProbesConfig(template_explore=0.3), suites, lambda: None,  # type: ignore[arg-type,return-value]
                    lambda r: None, lambda s, b: None, "alchemist", random.Random(7),
                    catalog=template_catalog(suites), chosen=lambda skill, p: chosen.get(p))
    current = prober.current("math", "strict")
    assert current is not None and current.name == "json"
    tried = [prober.trials("math", ["strict"]).get("strict", current) for _ in range(6000)]
    names = [t.name if t else None for t in tried]
    assert 0.67 < names.count("json") / 6000 < 0.73  # no trial 70 % of the time
    for other in (None, "plain", "reasoning"):  # the 30 % spread over every other option
        assert 0.08 < names.count(other) / 6000 < 0.12
    assert prober.trials("no-such-skill", ["strict"]) == {}  # a skill without templates
    chosen["strict"] = "gone"  # a template the suites no longer have counts as none
    assert prober.current("math", "strict") is None


async def test_probe_run_cli_compares_templates(tmp_path: Path, fleet: FakeOpenAI,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from daemon.cli import main

    config = tmp_path / "alchemist.toml"
    config.write_text(
        f'[state]\ndir = "{tmp_path}"\n'
        + "".join(f'[[providers]]\nname = "{m}"\nkind = "openai"\nbase_url = "{fleet.base_url}"\n'
                  f'model = "{m}"\n' for m in ("strict", "steady")))
    # the CLI runs its own event loop: in a thread, so this one keeps serving the fakes
    argv = ["probe", "run", "-c", str(config), "--suite", "arithmetic", "--templates"]
    assert await asyncio.to_thread(main, argv) == 0
    out, err = capsys.readouterr()
    assert "probing: 64/64" in err  # 16 probes x (none + 3 templates)
    header, strict = out.splitlines()[0].split(), next(
        line.split() for line in out.splitlines() if line.startswith("strict "))
    assert header[1:] == ["math/none", "math/plain", "math/json", "math/reasoning"]
    assert strict[1:] == ["0/16", "0/16", "0/16", "16/16"]
    assert re.search(r"strict: math -> reasoning \(100%\)", out)
    assert re.search(r"steady: math -> none \(62%\)", out)  # alike everywhere: the first
