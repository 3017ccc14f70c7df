"""Per-provider prompt templates, the serving side: the recipe's ``templates`` field,
the experience wire, per-provider fan-out requests, and the daemon rendering each
provider's request with its template (real nats-server, fake provider servers)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import structlog
import tomli_w
from nats.aio.client import Client

from alchemist.adapters import ChatRequest, Message, ProviderSpec, build_provider, make_session
from alchemist.answers.recipes import Recipe, RecipeError
from alchemist.daemon.cli import main
from alchemist.daemon.config import ConfigError, parse_config
from alchemist.daemon.runtime.app import Daemon
from alchemist.daemon.serving.fanout import FanOut
from alchemist.daemon.serving.service import MAX_WARNED
from alchemist.daemon.storage.experience import Experience, Rated, pack, unpack
from alchemist.daemon.storage.recipe_store import RecipeStore
from alchemist.probes.suites import load_suites
from tests.conftest import DaemonFactory, infer, until
from tests.fakes import Behaviour, FakeOpenAI

SUITES = {s.name: s for s in load_suites()}
REASONING = SUITES["arithmetic"].template("reasoning")
PLAIN = SUITES["arithmetic"].template("plain")
#: a prompt the router (built from the shipped suites) sends to "math"
ROUTED_PROMPT = next(p for p in SUITES["arithmetic"].probes if p.id == "apples").prompt
assert REASONING.system is not None


# ------------------------------------------------------------------ recipe


def recipe_dict(**extra: Any) -> dict[str, Any]:
    return {"name": "default", "version": 3, "weights": {"*": {"a": 1.0, "b": 1.0}},
            "reason": "manual", **extra}


def test_recipe_templates_round_trip_through_dict_and_toml() -> None:
    templates = {"math": {"a": "reasoning", "b": "plain"}, "code": {"b": "trace"}}
    recipe = Recipe.from_dict(recipe_dict(templates=templates))
    assert recipe.templates == templates
    assert recipe.template("math", "a") == "reasoning" and recipe.template("code", "b") == "trace"
    assert recipe.template("math", "c") is None and recipe.template("knowledge", "a") is None
    assert recipe.template("*", "a") is None  # no fallback through "*"
    assert recipe.to_dict()["templates"] == templates
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    text = recipe.to_toml()
    assert "[templates.math]" in text and 'a = "reasoning"' in text
    assert Recipe.from_toml(text) == recipe
    nxt = recipe.successor(reason="manual")
    assert nxt.templates == templates and nxt.version == 4
    assert recipe.successor(templates={"math": {"a": "json"}}).template("math", "a") == "json"


def test_recipe_without_templates_writes_none() -> None:
    recipe = Recipe.from_dict(recipe_dict())
    assert recipe.templates == {} and recipe.template("math", "a") is None
    assert "templates" not in recipe.to_dict() and "templates" not in recipe.to_toml()
    assert Recipe.from_toml(recipe.to_toml()) == recipe
    assert "templates" not in Recipe.from_dict(recipe_dict(templates={"math": {}})).to_dict()


def test_initial_recipe_copies_the_configured_templates() -> None:
    cfg = parse_config({
        "providers": [{"name": n, "kind": "openai", "base_url": "http://127.0.0.1:1/v1", "model": n}
                      for n in ("a", "b")],
        "recipes": {"default": {"answer": "number", "templates": {"math": {"a": "reasoning"}}}},
    })
    recipe = cfg.recipes["default"].initial(["a", "b"])
    assert recipe.templates == {"math": {"a": "reasoning"}}
    assert parse_config({}).recipes["default"].initial(["a"]).templates == {}


@pytest.mark.parametrize(("templates", "message"), [
    ("reasoning", "recipe field 'templates' must be a map {skill: {provider: template name}}"),
    (["math"], "recipe field 'templates' must be a map"),
    ({"math": "reasoning"}, "recipe field 'templates.math' must be a map {provider: template name}"),
    ({"*": {"a": "plain"}}, "recipe field 'templates' has a key '*' that is not a probe suite's "
                            "skill name (lowercase letters, digits, '_', '-' or '.'; not the "
                            "fallback '*')"),
    ({"Math": {"a": "plain"}}, "has a key 'Math' that is not a probe suite's skill name "
                               "(lowercase letters"),
    ({1: {"a": "plain"}}, "has a key 1 that is not a probe suite's skill name (lowercase letters"),
    ({"math": {"": "plain"}}, "recipe field 'templates.math' has a key '' that is not a "
                              "non-empty provider name"),
    ({"math": {"a": "Step By Step"}}, "recipe field 'templates.math.a' must be a template name"),
    ({"math": {"a": ""}}, "recipe field 'templates.math.a' must be a template name"),
    ({"math": {"a": 3}}, "recipe field 'templates.math.a' must be a template name"),
    ({"math": {"a": None}}, "recipe field 'templates.math.a' must be a template name"),
])
def test_recipe_templates_are_validated(templates: object, message: str) -> None:
    with pytest.raises(RecipeError) as err:
        Recipe.from_dict(recipe_dict(templates=templates))
    assert message in str(err.value)


# ------------------------------------------------------------------ experience


def experience(**fields: Any) -> Experience:
    return Experience(request_id="r1", recipe="default", version=2, skill="math", strategy="vote",
                      providers=("a", "b"), answered=(True, True), answers=("5", "5"),
                      sim=(1.0, 1.0, 1.0, 1.0), served=0, cost=(0.0, 0.0), ts=1.5, **fields)


def test_experience_wire_carries_the_templates() -> None:
    exp = experience(templates=("reasoning", None))
    wire = exp.to_wire()
    assert wire["tp"] == ["reasoning", None]
    assert Experience.from_wire(unpack(pack(wire))) == exp
    rated = Rated(exp, 1, "u1", 2.0)
    assert Rated.from_wire(unpack(pack(rated.to_wire()))) == rated


@pytest.mark.parametrize("templates", [(), (None, None)])
def test_experience_wire_without_templates_has_no_key(templates: tuple[str | None, ...]) -> None:
    wire = experience(templates=templates).to_wire()
    assert "tp" not in wire
    assert Experience.from_wire(unpack(pack(wire))).templates == ()


def test_records_written_before_templates_still_parse() -> None:
    old = {"id": "r0", "r": "default", "v": 1, "k": "*", "st": "vote", "p": ["a"], "ok": [True],
           "a": ["x"], "sim": [1.0], "s": 0, "pi": 1.0, "c": [0.0], "ts": 10.0}
    exp = Experience.from_wire(unpack(pack(old)))
    assert exp.templates == () and exp.providers == ("a",)
    rated = Rated.from_wire({"e": old, "y": 0, "u": "probe", "ts": 11.0, "t": [1.0]})
    assert rated.experience.templates == () and rated.truth == (1.0,)


# ------------------------------------------------------------------ fan-out


def sent(fake: FakeOpenAI, model: str) -> list[dict[str, Any]]:
    """The messages of the last request ``model``'s fake server received."""
    bodies = [r for r in fake.requests if r["model"] == model]
    assert bodies, f"{model} received no request"
    messages: list[dict[str, Any]] = bodies[-1]["messages"]
    return messages


