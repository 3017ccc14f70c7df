"""Fitting a recipe's cascade genes (first_wave, stop_margin) under the cost term."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from alchemist.optimizers.cascade_fit import Waves, cascade_gate, cascade_scores, fit_cascade
from alchemist.optimizers.estimator import record_values
from alchemist.optimizers.fitness import FitnessParams
from alchemist.optimizers.policy import Policy, PolicyParams
from alchemist.optimizers.synthetic import synthetic_snapshot

SKILLS = ("*", "math")
PROVIDERS = ("strong", "a", "b", "c")
PARAMS = FitnessParams()
#: the strong provider outweighs the three others together: it decides every vote alone
WEIGHTS = np.array([[1.0, 0.3, 0.3, 0.3]] * 2)


def _data(n: int = 1500, seed: int = 0):  # type: ignore[no-untyped-def]
    data = synthetic_snapshot([[0.9, 0.6, 0.6, 0.6]] * 2, n, np.random.default_rng(seed),
                              skills=SKILLS, providers=PROVIDERS)
    return replace(data, cost=np.ones(len(PROVIDERS)))  # every provider costs the same


def test_the_fit_asks_the_fewest_providers_that_serve_the_same_answers() -> None:
    data = _data()
    values = record_values(data, PARAMS.noise).astype(np.float64)
    assert fit_cascade(data, WEIGHTS, PARAMS, values) == Waves(1, 0.0)
    one = cascade_scores(data, WEIGHTS, Waves(1, 0.0), PARAMS, values)
    three = cascade_scores(data, WEIGHTS, Waves(3, 0.0), PARAMS, values)
    # the same picks where the strong provider answered (it decides alone): two calls fewer
    saving = PARAMS.cost_weight * 2 / len(PROVIDERS)
    assert np.allclose((one - three)[data.answered[:, 0]], saving)


def test_the_gate_promotes_a_saving_on_complete_records_only() -> None:
    data = _data()
    keys = [f"r{i}" for i in range(data.n_records)]
    decision, fitted = cascade_gate(data, keys, WEIGHTS, Waves(3, 0.0), PARAMS)
    assert decision.promote and fitted == Waves(1, 0.0), decision.reason
    assert abs(decision.diff - PARAMS.cost_weight * 2 / len(PROVIDERS)) < 1e-3
    # records of requests a cascade cut short cannot replay another cascade: left out
    cut = replace(data, complete=np.arange(data.n_records) % 3 == 0)
    decision, _ = cascade_gate(cut, keys, WEIGHTS, Waves(3, 0.0), PARAMS)
    assert decision.n == int(cut.complete.sum())  # type: ignore[union-attr]
    none = replace(data, complete=np.zeros(data.n_records, bool))
    decision, _ = cascade_gate(none, keys, WEIGHTS, Waves(3, 0.0), PARAMS)
    assert not decision.promote and decision.n == 0


def test_a_few_dozen_records_of_savings_are_not_proof() -> None:
    data = _data(n=60)
    decision, _ = cascade_gate(data, [f"r{i}" for i in range(60)], WEIGHTS, Waves(3, 0.0), PARAMS)
    assert not decision.promote


def test_the_policy_promotes_the_cascade_with_the_incumbents_weights() -> None:
    data = _data(n=2000, seed=1)
    incumbent = np.concatenate([WEIGHTS.ravel()])
    params = PolicyParams(PARAMS, population=8, generations=2)
    keys = [f"k{i}" for i in range(data.n_records)]
    verdict = Policy(params).step(incumbent, data, keys, np.random.SeedSequence(0),
                                  waves=Waves(3, 0.0))
    assert verdict.promote and verdict.waves == Waves(1, 0.0), verdict.decision.reason
    assert np.array_equal(verdict.weights, WEIGHTS)
    plain = Policy(params).step(incumbent, data, keys, np.random.SeedSequence(0))
    assert plain.waves is None  # no cascade genes unless the recipe asks in waves
