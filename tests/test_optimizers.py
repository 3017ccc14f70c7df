"""Fitness replay, decoding, seeding and the promotion gate (``optimizers/``)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alchemist.optimizers.data import Snapshot
from alchemist.optimizers.fitness import (
    FitnessParams,
    effective_weights,
    fitness,
    picks,
    record_values,
    skill_counts,
)
from alchemist.optimizers.gate import gate, split_holdout
from alchemist.optimizers.seeding import agreement_weights, seed_population
from alchemist.optimizers.synthetic import synthetic_snapshot

SKILLS = ("*", "math", "code")
PROVIDERS = ("A", "B", "C")
# A is right on math 90% and B 40%; vice versa on code; C is middling everywhere.
ACCURACY = [[0.65, 0.65, 0.6], [0.9, 0.4, 0.6], [0.4, 0.9, 0.6]]
RIGHT = np.array([[0.6, 0.6, 0.5], [1.0, 0.0, 0.3], [0.0, 1.0, 0.3]]).ravel()
WRONG = np.array([[0.6, 0.6, 0.5], [0.0, 1.0, 0.3], [1.0, 0.0, 0.3]]).ravel()
UNIFORM = np.full(9, 0.5)


def experience(n: int = 3000, seed: int = 1, **kwargs: object) -> Snapshot:
    """Synthetic rated experience for the A/B/C math/code scenario."""
    return synthetic_snapshot(
        ACCURACY, n, np.random.default_rng(seed), skills=SKILLS, providers=PROVIDERS,
        **kwargs,  # type: ignore[arg-type]  # forwarded keyword options
    )


def one_record(
    classes: list[int], served: int, reward: float, truth: list[float] | None = None
) -> Snapshot:
    """A one-record vote snapshot; ``classes[m]`` is m's answer class, -1 = no answer."""
    m = len(classes)
    cls = np.array(classes)
    answered = cls >= 0
    sim = (cls[:, None] == cls[None, :]).astype(np.float32)
    np.fill_diagonal(sim, 1.0)
    return Snapshot(
        skills=("*",), providers=tuple(f"p{i}" for i in range(m)),
        skill=np.zeros(1, np.int64), answered=answered[None], sim=sim[None],
        served=np.array([served]), reward=np.array([reward], np.float32),
        propensity=np.ones(1, np.float32),
        truth=np.array([truth if truth else [np.nan] * m], np.float32),
        weight=np.ones(1, np.float32), cost=np.ones(m),
    )


# --- record_values -------------------------------------------------------------------------


def test_record_values_follow_the_rating_of_the_served_answer() -> None:
    up = record_values(one_record([0, 0, 1], 0, 1.0), noise=0.1)[0]
    assert up.dtype == np.float32
    assert up[0] == up[1] > 0.8 and up[2] < 0.2  # agreeing answers share the served fate
    down = record_values(one_record([0, 0, 1], 0, 0.0), noise=0.1)[0]
    assert down[0] < 0.2 and down[2] > down[0]


def test_record_values_among_alternatives_follow_support() -> None:
    split = record_values(one_record([0, 1, 2], 0, 0.0), noise=0.1)[0]
    assert split[0] < 0.2 and split[1] == pytest.approx(split[2]) and split[1] + split[2] <= 1
    backed = record_values(one_record([0, 1, 1, 2], 0, 0.0), noise=0.1)[0]
    assert backed[1] == backed[2] > backed[3]
    gap = record_values(one_record([0, -1, 1], 0, 0.0), noise=0.1)
    assert np.isfinite(gap).all() and gap[0, 2] > gap[0, 0]


