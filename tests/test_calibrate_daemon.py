"""evolver.calibrate: a golden set the operator trusts becomes the recipe, once, ungated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alchemist.daemon.learning.state import load_state
from alchemist.daemon.storage.experience import PROBES_KEY
from alchemist.probes.golden import import_golden
from tests.conftest import DaemonFactory, until
from tests.fakes import Behaviour, FakeOpenAI

SUMS = {f"What is {a} + {a + 3}?": 2 * a + 3 for a in range(10, 22)}  # twelve golden sums


def right(messages: list[dict[str, Any]]) -> str:
    content = messages[-1]["content"]
    return next((f"The answer is {v}." for q, v in SUMS.items() if content.startswith(q)), "0")


def wrong(messages: list[dict[str, Any]]) -> str:
    return "The answer is 7."  # the same wrong answer every time: a colluding pair


def golden(tmp_path: Path) -> dict[str, Any]:
    source = tmp_path / "sums.jsonl"
    source.write_text("".join(json.dumps({"prompt": q, "gold": v, "skill": "math"}) + "\n"
                              for q, v in SUMS.items()))
    directory = tmp_path / "suites"
    import_golden(source, suite="sums", directory=directory, answer="number")
    return {"suites_dir": str(directory), "shipped_suites": False, "sample": 100}


async def test_the_golden_set_becomes_the_recipe_once(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.set("a", Behaviour(text=right))
    fake.set("b", Behaviour(text=wrong))
    fake.set("c", Behaviour(text=wrong))
    evolver = {"calibrate": 12, "min_new_ratings": 6, "seed": 3, "population": 8,
               "generations": 2}
    recipes = {"default": {"params": {"first_wave": 1}}}
    probes = golden(tmp_path)
    d = await daemon_factory(probes=probes, evolver=evolver, recipes=recipes)
    assert d.prober is not None and d.evolver is not None and d.recipes is not None
    await d.prober.run_once()
    await until(lambda: d.index.rated_total[PROBES_KEY] == 12)
    await d.evolver.settled("default", 12)
    recipe = d.recipes.get("default")
    assert recipe is not None and recipe.reason == "calibrated" and recipe.version == 2
    # the uniform vote served the pair's shared mistake; the fitted one trusts "a" alone
    assert recipe.weights["math"] == {"a": 1.0, "b": 0.0, "c": 0.0}
    assert recipe.first_wave == 1 and recipe.stop_margin in (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    assert d.evolver.last_gate["default"].reason.startswith("calibrated on 12 ground-truth")
    assert d.evolver.counts["promotions"] == 1

    # once per recipe, across a restart: more evidence goes through the gate as usual
    await d.stop()
    again = await daemon_factory(probes=probes, evolver=evolver, recipes=recipes)
    assert again.evolver is not None and again.recipes is not None
    assert load_state(again.evolver.dir, "default", ("a", "b", "c")).calibrated
    await again.evolver.maybe_step("default", force=True)
    latest = again.recipes.get("default")
    assert latest is not None and latest.version == 2 and again.evolver.counts["promotions"] == 0
