"""Fitting a recipe's cascade (``first_wave``, ``stop_margin``) under the cost term.

A recipe that asks in waves (``first_wave`` > 0: the operator chose cascades)
gets its two cascade genes learned from the evidence like its weights: every
step proposes the pair from :data:`WAVES` x :data:`~.calibrate.MARGINS` that
scores best, with the recipe's weights, as

    score[n] = value[n, pick] - cost_weight * (summed relative cost of the providers asked) / M

over the records that can replay any cascade: those whose request asked every
provider at once (``explore`` requests, or any request of a recipe that did
not cascade). A record of a cascade that stopped early lacks the answers a
later wave would have brought, so it cannot say what another cascade would
have served; ``explore`` > 0 is what keeps such records coming once the recipe
cascades.

The pair is tested like the agreement weights, by cross-fitting
(:func:`cascade_gate`): each fold is scored with the pair fitted on the others,
against the incumbent's own pair, paired per record. A cascade that only stops
where the vote is decided (``stop_margin`` 0) serves the same answers as asking
everyone, so its gain is its saving; a margin trades a few answers for calls,
and the values say what they were worth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from alchemist.optimizers import defaults
from alchemist.optimizers.calibrate import MARGINS, cascade_replay
from alchemist.optimizers.data import BoolArray, FloatArray, IntArray, Snapshot
from alchemist.optimizers.estimator import record_values
from alchemist.optimizers.fitness import FitnessParams
from alchemist.optimizers.gate import GateDecision, decide, fold_of

__all__ = ["WAVES", "Waves", "cascade_gate", "cascade_scores", "fit_cascade"]

#: the first-wave sizes a fit chooses among (a recipe with cascades asks at least one first)
WAVES = (1, 2, 3)


@dataclass(frozen=True, slots=True, order=True)
class Waves:
    """A recipe's cascade genes."""

    first_wave: int
    stop_margin: float


def _asked_cost(data: Snapshot, weights: FloatArray, calls: FloatArray,
                min_weight: float) -> FloatArray:
    """The summed relative cost of the providers each record asked, shape (N,): the
    ``calls`` heaviest (ties in order) of those with at least ``min_weight``."""
    w = np.where(weights >= min_weight, weights, 0.0)[data.skill]
    rank: IntArray = np.argsort(np.argsort(-w, axis=1, kind="stable"), axis=1, kind="stable")
    asked: BoolArray = (rank < calls[:, None]) & (w > 0)
    out: FloatArray = asked @ data.cost
    return out


def cascade_scores(data: Snapshot, weights: FloatArray, waves: Waves, params: FitnessParams,
                   values: FloatArray) -> FloatArray:
    """Each record's score (N,) under the weights (S, M, effective) and ``waves``."""
    picks, calls = cascade_replay(data, weights, waves.first_wave, waves.stop_margin,
                                  params.min_weight)
    pad = np.concatenate([values, np.zeros((data.n_records, 1))], axis=1)
    worth = pad[np.arange(data.n_records), picks]          # pick -1 (none): worth nothing
    cost = params.cost_weight * _asked_cost(data, weights, calls, params.min_weight)
    out: FloatArray = worth - cost / len(data.providers)
    return out


def fit_cascade(data: Snapshot, weights: FloatArray, params: FitnessParams,
                values: FloatArray) -> Waves:
    """The pair of :data:`WAVES` x ``MARGINS`` with the best weighted mean score on ``data``
    (ties to the smaller first wave, then the smaller margin: fewer calls, fewer changes)."""
    w = np.clip(np.nan_to_num(data.weight.astype(np.float64)), 0.0, None)
    best: tuple[float, Waves] | None = None
    for first in WAVES:
        for margin in MARGINS:
            waves = Waves(first, margin)
            score = float(cascade_scores(data, weights, waves, params, values) @ w) \
                if data.n_records else 0.0
            if best is None or score > best[0] + 1e-12:
                best = (score, waves)
    assert best is not None
    return best[1]


def cascade_gate(data: Snapshot, keys: Sequence[str], weights: FloatArray, incumbent: Waves,
                 params: FitnessParams, *, folds: int = 5, margin: float = defaults.MARGIN,
                 z: float = defaults.Z, min_records: int = defaults.MIN_RECORDS,
                 ) -> tuple[GateDecision, Waves]:
    """Test the cascade fitted on the complete records against ``incumbent``, cross-fitted
    (see the module docstring); returns the decision and the pair fitted on them all."""
    complete = np.ones(data.n_records, bool) if data.complete is None else data.complete
    usable = data.subset(complete)
    fold = fold_of([k for k, c in zip(keys, complete, strict=True) if c], folds)
    values = record_values(usable, params.noise).astype(np.float64)
    scores, weight = [], []
    for f in range(folds):
        test = fold == f
        if not test.any():
            continue
        fitted = fit_cascade(usable.subset(~test), weights, params, values[~test])
        part = usable.subset(test)
        scores.append(np.stack([cascade_scores(part, weights, w, params, values[test])
                                for w in (fitted, incumbent)]))
        weight.append(np.clip(np.nan_to_num(part.weight.astype(np.float64)), 0.0, None))
    paired = np.concatenate(scores, axis=1) if scores else np.zeros((2, 0))
    w = np.concatenate(weight) if weight else np.zeros(0)
    keep = w > 0
    decision = decide(paired[:, keep], w[keep], (0.0, 0.0), margin, z, min_records,
                      "cross-fitted complete")
    return decision, fit_cascade(usable, weights, params, values)
