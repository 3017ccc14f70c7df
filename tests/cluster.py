"""A real three-node nats-server cluster for tests (routes on loopback, JetStream on temp
dirs), and daemons run as ``alchemist run`` processes (:class:`Instance`) to kill.

Each node is an :class:`EmbeddedNats` started with a config file naming the
cluster and its routes; ports are picked free. :func:`cluster` starts them and
waits until JetStream answers on every node (a meta leader is elected), so a
stream or bucket with three replicas can be created at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
import tomli_w

from alchemist.daemon.storage.broker import EmbeddedNats


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports nobody listens on right now."""
    held = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


class Cluster:
    """Three (or ``size``) routed nats-servers with JetStream."""

    def __init__(self, root: Path, size: int = 3) -> None:
        ports = free_ports(2 * size)
        self.client_ports, route_ports = ports[:size], ports[size:]
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in route_ports)
        self.nodes: list[EmbeddedNats] = []
        for i in range(size):
            store = root / f"n{i}"
            store.mkdir(parents=True, exist_ok=True)
            conf = store / "server.conf"
            conf.write_text(f"server_name: n{i}\n"
                            "jetstream: enabled\n"
                            f"cluster {{ name: alchemist-test, listen: 127.0.0.1:{route_ports[i]},"
                            f" routes: [{routes}] }}\n")
            self.nodes.append(EmbeddedNats(store, self.client_ports[i], config_file=conf))

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def url(self, first: int = 0) -> str:
        """Every node's URL, node ``first``'s first (a client connects to it and keeps the
        others to reconnect to)."""
        order = [first, *(i for i in range(len(self.nodes)) if i != first)]
        return ",".join(self.nodes[i].url for i in order)

    async def start(self) -> None:
        await asyncio.gather(*(n.start() for n in self.nodes))
        await asyncio.gather(*(self.ready(i) for i in range(len(self.nodes))))

    async def ready(self, i: int, timeout: float = 30.0) -> None:
        """Wait until node ``i`` answers JetStream requests (its cluster has a meta leader)."""
        nc = await nats.connect(self.nodes[i].url, allow_reconnect=False)
        try:
            js = nc.jetstream(timeout=2.0)
            loop = asyncio.get_running_loop()
            give_up = loop.time() + timeout
            while True:
                try:
                    await js.account_info()
                    return
                except Exception:  # not ready yet: no meta leader (re-raised at the end)
                    if loop.time() > give_up:
                        raise
                    await asyncio.sleep(0.2)
        finally:
            await nc.close()

    async def stop(self) -> None:
        await asyncio.gather(*(n.stop() for n in self.nodes))


@pytest.fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """A fresh three-node cluster, stopped at the end of the test."""
    c = Cluster(tmp_path / "cluster")
    await c.start()
    yield c
    await c.stop()


class Instance:
    """One ``alchemist run`` process, its config file and its JSON log (info level)."""

    def __init__(self, name: str, root: Path, url: str, config: dict[str, Any]) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = {**config, "nats": {**config.get("nats", {}), "url": url},
                       "state": {"dir": str(self.dir / "state")}}
        self.log_path = self.dir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._read = 0
        self._events: list[dict[str, Any]] = []

    def start(self) -> None:
        path = self.dir / "alchemist.toml"
        path.write_text(tomli_w.dumps(self.config))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "alchemist.daemon", "run", "-c", str(path),
                 "--log-level", "info"], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def events(self) -> list[dict[str, Any]]:
        """Every JSON log event so far (lines that are not JSON are skipped)."""
        data = self.log_path.read_bytes()
        end = data.rfind(b"\n") + 1
        for line in data[self._read:end].splitlines():
            with contextlib.suppress(ValueError):
                self._events.append(json.loads(line))
        self._read = end
        return self._events

    async def wait_for(self, event: str, timeout: float = 30.0,
                       where: Callable[[dict[str, Any]], bool] = lambda e: True) -> dict[str, Any]:
        """The first log event ``event`` (matching ``where``); fails after ``timeout`` s."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        while True:
            found = next((e for e in self.events() if e.get("event") == event and where(e)), None)
            if found is not None:
                return found
            if self.proc is not None and self.proc.poll() is not None and self.proc.returncode:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}: "
                                     + self.log_path.read_text()[-2000:])
            if loop.time() > give_up:
                raise AssertionError(f"{self.name}: no {event} within {timeout} s; log ends: "
                                     + self.log_path.read_text()[-1500:])
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s (idempotent)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)  # a paused one could not stop
            proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
