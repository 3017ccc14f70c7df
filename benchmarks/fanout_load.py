"""The fan-out benchmark's load generator: closed-loop requesters and an open-loop schedule.

Both send the same JSON request to the floor responder or the daemon over one nats-py
client in this process; the closed loop also meters each process's CPU time over its
measured window.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import nats.errors
from fanout_fleet import DAEMON_SUBJECT, ERROR_HEADER, FLOOR_PREFIX, JSON_HEADERS, PROMPTS
from fanout_report import Sample
from nats.aio.client import Client


def body(scenario: str, i: int) -> bytes:
    """A request, the same JSON for the floor and the daemon."""
    return json.dumps({"prompt": PROMPTS[i % len(PROMPTS)], "recipe": scenario}).encode()


def subject_of(system: str, scenario: str) -> str:
    """The subject ``system`` ("floor" or "daemon") serves ``scenario`` on."""
    return DAEMON_SUBJECT if system == "daemon" else f"{FLOOR_PREFIX}.{scenario}"


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux ``/proc``; 0.0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass
class ClosedResult:
    """What one closed-loop run (or several rounds of it, added up) completed in its window."""

    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    #: CPU seconds per process over the measured window
    cpu: dict[str, float] = field(default_factory=dict)

    def add(self, other: ClosedResult) -> None:
        """Fold another round's counts, time and CPU into this one."""
        for name, cpu in other.cpu.items():
            self.cpu[name] = self.cpu.get(name, 0.0) + cpu
        self.ok += other.ok
        self.errors += other.errors
        self.seconds += other.seconds
        self.latencies += other.latencies


async def closed_loop(nc: Client, system: str, scenario: str, concurrency: int,
                      warmup: float, seconds: float, pids: dict[str, int]) -> ClosedResult:
    """``concurrency`` requesters back to back; counts what completes in the window.

    ``pids`` names the processes whose CPU time over the window is recorded
    (``loadgen`` is this one).
    """
    subject = subject_of(system, scenario)
    out = ClosedResult(seconds=seconds)
    t_start = time.perf_counter() + warmup
    t_end = t_start + seconds

    async def cpu_meter() -> None:
        await asyncio.sleep(max(0.0, t_start - time.perf_counter()))
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
        out.cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}

    async def worker(w: int) -> None:
        i = w
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                return
            try:
                msg = await nc.request(subject, body(scenario, i), timeout=10.0,
                                       headers=JSON_HEADERS)
                failed = bool(msg.headers and ERROR_HEADER in msg.headers)
            except nats.errors.Error:
                failed = True
            t1 = time.perf_counter()
            i += concurrency
            if t_start <= t1 < t_end:  # completed inside the measured window
                if failed:
                    out.errors += 1
                else:
                    out.ok += 1
                    out.latencies.append(t1 - t0)

    await asyncio.gather(cpu_meter(), *(worker(w) for w in range(concurrency)))
    return out


async def open_loop(nc: Client, system: str, scenario: str, rate: float,
                    seconds: float, warmup: float = 0.5) -> list[Sample]:
    """Send at ``rate``/s on a fixed schedule; returns the samples after ``warmup``."""
    subject = subject_of(system, scenario)
    n = int((seconds + warmup) * rate)
    skip = int(warmup * rate)
    samples: list[Sample | None] = [None] * n
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int, due: float) -> None:
        t0 = time.perf_counter()
        try:
            msg = await nc.request(subject, body(scenario, i), timeout=10.0, headers=JSON_HEADERS)
            t1 = time.perf_counter()
            reply: dict[str, Any] | None = None
            if not (msg.headers and ERROR_HEADER in msg.headers):
                reply = json.loads(msg.data)
        except nats.errors.Error:
            t1, reply = time.perf_counter(), None
        samples[i] = Sample((t1 - t0) * 1000, (t0 - due) * 1000, reply)

    start = time.perf_counter() + 0.05
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    return [s for s in samples[skip:] if s is not None]
