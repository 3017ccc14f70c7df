"""The circuit breaker's state machine, on its own clock."""

from __future__ import annotations

from alchemist.daemon.config import BreakerPolicy
from alchemist.daemon.serving.breaker import CLOSED, HALF_OPEN, OPEN, Breaker

POLICY = BreakerPolicy(consecutive=3, window=10, min_volume=6, failure_share=0.5, cooldown_s=10)


def test_opens_on_a_streak_and_recovers_through_one_trial() -> None:
    b = Breaker("p", POLICY)
    for t in range(3):
        b.record(False, now=float(t), started=float(t))
    assert b.state == OPEN and not b.allow(5.0)
    assert b.allow(13.0) and b.state == HALF_OPEN  # the cooldown passed: one trial...
    assert not b.allow(13.1)                        # ...and only one
    b.record(True, now=13.5, started=13.0)
    assert b.state == CLOSED and b.allow(14.0)


def test_opens_on_a_failure_share_over_a_minimum_volume() -> None:
    b = Breaker("p", POLICY)
    for t, ok in enumerate([True, False, True, False, True, False]):
        b.record(ok, now=float(t), started=float(t))
    assert b.state == OPEN


def test_a_success_that_started_before_the_opening_does_not_close_it() -> None:
    b = Breaker("p", POLICY)
    for t in range(3):
        b.record(False, now=10.0 + t, started=10.0 + t)
    assert b.state == OPEN
    b.record(True, now=12.5, started=9.0)  # a call from before the breaker opened
    assert b.state == OPEN
    b.record(True, now=12.6, started=12.55)  # a call made after (all others refused)
    assert b.state == CLOSED


def test_a_failed_trial_opens_it_again() -> None:
    b = Breaker("p", POLICY)
    for t in range(3):
        b.record(False, now=float(t), started=float(t))
    assert b.allow(20.0)
    b.record(False, now=20.5, started=20.0)
    assert b.state == OPEN and not b.allow(25.0) and b.allow(31.0)
