"""The rating model of texts under ``select``, and the gate's test of a gain with it."""

from __future__ import annotations

import numpy as np

from alchemist.optimizers.data import Snapshot
from alchemist.optimizers.fitness import FitnessParams, effective_weights, skill_counts
from alchemist.optimizers.gate import crossfit_gate
from alchemist.optimizers.policy import Policy, PolicyParams
from alchemist.optimizers.seeding import agreement_weights
from alchemist.optimizers.text_values import text_gains, text_quality, text_values

PROVIDERS = ("stock1", "stock2", "stock3", "terse", "sage")
APPEAL = np.array([0.35, 0.35, 0.35, 0.5, 0.8])
PARAMS = FitnessParams(strategy="select", noise=0.05)
FLAT = np.full(2, 1e12)  # genomes compared as served
UNIFORM = np.ones(2 * len(PROVIDERS))


def served_texts(n: int, rng: np.random.Generator, appeal: np.ndarray = APPEAL,
                 explore: float = 0.2) -> Snapshot:
    """Three stock texts that resemble each other, a terse one and a distinctive one; the
    uniform medoid serves a stock text, ``explore`` of the time a rival text is served."""
    m = len(PROVIDERS)
    sim = np.full((m, m), 0.05)
    sim[:3, :3] = 0.55
    sim[3, 4] = sim[4, 3] = 0.1
    np.fill_diagonal(sim, 1.0)
    served = rng.integers(0, 3, n)
    explored = rng.random(n) < explore
    served[explored] = rng.integers(3, 5, int(explored.sum()))
    liked = rng.random(n) < appeal[served]
    reward = (liked ^ (rng.random(n) < PARAMS.noise)).astype(np.float32)
    return Snapshot(skills=("*", "advice"), providers=PROVIDERS, skill=np.ones(n, np.int64),
                    answered=np.ones((n, m), bool),
                    sim=np.repeat(sim[None].astype(np.float32), n, axis=0), served=served,
                    reward=reward, propensity=np.ones(n, np.float32),
                    truth=np.full((n, m), np.nan, np.float32), weight=np.ones(n, np.float32),
                    cost=np.ones(m))


def quality_fit(data: Snapshot) -> np.ndarray:
    rows = agreement_weights(data, PARAMS).reshape(1, -1)
    return effective_weights(rows, skill_counts(data), PARAMS).reshape(-1)


def test_a_thumbs_down_does_not_make_every_other_text_right() -> None:
    data = served_texts(1500, np.random.default_rng(0))
    values = text_values(data, PARAMS.noise)
    down = np.flatnonzero((data.reward == 0) & (data.served == 0))
    # the unlike texts are worth their provider's quality, whatever the served one got
    quality = text_quality(data, PARAMS.noise)[1]
    assert np.allclose(values[down, 4], quality[4] - 0.05 * (quality[0] - values[down, 0]))
    assert abs(quality[4] - 0.8) < 0.12 and abs(quality[0] - 0.35) < 0.06
    assert np.allclose(values[down, 0], -PARAMS.noise / (1 - 2 * PARAMS.noise))  # its own rating


def test_the_gains_terms_average_to_the_paired_gain() -> None:
    rng = np.random.default_rng(1)
    data = served_texts(500, rng)
    values = text_values(data, PARAMS.noise)
    cand, inc = rng.integers(0, 5, 500), rng.integers(0, 5, 500)
    rows = np.arange(500)
    terms = text_gains(data, cand, inc, PARAMS.noise)
    assert np.isclose(terms.mean(), (values[rows, cand] - values[rows, inc]).mean())


def test_a_better_distinctive_provider_earns_a_promotion() -> None:
    promoted = 0
    for seed in range(5):
        data = served_texts(900, np.random.default_rng(seed))
        decision, genome = crossfit_gate(quality_fit, UNIFORM, data, [f"k{i}" for i in range(900)],
                                         PARAMS, folds=2, counts=FLAT)
        promoted += decision.promote
        assert genome[5 + 4] == 1.0 and genome[5:8].max() < 0.1  # the sage, not the stock
        assert 0.3 < decision.diff < 0.55  # serving it gains about 0.8 - 0.37
    assert promoted == 5


def test_equally_good_providers_earn_no_promotion() -> None:
    """Exchangeable providers, whatever their styles: a promotion in at most 1 of 20 runs,
    each looked at every 100 ratings (the identical-fleet bar, for texts)."""
    params = PolicyParams(PARAMS, population=12, generations=4)
    promoted = 0
    for seed in range(20):
        data = served_texts(800, np.random.default_rng(100 + seed), np.full(5, 0.5))
        for n in range(100, 801, 100):
            verdict = Policy(params).step(UNIFORM, data.subset(np.arange(n)),
                                          [f"s{seed}-{i}" for i in range(n)],
                                          np.random.SeedSequence([seed, n]))
            if verdict.promote:
                promoted += 1
                break
    assert promoted <= 1
