"""The learning step behind the evolver: one Policy.step from incumbent and evidence to a verdict."""

from __future__ import annotations

import threading

import numpy as np

from alchemist.optimizers.fitness import FitnessParams
from alchemist.optimizers.policy import Policy, PolicyParams, Verdict
from alchemist.optimizers.synthetic import synthetic_snapshot
from tests.scenarios import ACCURACY, PROVIDERS, SKILLS, experience

PARAMS = PolicyParams(FitnessParams(), population=12, generations=4, min_records=30)
EQUAL = np.full(len(SKILLS) * len(PROVIDERS), 0.5)  # the incumbent: every provider alike


def keys(n: int) -> list[str]:
    return [f"record-{i}" for i in range(n)]


def test_a_step_is_reproducible_from_its_seed() -> None:
    data = experience(n=600)
    a = Policy(PARAMS).step(EQUAL, data, keys(600), np.random.SeedSequence(3))
    b = Policy(PARAMS).step(EQUAL, data, keys(600), np.random.SeedSequence(3))
    assert a.decision == b.decision and np.array_equal(a.genome, b.genome)
    assert np.array_equal(a.population, b.population)


def test_clear_evidence_promotes_weights_that_follow_it() -> None:
    data = experience(n=3000)
    verdict = Policy(PARAMS).step(EQUAL, data, keys(3000), np.random.SeedSequence(1))
    assert isinstance(verdict, Verdict) and verdict.promote, verdict.decision.reason
    assert verdict.weights.shape == (len(SKILLS), len(PROVIDERS))
    assert verdict.genome.shape == (data.n_genes,)
    assert verdict.population.shape == (PARAMS.population, data.n_genes)
    assert verdict.fitness.shape == (PARAMS.population,)
    math, code = verdict.weights[1], verdict.weights[2]
    assert math[0] > math[1] and code[1] > code[0]  # A is the math provider, B the code one
    if "cross-fitted" in verdict.decision.reason:  # every record tested the weights fitted without it
        assert verdict.decision.n == 3000
    else:
        assert abs(verdict.decision.n / 3000 - 0.3) < 0.05  # the held-out share, by key hash


def test_too_little_held_out_evidence_never_promotes() -> None:
    data = experience(n=60)
    verdict = Policy(PARAMS).step(EQUAL, data, keys(60), np.random.SeedSequence(1))
    assert not verdict.promote  # 18 held-out records, or 60 cross-fitted ones that don't suffice
    assert "need 30" in verdict.decision.reason or "within noise" in verdict.decision.reason


def test_a_carried_population_keeps_its_size_and_one_of_another_layout_is_replaced() -> None:
    data = experience(n=400)
    first = Policy(PARAMS).step(EQUAL, data, keys(400), np.random.SeedSequence(1))
    carried = Policy(PARAMS).step(EQUAL, data, keys(400), np.random.SeedSequence(2),
                                  first.population, first.fitness)
    assert carried.population.shape == first.population.shape
    small = synthetic_snapshot([row[:2] for row in ACCURACY], 400, np.random.default_rng(1),
                               skills=SKILLS, providers=PROVIDERS[:2])
    fresh = Policy(PARAMS).step(np.full(small.n_genes, 0.5), small, keys(400),
                                np.random.SeedSequence(2), first.population, first.fitness)
    assert fresh.population.shape == (PARAMS.population, small.n_genes)


def test_a_set_stop_event_ends_the_step_early_with_a_verdict() -> None:
    stop = threading.Event()
    stop.set()
    long = PolicyParams(FitnessParams(), population=12, generations=10_000)
    verdict = Policy(long, stop_event=stop).step(EQUAL, experience(n=300), keys(300),
                                                 np.random.SeedSequence(1))
    assert verdict.population.shape == (12, EQUAL.size)
