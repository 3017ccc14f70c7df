"""A real three-node nats-server cluster for tests: routes on loopback, JetStream on temp dirs.

Each node is an :class:`EmbeddedNats` started with a config file naming the
cluster and its routes; ports are picked free. :func:`cluster` starts them and
waits until JetStream answers on every node (a meta leader is elected), so a
stream or bucket with three replicas can be created at once.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

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