async def test_fan_out_sends_each_provider_its_own_request(fake: FakeOpenAI) -> None:
    loop = asyncio.get_running_loop()
    async with make_session() as session:
        providers = {m: build_provider(ProviderSpec(name=m, kind="openai", base_url=fake.base_url,
                                                    model=m, max_retries=0), session)
                     for m in ("a", "b")}
        fanout = FanOut(providers)
        chats = {"a": ChatRequest((Message("system", "for a"), Message("user", "q"))),
                 "b": ChatRequest((Message("user", "q for b"),), max_tokens=7)}
        outcomes = await fanout.run(["a", "b"], chats, loop.time() + 5)
        assert [o.name for o in outcomes] == ["a", "b"] and all(o.result for o in outcomes)
        assert sent(fake, "a") == [{"role": "system", "content": "for a"},
                                   {"role": "user", "content": "q"}]
        assert sent(fake, "b") == [{"role": "user", "content": "q for b"}]
        assert next(r for r in fake.requests if r["model"] == "b")["max_tokens"] == 7
        with pytest.raises(KeyError, match="no request for b"):
            await fanout.run(["a", "b"], {"a": chats["a"]}, loop.time() + 5)
        assert fake.calls["a"] == 1  # refused before anything was sent
        outcomes = await fanout.run(["a", "b"], ChatRequest((Message("user", "same"),)),
                                    loop.time() + 5)
        assert all(o.result for o in outcomes)
        assert sent(fake, "a") == sent(fake, "b") == [{"role": "user", "content": "same"}]
        for provider in providers.values():
            await provider.aclose()


# ------------------------------------------------------------------ end to end


