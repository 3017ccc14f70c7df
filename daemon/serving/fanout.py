"""Fan-out: call several providers at once under one deadline.

One slow or failing provider never cancels the others; at the deadline the
calls still running are cancelled and reported as ``deadline``. A caller may
pass ``settled``: as soon as the answers in hand decide the outcome whatever
the pending providers say, those are cancelled and reported as
``not_needed`` (an early answer, not a failure). With :attr:`FanOut.ordered`
(the bench's lockstep mode), ``settled`` is asked only of the answers of a
prefix of the providers, in the order given, and the answers after the first
prefix that settles are dropped even when they came: what is recorded then
depends on the answers, not on which came first. Each provider has a circuit
breaker (:mod:`alchemist.daemon.serving.breaker`) fed by the outcomes.

:meth:`FanOut.run_waves` runs a cascade: one :meth:`FanOut.run` per wave,
under the same deadline, until the caller's stop rule holds. A later wave is
never started past the deadline, nor with less time left than its floor: the
median latency of the wave's providers' last answered calls (the slowest
one's), or a tenth of the request's time budget for a provider that has not
answered yet. Providers of waves never started are not called (and not
waited for).
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from alchemist.adapters import ChatRequest, ChatResult, Provider, ProviderError
from alchemist.daemon.config import BreakerPolicy
from alchemist.daemon.serving.breaker import Breaker
from alchemist.daemon.telemetry.metrics import Metrics

log = structlog.get_logger("alchemist.fanout")
NOT_NEEDED = "not_needed"
DEADLINE = "deadline"
LATENCIES_KEPT = 32  # answered calls per provider whose latency sets a cascade's wave floor
UNKNOWN_FLOOR = 0.1  # share of a request's time budget a wave needs when its latency is unknown


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one provider did for one request."""

    name: str
    result: ChatResult | None = None
    error: str | None = None
    latency_ms: float = 0.0
    #: the cascade wave it was asked in (1-based; all at once: 1)
    wave: int = 1


#: given the answers so far and the providers still pending, is the outcome decided?
Settled = Callable[[Sequence[Outcome], Sequence[str]], bool]
#: given every outcome so far (of providers asked: answered or failed), why stop (None: go on)
StopRule = Callable[[Sequence[Outcome]], str | None]
#: a provider set and its breakers, as one request started with them
Pinned = tuple[Mapping[str, Provider], Mapping[str, Breaker]]


