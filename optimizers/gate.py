"""The promotion gate: promote a candidate only when the evidence says so, at every look.

The gate replays the candidate and the incumbent on the *same* records and
tests the per-record differences of their scores (``value[n, pick]`` minus
the per-record cost charge, see :mod:`alchemist.optimizers.fitness`),
weighted by record weight::

    d_n   = score_candidate[n] - score_incumbent[n]
    diff  = sum_n w_n d_n / sum_n w_n                 (n_eff: Kish effective size)
    promote iff  n >= min_records  and  the mixture SPRT says diff > margin at level alpha

The test (:mod:`alchemist.optimizers.sequential`) stays valid however often it
looks: the evolver asks at every step as the evidence grows, and the chance
that *any* look promotes a candidate that is no better than the incumbent by
``margin`` is at most ``alpha = P(Z > z)`` (``evolver.z`` = 2.33: alpha = 1 %).

With template genes (:mod:`alchemist.optimizers.templates`), the template part of the
difference is measured on the probe answers and adds to both::

    diff   += sum_k c_k (acc[k, cand_k] - acc[k, inc_k])
    var    += sum_k c_k^2 (var[k, cand_k] + var[k, inc_k])

over the genes that differ (``c_k``: the skill's share over ``M``).

Two ways to get records no candidate was fitted on:

* :func:`gate`: the candidate was fitted on training records; it is tested on
  the held-out ones (:func:`split_holdout`, a stable hash of each record key);
* :func:`crossfit_gate`: the candidate comes from a cheap, deterministic
  procedure; the records are split into folds (:func:`fold_of`), the
  procedure is fitted on all folds but one and scored on that one, in turn, so
  every record tests and none is set aside. The candidate promoted is the
  procedure fitted on all records.

Pairing removes the noise the two recipes share (most records get the same
pick from both), so small real gains are detectable; the margin keeps the
daemon from thrashing between near-equal recipes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from alchemist.optimizers import defaults
from alchemist.optimizers.data import BoolArray, Float32Array, FloatArray, Snapshot
from alchemist.optimizers.estimator import record_values
from alchemist.optimizers.fitness import FitnessParams, Replay
from alchemist.optimizers.sequential import Evidence, alpha_of, evidence
from alchemist.optimizers.templates import template_delta
from alchemist.optimizers.text_values import text_gains

__all__ = ["GateDecision", "crossfit_gate", "decide", "fold_of", "gate", "split_holdout"]

#: a procedure that fits a candidate genome on a snapshot (for :func:`crossfit_gate`)
Fit = Callable[[Snapshot], FloatArray]

_HASH_PERSON = b"alch-holdout"  # domain separation for the hold-out hash



@dataclass(frozen=True, slots=True)
class GateDecision:
    """The verdict and its evidence (scores are fractions; ``reason`` speaks in points).

    ``candidate`` / ``incumbent``: weighted mean score of each on the records tested;
    ``diff``: their paired mean difference; ``stderr``: its standard error;
    ``n``: records tested with positive weight; ``log_lr``: the test's log evidence
    ratio (promotion needs ``log(1/alpha)``).
    """

    promote: bool
    candidate: float
    incumbent: float
    diff: float
    stderr: float
    n: int
    reason: str
    log_lr: float = 0.0


def gate(
    candidate: FloatArray,
    incumbent: FloatArray,
    holdout: Snapshot,
    params: FitnessParams,
    *,
    margin: float = defaults.MARGIN,
    z: float = defaults.Z,
    min_records: int = defaults.MIN_RECORDS,
    counts: FloatArray | None = None,
) -> GateDecision:
    """Decide whether ``candidate`` may replace ``incumbent`` (whole genomes of ``holdout``).

    ``counts`` is the shrinkage evidence per skill used to decode both genomes;
    pass the daemon's live counts (default: those of ``holdout`` itself).
    """
    _check(margin, z, min_records)
    scores, w, extra = _paired(candidate, incumbent, holdout, params, counts)
    return decide(scores, w, extra, margin, z, min_records, "held-out")


def crossfit_gate(
    fit: Fit,
    incumbent: FloatArray,
    data: Snapshot,
    keys: Sequence[str],
    params: FitnessParams,
    *,
    folds: int = 5,
    margin: float = defaults.MARGIN,
    z: float = defaults.Z,
    min_records: int = defaults.MIN_RECORDS,
    counts: FloatArray | None = None,
) -> tuple[GateDecision, FloatArray]:
    """Test the procedure ``fit`` by cross-fitting; returns the decision and ``fit(data)``.

    Record ``n`` of fold ``f`` is scored with the genome fitted on the other
    folds; what serving each answer is worth comes from the estimator fitted on
    all records (it is the measuring rod, not the thing measured, and each
    record's own rating is part of its value anyway); under ``select`` the texts' qualities
    come from the fold itself, so the fit never saw the noise it is scored on. Template
    genes are not
    tested here: a ``fit`` may carry template changes only once they are
    confirmed on their own evidence (the policy settles them on held-out probes).
    """
    _check(margin, z, min_records)
    fold = fold_of(keys, folds)
    # texts: the qualities a fold is scored with come from that fold alone (text_values)
    values = record_values(data, params.noise) if params.strategy != "select" else None
    parts = [_paired(fit(data.subset(fold != f)), incumbent, data.subset(fold == f), params,
                     counts, None if values is None else values[fold == f])
             for f in range(folds) if (fold == f).any()]
    scores = np.concatenate([s for s, _, _ in parts], axis=1) if parts else np.zeros((2, 0))
    w = np.concatenate([x for _, x, _ in parts]) if parts else np.zeros(0)
    return decide(scores, w, (0.0, 0.0), margin, z, min_records, "cross-fitted"), fit(data)


def _check(margin: float, z: float, min_records: int) -> None:
    if margin < 0 or z < 0 or min_records < 1:
        raise ValueError("gate needs margin >= 0, z >= 0 and min_records >= 1.")


def _paired(candidate: FloatArray, incumbent: FloatArray, data: Snapshot, params: FitnessParams,
            counts: FloatArray | None, values: Float32Array | None = None,
            ) -> tuple[FloatArray, FloatArray, tuple[float, float]]:
    """Both genomes' record scores (2, N) on the records of positive weight, those
    weights, and the template genes' (gain, variance)."""
    pair = np.stack([np.asarray(candidate, np.float64).reshape(-1),
                     np.asarray(incumbent, np.float64).reshape(-1)])
    if pair.shape[1] != data.n_genes:
        raise ValueError(f"genomes have {pair.shape[1]} genes; expected {data.n_genes}.")
    w = np.clip(np.nan_to_num(data.weight.astype(np.float64)), 0.0, None)
    keep = w > 0
    if not keep.any():
        return np.zeros((2, 0)), np.zeros(0), (0.0, 0.0)
    replay = Replay(data, params, values=values, counts=counts)
    extra = (0.0, 0.0)
    if replay.templates is not None:
        extra = template_delta(replay.templates, pair[0, data.n_weights:],
                               pair[1, data.n_weights:], replay.skill_share, len(data.providers))
    scores: FloatArray = replay.record_scores(pair)
    if params.strategy == "select":
        # the paired gain as per-record terms that carry the rating noise of the qualities
        # too (see optimizers.text_values); its mean is unchanged
        picks = replay.picks(replay.effective(pair))
        charge = replay.charges(pair)
        gain = text_gains(data, picks[0], picks[1], params.noise) - (charge[0] - charge[1])
        scores = np.stack([scores[1] + gain, scores[1]])
    return scores[:, keep], w[keep], extra


def decide(scores: FloatArray, w: FloatArray, extra: tuple[float, float], margin: float,
           z: float, min_records: int, how: str) -> GateDecision:
    """The verdict on paired record scores (2, N: candidate, incumbent) of weights ``w``,
    with a further ``extra`` (gain, variance); ``how`` names the records in the reason."""
    n = len(w)
    total = float(w.sum())
    cand = float(scores[0] @ w / total) + extra[0] if n else 0.0
    inc = float(scores[1] @ w / total) if n else 0.0
    ev = evidence(scores[0] - scores[1], w, margin, extra=extra) if n else \
        Evidence(0.0, 0.0, 0.0, 0.0)
    if n < min_records:
        return GateDecision(False, cand, inc, ev.diff, ev.stderr, n,
                            f"Only {n} {how} ratings; need {min_records} before a promotion.",
                            ev.log_lr)
    alpha = alpha_of(z)
    return GateDecision(ev.passes(margin, alpha), cand, inc, ev.diff, ev.stderr, n,
                        _reason(ev, n, margin, alpha, how), ev.log_lr)


def _reason(ev: Evidence, n: int, margin: float, alpha: float, how: str) -> str:
    """The verdict in words (points are percentage points of score)."""
    pts = f"{100 * ev.diff:.1f} pts ± {100 * ev.stderr:.1f}"
    bar = math.log(1.0 / alpha)
    if ev.passes(margin, alpha):
        return (f"Gain {pts} on {n} {how} ratings clears the {100 * margin:.1f} pt margin: "
                f"evidence {ev.log_lr:.1f} >= {bar:.1f} (false promotions <= {100 * alpha:.2g} %).")
    if ev.diff <= 0:
        return f"No gain: the candidate scores {pts} against the incumbent on {n} ratings."
    return (f"Gain {pts} on {n} {how} ratings is within noise: evidence {ev.log_lr:.1f} "
            f"< {bar:.1f} for the {100 * margin:.1f} pt margin.")


def fold_of(keys: Sequence[str], folds: int) -> npt.NDArray[np.int64]:
    """A stable fold in ``[0, folds)`` per record key (the same hash as the hold-out split)."""
    if folds < 1:
        raise ValueError(f"folds must be at least 1, got {folds}.")
    out = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys):
        out[i] = _hash(key) % folds
    return out


def _hash(key: str) -> int:
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, person=_HASH_PERSON).digest()
    return int.from_bytes(digest, "big")


def split_holdout(keys: Sequence[str], share: float = 0.3) -> BoolArray:
    """Stable hold-out mask: True for keys whose blake2b hash falls in the first ``share``.

    The same key gives the same answer in every process, instance and release.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must lie in [0, 1], got {share}.")
    threshold = share * 2.0**64
    out = np.empty(len(keys), dtype=bool)
    for i, key in enumerate(keys):
        out[i] = _hash(key) < threshold
    return out