def test_record_values_learn_who_is_reliable() -> None:
    """A down-voted answer's alternatives are not equal: the reliable provider's is likelier."""
    calib = [one_record([0, 1, 2], 0, 1.0) for _ in range(40)]  # A served and up-voted
    test = [one_record([0, 1, 2], 2, 0.0) for _ in range(20)]   # C served and down-voted
    parts = calib + test
    data = Snapshot(
        skills=("*",), providers=("A", "B", "C"),
        skill=np.zeros(len(parts), np.int64),
        answered=np.concatenate([p.answered for p in parts]),
        sim=np.concatenate([p.sim for p in parts]),
        served=np.concatenate([p.served for p in parts]),
        reward=np.concatenate([p.reward for p in parts]),
        propensity=np.ones(len(parts), np.float32),
        truth=np.concatenate([p.truth for p in parts]),
        weight=np.ones(len(parts), np.float32), cost=np.ones(3))
    values = record_values(data, noise=0.1)
    assert (values[40:, 0] > values[40:, 1] + 0.3).all()


def test_record_values_probe_uses_truth_and_soft_similarity() -> None:
    probe = one_record([0, 1, -1], 0, np.nan, truth=[1.0, 0.0, np.nan])
    np.testing.assert_allclose(record_values(probe, 0.1)[0, :2], [1.0, 0.0])
    soft = one_record([0, 1], 0, 1.0)
    soft = replace(soft, sim=np.array([[[1.0, 0.5], [0.5, 1.0]]], np.float32))
    values = record_values(soft, 0.1)[0]
    assert 0.0 <= values[1] < values[0] <= 1.0


# --- picks against a plain per-record reference ---------------------------------------------


def reference_picks(eff: np.ndarray, data: Snapshot, min_weight: float) -> np.ndarray:
    """The live daemon's fusion rule, one individual and one record at a time."""
    out = np.empty((eff.shape[0], data.n_records), np.int64)
    for p in range(eff.shape[0]):
        for n in range(data.n_records):
            w = eff[p, data.skill[n]]
            called = w >= min_weight
            avail = called & data.answered[n]
            w_eff = w * called * data.answered[n]
            score = data.sim[n].astype(np.float64) @ w_eff + 1e-6 * w_eff
            score[~avail] = -np.inf
            out[p, n] = int(np.argmax(score)) if avail.any() else -1
    return out


def reference_scores(eff: np.ndarray, data: Snapshot, min_weight: float) -> np.ndarray:
    """Reference score tensor (P, N, M), -inf where unavailable."""
    w = eff[:, data.skill, :]
    avail = (w >= min_weight) & data.answered[None]
    w_eff = w * avail
    score = np.einsum("nmk,pnk->pnm", data.sim.astype(np.float64), w_eff) + 1e-6 * w_eff
    return np.where(avail, score, -np.inf)