async def journaled(nc: Client, request_id: str) -> Experience:
    """The experience the daemon journaled for ``request_id``, read back from its stream."""
    sub = await nc.jetstream().subscribe("alchemist.experience", ordered_consumer=True)
    try:
        while True:
            msg = await sub.next_msg(timeout=10)
            exp = Experience.from_wire(unpack(msg.data))
            if exp.request_id == request_id:
                return exp
    finally:
        await sub.unsubscribe()


def templated(template_system: str | None, *messages: dict[str, str],
              suffix: str) -> list[dict[str, str]]:
    """``messages`` as the daemon renders them with a template (what the fake receives)."""
    out = [dict(m) for m in messages]
    last = max(i for i, m in enumerate(out) if m["role"] == "user")
    out[last]["content"] = f"{out[last]['content']}\n\n{suffix}"
    return ([{"role": "system", "content": template_system}] if template_system else []) + out


QUESTION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3?"}]


@pytest.mark.parametrize("mode", ["hinted", "routed", "never"])
async def test_each_provider_gets_its_template_when_the_mode_allows(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client, mode: str) -> None:
    d = await daemon_factory(models=["a", "b"],
                             recipes={"default": {"answer": "number",
                                                  "templates": {"math": {"a": "reasoning"}}}},
                             probes={"apply_templates": mode})
    assert [t.name for t in d.templates["math"]] == ["plain", "json", "reasoning"]
    with_template = mode != "never"

    # a request whose client gave the skill
    reply = await infer(nc, {"messages": QUESTION, "skill": "math"})
    status = {p["name"]: p for p in reply["providers"]}
    exp = await journaled(nc, reply["request_id"])
    assert sent(fake, "b") == QUESTION and "template" not in status["b"]
    if with_template:
        assert sent(fake, "a") == templated(REASONING.system, *QUESTION, suffix=REASONING.suffix)
        assert sent(fake, "a")[:2] == [{"role": "system", "content": REASONING.system},
                                       {"role": "system", "content": "Be brief."}]
        assert status["a"]["template"] == "reasoning"
        assert dict(zip(exp.providers, exp.templates, strict=True)) == {"a": "reasoning", "b": None}
    else:
        assert sent(fake, "a") == QUESTION and "template" not in status["a"]
        assert exp.templates == ()

    # an untagged request the router sends to "math"
    reply = await infer(nc, {"prompt": ROUTED_PROMPT})
    status = {p["name"]: p for p in reply["providers"]}
    exp = await journaled(nc, reply["request_id"])
    assert exp.skill == "math"
    plain = [{"role": "user", "content": ROUTED_PROMPT}]
    assert sent(fake, "b") == plain
    if mode == "routed":
        assert sent(fake, "a") == templated(REASONING.system, *plain, suffix=REASONING.suffix)
        assert status["a"]["template"] == "reasoning"
        assert exp.templates == ("reasoning", None)
    else:
        assert sent(fake, "a") == plain and "template" not in status["a"]
        assert exp.templates == ()

    # a skill the recipe names no template for: nothing changes
    reply = await infer(nc, {"messages": QUESTION, "skill": "code"})
    assert sent(fake, "a") == sent(fake, "b") == QUESTION
    assert all("template" not in p for p in reply["providers"])

    # a request that extracts text: a template would change the format the vote compares
    reply = await infer(nc, {"messages": QUESTION, "skill": "math", "answer": {"kind": "text"}})
    assert sent(fake, "a") == sent(fake, "b") == QUESTION
    assert all("template" not in p for p in reply["providers"])


