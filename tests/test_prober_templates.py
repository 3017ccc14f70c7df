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

import numpy as np
import pytest
from nats.aio.client import Client

from alchemist.daemon.config import ProbesConfig, RecipeConfig
from alchemist.daemon.learning.evolver import build_snapshot, genome_of, templates_of
from alchemist.daemon.learning.prober import Prober, accuracy_table, summarize
from alchemist.daemon.storage.experience import PROBE_USER, PROBES_KEY, TRIAL_USER, Experience, Rated
from alchemist.optimizers.templates import TemplateStats
from alchemist.probes.suites import load_suites, template_catalog
from tests.conftest import DaemonFactory, infer, until
from tests.fakes import Behaviour, FakeOpenAI

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
        models=["strict", "steady"], recipes={"default": {"answer": "number"}},
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
        # and the evolver's evidence: what the rated stream's follower delivered
        await until(lambda: d.evolver is not None
                    and d.evolver.total("default") == before + len(results))
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
    d = await daemon_factory(models=["strict", "steady"], recipes={"default": {"answer": "number"}},
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
    assert strict["total"] == 16  # the probes as the recipe asks them; trials only by template
    assert set(strict["templates"]) <= names | {"none"} and strict["templates"]["none"] == [0, 16]
    assert sum(n for _, n in strict["templates"].values()) == 32
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
    from alchemist.daemon.cli import main

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


async def test_no_trials_for_a_recipe_that_extracts_text(
        daemon_factory: DaemonFactory, fleet: FakeOpenAI) -> None:
    # the default recipe extracts text: templates never apply to it, so none are measured
    d = await daemon_factory(models=["strict", "steady"], probes={"sample": 8, "template_explore": 1.0})
    assert d.prober is not None
    d.prober.suites = arithmetic()
    results = await d.prober.run_once()
    assert len(results) == 8 and not any(r.trial for r in results)
    assert d.prober.counts["template_trials"] == 0


def probe_record(templates: tuple[str | None, ...] | None, truth: tuple[float | None, ...],
                 user: str = PROBE_USER, skill: str = "math") -> Rated:
    answered = tuple(t is not None for t in truth)
    exp = Experience(request_id=f"p{random.random()}", recipe=PROBES_KEY, version=0, skill=skill,
                     strategy="vote", providers=("a", "b"), answered=answered,
                     answers=tuple("1" if ok else None for ok in answered),
                     sim=(float(answered[0]), 1.0, 1.0, float(answered[1])), served=0,
                     templates=templates or ())
    return Rated(exp, 0, user, 0.0, truth)


def test_snapshot_counts_probe_answers_for_the_weights_only_under_the_current_template() -> None:
    catalog = {"math": ("plain", "json", "reasoning")}
    records = [
        probe_record(("reasoning", None), (1.0, 0.0)),  # a: as the recipe says; b: as written
        probe_record(("plain", None), (0.0, 1.0)),  # a: another template -> a trial only
        probe_record(None, (1.0, 1.0)),  # written before templates: both as written
        probe_record(("reasoning", "json"), (1.0, None), TRIAL_USER),  # a trial record
        probe_record(("gone", None), (1.0, 1.0)),  # a template the suites no longer have
        probe_record((None, None), (1.0, 0.0), skill="code"),  # a skill without templates
    ]
    data = build_snapshot(records, ("*", "code", "math"), ("a", "b"), 3.0, catalog,
                          {"math": {"a": "reasoning"}})
    assert data.templates is not None and data.option is not None and data.trial is not None
    assert data.templates.current.tolist() == [3, 0]  # (math, a) = reasoning, (math, b) = none
    assert data.option.tolist() == [[3, 0], [1, 0], [0, 0], [3, 2], [-1, 0], [0, 0]]
    assert data.answered.tolist() == [[True, True], [False, True], [False, True], [True, False],
                                      [False, True], [True, True]]
    assert data.weight.tolist() == [3.0, 3.0, 3.0, 0.0, 3.0, 3.0]  # trials never count
    assert np.isnan(data.truth[1, 0]) and data.truth[1, 1] == 1.0
    # every probe answer is a trial of its template; no answer under a template is a failure
    assert data.trial[3].tolist() == [1.0, 0.0] and data.trial[1].tolist() == [0.0, 1.0]
    stats = TemplateStats.of(data)
    assert stats is not None
    assert stats.asked.tolist() == [[1, 1, 0, 2], [4, 0, 1, 0]]  # unknown names are no trials
    genome = genome_of(RecipeConfig("default").initial(["a", "b"]), data.skills, data.providers,
                       data.templates)
    assert genome[-2:].tolist() == [3.0, 0.0]
    genome[-2:] = [2, 3]
    assert templates_of(genome, data, catalog) == {"math": {"a": "json", "b": "reasoning"}}
    # a recipe without template genes counts every probe answer, and still no trial record
    plain = build_snapshot(records, ("*", "code", "math"), ("a", "b"), 3.0)
    assert plain.templates is None and plain.weight.tolist() == [3.0] * 3 + [0.0] + [3.0] * 2
