"""Template genes: trial counts, categorical mutation, per-genome replay, seeding, search, gate."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from alchemist.optimizers.data import Snapshot
from alchemist.optimizers.evolve import NumpyOptimizer, PygadOptimizer
from alchemist.optimizers.fitness import FitnessParams, Replay
from alchemist.optimizers.gate import gate
from alchemist.optimizers.seeding import seed_population
from alchemist.optimizers.synthetic import synthetic_snapshot
from alchemist.optimizers.templates import TemplateGenes, TemplateStats, template_delta

PARAMS = FitnessParams(cost_weight=0.0)
OPTIONS = 3  # skill 1 ("math"): none, plain, reasoning
# provider 1 only follows the "reasoning" format (option 2); the others don't care
RATE = np.array([[0.7, 0.7, 0.7], [0.1, 0.15, 0.9], [0.7, 0.7, 0.7]])


def probes(rng: np.random.Generator, n: int = 600, rate: np.ndarray = RATE) -> Snapshot:
    """Probe records, a quarter on "*" (no templates) and the rest on "math", where each
    provider is asked with a random option and is right with probability ``rate[m, option]``.

    As the evolver builds it: the incumbent sends no template (option 0), so only answers
    asked with option 0 count for the weights; every answer is a template trial.
    """
    m = rate.shape[0]
    skill = (rng.random(n) < 0.75).astype(np.int64)
    option = np.where(skill[:, None] == 1, rng.integers(0, OPTIONS, (n, m)), -1)
    p_right = np.where(option >= 0, rate[np.arange(m)[None, :], np.maximum(option, 0)], 0.7)
    right = rng.random((n, m)) < p_right
    klass = np.where(right, 0, rng.integers(1, 5, (n, m)))
    sim = (klass[:, :, None] == klass[:, None, :]).astype(np.float32)
    counted = option <= 0
    return Snapshot(
        skills=("*", "math"), providers=tuple(f"p{i}" for i in range(m)), skill=skill,
        answered=counted, sim=sim, served=np.zeros(n, np.int64),
        reward=np.full(n, np.nan, np.float32), propensity=np.ones(n, np.float32),
        truth=np.where(counted, right, np.nan).astype(np.float32),
        weight=np.where(counted.any(axis=1), 1.0, 0.0).astype(np.float32), cost=np.ones(m),
        templates=TemplateGenes.build({1: OPTIONS}, m), option=option,
        trial=right.astype(np.float32))


def test_stats_count_trials_per_gene_and_option() -> None:
    data = probes(np.random.default_rng(0), n=4, rate=RATE[:2, :])
    data = dataclasses.replace(
        data, skill=np.array([1, 1, 0, 1]), option=np.array([[0, 2], [2, 2], [1, 1], [-1, 1]]),
        trial=np.array([[1, 1], [0, np.nan], [1, 1], [1, 0]], np.float32))
    stats = TemplateStats.of(data)
    assert stats is not None
    # gene 0 = (math, p0), gene 1 = (math, p1); the "*" record and option -1 are no trials
    assert stats.asked.tolist() == [[1, 0, 1], [0, 1, 1]]
    assert stats.passed.tolist() == [[1, 0, 0], [0, 0, 1]]
    acc = stats.accuracy()
    assert acc[0, 0] > acc[0, 1] > acc[0, 2]  # untried option 1 sits at the gene's pooled rate
    assert stats.best().tolist() == [0.0, 2.0]


def test_build_and_clip() -> None:
    genes = TemplateGenes.build({1: 3, 2: 1, 3: 2}, 2, {(1, 1): 2, (3, 0): 5})
    assert genes.skill.tolist() == [1, 1, 3, 3]  # a skill with one option has no gene
    assert genes.provider.tolist() == [0, 1, 0, 1]
    assert genes.current.tolist() == [0, 2, 1, 0]  # an out-of-range current is clipped
    assert genes.clip(np.array([[-1.0, 2.6, 0.4, 9.0]])).tolist() == [[0.0, 2.0, 0.0, 1.0]]
    with pytest.raises(ValueError, match="2 options"):
        TemplateGenes(np.array([1]), np.array([0]), np.array([1]), np.array([0]))


def test_mutation_is_categorical() -> None:
    genes = TemplateGenes.build({1: 4}, 1)
    rng = np.random.default_rng(1)
    start = np.zeros((4000, 1))
    hit = np.ones_like(start, bool)
    moved = genes.mutate(start, rng.random(start.shape), hit)
    counts = np.bincount(moved[:, 0].astype(int), minlength=4)
    assert counts[0] == 0  # a hit always moves
    assert counts[1:].min() > 1100  # ... to any other option alike
    assert (genes.mutate(start, rng.random(start.shape), ~hit) == 0).all()


def test_fitness_adds_the_measured_gain_of_the_templates() -> None:
    data = probes(np.random.default_rng(2))
    replay = Replay(data, PARAMS)
    weights = np.full(data.n_weights, 0.8)
    pop = np.array([np.r_[weights, [0, t, 0]] for t in range(OPTIONS)])
    fit = replay.fitness(pop)
    assert fit[2] > fit[0] and fit[2] > fit[1]
    stats = replay.templates
    assert stats is not None
    acc = stats.accuracy()
    coef = replay.skill_share[1] / 3  # the skill's share, over M providers
    assert fit[2] - fit[0] == pytest.approx(coef * (acc[1, 2] - acc[1, 0]))
    # the weights alone score the same whatever the template genes
    assert replay.fitness(pop[:, : data.n_weights]) == pytest.approx(np.full(3, fit[0]))
    scores = replay.record_scores(pop)
    assert scores[0] == pytest.approx(scores[2])


@pytest.mark.parametrize("optimizer", [PygadOptimizer, NumpyOptimizer])
def test_search_finds_the_template(optimizer: type[PygadOptimizer]) -> None:
    rng = np.random.default_rng(3)
    data = probes(rng)
    pop = np.c_[rng.random((16, data.n_weights)), np.zeros((16, 3))]  # nobody starts right
    result = optimizer(PARAMS, generations=30).step(pop, data, np.random.SeedSequence(4))
    genes = result.population[:, data.n_weights:]
    assert set(np.unique(genes)) <= {0.0, 1.0, 2.0}  # whole options, in range
    assert result.best[data.n_weights + 1] == 2.0
    weights = result.population[:, : data.n_weights]
    assert ((weights >= 0) & (weights <= 1)).all()


def test_seeding_carries_the_incumbent_and_the_best_measured() -> None:
    rng = np.random.default_rng(5)
    data = probes(rng)
    incumbent = np.r_[np.full(data.n_weights, 0.5), [0, 1, 0]]
    pop = seed_population(incumbent, data, 20, rng, PARAMS)
    assert pop.shape == (20, data.n_genes)
    assert pop[0].tolist() == incumbent.tolist()
    stats = TemplateStats.of(data)
    assert stats is not None
    assert pop[1, data.n_weights:].tolist() == stats.best().tolist()
    assert pop[1, data.n_weights + 1] == 2.0
    tail = pop[:, data.n_weights:]
    assert set(np.unique(tail)) <= {0.0, 1.0, 2.0}
    assert len({tuple(r) for r in tail}) > 2  # variants explore other options


def test_gate_promotes_a_template_only_on_enough_evidence() -> None:
    data = probes(np.random.default_rng(6), n=800)
    weights = np.full(data.n_weights, 0.8)
    incumbent, candidate = np.r_[weights, 0, 0, 0], np.r_[weights, 0, 2, 0]
    decision = gate(candidate, incumbent, data, PARAMS, min_records=30)
    assert decision.promote, decision.reason
    few = data.subset(np.arange(8))  # the same contrast on two trials an option: within noise
    assert not gate(candidate, incumbent, few, PARAMS, min_records=5).promote
    assert not gate(np.r_[weights, 1, 0, 0], incumbent, data, PARAMS).promote  # no better


def test_settle_keeps_only_clear_template_changes() -> None:
    stats = TemplateStats.of(probes(np.random.default_rng(7)))
    assert stats is not None
    # p1's switch to reasoning is clear; p0 and p2 answer alike under every option
    settled = stats.settle(np.array([2.0, 2.0, 1.0]), np.array([0.0, 0.0, 0.0]), z=2.33)
    assert settled.tolist() == [0.0, 2.0, 0.0]
    # leaving a clearly better template is no clear gain either
    back = stats.settle(np.array([0.0, 0.0, 0.0]), np.array([0.0, 2.0, 0.0]), z=2.33)
    assert back.tolist() == [0.0, 2.0, 0.0]


def test_snapshot_checks_template_fields() -> None:
    data = synthetic_snapshot([[0.5, 0.5]], 3, np.random.default_rng(8))
    with pytest.raises(ValueError, match="needs 'option' and 'trial'"):
        dataclasses.replace(data, templates=TemplateGenes.build({0: 2}, 2))
    with pytest.raises(ValueError, match="option"):
        dataclasses.replace(data, templates=TemplateGenes.build({0: 2}, 2),
                            option=np.zeros((2, 2), np.int64), trial=np.zeros((3, 2), np.float32))
    pop = np.zeros((4, data.n_weights))
    with pytest.raises(ValueError, match="template genes"):
        NumpyOptimizer(PARAMS).step(pop, dataclasses.replace(
            data, templates=TemplateGenes.build({0: 2}, 2), option=np.full((3, 2), -1),
            trial=np.full((3, 2), np.nan, np.float32)), np.random.SeedSequence(0))


def test_delta_only_counts_genes_that_differ() -> None:
    replay = Replay(probes(np.random.default_rng(9)), PARAMS)
    assert replay.templates is not None
    same = template_delta(replay.templates, np.array([1, 2, 0]), np.array([1, 2, 0]),
                          replay.skill_share, 3)
    assert same == (0.0, 0.0)
    diff, var = template_delta(replay.templates, np.array([0, 2, 0]), np.array([0, 0, 0]),
                               replay.skill_share, 3)
    assert diff > 0 and var > 0
