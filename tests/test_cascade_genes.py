"""A recipe that asks in waves learns its cascade genes: the evolver promotes a cheaper
first wave when the records that asked everyone show it serves the same answers."""

from __future__ import annotations

from nats.aio.client import Client

from tests.conftest import DaemonFactory, infer, rate, until
from tests.fakes import Behaviour, FakeOpenAI


async def test_a_cheaper_cascade_is_promoted_with_the_same_weights(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    for name in ("a", "b", "c"):
        fake.set(name, Behaviour(text="The answer is 42."))
    # "a" outweighs the others together: it decides every vote on its own; explore makes half
    # the requests ask everyone, so their records can replay any cascade
    recipes = {"default": {"answer": "number", "weights": {"*": {"a": 1.0, "b": 0.3, "c": 0.3}},
                           "params": {"first_wave": 3, "explore": 0.5}}}
    # calls priced high (cost_weight 0.1): the saving is proven on a few hundred records
    evolver = {"min_new_ratings": 100, "seed": 5, "population": 8, "generations": 2,
               "cost_weight": 0.1}
    d = await daemon_factory(recipes=recipes, evolver=evolver)
    assert d.recipes is not None and d.evolver is not None
    for i in range(400):
        reply = await infer(nc, {"prompt": f"q{i}", "skill": "math"})
        await rate(nc, reply["request_id"], "up", user=f"u{i % 9}")
    await until(lambda: d.evolver is not None and d.evolver.total("default") >= 400, 30.0)
    await d.evolver.settled("default", 400, timeout=60.0)
    recipe = d.recipes.get("default")
    assert recipe is not None and recipe.reason == "evolved", d.evolver.last_gate
    assert (recipe.first_wave, recipe.stop_margin) == (1, 0.0)
    assert recipe.weights["*"] == {"a": 1.0, "b": 0.3, "c": 0.3}
    # requests that do not explore now ask "a" alone
    asked = [[p["name"] for p in (await infer(nc, {"prompt": f"more {i}"}))["providers"]]
             for i in range(20)]
    assert ["a"] in asked and all(len(a) in (1, 3) for a in asked), asked
