"""sd_notify without libsystemd: messages land on a datagram socket the test owns."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from alchemist.daemon.runtime.notify import Notifier, monotonic_usec


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound AF_UNIX datagram socket, exported as $NOTIFY_SOCKET (and no watchdog variables)."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5.0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()


def receive(sock: socket.socket) -> dict[str, str]:
    """One datagram as its KEY=value fields."""
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n") if line)


def test_messages(notify_socket: socket.socket) -> None:
    n = Notifier.from_env()
    assert n.enabled
    assert n.ready()
    assert receive(notify_socket) == {"READY": "1"}
    before = monotonic_usec()
    assert n.reloading()
    msg = receive(notify_socket)
    after = monotonic_usec()
    assert msg["RELOADING"] == "1"
    assert before <= int(msg["MONOTONIC_USEC"]) <= after
    # CLOCK_MONOTONIC is what time.monotonic reads on Linux: same clock, same scale
    assert abs(int(msg["MONOTONIC_USEC"]) - time.monotonic() * 1e6) < 5e6
    assert n.ready()
    assert receive(notify_socket) == {"READY": "1"}
    assert n.status("42 requests\n7 ratings")
    assert receive(notify_socket) == {"STATUS": "42 requests 7 ratings"}
    assert n.watchdog()
    assert receive(notify_socket) == {"WATCHDOG": "1"}
    assert n.extend_timeout(1.5)
    assert receive(notify_socket) == {"EXTEND_TIMEOUT_USEC": "1500000"}
    assert n.stopping()
    assert receive(notify_socket) == {"STOPPING": "1"}


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"alchemist-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        n = Notifier.from_env()
        assert n.ready()
        assert receive(sock) == {"READY": "1"}


def test_noop_without_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    n = Notifier.from_env()
    assert not n.enabled
    assert not n.ready()
    assert not n.reloading()
    assert not n.stopping()
    assert not n.status("x")
    assert not n.watchdog()
    assert n.watchdog_interval() is None


async def test_noop_watchdog_loop_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    await asyncio.wait_for(Notifier.from_env().watchdog_loop(lambda: "x"), timeout=1.0)


def test_send_errors_do_not_raise(tmp_path: Path) -> None:
    n = Notifier(str(tmp_path / "nobody-listens.sock"))
    assert n.enabled
    assert not n.ready()  # ENOENT: logged at debug, not raised
    assert not n.watchdog()


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch, notify_socket: socket.socket) -> None:
    assert Notifier.from_env().watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    assert Notifier.from_env().watchdog_interval() == pytest.approx(0.1)
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier.from_env().watchdog_interval() == pytest.approx(0.1)
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert Notifier.from_env().watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    for bad in ("0", "-5", "soon"):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert Notifier.from_env().watchdog_interval() is None


async def test_watchdog_loop(monkeypatch: pytest.MonkeyPatch, notify_socket: socket.socket) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    n = Notifier.from_env()
    calls = 0

    def stats() -> str:
        nonlocal calls
        calls += 1
        return f"requests={calls}"

    loop = asyncio.get_running_loop()
    notify_socket.setblocking(False)
    task = asyncio.create_task(n.watchdog_loop(stats, status_every=0.35))
    pings: list[float] = []
    statuses: list[tuple[float, str]] = []
    try:
        while len(pings) < 8:
            data = await asyncio.wait_for(loop.sock_recv(notify_socket, 4096), timeout=5.0)
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            if "WATCHDOG" in fields:
                pings.append(loop.time())
            elif "STATUS" in fields:
                statuses.append((loop.time(), fields["STATUS"]))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    mean = sum(gaps) / len(gaps)
    # half of 0.2 s, not the full period (timestamps are read times: allow scheduling jitter,
    # generously; a ping per full period would let systemd kill the unit on any delay)
    assert 0.07 <= mean < 0.2, gaps
    # STATUS comes at once and then every ~0.35 s, with a fresh stats() text each time
    assert statuses[0][1] == "requests=1"
    assert len(statuses) >= 2
    assert [text for _, text in statuses] == [f"requests={i}" for i in range(1, len(statuses) + 1)]
    assert statuses[1][0] - statuses[0][0] >= 0.3


async def test_watchdog_loop_survives_broken_stats(monkeypatch: pytest.MonkeyPatch,
                                                   notify_socket: socket.socket) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")

    def stats() -> str:
        raise RuntimeError("boom")

    loop = asyncio.get_running_loop()
    notify_socket.setblocking(False)
    task = asyncio.create_task(Notifier.from_env().watchdog_loop(stats))
    try:
        for _ in range(3):
            data = await asyncio.wait_for(loop.sock_recv(notify_socket, 4096), timeout=5.0)
            assert data == b"WATCHDOG=1"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