class FanOut:
    """Concurrent provider calls with breakers, a deadline and early answers."""

    def __init__(self, providers: Mapping[str, Provider],
                 policy: BreakerPolicy | None = None, metrics: Metrics | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self.metrics = metrics
        self.policy = policy or BreakerPolicy()
        self.breakers: dict[str, Breaker] = {}
        self.providers: Mapping[str, Provider] = {}
        #: decide ``settled`` on prefixes of the providers only (reproducible records)
        self.ordered = False
        #: the latency (ms) of each provider's last answered calls, for the cascade's floor
        self.latencies: dict[str, deque[float]] = {}
        self.replace(providers, self.policy)

    def replace(self, providers: Mapping[str, Provider], policy: BreakerPolicy) -> None:
        """Swap the provider set and the breaker policy (config reload).

        Calls in flight keep the adapters and breakers they started with. A
        provider that keeps its adapter keeps its breaker, state and recent
        outcomes included, and follows ``policy`` from its next call on:
        rebuilding it would close an open breaker at every reload and send
        traffic straight back to a provider known to be failing. A new adapter
        (a new provider, or one whose settings changed, e.g. a fixed key or
        URL) starts with a closed breaker: the old one's failures were another
        endpoint's.
        """
        kept = {name: breaker for name, breaker in self.breakers.items()
                if self.providers.get(name) is providers.get(name)}
        for breaker in kept.values():
            breaker.follow(policy)
        self.policy = policy
        self.providers = dict(providers)
        self.breakers = {name: kept.get(name) or Breaker(name, policy, on_change=self._changed)
                         for name in providers}
        self.latencies = {name: self.latencies[name] for name in kept if name in self.latencies}

    def _changed(self, name: str, state: str) -> None:
        self.counts[f"breaker_{state}"] += 1

    def admit(self, names: Sequence[str]) -> list[str]:
        """The providers whose breakers allow a call; all of them if none would."""
        now = time.monotonic()
        allowed = [n for n in names if self.breakers[n].allow(now)]
        if not allowed and names:
            self.counts["breaker_bypassed"] += 1
            return list(names)  # never silence a request entirely: try them anyway
        return allowed

    async def run(self, names: Sequence[str], chat: ChatRequest | Mapping[str, ChatRequest],
                  deadline: float, *, settled: Settled | None = None,
                  pinned: Pinned | None = None) -> list[Outcome]:
        """Call ``names`` concurrently; outcomes come back in the order of ``names``.

        ``chat`` is the request for all of them, or a mapping giving each provider its own
        (every name must be in it). ``pinned``: the providers and breakers to use
        (default: the current ones; a cascade keeps those it started with).
        """
        if isinstance(chat, ChatRequest):
            chats: Mapping[str, ChatRequest] = dict.fromkeys(names, chat)
        else:
            missing = [n for n in names if n not in chat]
            if missing:
                raise KeyError(f"FanOut.run has no request for {', '.join(missing)}")
            chats = chat
        loop = asyncio.get_running_loop()
        started = loop.time()
        # a reload mid-request changes neither
        providers, breakers = pinned or (self.providers, self.breakers)
        started_at = time.monotonic()  # the breakers' clock

        async def one(name: str) -> Outcome:
            t0 = loop.time()
            try:
                result = await providers[name].complete(chats[name], deadline=deadline)
            except ProviderError as exc:
                return Outcome(name, error=exc.code, latency_ms=(loop.time() - t0) * 1000)
            return Outcome(name, result=result, latency_ms=result.latency_ms)

        tasks = {name: asyncio.create_task(one(name), name=f"call-{name}") for name in names}
        done: dict[str, Outcome] = {}
        cut = DEADLINE
        try:
            pending = set(tasks.values())
            while pending:
                finished, pending = await asyncio.wait(
                    pending, timeout=max(0.0, deadline - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED)
                if not finished:
                    break  # the deadline
                for name, task in tasks.items():
                    if task in finished:
                        done[name] = _outcome(name, task)
                if settled is not None and (pending or self.ordered) \
                        and self._settles(names, done, settled):
                    cut = NOT_NEEDED
                    break
        finally:  # at the deadline, on an early answer, or when the request is cancelled
            left = [t for t in tasks.values() if not t.done()]
            for task in left:
                task.cancel()
            if left:
                await asyncio.wait(left)
        waited_ms = (loop.time() - started) * 1000
        out = [done.get(name) or Outcome(name, error=cut, latency_ms=waited_ms) for name in names]
        self._feed(out, breakers, started_at)
        return out

    def _settles(self, names: Sequence[str], done: dict[str, Outcome], settled: Settled) -> bool:
        """Whether the answers in hand decide the outcome (under :attr:`ordered`: the first
        prefix of ``names`` that does is complete, and the answers after it are dropped)."""
        if not self.ordered:
            return settled(list(done.values()), [n for n in names if n not in done])
        for k in range(1, len(names)):
            if names[k - 1] not in done:
                return False
            if settled([done[n] for n in names[:k]], names[k:]):
                for name in names[k:]:
                    done.pop(name, None)
                return True
        return False

    def _feed(self, outcomes: Sequence[Outcome], breakers: Mapping[str, Breaker],
              started_at: float) -> None:
        now = time.monotonic()
        for o in outcomes:
            breaker = breakers[o.name]
            if o.error == NOT_NEEDED:
                self.counts["not_needed"] += 1
                breaker.abandon()
                continue
            breaker.record(o.result is not None, now, started_at)
            if o.result is not None:
                self.latencies.setdefault(o.name, deque(maxlen=LATENCIES_KEPT)).append(
                    o.latency_ms)
            if self.metrics is not None:
                self.metrics.observe("alchemist_provider_latency_seconds", o.latency_ms / 1000,
                                     provider=o.name)
                if o.error:
                    self.metrics.inc("alchemist_provider_failures_total", provider=o.name,
                                     error=o.error)


    async def run_waves(self, waves: Sequence[Sequence[str]], chats: Mapping[str, ChatRequest],
                        deadline: float, *, stop: StopRule,
                        settled: Settled | None = None) -> tuple[list[Outcome], str]:
        """Run a cascade: call ``waves`` one after another until ``stop`` holds.

        Returns the outcomes of the providers asked, in the order asked, each
        with its wave number, and why the cascade ended: ``stop``'s reason,
        ``deadline`` (no time for the next wave, see the module docstring) or
        ``exhausted`` (every wave was asked). ``settled`` is :meth:`run`'s, given
        the providers of later waves among the pending ones (their weight is
        outstanding too).
        """
        loop = asyncio.get_running_loop()
        budget = max(0.0, deadline - loop.time())
        pinned = (self.providers, self.breakers)  # one provider set for the whole cascade
        out: list[Outcome] = []
        ended, started = "exhausted", 0
        try:
            for started, wave in enumerate(waves, start=1):
                if started > 1:
                    reason = stop(out)
                    if reason is None and deadline - loop.time() < self.floor(wave, budget):
                        reason = DEADLINE
                    if reason is not None:
                        ended, started = reason, started - 1
                        break
                later = [p for w in waves[started:] for p in w]
                before = list(out)
                cut = None if settled is None else (
                    lambda done, pending, b=before, rest=later: settled([*b, *done],
                                                                        [*pending, *rest]))
                outcomes = await self.run(wave, chats, deadline, settled=cut, pinned=pinned)
                out += [dataclasses.replace(o, wave=started) for o in outcomes]
        finally:  # admitted, maybe as a half-open breaker's one trial, but never called
            for name in (p for w in waves[started:] for p in w):
                if name in pinned[1]:
                    pinned[1][name].abandon()
        return out, ended

    def floor(self, wave: Sequence[str], budget: float) -> float:
        """The time (s) a wave needs left to start (see the module docstring)."""
        need = 0.0
        for name in wave:
            recent = self.latencies.get(name)
            need = max(need, statistics.median(recent) / 1000.0 if recent
                       else UNKNOWN_FLOOR * budget)
        return need


def _outcome(name: str, task: asyncio.Task[Outcome]) -> Outcome:
    exc = task.exception()
    if exc is not None:  # an adapter bug, not a provider error: visible, never silent
        log.error("provider_call_crashed", provider=name, error=type(exc).__name__)
        return Outcome(name, error="internal")
    return task.result()
