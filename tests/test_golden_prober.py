"""The prober and golden suites: each provider answers each golden probe once, remembered
across restarts through the journal, and again only when its template changes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from alchemist.daemon.learning.golden import asked, golden_tag, tag_of
from alchemist.daemon.storage.experience import PROBES_KEY
from alchemist.probes.golden import import_golden
from tests.conftest import DaemonFactory, until
from tests.fakes import Behaviour, FakeOpenAI

SUMS = {"What is 17 + 25?": 42, "What is 9 * 8?": 72, "What is 100 - 37?": 63}
PLAIN_SUFFIX = "Reply with the number only."


def arithmetic(messages: list[dict[str, Any]]) -> str:
    """Right on every sum, whatever the template (which only appends a line)."""
    content = messages[-1]["content"]
    return next((f"The answer is {v}." for q, v in SUMS.items() if content.startswith(q)), "0")


def golden_dir(tmp_path: Path, *, template: bool = False) -> Path:
    """A suites directory holding one golden suite of the three sums (imported from JSONL),
    and, with ``template``, a template for its skill in a suite of its own."""
    source = tmp_path / "sums.jsonl"
    source.write_text("".join(json.dumps({"prompt": q, "gold": v, "skill": "math"}) + "\n"
                              for q, v in SUMS.items()))
    directory = tmp_path / "suites"
    import_golden(source, suite="sums", directory=directory, answer="number")
    if template:  # a golden suite of one more probe, carrying the skill's template
        (directory / "plain.toml").write_text(
            'name = "plain"\nskill = "math"\ngolden = true\nanswer = "number"\n'
            f'[[templates]]\nname = "plain"\nsuffix = "{PLAIN_SUFFIX}"\n'
            '[[probes]]\nid = "one"\nprompt = "What is 9 * 8?  "\n'
            'check = {kind = "number", expected = 72}\n')
    return directory


def probes_config(directory: Path) -> dict[str, Any]:
    return {"suites_dir": str(directory), "shipped_suites": False, "sample": 8,
            "template_explore": 1.0}  # golden probes never get template trials, whatever this says


async def test_each_provider_answers_each_golden_probe_once(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.set("a", Behaviour(text=arithmetic))
    fake.set("b", Behaviour(text=arithmetic))
    directory = golden_dir(tmp_path)
    d = await daemon_factory(models=["a", "b"], probes=probes_config(directory))
    assert d.prober is not None
    assert [s.name for s in d.prober.suites] == ["sums"]  # no shipped suite: shipped_suites = false
    first = await d.prober.run_once()
    assert len(first) == 3 and not any(r.trial for r in first)
    assert all(r.passed == (True, True) for r in first)
    assert dict(fake.calls) == {"a": 3, "b": 3} and d.prober.counts["golden_calls"] == 6
    await until(lambda: d.index.rated_total[PROBES_KEY] == 3)
    records = list(d.index.rated.values())
    assert {tag_of(r.experience.request_id) for r in records} == {golden_tag(r.probe) for r in first}
    assert all(r.truth == (1.0, 1.0) and r.user == "probe" for r in records)  # ground truth
    assert await d.prober.run_once() == []  # asked already: nothing to do
    assert dict(fake.calls) == {"a": 3, "b": 3}

    # a restart (another instance on the same broker) reads it back from the journal
    again = await daemon_factory(models=["a", "b"], state="again", probes=probes_config(directory))
    assert again.prober is not None
    await until(lambda: len(asked(again.index.rated.values())) == 6)
    assert again.prober.golden_due(["a", "b"]) == []
    assert await again.prober.run_once() == [] and dict(fake.calls) == {"a": 3, "b": 3}
    # a provider with no answer on record is asked; an edited example is a new one
    probes = again.prober.suites[0].probes
    assert [(p.id, who) for p, who in again.prober.golden_due(["a", "b", "c"])] == [
        (p.id, ["c"]) for p in probes]
    assert golden_tag(replace(probes[0], prompt="What is 17 + 26?")) != golden_tag(probes[0])


async def test_a_failed_ask_is_asked_again_and_the_budget_holds(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.set("a", Behaviour(text=arithmetic))
    fake.set("down", Behaviour(kind="error", status=500))
    d = await daemon_factory(models=["a", "down"],
                             probes={**probes_config(golden_dir(tmp_path)), "calls_per_hour": 8})
    assert d.prober is not None
    assert len(await d.prober.run_once()) == 3  # 6 calls of 8
    await until(lambda: d.index.rated_total[PROBES_KEY] == 3)
    assert [who for _, who in d.prober.golden_due(["a", "down"])] == [["down"]] * 3
    again = await d.prober.run_once()  # only the one that gave no answer, within the budget
    assert [[o.name for o in r.outcomes] for r in again] == [["down"], ["down"]]
    assert d.prober.counts["skipped_budget"] == 1 and d.prober.counts["golden_calls"] == 8


async def test_a_template_change_asks_that_provider_again(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.set("a", Behaviour(text=arithmetic))
    fake.set("b", Behaviour(text=arithmetic))
    d = await daemon_factory(models=["a", "b"], probes=probes_config(golden_dir(tmp_path, template=True)),
                             recipes={"default": {"answer": "number"}})
    assert d.prober is not None and d.recipes is not None
    assert len(await d.prober.run_once()) == 4  # three sums and the one probe of 'plain'
    await until(lambda: d.index.rated_total[PROBES_KEY] == 4)
    assert await d.prober.run_once() == []
    await d.recipes.write_new_version("default", lambda cur: cur.successor(
        templates={"math": {"a": "plain"}}, reason="manual"))
    await until(lambda: (r := d.recipes.get("default")) is not None and r.version == 2)  # type: ignore[union-attr]
    before = dict(fake.calls)
    results = await d.prober.run_once()
    assert len(results) == 4 and all([o.name for o in r.outcomes] == ["a"] for r in results)
    assert all(r.templates == ("plain",) and r.passed == (True,) for r in results)
    assert fake.calls["a"] == before["a"] + 4 and fake.calls["b"] == before["b"]
    last = list(fake.requests)[-4:]
    assert all(req["model"] == "a" and req["messages"][-1]["content"].endswith(PLAIN_SUFFIX)
               for req in last)
    await until(lambda: d.index.rated_total[PROBES_KEY] == 8)
    assert await d.prober.run_once() == []  # asked with its new template: done again
