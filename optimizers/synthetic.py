"""Synthetic rated experience with a known answer, for tests, benchmarks and demos.

Each record has one correct answer class; provider ``m`` answers with
probability ``answer_rate`` and is right with probability ``accuracy[s, m]``,
otherwise it picks one of ``wrong_classes`` wrong answers. The served answer
comes from a uniformly random answering provider (an exploring recipe), and a
user rates it, flipping the true verdict with probability ``rating_noise``.
A ``probe_share`` of records are probes with ``truth`` instead of a rating.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from alchemist.optimizers.data import Float32Array, FloatArray, IntArray, Snapshot

__all__ = ["synthetic_snapshot"]


def synthetic_snapshot(
    accuracy: FloatArray | Sequence[Sequence[float]],
    n_records: int,
    rng: np.random.Generator,
    *,
    skills: Sequence[str] | None = None,
    providers: Sequence[str] | None = None,
    skill_share: Sequence[float] | None = None,
    answer_rate: float = 0.95,
    wrong_classes: int = 4,
    rating_noise: float = 0.1,
    probe_share: float = 0.0,
    similarity: str = "vote",
    cost: Sequence[float] | None = None,
) -> Snapshot:
    """A :class:`Snapshot` drawn from the model above; ``accuracy`` is (S, M), row 0 = ``"*"``.

    ``similarity="vote"`` gives 0/1 agreement; ``"select"`` gives noisy
    similarities (high within an answer class, low across, symmetric).
    """
    acc = np.asarray(accuracy, dtype=np.float64)
    s_count, m = acc.shape
    default_skills = ("*", *(f"skill{i}" for i in range(1, s_count)))
    skill_names = tuple(skills) if skills is not None else default_skills
    names = tuple(providers) if providers is not None else tuple(f"p{i}" for i in range(m))
    share = np.full(s_count, 1.0 / s_count) if skill_share is None else np.asarray(skill_share)
    n = n_records
    skill = rng.choice(s_count, size=n, p=share / share.sum()).astype(np.int64)
    answered = rng.random((n, m)) < answer_rate
    none = ~answered.any(axis=1)
    answered[none, rng.integers(0, m, int(none.sum()))] = True
    right = rng.random((n, m)) < acc[skill]
    klass = np.where(right, 0, rng.integers(1, wrong_classes + 1, (n, m)))
    klass = np.where(answered, klass, -1 - np.arange(m)[None, :])  # unanswered: unique class
    sim = _similarity(klass, rng, similarity)
    # Serve a uniformly random answering provider.
    keys = np.where(answered, rng.random((n, m)), -1.0)
    served = keys.argmax(axis=1).astype(np.int64)
    propensity = (1.0 / answered.sum(axis=1)).astype(np.float32)
    correct = right[np.arange(n), served]
    flip = rng.random(n) < rating_noise
    reward = (correct ^ flip).astype(np.float32)
    truth = np.full((n, m), np.nan, np.float32)
    probe = rng.random(n) < probe_share
    truth[probe] = np.where(answered[probe], right[probe], np.nan)
    reward[probe] = np.nan
    costs = np.ones(m) if cost is None else np.asarray(cost, dtype=np.float64)
    return Snapshot(
        skills=skill_names, providers=names, skill=skill, answered=answered, sim=sim,
        served=served, reward=reward, propensity=propensity, truth=truth,
        weight=np.ones(n, np.float32), cost=costs,
    )


def _similarity(klass: IntArray, rng: np.random.Generator, similarity: str) -> Float32Array:
    """Agreement (N, M, M) of answers in classes ``klass`` (N, M); 1 on the diagonal."""
    n, m = klass.shape
    same = klass[:, :, None] == klass[:, None, :]
    sim: Float32Array
    if similarity == "vote":
        sim = same.astype(np.float32)
    elif similarity == "select":
        noise = rng.random((n, m, m))
        noise = (noise + noise.transpose(0, 2, 1)) / 2
        sim = np.where(same, 0.8 + 0.2 * noise, 0.3 * noise).astype(np.float32)
    else:
        raise ValueError(f"similarity must be 'vote' or 'select', got {similarity!r}.")
    idx = np.arange(m)
    sim[:, idx, idx] = 1.0
    return sim