async def test_unknown_template_is_sent_plain_and_warned_once_per_version(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    # a configured name must exist (see the config test below); a recipe written to the KV
    # bucket (an import, or suites changed since) may still name one that doesn't
    d = await daemon_factory(models=["a", "b"], recipes={
        "default": {"answer": "number", "templates": {"math": {"b": "plain"}}}})
    assert d.service is not None and d.recipes is not None
    store = RecipeStore(nc, "alchemist")
    await store.open(create=False)
    await store.write_new_version("default", lambda cur: cur.successor(
        templates={"math": {"a": "nope", "b": "plain"}}, reason="manual"))
    await until(lambda: d.recipes.get("default").version == 2)  # type: ignore[union-attr]
    question = [{"role": "user", "content": "What is 2+3?"}]
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            reply = await infer(nc, {"messages": question, "skill": "math"})
    assert sent(fake, "a") == question
    assert sent(fake, "b") == templated(None, *question, suffix=PLAIN.suffix)
    status = {p["name"]: p for p in reply["providers"]}
    assert "template" not in status["a"] and status["b"]["template"] == "plain"
    assert (await journaled(nc, reply["request_id"])).templates == (None, "plain")
    warned = [e for e in logs if e["event"] == "template_unknown"]
    assert len(warned) == 1, warned
    assert (warned[0]["recipe"], warned[0]["version"], warned[0]["skill"], warned[0]["template"],
            warned[0]["log_level"]) == ("default", 2, "math", "nope", "warning")
    assert warned[0]["known"] == "plain, json, reasoning"
    assert d.service.counts["template_unknown"] == 3

    # a new version (through the KV bucket, as the evolver writes it) keeps the templates
    # and warns again, once
    await store.write_new_version("default", lambda cur: cur.successor(reason="manual"))
    await until(lambda: d.recipes.get("default").version == 3)  # type: ignore[union-attr]
    current = d.recipes.get("default")
    assert current is not None and current.templates == {"math": {"a": "nope", "b": "plain"}}
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            reply = await infer(nc, {"messages": question, "skill": "math"})
    assert reply["recipe"]["version"] == 3
    assert [e["version"] for e in logs if e["event"] == "template_unknown"] == [3]

    # the "once" memory is bounded
    recipe = d.recipes.get("default")
    assert recipe is not None
    with structlog.testing.capture_logs() as logs:
        for i in range(MAX_WARNED + 50):
            d.service._unknown_template(recipe, "math", f"t{i}")
    assert len(d.service._warned) == MAX_WARNED
    assert len([e for e in logs if e["event"] == "template_unknown"]) == MAX_WARNED + 50


async def test_templates_keep_early_answers_working(daemon_factory: DaemonFactory, fake: FakeOpenAI,
                                                    nc: Client) -> None:
    fake.set("a", Behaviour(text="The answer is 5"))
    fake.set("b", Behaviour(text="5"))
    fake.set("c", Behaviour(kind="hang"))
    await daemon_factory(recipes={"default": {
        "answer": {"kind": "number"}, "templates": {"math": {"a": "reasoning", "c": "plain"}}}})
    reply = await infer(nc, {"prompt": "What is 2+3?", "skill": "math", "deadline_ms": 5000})
    status = {p["name"]: p for p in reply["providers"]}
    assert reply["answer"] == "5" and status["c"]["error"] == "not_needed"
    assert (status["a"]["template"], status["c"]["template"]) == ("reasoning", "plain")
    assert sent(fake, "c") == templated(None, {"role": "user", "content": "What is 2+3?"},
                                        suffix=PLAIN.suffix)


MORE_MATH = """
name = "more-math"
skill = "math"

[[templates]]
name = "plain"
suffix = "Digits only, please."

[[probes]]
id = "one"
prompt = "What is 1 + 1?"
check = { kind = "number", expected = 2 }
"""


def test_conflicting_suite_templates_refuse_start_up_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "more_math.toml").write_text(MORE_MATH, encoding="utf-8")
    path = tmp_path / "alchemist.toml"
    path.write_text(tomli_w.dumps({"nats": {"url": "embedded"}, "state": {"dir": str(tmp_path / "state")},
                                   "probes": {"suites_dir": str(suites)}}))
    assert main(["run", "-c", str(path), "--log-level", "error"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("alchemist: ")
    assert "suite 'more-math'" in last and "template 'plain' for skill 'math'" in last


async def test_same_template_in_a_user_suite_is_one_template(tmp_path: Path,
                                                              daemon_factory: DaemonFactory) -> None:
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "more_math.toml").write_text(MORE_MATH.replace("Digits only, please.", PLAIN.suffix),
                                           encoding="utf-8")
    d: Daemon = await daemon_factory(models=["a"], probes={"suites_dir": str(suites)})
    assert [t.name for t in d.templates["math"]] == ["plain", "json", "reasoning"]


async def test_a_configured_template_no_suite_defines_stops_start_up(
        daemon_factory: DaemonFactory) -> None:
    with pytest.raises(ConfigError) as err:
        await daemon_factory(models=["a", "b"], recipes={
            "default": {"answer": "number", "templates": {"format": {"a": "plain"}}}})
    # "plain" of json_format.toml has neither system nor suffix: it is the same as none
    assert str(err.value).startswith(
        "recipes.default.templates.format.a: no probe suite of skill 'format' defines a "
        "template 'plain' (it has: strict;")
