"""Recursive fusion: an llm-alchemist as a provider of another; loops are refused."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from alchemist.daemon.config import parse_config
from alchemist.daemon.runtime.app import Daemon
from alchemist.daemon.storage.broker import EmbeddedNats
from tests.conftest import infer
from tests.fakes import Behaviour, FakeOpenAI


async def start(cfg: dict[str, Any]) -> Daemon:
    d = Daemon(parse_config(cfg))
    await d.start()
    return d


async def test_an_alchemist_is_a_provider_of_another(tmp_path: Path, nats_server: EmbeddedNats,
                                                     fake: FakeOpenAI, nc: Client) -> None:
    fake.set("m1", Behaviour(text="42"))
    fake.set("m2", Behaviour(text="42"))
    fake.set("m3", Behaviour(text="41"))
    inner = await start({
        "nats": {"url": nats_server.url}, "state": {"dir": str(tmp_path / "inner")},
        "service": {"subject_prefix": "inner"},
        "providers": [{"name": f"p{i}", "kind": "openai", "base_url": fake.base_url,
                       "model": f"m{i}"} for i in (1, 2)],
        "recipes": {"math": {"answer": {"kind": "number"}}}})
    outer = await start({
        "nats": {"url": nats_server.url}, "state": {"dir": str(tmp_path / "outer")},
        "providers": [
            {"name": "team-b", "kind": "alchemist", "base_url": f"{nats_server.url}/inner",
             "model": "math"},
            {"name": "p3", "kind": "openai", "base_url": fake.base_url, "model": "m3"}],
        "recipes": {"default": {"answer": {"kind": "number"},
                                "weights": {"*": {"team-b": 1.0, "p3": 0.5}}}}})
    try:
        reply = await infer(nc, {"prompt": "6*7?", "include_candidates": True})
        assert reply["answer"] == "42" and reply["provider"] == "team-b"
        assert {p["name"]: p["ok"] for p in reply["providers"]} == {"team-b": True, "p3": True}
        assert fake.calls["m1"] == fake.calls["m2"] == 1  # the inner fusion really ran
    finally:
        await outer.stop()
        await inner.stop()


async def test_a_loop_of_alchemists_is_refused(tmp_path: Path, nats_server: EmbeddedNats,
                                               nc: Client) -> None:
    def cfg(me: str, other: str) -> dict[str, Any]:
        return {"nats": {"url": nats_server.url}, "state": {"dir": str(tmp_path / me)},
                "service": {"subject_prefix": me},
                "providers": [{"name": other, "kind": "alchemist",
                               "base_url": f"{nats_server.url}/{other}", "model": "default"}]}

    a, b = await start(cfg("a", "b")), await start(cfg("b", "a"))
    try:
        t0 = time.monotonic()
        reply = await infer(nc, {"prompt": "hello", "deadline_ms": 5000}, subject="a.infer")
        assert reply["error"]["code"] == "no_providers"  # the loop ended by itself...
        assert time.monotonic() - t0 < 3.0  # ...quickly, not at the deadline
        msg = await nc.request("b.infer", json.dumps({"prompt": "x"}).encode(), timeout=5,
                               headers={"Content-Type": "application/json", "Alchemist-Hops": "5"})
        refused = json.loads(msg.data)["error"]
        assert refused["code"] == "bad_request" and "crossed 5" in refused["message"]
    finally:
        await a.stop()
        await b.stop()
