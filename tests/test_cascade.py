"""Cascades end to end: real nats-server, fake provider servers, real daemon.

A recipe with ``first_wave = k`` asks its k heaviest providers first and one
more at a time until the vote is decided (or its margin reached), inside the
deadline. The fakes count requests per model, so "never asked" is checked at
the provider itself.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from nats.aio.client import Client

from alchemist.answers.recipes import Recipe
from alchemist.daemon.config import ConfigError, parse_config
from alchemist.daemon.runtime.app import Daemon
from alchemist.daemon.storage.experience import Experience
from alchemist.daemon.storage.recipe_store import RecipeStore
from tests.conftest import DaemonFactory, infer, until
from tests.fakes import Behaviour, FakeOpenAI

CAT = "the cat sat on the mat"


def recipes(weights: dict[str, float], strategy: str = "vote", **params: Any) -> dict[str, Any]:
    """A default recipe extracting numbers, with these weights and params."""
    answer = {"kind": "text" if strategy == "select" else "number"}
    return {"default": {"answer": answer, "strategy": strategy, "weights": {"*": weights},
                        "params": params}}


def waves(reply: dict[str, Any]) -> list[tuple[str, int]]:
    """The reply's providers as (name, wave), in the order listed."""
    return [(p["name"], p["wave"]) for p in reply["providers"]]


async def recorded(d: Daemon, request_id: str) -> Experience:
    """The experience record the daemon journaled for a request."""
    await until(lambda: d.index.get(request_id) is not None)
    exp = d.index.get(request_id)
    assert exp is not None
    return exp


