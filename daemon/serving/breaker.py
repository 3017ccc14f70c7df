"""Circuit breakers: stop calling a provider that keeps failing, probe it again later.

One breaker per provider, driven by the outcomes of its calls:

* **closed** (normal): opens after ``consecutive`` failures in a row, or when at
  least ``min_volume`` of the last ``window`` calls were made and a share
  ``failure_share`` or more of them failed;
* **open**: the provider is skipped until ``cooldown_s`` has passed;
* **half-open**: one trial call is let through; success closes the breaker,
  failure opens it for another cooldown.

The caller (the infer service) never lets breakers silence every provider of
a request: if all would be skipped, it calls them anyway.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from alchemist.daemon.config import BreakerPolicy

log = structlog.get_logger("alchemist.breaker")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(slots=True)
class Breaker:
    """The breaker of one provider."""

    name: str
    policy: BreakerPolicy = BreakerPolicy()
    state: str = CLOSED
    on_change: Callable[[str, str], None] | None = None
    _streak: int = 0
    _recent: deque[bool] = field(default_factory=deque)
    _opened_at: float = 0.0
    _trial_out: bool = False

    def allow(self, now: float) -> bool:
        """May a call start now? (In half-open, only one trial at a time.)"""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if now - self._opened_at < self.policy.cooldown_s:
                return False
            self._set(HALF_OPEN)
        if self._trial_out:
            return False
        self._trial_out = True
        return True

    def record(self, ok: bool, now: float, started: float | None = None) -> None:
        """Feed the outcome of a call (a cancelled, not-needed call is not an outcome).

        ``started`` is when the call began: a call that started before the breaker
        opened says nothing about the provider since, so it cannot close it.
        """
        if self.state != CLOSED and started is not None and started < self._opened_at:
            return
        self._recent.append(ok)
        while len(self._recent) > self.policy.window:
            self._recent.popleft()
        self._streak = 0 if ok else self._streak + 1
        if self.state != CLOSED:  # a trial, or a call made anyway because nothing else was left
            self._trial_out = False
            if ok:
                self._recent.clear()
                self._set(CLOSED)
            elif self.state == HALF_OPEN:
                self._open(now)
            return
        if self.state == CLOSED and not ok and self._tripped():
            self._open(now)

    def follow(self, policy: BreakerPolicy) -> None:
        """Apply a reloaded policy from the next call on; the state and the recent outcomes
        stay (the latest ``window`` of them)."""
        self.policy = policy
        while len(self._recent) > policy.window:
            self._recent.popleft()

    def abandon(self) -> None:
        """A call that was let through ended without an outcome (cancelled, not needed)."""
        if self.state == HALF_OPEN:
            self._trial_out = False

    def _tripped(self) -> bool:
        if self._streak >= self.policy.consecutive:
            return True
        n = len(self._recent)
        failures = n - sum(self._recent)
        return n >= self.policy.min_volume and failures >= self.policy.failure_share * n

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._set(OPEN)

    def _set(self, state: str) -> None:
        if state == self.state:
            return
        old, self.state = self.state, state
        log.warning("breaker_state", provider=self.name, state=state, previous=old,
                    streak=self._streak)
        if self.on_change is not None:
            self.on_change(self.name, state)
