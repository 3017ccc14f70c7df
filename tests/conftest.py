"""Shared fixtures: a real nats-server per test, fake provider servers, a daemon factory."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client

from alchemist.daemon.config import Config, parse_config
from alchemist.daemon.runtime.app import Daemon
from alchemist.daemon.storage.broker import EmbeddedNats, connect
from alchemist.daemon.telemetry import logs
from tests.fakes import FakeOpenAI

#: the recorded replay sets: $ALCHEMIST_BENCH_DIR, else shared/bench beside the repository
BENCH_DIR = Path(os.environ.get("ALCHEMIST_BENCH_DIR")
                 or Path(__file__).resolve().parents[2] / "shared" / "bench")

logs.configure("warning")


@pytest.fixture(autouse=True)
def _logging_defaults() -> None:
    """Every test starts from the same logging setup (CLI verbs under test reconfigure it)."""
    logs.configure("warning")


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A fresh nats-server with JetStream on a free port, storing under tmp_path."""
    server = EmbeddedNats(tmp_path / "nats")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A ``nats://`` URL on loopback where nobody listens, for the whole test.

    The port is bound and held but never listened on, so a connection is
    refused at once and no other process can take the port meanwhile.
    """
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"nats://127.0.0.1:{held.getsockname()[1]}"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[Client]:
    """A plain client connection, as any service calling the daemon would have."""
    cfg = parse_config({})
    client = await connect(cfg.nats, nats_server.url, name="test-client")
    yield client
    await client.close()


def make_config(url: str, state_dir: Path, fake_url: str, models: list[str],
                **sections: Any) -> Config:
    """A config with one provider per fake model (provider name = model name)."""
    raw: dict[str, Any] = {
        "nats": {"url": url},
        "state": {"dir": str(state_dir)},
        "providers": [{"name": m, "kind": "openai", "base_url": fake_url, "model": m,
                       "timeout_s": 5.0, "max_retries": 1} for m in models],
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return parse_config(raw)


DaemonFactory = Callable[..., Awaitable[Daemon]]


@pytest.fixture
async def daemon_factory(nats_server: EmbeddedNats, fake: FakeOpenAI,
                         tmp_path: Path) -> AsyncIterator[DaemonFactory]:
    """Start daemons against the test broker and fake providers; all stopped at the end."""
    started: list[Daemon] = []

    async def start(models: list[str] | None = None, state: str = "state",
                    **sections: Any) -> Daemon:
        cfg = make_config(nats_server.url, tmp_path / state, fake.base_url,
                          models or ["a", "b", "c"], **sections)
        d = Daemon(cfg)
        await d.start()
        started.append(d)
        return d

    yield start
    for d in started:
        await d.stop()


async def infer(nc: Client, body: dict[str, Any], *, as_json: bool = True,
                subject: str = "alchemist.infer", timeout: float = 10.0) -> dict[str, Any]:
    """Send one request the way a client in any language would; decode the reply."""
    if as_json:
        msg = await nc.request(subject, json.dumps(body).encode(), timeout=timeout,
                               headers={"Content-Type": "application/json"})
        out: dict[str, Any] = json.loads(msg.data)
    else:
        msg = await nc.request(subject, msgpack.packb(body), timeout=timeout)
        out = msgpack.unpackb(msg.data)
    return out


async def rate(nc: Client, request_id: str, rating: object, user: str = "u1") -> None:
    """Publish one rating to the feedback stream, as a client would."""
    body = json.dumps({"request_id": request_id, "rating": rating, "user": user}).encode()
    await nc.jetstream().publish("alchemist.feedback", body,
                                 headers={"Content-Type": "application/json"})


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition the daemon reaches asynchronously (polling its counters)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while not check():
        if loop.time() > give_up:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.02)
