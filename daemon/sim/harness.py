"""The whole loop on one machine: embedded NATS, replay providers, the daemon, users.

Used by ``alchemist bench replay`` and ``alchemist demo``. Nothing in the
daemon knows it is a replay: requests go over NATS as any client's would,
providers are called over HTTP through the normal adapters, and ratings are
published on the feedback subject like a product UI would publish them.
With ``lockstep`` (the bench's default) a run with a seed gives the same
promotions on a busy machine as on an idle one (:mod:`.lockstep`).
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from alchemist.answers.extract import AnswerSpec
from alchemist.answers.recipes import DEFAULT_PARAMS, Recipe
from alchemist.daemon.config import Config, parse_config
from alchemist.daemon.runtime.app import Daemon
from alchemist.daemon.serving.service import SELF_CHECK
from alchemist.daemon.sim.lockstep import Lockstep
from alchemist.daemon.sim.replay import Latency, ReplayItem, ReplayServer, ReplaySet
from alchemist.daemon.sim.report import Served
from alchemist.daemon.sim.users import SimulatedUsers
from alchemist.daemon.storage.broker import connect

JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class LoopSettings:
    """How the simulated traffic looks."""

    answer: AnswerSpec = AnswerSpec()
    strategy: str = "vote"
    rated: float = 0.25
    noise: float = 0.1
    seed: int = 0
    concurrency: int = 8
    latency: Latency | Mapping[str, Latency] = Latency(median_ms=2.0)
    failure_rate: float | Mapping[str, float] = 0.0
    explore: float = DEFAULT_PARAMS.explore
    min_weight: float = DEFAULT_PARAMS.min_weight
    first_wave: int = DEFAULT_PARAMS.first_wave
    stop_margin: float = DEFAULT_PARAMS.stop_margin
    deadline_ms: int = 10_000
    evolver: Mapping[str, Any] = field(default_factory=dict)
    #: pause at evidence boundaries until the daemon has learned (see :mod:`.lockstep`)
    lockstep: bool = False
    #: the daemon's ``probes`` section (``bench replay --golden``: see :mod:`.golden`)
    probes: Mapping[str, Any] = field(default_factory=dict)
    #: the daemon's ``http`` section (the demo turns the front door on)
    http: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Progress:
    """Live counters, read by the progress line and the demo's screen."""

    sent: int = 0
    done: int = 0
    errors: int = 0
    ratings: int = 0
    score_sum: float = 0.0
    window: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    versions: list[Recipe] = field(default_factory=list)
    #: (requests answered when it arrived, version) of every promoted recipe
    promotions: list[tuple[int, int]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    called_sum: int = 0

    @property
    def served_pct(self) -> float:
        return 100.0 * self.score_sum / self.done if self.done else 0.0

    @property
    def window_pct(self) -> float:
        return 100.0 * sum(self.window) / len(self.window) if self.window else 0.0

    @property
    def rate(self) -> float:
        return self.done / max(1e-9, time.monotonic() - self.started)


class Harness:
    """Starts broker, replay server and daemon; drives prompts and ratings through them."""

    def __init__(self, replay: ReplaySet, settings: LoopSettings,
                 state_dir: Path | None = None) -> None:
        self.replay = replay
        self.s = settings
        self._tmp = None if state_dir else Path(tempfile.mkdtemp(prefix="alchemist-sim-"))
        self.state_dir = state_dir or self._tmp
        assert self.state_dir is not None
        self.server = ReplayServer(replay, latency=settings.latency,
                                   failure_rate=settings.failure_rate, seed=settings.seed)
        self.daemon: Daemon | None = None
        self.nc: Client | None = None
        self.users = SimulatedUsers(settings.rated, settings.noise, settings.seed)
        self.progress = Progress()
        self.served: list[Served] = []

    def config(self, base_url: str) -> Config:
        evolver = {"population": 32, "generations": 10, "min_new_ratings": 10,
                   "interval_s": 2.0, "min_ratings": 30, "seed": self.s.seed, **self.s.evolver}
        if self.s.lockstep:  # steps only at evidence boundaries: never on a timer
            evolver["interval_s"] = 0.0
        return parse_config({
            "nats": {"url": "embedded"},
            "state": {"dir": str(self.state_dir)},
            "service": {"default_deadline_ms": self.s.deadline_ms, "max_concurrency": 1024},
            "providers": [{"name": m, "kind": "openai", "base_url": base_url, "model": m,
                           "max_retries": 0, "timeout_s": 30.0} for m in self.replay.models],
            "recipes": {"default": {"strategy": self.s.strategy, "answer": self.s.answer.to_dict(),
                                    "params": {"explore": self.s.explore,
                                               "min_weight": self.s.min_weight,
                                               "first_wave": self.s.first_wave,
                                               "stop_margin": self.s.stop_margin}}},
            "evolver": evolver,
            "probes": dict(self.s.probes),
            "http": dict(self.s.http),
        }, "<simulation>")

    async def __aenter__(self) -> Harness:
        base_url = await self.server.start()
        self.daemon = Daemon(self.config(base_url))
        await self.daemon.start()
        assert self.daemon.service is not None
        self.daemon.service.rng = random.Random(f"{self.s.seed}:serve")  # the explore draws
        self.daemon.service.fanout.ordered = self.s.lockstep
        self.nc = await connect(self.daemon.cfg.nats, self.daemon.url, name="alchemist-sim")
        # the first request sets up the reply subscription: before the run, so requests
        # leave in the order they are sent
        await self.nc.request("alchemist.infer", b"", timeout=5.0, headers={SELF_CHECK: "1"})

        async def on_recipe(msg: Msg) -> None:
            recipe = Recipe.from_dict(json.loads(msg.data))
            self.progress.versions.append(recipe)
            if recipe.reason == "evolved" and not self.s.lockstep:  # lockstep: at boundaries
                self.progress.promotions.append((self.progress.done, recipe.version))

        await self.nc.subscribe("alchemist.recipes.>", cb=on_recipe)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.nc is not None:
            await self.nc.close()
        if self.daemon is not None:
            await self.daemon.stop()
        await self.server.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    async def ask(self, item: ReplayItem) -> None:
        """One request as a client sends it, then maybe one user rating."""
        await self._record(item, await self._send(item), None)

    async def _send(self, item: ReplayItem) -> dict[str, Any]:
        """One request as a client sends it; its reply (an ``error`` one if it failed)."""
        assert self.nc is not None
        body = {"messages": [{"role": m.role, "content": m.content} for m in item.messages],
                "skill": item.skill, "user": "sim", "deadline_ms": self.s.deadline_ms}
        self.progress.sent += 1
        try:
            msg = await self.nc.request("alchemist.infer", json.dumps(body).encode(),
                                        timeout=self.s.deadline_ms / 1000 + 5, headers=JSON)
            reply: dict[str, Any] = json.loads(msg.data)
        except Exception:  # noqa: BLE001 - counted as a failed request, like a client would
            reply = {"error": {"code": "client_timeout"}}
        return reply

    async def _record(self, item: ReplayItem, reply: dict[str, Any], rated: bool | None) -> bool:
        """Count an answered request and publish its rating, if its user gives one
        (``rated``: decided when it was sent; None: decide now). True if one was published."""
        assert self.nc is not None
        p = self.progress
        p.done += 1
        if "error" in reply:
            p.errors += 1
            self.served.append(Served(item.id, None, 0, False))
            p.window.append(0.0)
            return False
        provider = reply["provider"]
        score = self.replay.score(item.id, provider)
        p.score_sum += score
        p.window.append(score)
        called = len(reply["providers"])
        p.called_sum += called
        rating = self.users.rate(score) if rated is None \
            else self.users.judge(score) if rated else None
        if rating is not None:
            fb = {"request_id": reply["request_id"], "rating": rating.value,
                  "user": rating.user, "ts": time.time()}
            await self.nc.publish("alchemist.feedback", json.dumps(fb).encode(), headers=JSON)
            p.ratings += 1
        self.served.append(Served(item.id, provider, called, rating is not None))
        return rating is not None

    async def drive(self, items: Sequence[ItemSource], *,
                    on_tick: Callable[[Progress], None] | None = None,
                    stop: asyncio.Event | None = None) -> None:
        """Send every item with bounded concurrency, calling ``on_tick`` about once a second
        (in lockstep, pausing at evidence boundaries)."""
        sem = asyncio.Semaphore(self.s.concurrency)
        ticker = asyncio.create_task(self._tick(on_tick)) if on_tick else None
        gate = await self._lockstep()

        async def one(i: int, item: ReplayItem) -> None:
            try:
                if gate is None:
                    await self.ask(item)
                else:
                    await gate.done(i, item, await self._send(item))
            finally:
                sem.release()

        tasks: set[asyncio.Task[None]] = set()
        try:
            for i, item in enumerate(items):
                await sem.acquire()  # at most `concurrency` requests in flight
                if gate is not None:
                    await gate.before(i)
                if stop is not None and stop.is_set():
                    sem.release()
                    break
                if gate is not None:
                    gate.sent(self.users.will_rate())
                task = asyncio.create_task(one(i, item))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            if ticker is not None:
                ticker.cancel()
                on_tick(self.progress)  # type: ignore[misc]  # set whenever ticker is

    async def _lockstep(self) -> Lockstep | None:
        """The gate of a lockstep run (None otherwise), once the daemon has indexed and
        learned from all the evidence so far (probe records of a golden set asked first)."""
        d = self.daemon
        if not self.s.lockstep or d is None or d.evolver is None or d.recipes is None \
                or d.streams is None:
            return None
        await d.streams.caught_up()
        await d.evolver.settled("default", d.evolver.total("default"))  # and learned from it
        return Lockstep(d.evolver, d.recipes, d.cfg.evolver.min_new_ratings, self._record,
                        promotions=self.progress.promotions)

    async def _tick(self, on_tick: Callable[[Progress], None] | None) -> None:
        while on_tick is not None:
            await asyncio.sleep(1.0)
            on_tick(self.progress)


ItemSource = ReplayItem


def ordered(replay: ReplaySet, n: int | None, seed: int) -> list[ReplayItem]:
    """``n`` prompts in a seeded random order (reshuffled per pass when ``n`` > the set)."""
    rng = random.Random(seed)
    items = list(replay.items)
    total = n or len(items)
    out: list[ReplayItem] = []
    while len(out) < total:
        rng.shuffle(items)
        out.extend(items[: total - len(out)])
    return out
