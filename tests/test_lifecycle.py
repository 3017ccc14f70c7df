"""`alchemist run` as systemd runs it: notify protocol, reload, metrics, clean stop, no secrets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
import tomli_w
from nats.aio.client import Client

from alchemist.daemon.config import ConfigError
from alchemist.daemon.storage.broker import EmbeddedNats
from tests.conftest import DaemonFactory, infer, make_config
from tests.fakes import Behaviour, FakeOpenAI

SECRET_KEY = "sk-test-6f1c2e9a0b7d4c3e"


async def next_message(sock: socket.socket, timeout: float = 15.0) -> str:
    loop = asyncio.get_running_loop()
    data = await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout)
    return data.decode()


async def wait_for_field(sock: socket.socket, field: str, seen: list[str]) -> str:
    """The next datagram with a line starting with ``field`` (all datagrams go to ``seen``)."""
    while True:
        msg = await next_message(sock)
        seen.append(msg)
        if any(line.startswith(field) for line in msg.splitlines()):
            return msg


async def test_notify_reload_metrics_and_stop(tmp_path: Path, nats_server: EmbeddedNats,
                                              fake: FakeOpenAI, nc: Client) -> None:
    fake.set("m", Behaviour(text="42"))
    config = {
        "nats": {"url": nats_server.url}, "state": {"dir": str(tmp_path / "state")},
        "providers": [{"name": "p1", "kind": "openai", "base_url": fake.base_url, "model": "m",
                       "api_key_env": "TEST_PROVIDER_KEY"}],
        "metrics": {"enabled": True, "port": 0},  # any free port: the daemon logs which
    }
    cfg_path = tmp_path / "alchemist.toml"
    cfg_path.write_text(tomli_w.dumps(config))
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.setblocking(False)
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000",
           "TEST_PROVIDER_KEY": SECRET_KEY}
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "alchemist.daemon", "run", "-c", str(cfg_path), "--log-level", "debug",
            env=env, stdout=log_file, stderr=log_file)
    seen: list[str] = []
    try:
        await wait_for_field(sock, "READY=1", seen)
        status = await wait_for_field(sock, "STATUS=", seen)
        assert "answered" in status and "recipes: default v1" in status
        await wait_for_field(sock, "WATCHDOG=1", seen)
        reply = await infer(nc, {"prompt": "6*7?"})
        assert reply["text"] == "42"
        assert fake.requests[-1]["headers"]["Authorization"] == f"Bearer {SECRET_KEY}"
        logged = [json.loads(ln) for ln in log_path.read_text().splitlines() if ln.startswith("{")]
        metrics_url = next(e["url"] for e in logged if e.get("event") == "metrics_serving")
        async with aiohttp.ClientSession() as http, http.get(metrics_url) as resp:
            text = await resp.text()
        assert 'alchemist_requests_total{code="ok"} 1' in text
        assert 'alchemist_recipe_version{recipe="default"} 1' in text
        tasks = next(ln for ln in text.splitlines() if ln.startswith("alchemist_event_loop_tasks "))
        assert float(tasks.split()[1]) >= 1  # at least the scrape's own handler task
        assert 'alchemist_experience_records{kind="rated"} 0' in text
        # reload: a second provider appears without a restart
        config["providers"].append({"name": "p2", "kind": "openai",  # type: ignore[attr-defined]
                                    "base_url": fake.base_url, "model": "m"})
        cfg_path.write_text(tomli_w.dumps(config))
        proc.send_signal(signal.SIGHUP)
        reloading = await wait_for_field(sock, "RELOADING=1", seen)
        assert any(f.startswith("MONOTONIC_USEC=") for f in reloading.splitlines())
        await wait_for_field(sock, "READY=1", seen)
        reply = await infer(nc, {"prompt": "6*7?"})
        assert {p["name"] for p in reply["providers"]} == {"p1", "p2"}
        proc.send_signal(signal.SIGTERM)
        await wait_for_field(sock, "STOPPING=1", seen)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        sock.close()
    log = log_path.read_text()
    order = [next(i for i, m in enumerate(seen) if f in m.splitlines())
             for f in ("READY=1", "RELOADING=1", "STOPPING=1")]
    assert order == sorted(order)
    assert SECRET_KEY not in log  # the key never reaches a log line, even at debug level
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "reloaded" for e in events)
    # at debug level (and only there) the prompt itself is logged
    assert any(e.get("event") == "infer_request" and "6*7?" in json.dumps(e) for e in events)
    assert any(e.get("event") == "stopped" for e in events)
    # the default event loop, with signals, reload and notify running on it
    assert next(e for e in events if e.get("event") == "ready")["event_loop"] == "uvloop"


async def test_reload_hands_each_component_its_part(daemon_factory: DaemonFactory,
                                                    fake: FakeOpenAI, nc: Client) -> None:
    fake.set("a", Behaviour(text="42"))
    fake.set("b", Behaviour(text="42"))
    d = await daemon_factory(models=["a"], probes={"calls_per_hour": 10})
    assert d.service is not None and d.evolver is not None and d.prober is not None
    kept = d.providers["a"]
    new = make_config(d.cfg.nats.url, d.cfg.state_dir, fake.base_url, ["a", "b"],
                      probes={"calls_per_hour": 50}, service={"max_concurrency": 7})
    await d.reload(new)
    assert d.providers["a"] is kept  # unchanged settings keep their adapter
    assert list(d.service.providers) == list(d.service.fanout.providers) == ["a", "b"]
    assert set(d.service.fanout.breakers) == {"a", "b"}
    assert d.service.cfg.service.max_concurrency == 7
    assert d.evolver.providers == ("a", "b")
    assert d.prober.budget.calls_per_hour == 50
    reply = await infer(nc, {"prompt": "6*7?"})
    assert {p["name"] for p in reply["providers"]} == {"a", "b"}
    # a config start-up would refuse changes nothing
    bad = make_config(d.cfg.nats.url, d.cfg.state_dir, fake.base_url, ["b"],
                      recipes={"default": {"answer": "number",
                                            "templates": {"math": {"b": "no-such-template"}}}})
    with pytest.raises(ConfigError, match="no-such-template"):
        await d.reload(bad)
    assert d.cfg is new and list(d.service.providers) == ["a", "b"]
    assert d.evolver.providers == ("a", "b")


async def test_the_embedded_server_reads_its_own_ports_file(tmp_path: Path) -> None:
    """Other ports files in the folder (other servers', written while ours starts) are
    never taken for ours, whatever order the folder lists them in."""
    server = EmbeddedNats(tmp_path / "nats")
    ports = tmp_path / "nats" / "ports"
    ports.mkdir(parents=True)
    starting = asyncio.create_task(server.start())
    while not starting.done():  # after start() has swept the stale files, before it reads
        for i in range(32):
            (ports / f"other-server_{i}.ports").write_text(
                json.dumps({"nats": ["nats://127.0.0.1:1"]}))
        await asyncio.sleep(0.005)
    try:
        url = await starting
        assert url != "nats://127.0.0.1:1"
        nc = Client()
        await nc.connect(url, connect_timeout=2, allow_reconnect=False)
        await nc.close()
    finally:
        await server.stop()
