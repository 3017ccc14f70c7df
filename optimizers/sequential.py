"""An always-valid test of a mean gain: the mixture sequential probability ratio test.

The gate looks at the evidence at every evolver step, and the evidence only
grows. A fixed-sample test (``diff - z * stderr > margin``) asked again and
again will sooner or later pass by chance: with enough looks, false
promotions approach certainty. The mixture SPRT (Robbins 1970; Johari, Pekelis
and Walsh, "Always valid inference", 2017, as used in online A/B testing)
bounds them over *every* look at once: under the null hypothesis the
likelihood ratio ``L_n`` is a nonnegative martingale with mean 1, so by
Ville's inequality ``P(L_n >= 1/alpha for some n) <= alpha``.

For paired per-record gains ``d_i`` with mean ``mu`` and variance ``s2``, the
null ``mu <= mu0`` (``mu0``: the gate's margin) against a normal mixture
``mu ~ N(mu0, tau^2)`` over the alternative gives, after ``n`` records with
mean ``mean``::

    log L_n = 0.5 log(s2 / (s2 + n tau^2))
              + n^2 tau^2 (mean - mu0)^2 / (2 s2 (s2 + n tau^2))

and the test promotes once ``mean > mu0`` and ``log L_n >= log(1/alpha)``. Weighted
records count by their weight, as the README says a probe counts (``probes.weight``
ratings; a record's weight is 1 otherwise, less under a user's cap); ``s2`` is the plug-in sample
variance (the usual practice; it makes the bound approximate for small ``n``,
which ``min_records`` guards), taken over the records plus two pseudo-records
with gains +1 and -1: gains are rare, large events (a pick right where the other
was wrong), and a few dozen records in which none happened say little. ``tau``
sets which gains the test is quickest to see (:data:`TAUS`; several scales average
their ratios, which is still a test martingale).

The price of validity under continuous monitoring is a higher bar at any one
look: about ``sqrt(2 log(1/alpha) + log(n tau^2 / s2))`` standard errors instead of
``z``. Cross-fitting (every rating evaluates, none is set aside) pays it back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from alchemist.optimizers.data import FloatArray

__all__ = ["TAUS", "Evidence", "alpha_of", "evidence"]

#: the mixture's scales; a gain of about each size is seen soonest by its part. From 2 to 20
#: points: with one scale of 2 points, a 5-point gain on 800 perfectly labelled prompts never
#: passed, nor a 20-point one on 440 ratings (benchmarks/gate_power.py, the open-text fleet).
#: (Wider scales once let the open-text estimator's false gains through; texts now have a
#: rating model whose gain is exactly 0 in expectation when providers are equally good.)
TAUS = (0.02, 0.05, 0.1, 0.2)
_PSEUDO = np.array([1.0, -1.0])
_MIN_VAR = 1e-6  # a floor for the per-record variance (gains lie in [-1, 1])


@dataclass(frozen=True, slots=True)
class Evidence:
    """The test's state after the records seen: the observed mean gain, the standard
    error the test uses (pseudo-records included), the effective size, ``log L``."""

    diff: float
    stderr: float
    n_eff: float
    log_lr: float

    def passes(self, margin: float, alpha: float) -> bool:
        """True when the gain exceeds ``margin`` with false-promotion probability <= ``alpha``."""
        return self.diff > margin and self.log_lr >= math.log(1.0 / alpha)


def alpha_of(z: float) -> float:
    """The one-sided tail probability of ``z`` standard errors: ``P(Z > z)``."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def evidence(d: FloatArray, w: FloatArray, margin: float, taus: tuple[float, ...] = TAUS, *,
             extra: tuple[float, float] = (0.0, 0.0)) -> Evidence:
    """The mixture SPRT's evidence that the weighted mean of ``d`` exceeds ``margin``.

    ``taus``: the mixture's scales; the ratio is their average (still a test martingale).

    ``extra``: a further gain and the variance of its estimate (the template genes'
    part, measured on probe answers) added to the mean and to its variance.
    """
    total = float(w.sum())
    if total <= 0.0:
        return Evidence(0.0, 0.0, 0.0, 0.0)
    observed = float(d @ w / total) + extra[0]
    # two pseudo-records, gains +1 and -1, of a record's mean weight: until the evidence
    # is large, a run of records that all gained alike (a cost saving where no pick's
    # accuracy differed yet) cannot look certain; their pull fades as records accrue
    pseudo = total / len(w)
    d = np.concatenate([d, _PSEUDO])
    w = np.concatenate([w, [pseudo, pseudo]])
    total += 2.0 * pseudo
    n_eff = total  # frequency weights: a probe of weight 3 counts as three ratings
    mean = float(d @ w / total)
    var_mean = (float(((d - mean) ** 2) @ w / total) / max(n_eff - 1.0, 1.0)) + extra[1]
    diff = mean + extra[0]
    stderr = math.sqrt(var_mean)
    if diff <= margin:
        return Evidence(observed, stderr, n_eff, 0.0)
    var = max(var_mean * n_eff, _MIN_VAR)  # per record, as the mixture formula counts it
    logs = [_log_lr(var, n_eff, diff - margin, tau) for tau in taus]
    top = max(logs)  # the mean of the mixtures' ratios, in logs
    log_lr = top + math.log(sum(math.exp(x - top) for x in logs) / len(logs))
    return Evidence(observed, stderr, n_eff, log_lr)


def _log_lr(var: float, n: float, gap: float, tau: float) -> float:
    t2 = tau * tau
    spread = var + n * t2
    return 0.5 * math.log(var / spread) + n * n * t2 * gap * gap / (2.0 * var * spread)