async def test_a_provider_never_asked_is_never_called_nor_waited_for(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    fake.set("a", Behaviour(text="42"))
    fake.set("b", Behaviour(kind="hang"))
    fake.set("c", Behaviour(kind="hang"))
    d = await daemon_factory(recipes=recipes({"a": 0.9, "b": 0.3, "c": 0.3}, first_wave=1))
    t0 = time.monotonic()
    reply = await infer(nc, {"prompt": "6*7?", "deadline_ms": 5000})
    assert time.monotonic() - t0 < 2.5  # a alone decides (0.9 > 0.3 + 0.3): no wait for b, c
    assert reply["answer"] == "42" and waves(reply) == [("a", 1)]
    assert fake.calls["b"] == fake.calls["c"] == 0
    exp = await recorded(d, reply["request_id"])
    assert exp.providers == ("a",) and exp.waves == (1,)


async def test_disagreement_asks_the_next_provider_by_weight(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    fake.set("a", Behaviour(text="42"))
    fake.set("b", Behaviour(text="17"))
    fake.set("c", Behaviour(text="It is 42"))
    fake.set("d", Behaviour(kind="hang"))
    # configured lightest first: the waves go by weight, not by the config's order
    d = await daemon_factory(models=["d", "c", "b", "a"],
                             recipes=recipes({"a": 1.0, "b": 0.9, "c": 0.8, "d": 0.1},
                                             first_wave=2))
    reply = await infer(nc, {"prompt": "6*7?", "deadline_ms": 5000})
    # a and b disagree (lead 0.1 against 0.9 outstanding); c sides with a: 1.8 against 0.9,
    # and d's 0.1 cannot overturn that
    assert reply["answer"] == "42"
    assert waves(reply) == [("a", 1), ("b", 1), ("c", 2)]
    assert fake.calls["d"] == 0
    exp = await recorded(d, reply["request_id"])
    assert exp.providers == ("a", "b", "c") and exp.waves == (1, 1, 2)
    assert exp.to_wire()["wv"] == [1, 1, 2]
    assert Experience.from_wire(exp.to_wire()).waves == (1, 1, 2)


@pytest.mark.parametrize(("stop_margin", "asked"), [
    (0.5, [("a", 1), ("b", 1)]),  # 2 of 4 agree: a lead of half the weight stops at once
    (0.0, [("a", 1), ("b", 1), ("c", 2)]),  # no margin: on until the vote is decided
])
async def test_stop_on_the_margin_or_when_decided(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client,
        stop_margin: float, asked: list[tuple[str, int]]) -> None:
    for model in "abc":
        fake.set(model, Behaviour(text="42"))
    fake.set("d", Behaviour(kind="hang"))
    await daemon_factory(models=["a", "b", "c", "d"],
                         recipes=recipes(dict.fromkeys("abcd", 1.0), first_wave=2,
                                         stop_margin=stop_margin))
    reply = await infer(nc, {"prompt": "6*7?", "deadline_ms": 5000})
    assert reply["answer"] == "42" and waves(reply) == asked
    assert fake.calls["d"] == 0 and fake.calls["c"] == len(asked) - 2


async def test_no_later_wave_past_the_deadline(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    fake.set("a", Behaviour(text="42"))
    fake.set("b", Behaviour(kind="hang"))
    fake.set("c", Behaviour(text="42"))
    await daemon_factory(recipes=recipes(dict.fromkeys("abc", 1.0), first_wave=2))
    t0 = time.monotonic()
    reply = await infer(nc, {"prompt": "6*7?", "deadline_ms": 600})
    elapsed = time.monotonic() - t0
    # the first wave ran into the deadline; the reply is what was in hand then
    assert 0.5 < elapsed < 3.0
    assert reply["answer"] == "42" and [n for n, _ in waves(reply)] == ["a", "b"]
    assert reply["providers"][1]["error"] in ("deadline", "timeout")
    assert fake.calls["c"] == 0


async def test_no_later_wave_when_its_provider_would_not_make_the_deadline(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    fake.set("a", Behaviour(kind="slow", delay_s=0.5, text="42"))
    fake.set("b", Behaviour(text="17"))
    fake.set("c", Behaviour(kind="slow", delay_s=0.8, text="42"))
    await daemon_factory(recipes=recipes(dict.fromkeys("abc", 1.0), first_wave=2))
    reply = await infer(nc, {"prompt": "6*7?"})  # time enough: c settles the tie, ~0.8 s
    assert waves(reply) == [("a", 1), ("b", 1), ("c", 2)] and fake.calls["c"] == 1
    t0 = time.monotonic()
    reply = await infer(nc, {"prompt": "6*7?", "deadline_ms": 1200})
    # after the first wave (0.5 s) less than c's usual 0.8 s is left: c is not asked
    assert time.monotonic() - t0 < 1.15
    assert [n for n, _ in waves(reply)] == ["a", "b"] and fake.calls["c"] == 1


async def test_explore_asks_everyone_at_once(daemon_factory: DaemonFactory, fake: FakeOpenAI,
                                             nc: Client) -> None:
    fake.set("a", Behaviour(kind="slow", delay_s=0.2, text="42"))
    fake.set("b", Behaviour(text="42"))
    fake.set("c", Behaviour(text="42"))
    d = await daemon_factory(recipes=recipes({"a": 0.9, "b": 0.3, "c": 0.3}, first_wave=1))
    store = RecipeStore(nc, "alchemist")
    await store.open(create=False)

    def exploring(cur: Recipe) -> Recipe:  # a recipe document may explore on every request
        return cur.successor(explore=1.0, reason="manual")

    await store.write_new_version("default", exploring)
    await until(lambda: d.recipes is not None and d.recipes.get("default").version == 2)  # type: ignore[union-attr]
    reply = await infer(nc, {"prompt": "6*7?"})
    assert reply["recipe"]["version"] == 2
    assert waves(reply) == [("a", 1), ("b", 1), ("c", 1)] and all(p["ok"] for p in reply["providers"])
    assert fake.calls["a"] == fake.calls["b"] == fake.calls["c"] == 1
    exp = await recorded(d, reply["request_id"])
    assert exp.waves == ()  # asked all at once
    assert "wv" not in exp.to_wire()


async def test_cut_in_a_wave_is_listed_never_asked_is_not(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    fake.set("a", Behaviour(text="42"))
    fake.set("b", Behaviour(text="42"))
    fake.set("c", Behaviour(kind="hang"))
    fake.set("d", Behaviour(kind="hang"))
    await daemon_factory(models=["a", "b", "c", "d"],
                         recipes=recipes({"a": 0.9, "b": 0.9, "c": 0.3, "d": 0.2}, first_wave=3))
    reply = await infer(nc, {"prompt": "6*7?", "deadline_ms": 5000})
    assert waves(reply) == [("a", 1), ("b", 1), ("c", 1)]
    assert reply["providers"][2]["error"] == "not_needed"
    assert fake.calls["d"] == 0


async def test_select_cascade_stops_on_its_margin(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    fake.set("a", Behaviour(text=CAT))
    fake.set("b", Behaviour(text=CAT.upper()))
    fake.set("c", Behaviour(kind="hang"))
    fake.set("d", Behaviour(kind="hang"))
    await daemon_factory(models=["a", "b", "c", "d"],
                         recipes=recipes(dict.fromkeys("abcd", 1.0), "select", first_wave=2,
                                         stop_margin=0.4))
    reply = await infer(nc, {"prompt": "Where did the cat sit?", "deadline_ms": 5000})
    assert reply["text"] == CAT and waves(reply) == [("a", 1), ("b", 1)]
    assert fake.calls["c"] == fake.calls["d"] == 0


async def test_without_a_cascade_every_provider_is_in_wave_one(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    d = await daemon_factory()
    reply = await infer(nc, {"prompt": "hi"})
    assert waves(reply) == [("a", 1), ("b", 1), ("c", 1)]
    assert (await recorded(d, reply["request_id"])).waves == ()


async def test_a_breaker_trial_is_not_held_by_a_provider_never_asked(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    fake.set("a", Behaviour(text="42"))
    fake.set("b", Behaviour(text="17"))
    fake.set("c", Behaviour(kind="error", status=500))
    d = await daemon_factory(recipes=recipes({"a": 1.0, "b": 0.6, "c": 0.5}, first_wave=1),
                             breaker={"consecutive": 2, "cooldown_s": 0.3})
    for _ in range(2):  # a and b disagree, so c is asked, and fails: its breaker opens
        reply = await infer(nc, {"prompt": "6*7?"})
        assert [n for n, _ in waves(reply)] == ["a", "b", "c"]
    assert d.service is not None and d.service.fanout.breakers["c"].state == "open"
    await asyncio.sleep(0.35)  # the cooldown itself is what is tested here
    fake.set("b", Behaviour(text="42"))
    reply = await infer(nc, {"prompt": "6*7?"})  # c is admitted for its trial, but not needed
    assert [n for n, _ in waves(reply)] == ["a", "b"] and fake.calls["c"] == 4  # 2 x (1 + retry)
    fake.set("b", Behaviour(text="17"))
    fake.set("c", Behaviour(text="42"))
    reply = await infer(nc, {"prompt": "6*7?"})  # the trial is still free: c is asked
    assert waves(reply) == [("a", 1), ("b", 2), ("c", 3)] and reply["providers"][2]["ok"]
    assert d.service.fanout.breakers["c"].state == "closed"


# ---------------------------------------------------------------- the params


@pytest.mark.parametrize(("params", "message"), [
    ({"first_wave": -1}, "recipes.default.params.first_wave must be an integer >= 0, got -1"),
    ({"first_wave": 1.5}, "recipes.default.params.first_wave must be an integer"),
    ({"stop_margin": 1.5},
     "recipes.default.params.stop_margin must be a number between 0 and 1, got 1.5"),
])
def test_bad_cascade_params_name_their_key(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"recipes": {"default": {"params": params}}})
    assert message in str(info.value)


def test_cascade_params_travel_with_the_recipe() -> None:
    cfg = parse_config({"recipes": {"r": {"params": {"first_wave": 2, "stop_margin": 0.25}}}})
    recipe = cfg.recipes["r"].initial(["a", "b", "c"])
    assert (recipe.first_wave, recipe.stop_margin) == (2, 0.25)
    assert recipe.to_dict()["params"] == {"min_weight": 0.05, "explore": 0.0, "first_wave": 2,
                                          "stop_margin": 0.25}
    again = Recipe.from_toml(recipe.to_toml())
    assert (again.first_wave, again.stop_margin) == (2, 0.25)
    assert again.successor(reason="evolved").first_wave == 2
    # without a cascade the document is what a daemon before cascades reads
    plain = parse_config({}).recipes["default"].initial(["a"])
    assert set(plain.to_dict()["params"]) == {"min_weight", "explore"}


def test_records_written_before_cascades_still_load() -> None:
    old = {"id": "r0", "r": "default", "v": 1, "k": "*", "st": "vote", "p": ["a", "b"],
           "ok": [True, True], "a": ["x", "x"], "sim": [1.0, 1.0, 1.0, 1.0], "s": 0, "pi": 1.0,
           "c": [0.0, 0.0], "ts": 10.0}
    exp = Experience.from_wire(old)
    assert exp.waves == () and exp.providers == ("a", "b")
