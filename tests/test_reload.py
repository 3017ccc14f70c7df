"""A reload (SIGHUP) applies all it can, names what needs a restart, and never half-applies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import nats.js.errors
import pytest
import structlog
from nats.aio.client import Client

from alchemist.daemon.config import BreakerPolicy
from alchemist.daemon.runtime.app import Daemon
from alchemist.daemon.storage.broker import connect
from alchemist.daemon.storage.recipe_store import bucket_name
from tests.conftest import DaemonFactory, infer, make_config, until
from tests.fakes import Behaviour, FakeOpenAI
from tests.scenarios import math_and_code, specialist


def restart_warnings(logs: list[dict[str, Any]]) -> list[list[str]]:
    """The keys of every ``reload_needs_restart`` warning."""
    return [e["keys"] for e in logs if e["event"] == "reload_needs_restart"]


@pytest.mark.parametrize(("probes", "key"), [
    ({"enabled": True}, "probes.enabled"),
    ({"suites_dir": "/etc/alchemist/suites"}, "probes.suites_dir"),
])
async def test_probe_keys_that_need_a_restart_are_named_and_the_rest_applied(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client,
        probes: dict[str, Any], key: str) -> None:
    fake.set("a", Behaviour(text="42"))
    d = await daemon_factory(models=["a"], probes={"calls_per_hour": 10})
    assert d.prober is not None and d.service is not None
    suites = d.prober.suites
    new = make_config(d.cfg.nats.url, d.cfg.state_dir, fake.base_url, ["a"],
                      probes={**probes, "calls_per_hour": 50, "weight": 5.0},
                      service={"max_concurrency": 7})
    with structlog.testing.capture_logs() as logs:
        await d.reload(new)
    assert restart_warnings(logs) == [[key]]
    # the running values stay: the prober neither starts nor reloads its suites
    assert d.cfg.probes.enabled is False and d.cfg.probes.suites_dir is None
    assert d.prober.cfg.enabled is False and d.prober.cfg.suites_dir is None
    assert d.prober.suites == suites
    # and everything else is applied
    assert d.prober.budget.calls_per_hour == 50 and d.cfg.probes.weight == 5.0
    assert d.service.cfg.service.max_concurrency == 7
    assert (await infer(nc, {"prompt": "6*7?"}))["text"] == "42"


async def test_restart_only_keys_are_named_once_and_keep_their_running_values(
        tmp_path: Path, fake: FakeOpenAI) -> None:
    fake.set("a", Behaviour(text="42"))
    state = tmp_path / "state"
    d = Daemon(make_config("embedded", state, fake.base_url, ["a"]))
    await d.start()
    try:
        assert (state / "nats.url").exists()
        new = make_config(
            "embedded", tmp_path / "elsewhere", fake.base_url, ["a"],
            nats={"name": "renamed"}, metrics={"port": 9999},
            service={"subject_prefix": "other", "log_level": "debug", "max_concurrency": 7},
            experience={"max_records": 500}, evolver={"user_cap": 3, "population": 16},
            breaker={"cooldown_s": 2.0})
        with structlog.testing.capture_logs() as logs:
            await d.reload(new)
        assert restart_warnings(logs) == [[
            "state.dir", "nats.name", "service.subject_prefix", "service.log_level",
            "metrics.port", "experience.max_records", "evolver.user_cap"]]
        assert d.cfg.state_dir == state and d.cfg.nats.name == "alchemist"
        assert d.cfg.service.subject_prefix == "alchemist" and d.cfg.service.log_level == "info"
        assert d.cfg.metrics.port == 9464 and d.cfg.experience.max_records == 50_000
        assert d.cfg.evolver.user_cap == 200
        # what a reload can apply, it did
        assert d.service is not None and d.service.cfg is d.cfg
        assert d.cfg.service.max_concurrency == 7
        assert d.evolver is not None and d.evolver.ecfg.population == 16
        assert d.service.fanout.policy.cooldown_s == 2.0
        client = await connect(d.cfg.nats, d.url, name="test-client")
        try:  # still served on the running prefix
            assert (await infer(client, {"prompt": "6*7?"}))["text"] == "42"
        finally:
            await client.close()
    finally:
        await d.stop()
    assert not (state / "nats.url").exists()  # the running state dir's file is removed
    assert not (tmp_path / "elsewhere").exists()


async def test_a_reload_that_fails_midway_leaves_the_running_config_whole(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    fake.set("a", Behaviour(text="42"))
    fake.set("b", Behaviour(text="42"))
    d = await daemon_factory(models=["a"], probes={"calls_per_hour": 10})
    assert d.service is not None and d.evolver is not None and d.prober is not None
    running, kept = d.cfg, d.providers["a"]
    breakers = dict(d.service.fanout.breakers)
    # the recipes bucket goes away: loading the new config's recipes fails, after its
    # keys, templates and adapters passed
    await nc.jetstream().delete_key_value(bucket_name("alchemist"))
    new = make_config(d.cfg.nats.url, d.cfg.state_dir, fake.base_url, ["a", "b"],
                      breaker={"consecutive": 2}, service={"max_concurrency": 7},
                      probes={"calls_per_hour": 50}, evolver={"population": 16},
                      recipes={"second": {"answer": "number"}})
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await d.reload(new)
    assert d.cfg is running and d.service.cfg is running
    assert d.providers == {"a": kept}
    assert dict(d.service.providers) == dict(d.service.fanout.providers) == {"a": kept}
    assert d.service.fanout.breakers == breakers
    assert d.service.fanout.policy == running.breaker
    assert d.evolver.providers == ("a",) and d.evolver.ecfg == running.evolver
    assert d.prober.budget.calls_per_hour == 10
    assert not d._retiring  # no running adapter is being closed
    reply = await infer(nc, {"prompt": "6*7?"})
    assert {p["name"] for p in reply["providers"]} == {"a"}


async def test_breakers_follow_a_reloaded_policy_and_keep_their_state(
        daemon_factory: DaemonFactory, fake: FakeOpenAI, nc: Client) -> None:
    fake.set("a", Behaviour(kind="error", status=400))  # not retried: it fails at once
    # slower than a's failure, so a's outcome is always in before b and c settle the vote
    fake.set("b", Behaviour(kind="slow", delay_s=0.5, text="42"))
    fake.set("c", Behaviour(kind="slow", delay_s=0.5, text="42"))
    d = await daemon_factory(models=["a", "b"], breaker={"consecutive": 5})
    assert d.service is not None
    for _ in range(2):
        assert (await infer(nc, {"prompt": "6*7?"}))["text"] == "42"
    fanout = d.service.fanout
    a, b = fanout.breakers["a"], fanout.breakers["b"]
    assert a.state == "closed"
    new = make_config(d.cfg.nats.url, d.cfg.state_dir, fake.base_url, ["a", "b", "c"],
                      breaker={"consecutive": 3})
    new = msgspec.structs.replace(new, providers=tuple(  # b's settings change: a new adapter
        msgspec.structs.replace(p, timeout_s=4.0) if p.name == "b" else p for p in new.providers))
    await d.reload(new)
    policy = BreakerPolicy(consecutive=3)
    assert fanout.policy == policy
    assert fanout.breakers["a"] is a and a.policy == policy  # same adapter: state kept
    assert fanout.breakers["b"] is not b  # a changed adapter starts afresh
    assert fanout.breakers["b"].policy == fanout.breakers["c"].policy == policy
    # a's two failures still count: the third opens it under the new policy (not the old 5)
    assert (await infer(nc, {"prompt": "6*7?"}))["text"] == "42"
    assert a.state == "open"


async def test_evolver_settings_apply_at_once_stepping_included(
        daemon_factory: DaemonFactory, fake: FakeOpenAI) -> None:
    fake.set("mathy", Behaviour(text=specialist("math")))
    fake.set("coder", Behaviour(text=specialist("code")))
    evolver = {"enabled": False, "min_ratings": 5, "min_new_ratings": 1}
    d = await daemon_factory(models=["mathy", "coder"], probes={"sample": 16}, evolver=evolver)
    assert d.prober is not None and d.evolver is not None
    d.prober.suites = math_and_code()
    records = len(await d.prober.run_once())
    await until(lambda: d.index.rated_total["*probes*"] == records)
    d.evolver.wake()
    assert d.evolver.counts["steps"] == 0  # off: nothing learns from the probes
    new = make_config(d.cfg.nats.url, d.cfg.state_dir, fake.base_url, ["mathy", "coder"],
                      probes={"sample": 16}, evolver={**evolver, "enabled": True,
                                                      "generations": 3})
    await d.reload(new)
    await until(lambda: d.evolver is not None and d.evolver.counts["steps"] >= 1)
    assert d.evolver.counts["generations"] == 3 * d.evolver.counts["steps"]
