"""Calibration: a recipe fitted on labelled records, for operators who choose to trust them.

The promotion gate promotes only what the evidence proves, and a few dozen
labelled prompts rarely prove a real gain (``benchmarks/gate_power.py``: with
perfect labels on 140 prompts, no always-valid test sees CRUXEval's 5.5-point
gain). An operator who holds a golden set they trust (``alchemist probe
import``) can instead have the recipe *fitted* on it, once, without the gate
(``evolver.calibrate``), as a cascade system (FrugalGPT) is fitted on its
labelled set before it serves:

* **weights:** :func:`~alchemist.optimizers.seeding.agreement_weights` of the
  ground-truth records alone: per skill, the log-odds of each provider's
  accuracy on them, ``max(0, log(a / (1 - a)))`` scaled so the heaviest is 1,
  with ``a = (hits + 1) / (asked + 2)``, a skill's row shrunk toward ``"*"``
  by ``shrink_k`` records as the daemon shrinks evolved rows. A provider no
  better than a coin flip on its skill gets weight 0 and is not called for it
  (a skill on which nobody beats a coin flip keeps all, weighted by accuracy);
* **stop margin**, when the recipe asks in waves (``first_wave`` > 0): the
  value of :data:`MARGINS` whose cascade, replayed on the same records, scores
  best (accuracy minus the cost term; ties to the cheaper, then the larger
  margin).

It is the weighted vote that is optimal when providers err independently
(Nitzan and Paroush, 1982), estimated from the labels alone; correlated
errors are why the evolver keeps learning from the ratings afterwards, under
the gate. Nothing here tests the fit: with equally good providers it changes
weights on noise. The README says so where the key is documented.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alchemist.answers.fusion import RIVAL_BELOW, decided, margin_reached
from alchemist.optimizers.data import BoolArray, FloatArray, IntArray, Snapshot
from alchemist.optimizers.fitness import FitnessParams
from alchemist.optimizers.seeding import agreement_weights

__all__ = ["MARGINS", "Calibration", "calibrate", "cascade_replay", "truth_records"]

#: the stop margins a calibration chooses among (0: stop only when the vote is decided)
MARGINS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


@dataclass(frozen=True, slots=True)
class Calibration:
    """A fitted recipe: ``weights`` (S, M) as served (already shrunk), ``stop_margin``
    (None without waves), the ground-truth records used, and the replayed accuracy and
    calls a request of the chosen cascade on them."""

    weights: FloatArray
    stop_margin: float | None
    n: int
    score: float
    calls: float


def truth_records(data: Snapshot) -> BoolArray:
    """The records with ground truth (golden and probe records), shape (N,)."""
    out: BoolArray = np.any(~np.isnan(data.truth), axis=1)
    return out


def calibrate(data: Snapshot, params: FitnessParams, first_wave: int = 0) -> Calibration:
    """Fit the weights (and, with ``first_wave`` > 0, the stop margin) on ``data``'s
    ground-truth records."""
    labelled = data.subset(truth_records(data))
    m = len(data.providers)
    weights = agreement_weights(labelled, params)  # on ground truth alone: accuracy log-odds
    margins = MARGINS if 0 < first_wave < m else (0.0,)
    best: tuple[float, float, float, float] | None = None
    for margin in margins:
        picks, calls = cascade_replay(labelled, weights, first_wave, margin, params.min_weight)
        score = _accuracy(labelled, picks)
        cost = params.cost_weight * float(calls.mean()) / m if calls.size else 0.0
        key = (score - cost, -float(calls.mean()) if calls.size else 0.0, margin, score)
        if best is None or key[:3] > best[:3]:
            best = key
    assert best is not None
    margin, score = best[2], best[3]
    return Calibration(weights, margin if len(margins) > 1 else None, labelled.n_records,
                       score, -best[1])


def _accuracy(data: Snapshot, picks: IntArray) -> float:
    if data.n_records == 0:
        return 0.0
    rows = np.arange(data.n_records)
    right = np.where(picks >= 0, np.nan_to_num(data.truth[rows, np.maximum(picks, 0)]), 0.0)
    return float(right.mean())


def cascade_replay(data: Snapshot, weights: FloatArray, first_wave: int, stop_margin: float,
                   min_weight: float = 1e-9) -> tuple[IntArray, FloatArray]:
    """Each record's pick (-1: none) and calls under the recipe's cascade, shape (N,) each.

    The daemon's rule (:class:`alchemist.answers.fusion.Cascade`, ``vote``): the
    providers with at least ``min_weight`` (those called), heaviest first (ties in
    order); the first wave asks ``first_wave`` (0: everyone at once), every later
    wave one more; stop once the answers in hand decide the vote or lead by
    ``stop_margin`` of the total weight.
    """
    n, m = data.n_records, len(data.providers)
    picks = np.full(n, -1, np.int64)
    calls = np.zeros(n)
    if n == 0:
        return picks, calls
    w = np.where(weights >= min_weight, weights, 0.0)[data.skill]  # (N, M): rows, uncalled 0
    order = np.argsort(-w, axis=1, kind="stable")
    rank = np.argsort(order, axis=1, kind="stable")           # provider -> its wave position
    candidates = (w > 0).sum(axis=1)
    start = np.where(first_wave > 0, np.minimum(first_wave, candidates), candidates)
    answered = data.answered.astype(bool)
    sim = data.sim.astype(np.float64)
    total = w.sum(axis=1)
    open_ = np.ones(n, bool)
    for k in range(1, m + 1):
        asked = (rank < k) & (w > 0)
        live = asked & answered
        raw = np.where(live, np.einsum("nmj,nj->nm", sim, w * live), -np.inf)
        pick = np.argmax(raw + 1e-6 * w, axis=1)              # first index on exact ties
        rows = np.arange(n)
        top = raw[rows, pick]
        rival = np.where(live & (sim[rows, pick] < RIVAL_BELOW), raw, -np.inf).max(axis=1)
        top = np.where(np.isfinite(top), top, 0.0)
        lead = np.where(live.any(axis=1), top - np.where(np.isfinite(rival), rival, 0.0), 0.0)
        outstanding = total - (w * asked).sum(axis=1)
        stop = live.any(axis=1) & (decided(lead, outstanding, w.max(axis=1))
                                   | margin_reached(lead, total, stop_margin))
        done = open_ & (k >= start) & (stop | (k >= candidates))
        picks[done] = np.where(live[done].any(axis=1), pick[done], -1)
        calls[done] = np.minimum(k, candidates[done])
        open_ &= ~done
        if not open_.any():
            break
    return picks, calls