@st.composite
def pick_cases(draw: st.DrawFn) -> tuple[np.ndarray, Snapshot, float]:
    """Random shapes, vote or soft similarities, and weights that provoke ties and thresholds."""
    s, m = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    n, p = draw(st.integers(0, 25)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    skill = rng.integers(0, s, n)
    answered = rng.random((n, m)) < draw(st.sampled_from([0.5, 0.9, 1.0]))
    if draw(st.booleans()):
        cls = rng.integers(0, 3, (n, m))
        sim = (cls[:, :, None] == cls[:, None, :]).astype(np.float32)
    else:
        sim = rng.random((n, m, m)).astype(np.float32)
        sim = (sim + sim.transpose(0, 2, 1)) / 2
    sim[:, np.arange(m), np.arange(m)] = 1.0
    grid = np.array([0.0, 0.03, 0.05, 0.3, 0.5, 1.0])
    eff = grid[rng.integers(0, len(grid), (p, s, m))] if draw(st.booleans()) else rng.random(
        (p, s, m))
    data = Snapshot(
        skills=("*", *(f"s{i}" for i in range(1, s))),
        providers=tuple(f"p{i}" for i in range(m)), skill=skill, answered=answered, sim=sim,
        served=np.zeros(n, np.int64), reward=np.ones(n, np.float32),
        propensity=np.ones(n, np.float32), truth=np.full((n, m), np.nan, np.float32),
        weight=np.ones(n, np.float32), cost=np.ones(m),
    )
    return eff, data, draw(st.sampled_from([0.0, 0.05, 0.3]))


@settings(max_examples=200, deadline=None)
@given(pick_cases())
def test_picks_match_reference(case: tuple[np.ndarray, Snapshot, float]) -> None:
    eff, data, min_weight = case
    got = picks(eff, data, min_weight)
    want = reference_picks(eff, data, min_weight)
    assert got.shape == want.shape and got.dtype == np.int64
    none = want == -1
    np.testing.assert_array_equal(got[none], -1)
    # Elsewhere: a best-scoring provider. Mathematically equal scores may differ by an
    # ulp under another summation order (BLAS, FMA), so exact ties are only ties up
    # to rounding; a clear winner must match exactly.
    score = reference_scores(eff, data, min_weight)
    best = score.max(axis=2, initial=-np.inf)
    tol = 1e-12 * np.maximum(1.0, np.abs(best))
    mine = np.take_along_axis(score, np.maximum(got, 0)[..., None], axis=2)[..., 0]
    assert (mine[~none] >= (best - tol)[~none]).all()
    runner_up = np.sort(score, axis=2)[..., -2] if score.shape[2] > 1 else best - 1.0
    clear = ~none & (runner_up < best - tol)
    np.testing.assert_array_equal(got[clear], want[clear])


def test_picks_exact_on_continuous_data() -> None:
    rng = np.random.default_rng(7)
    data = synthetic_snapshot(np.full((4, 8), 0.6), 400, rng, similarity="select")
    eff = rng.random((5, 4, 8))
    np.testing.assert_array_equal(picks(eff, data, 0.05), reference_picks(eff, data, 0.05))


# --- fitness ---------------------------------------------------------------------------------


def test_fitness_ranks_right_weights_first() -> None:
    data = experience()
    right, uniform, wrong = fitness(np.stack([RIGHT, UNIFORM, WRONG]), data, FitnessParams())
    assert right > uniform > wrong
    assert right - wrong > 0.1


def test_fitness_empty_data_is_cost_only_and_never_nan() -> None:
    data = Snapshot.empty(SKILLS, PROVIDERS)
    params = FitnessParams(cost_weight=0.3)
    pop = np.stack([np.zeros(9), np.ones(9), np.full(9, np.nan)])
    got = fitness(pop, data, params)
    np.testing.assert_allclose(got, [0.0, -0.3, 0.0])
    assert not np.isnan(got).any()


def test_cost_term_makes_the_sparser_recipe_win_when_accuracy_ties() -> None:
    rng = np.random.default_rng(3)
    data = synthetic_snapshot([[0.7, 0.7, 0.7]], 500, rng, answer_rate=1.0)
    # Every provider agrees: whoever is picked is worth the same.
    data = replace(data, sim=np.ones_like(data.sim))
    sparse, dense = np.array([1.0, 0.0, 0.0]), np.array([1.0, 0.5, 0.5])
    params = FitnessParams(cost_weight=0.05)
    values = record_values(data, params.noise)
    f_sparse, f_dense = fitness(np.stack([sparse, dense]), data, params, values)
    np.testing.assert_allclose(f_sparse - f_dense, 0.05 * 2 / 3)


# --- shrinkage -------------------------------------------------------------------------------


def test_shrinkage_keeps_a_thin_skill_near_the_fallback_row() -> None:
    params = FitnessParams(shrink_k=20.0)
    genome = np.array([[0.5, 0.5, 0.5], [1.0, 0.0, 1.0], [1.0, 0.0, 1.0]])
    eff = effective_weights(genome.ravel()[None], np.array([500.0, 3.0, 2000.0]), params)[0]
    np.testing.assert_allclose(eff[0], genome[0])
    assert np.abs(eff[1] - eff[0]).max() <= 3 / 23 * 0.5 + 1e-12  # stays near "*"
    assert np.abs(eff[2] - genome[2]).max() < 0.01  # a well-rated skill decides for itself


def test_thin_skill_in_data_decides_like_the_fallback() -> None:
    data = experience(600)
    keep = (data.skill != 1) | (np.cumsum(data.skill == 1) <= 3)
    thin = data.subset(keep)
    assert skill_counts(thin)[1] == 3
    genome = RIGHT.reshape(3, 3).copy()
    genome[1] = [0.0, 1.0, 0.0]  # the thin skill asks for B only
    eff = effective_weights(genome.ravel()[None], skill_counts(thin), FitnessParams())[0]
    assert eff[1, 0] >= 0.05  # A still called: too little evidence to drop it
    assert np.abs(eff[1] - eff[0]).max() < 0.1


# --- seeding ---------------------------------------------------------------------------------


def test_agreement_weights_favour_the_right_provider_per_skill() -> None:
    w = agreement_weights(experience(), FitnessParams())
    assert w.shape == (3, 3) and (w >= 0).all() and (w <= 1).all()
    assert w[1, 0] > w[1, 1] and w[2, 1] > w[2, 0]


def test_seed_population_layout() -> None:
    data = experience(500)
    incumbent = np.full(9, 0.4)
    pop = seed_population(incumbent, data, 16, np.random.default_rng(0), FitnessParams())
    assert pop.shape == (16, 9) and pop.dtype == np.float64
    np.testing.assert_array_equal(pop[0], incumbent)
    np.testing.assert_allclose(pop[1], agreement_weights(data, FitnessParams()).ravel())
    assert (pop >= 0).all() and (pop <= 1).all()
    assert len(np.unique(pop.round(6), axis=0)) == 16
    assert seed_population(incumbent, data, 1, np.random.default_rng(0), FitnessParams()).shape \
        == (1, 9)


# --- gate ------------------------------------------------------------------------------------


def test_gate_refuses_on_few_records() -> None:
    holdout = experience(12)
    decision = gate(RIGHT, WRONG, holdout, FitnessParams())
    assert not decision.promote and decision.n == 12
    assert "12 held-out ratings; need 30" in decision.reason


def test_gate_refuses_within_noise_and_without_gain() -> None:
    holdout = experience(400, seed=5)
    nudged = np.clip(UNIFORM + np.random.default_rng(1).normal(0, 0.02, 9), 0, 1)
    decision = gate(nudged, UNIFORM, holdout, FitnessParams())
    assert not decision.promote
    same = gate(UNIFORM, UNIFORM, holdout, FitnessParams())
    assert not same.promote and same.diff == 0.0 and "No gain" in same.reason


def test_gate_within_noise_reason() -> None:
    holdout = experience(60, seed=4)  # a real gain, but 60 ratings cannot show it
    decision = gate(RIGHT, UNIFORM, holdout, FitnessParams())
    assert decision.diff > 0 and not decision.promote
    assert "within noise" in decision.reason


def test_gate_promotes_a_clearly_better_candidate() -> None:
    holdout = experience(2000, seed=11)
    decision = gate(RIGHT, WRONG, holdout, FitnessParams())
    assert decision.promote, decision.reason
    assert decision.diff - 2.33 * decision.stderr > 0.005
    assert decision.candidate > decision.incumbent
    assert "clears" in decision.reason


def test_split_holdout_is_stable_and_near_share() -> None:
    keys = [f"req-{i}" for i in range(20000)]
    mask = split_holdout(keys, 0.3)
    assert mask.dtype == np.bool_
    np.testing.assert_array_equal(mask, split_holdout(list(keys), 0.3))
    assert abs(mask.mean() - 0.3) < 0.015
    assert not split_holdout(keys, 0.0).any() and split_holdout(keys, 1.0).all()
    # Stable across processes (no per-process hash salt).
    code = "from alchemist.optimizers.gate import split_holdout; print(split_holdout(['a','b','c','d'], .5))"
    run = [sys.executable, "-c", code]
    assert subprocess.run(run, capture_output=True, text=True, check=True).stdout.strip() == str(
        split_holdout(["a", "b", "c", "d"], 0.5))


# --- hygiene ---------------------------------------------------------------------------------


def test_params_are_validated_with_sentences() -> None:
    with pytest.raises(ValueError, match="noise must lie"):
        FitnessParams(noise=0.5)
    with pytest.raises(ValueError, match="min_weight"):
        FitnessParams(min_weight=-0.1)


def test_optimizers_import_no_service_packages() -> None:
    code = (
        "import sys, optimizers; bad = {'nats', 'aiohttp', 'daemon', 'pygad'} & "
        "{m.split('.')[0] for m in sys.modules}; print(sorted(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
