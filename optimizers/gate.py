"""The promotion gate: promote a candidate only when held-out evidence says so.

The gate replays the candidate and the incumbent on the *same* held-out
records and runs a paired, one-sided z-test on the per-record differences of
their scores (``value[n, pick]`` minus the per-record cost charge, see
:mod:`alchemist.optimizers.fitness`), weighted by record weight::

    d_n     = score_candidate[n] - score_incumbent[n]
    diff    = sum_n w_n d_n / sum_n w_n
    stderr  = sqrt( sum_n w_n (d_n - diff)^2 / sum_n w_n / (n_eff - 1) ),
    n_eff   = (sum_n w_n)^2 / sum_n w_n^2          (Kish effective sample size)
    promote iff  n >= min_records  and  diff - z * stderr > margin

With template genes (:mod:`alchemist.optimizers.templates`), the template part of the
difference is measured on the held-out probe answers and adds to both::

    diff   += sum_k c_k (acc[k, cand_k] - acc[k, inc_k])
    stderr  = sqrt(stderr^2 + sum_k c_k^2 (var[k, cand_k] + var[k, inc_k]))

over the genes that differ (``c_k``: the skill's share over ``M``).

Pairing removes the noise the two recipes share (most records get the same
pick from both), so small real gains are detectable; the margin and the
one-sided ``z`` (2.33 ~ 1 % false promotions per test) keep the daemon from
thrashing between near-equal recipes.

Hold-out membership comes from :func:`split_holdout`, a stable hash of each
record's key, so every daemon instance (and every restart) agrees on it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from alchemist.optimizers import defaults
from alchemist.optimizers.data import BoolArray, FloatArray, Snapshot
from alchemist.optimizers.fitness import FitnessParams, Replay
from alchemist.optimizers.templates import template_delta

__all__ = ["GateDecision", "gate", "split_holdout"]

_HASH_PERSON = b"alch-holdout"  # domain separation for the hold-out hash



@dataclass(frozen=True, slots=True)
class GateDecision:
    """The verdict and its evidence (scores are fractions; ``reason`` speaks in points).

    ``candidate`` / ``incumbent``: weighted mean hold-out score of each;
    ``diff``: their paired mean difference; ``stderr``: its standard error;
    ``n``: held-out records with positive weight.
    """

    promote: bool
    candidate: float
    incumbent: float
    diff: float
    stderr: float
    n: int
    reason: str


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
    if margin < 0 or z < 0 or min_records < 1:
        raise ValueError("gate needs margin >= 0, z >= 0 and min_records >= 1.")
    genes = holdout.n_genes
    pair = np.stack([np.asarray(candidate, np.float64).reshape(-1),
                     np.asarray(incumbent, np.float64).reshape(-1)])
    if pair.shape[1] != genes:
        raise ValueError(f"genomes have {pair.shape[1]} genes; expected {genes}.")
    w = np.clip(np.nan_to_num(holdout.weight.astype(np.float64)), 0.0, None)
    keep = w > 0
    n = int(keep.sum())
    replay = Replay(holdout, params, counts=counts)
    t_diff = t_var = 0.0
    if replay.templates is not None:
        t_diff, t_var = template_delta(replay.templates, pair[0, holdout.n_weights :],
                                       pair[1, holdout.n_weights :], replay.skill_share,
                                       len(holdout.providers))
    cand = inc = diff = stderr = 0.0
    if n:
        cand, inc, diff, var = _paired(replay.record_scores(pair)[:, keep], w[keep])
        stderr = math.sqrt(var + t_var)
        cand += t_diff
        diff += t_diff
    if n < min_records:
        return GateDecision(
            False, cand, inc, diff, stderr, n,
            f"Only {n} held-out ratings; need {min_records} before a promotion.",
        )
    lower = diff - z * stderr
    return GateDecision(lower > margin, cand, inc, diff, stderr, n,
                        _reason(diff, stderr, lower, n, margin, z))


def _paired(scores: FloatArray, w: FloatArray) -> tuple[float, float, float, float]:
    """Weighted means of both rows of ``scores`` (2, N), their paired difference and the
    variance of that mean difference (over the Kish effective sample size)."""
    total = float(w.sum())
    cand = float(scores[0] @ w / total)
    inc = float(scores[1] @ w / total)
    d = scores[0] - scores[1]
    diff = float(d @ w / total)
    n_eff = total * total / float(w @ w)
    var = float(((d - diff) ** 2) @ w / total)
    return cand, inc, diff, var / max(n_eff - 1.0, 1.0)


def _reason(diff: float, stderr: float, lower: float, n: int, margin: float, z: float) -> str:
    """The verdict in words (points are percentage points of score)."""
    pts = f"{100 * diff:.1f} pts ± {100 * stderr:.1f}"
    if lower > margin:
        return (
            f"Gain {pts} on {n} held-out ratings clears the {100 * margin:.1f} pt margin "
            f"at z = {z:g}."
        )
    if diff <= 0:
        return f"No gain: the candidate scores {pts} against the incumbent on {n} ratings."
    return (
        f"Gain {pts} is within noise: {100 * lower:.1f} pts after z = {z:g} standard "
        f"errors does not clear the {100 * margin:.1f} pt margin."
    )


def split_holdout(keys: Sequence[str], share: float = 0.3) -> BoolArray:
    """Stable hold-out mask: True for keys whose blake2b hash falls in the first ``share``.

    The same key gives the same answer in every process, instance and release.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must lie in [0, 1], got {share}.")
    threshold = share * 2.0**64
    out = np.empty(len(keys), dtype=bool)
    for i, key in enumerate(keys):
        digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, person=_HASH_PERSON).digest()
        out[i] = int.from_bytes(digest, "big") < threshold
    return out
