"""Calibration on ground-truth records, and the vectorised cascade replay it scores with."""

from __future__ import annotations

import numpy as np
import pytest

from alchemist.optimizers.calibrate import calibrate, cascade_replay, truth_records
from alchemist.optimizers.fitness import FitnessParams, picks
from alchemist.optimizers.synthetic import synthetic_snapshot

SKILLS = ("*", "math", "code")
PROVIDERS = ("strong", "fair", "weak", "coin")


def _golden(n: int = 400, seed: int = 0):  # type: ignore[no-untyped-def]
    accuracy = [[0.9, 0.7, 0.4, 0.5]] * 3
    return synthetic_snapshot(accuracy, n, np.random.default_rng(seed), skills=SKILLS,
                              providers=PROVIDERS, probe_share=1.0)


def test_weights_follow_the_log_odds_of_accuracy_and_drop_the_coin_flippers() -> None:
    data = _golden()
    cal = calibrate(data, FitnessParams())
    assert cal.n == 400 and cal.stop_margin is None
    for row in cal.weights:
        assert row[0] == 1.0 and 0.2 < row[1] < 0.6  # log(7/3) / log(9) = 0.39
        assert row[2] == 0.0 and row[3] < 0.1         # worse than a coin, or about one


def test_only_ground_truth_records_count() -> None:
    rated = synthetic_snapshot([[0.2, 0.9, 0.9, 0.9]] * 3, 600, np.random.default_rng(1),
                               skills=SKILLS, providers=PROVIDERS)
    assert not truth_records(rated).any()
    data = _golden()
    both = calibrate(data, FitnessParams()).weights
    # ratings say nothing to a calibration: the same weights with 600 rated records or none
    merged = type(data)(**{f: np.concatenate([getattr(data, f), getattr(rated, f)])
                           for f in ("skill", "answered", "sim", "served", "reward",
                                     "propensity", "truth", "weight")},
                        skills=data.skills, providers=data.providers, cost=data.cost)
    assert np.array_equal(calibrate(merged, FitnessParams()).weights, both)


def test_nobody_better_than_a_coin_keeps_everyone_ranked() -> None:
    data = synthetic_snapshot([[0.3, 0.45, 0.2, 0.1]] * 3, 300, np.random.default_rng(2),
                              skills=SKILLS, providers=PROVIDERS, probe_share=1.0)
    row = calibrate(data, FitnessParams()).weights[0]
    assert (row > 0).all() and int(np.argmax(row)) == 1


@pytest.mark.parametrize("seed", range(5))
def test_cascade_with_the_exact_stop_rule_picks_what_all_at_once_picks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = synthetic_snapshot([[0.8, 0.6, 0.55, 0.5]] * 3, 300, rng, skills=SKILLS,
                              providers=PROVIDERS, probe_share=0.5)
    weights = rng.random((len(SKILLS), len(PROVIDERS)))
    weights[weights < 0.1] = 0.0
    at_once = picks(weights[None], data, 1e-9)[0]
    all_calls = (weights >= 1e-9).sum(axis=1)[data.skill]
    got, calls = cascade_replay(data, weights, 0, 0.0)
    assert np.array_equal(got, at_once) and np.array_equal(calls, all_calls)
    for first in (1, 2, 3):
        got, calls = cascade_replay(data, weights, first, 0.0)
        assert np.array_equal(got, at_once)  # the outstanding weight could not overturn it
        assert (calls >= np.minimum(first, all_calls)).all() and (calls <= all_calls).all()
    equal = np.ones_like(weights)  # two agreeing of four: not decided, but a 0.3 margin
    exact_calls = cascade_replay(data, equal, 1, 0.0)[1]
    wide, wide_calls = cascade_replay(data, equal, 1, 0.3)
    assert (wide_calls <= exact_calls).all() and (wide_calls < exact_calls).any()
    assert ((wide >= 0) == (picks(equal[None], data, 1e-9)[0] >= 0)).all()


def test_a_cascade_is_fitted_when_the_recipe_asks_in_waves() -> None:
    data = _golden(seed=3)
    cal = calibrate(data, FitnessParams(), first_wave=2)
    assert cal.stop_margin is not None and cal.calls < 3.0
    at_once = calibrate(data, FitnessParams())
    assert np.array_equal(cal.weights, at_once.weights)
    assert cal.score >= at_once.score - 0.02  # about as accurate, at a fraction of the calls
