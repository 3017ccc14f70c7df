"""What serving each provider's answer would have been worth: the counterfactual values.

A rating only speaks of the served answer. To score a candidate recipe that
would have served another answer, we need the probability that this other
answer was right. We estimate it with a small latent-truth model in the
spirit of Dawid and Skene (1979), fitted by EM over all rated records:

* each provider ``m`` has an accuracy ``a[s, m]`` on skill ``s``;
* on record ``n``, the providers' answers form groups (``sim``); against the
  outcome "no answer is right", group ``g`` has the likelihood ratio
  ``prod_{m in g} a[s_n, m] / ((1 - a[s_n, m]) * c)``: each member is right,
  rather than wrong *and* landing on that same answer by chance (``c``, the
  chance that two wrong answers agree; weighted majority vote odds);
* the rating of the served answer is a noisy observation: a thumbs-up has
  probability ``1 - noise`` when the served answer's group is correct and
  ``noise`` otherwise (a thumbs-down the other way round).

The E-step gives ``P(group of m is correct | answers, rating)`` for every
record and provider; the M-step re-estimates ``a`` as the mean of those
posteriors over the records where ``m`` answered, shrunk toward the pooled
``"*"`` row so a skill with few records stays close to it. Probe records
carry ground truth and are used as it. The value of serving ``m``'s answer
on ``n`` is its posterior.

Why not simply trust the answer with most support? Because the recipe that
served the experience chose by support: under it, an alternative backed by
one reliable provider looks no better than one backed by an unreliable one,
and learning stalls exactly where the served recipe was misled (correlated
weak providers outvoting a strong one). The reliability model separates them.

Assumptions: one correct answer class per prompt; symmetric rating noise of
the configured rate; providers err independently given the truth (the prior
odds overstate agreement among providers that share mistakes; the rating
term corrects that on rated records). ``propensity`` is not needed: the
value of each candidate answer is modelled directly (the *direct method*),
and ``explore`` only widens what the ratings cover.
"""

from __future__ import annotations

import numpy as np

from alchemist.optimizers.data import Float32Array, FloatArray, Snapshot

__all__ = ["fit_accuracy", "record_values"]

_EM_STEPS = 6
_PRIOR_ACC = 0.6     # accuracy a provider starts with before any evidence
_PRIOR_N = 2.0       # ... worth this many records
_SKILL_K = 10.0      # a skill's accuracy borrows this many records' worth from "*"
_CLIP = (0.02, 0.98)
_MAX_SUPPORT = 3.0   # cap on a group's prior log-odds: a rating (odds 9 at 10% noise) can still flip it
_CHANCE = 0.2        # c: how often a wrong answer lands on one given other answer


def _posteriors(data: Snapshot, acc: FloatArray, noise: float) -> FloatArray:
    """E-step: P(provider m's answer is correct) for every record, shape (N, M)."""
    n = data.n_records
    rows = np.arange(n)
    ans = data.answered.astype(np.float64)
    sim = data.sim.astype(np.float64) * ans[:, None, :]          # agreement with answerers only
    a = np.clip(acc[data.skill], *_CLIP)
    logit = (np.log(a / (1.0 - a)) - np.log(_CHANCE)) * ans
    # the prior may not overrule a rating: providers' errors correlate, so their
    # summed log-odds overstate the evidence; a cap keeps the rating decisive
    support = np.minimum(np.einsum("nmk,nk->nm", sim, logit), _MAX_SUPPORT)
    size = np.maximum(sim.sum(axis=2), 1e-9)                     # members of m's group
    reward = data.reward.astype(np.float64)
    up = np.nan_to_num(reward, nan=0.0) >= 0.5
    rated = ~np.isnan(reward)
    same = data.sim[rows, :, data.served].astype(np.float64)     # m's answer is the served one
    hit = np.where(up, 1.0 - noise, noise)[:, None]              # P(rating | served right)
    miss = np.where(up, noise, 1.0 - noise)[:, None]             # P(rating | served wrong)
    lik = np.where(rated[:, None], same * hit + (1.0 - same) * miss, 1.0)
    lik_none = np.where(rated, miss[:, 0], 1.0)
    top = np.maximum(support.max(axis=1, initial=0.0), 0.0)[:, None]
    u = np.exp(support - top) * lik * ans
    z = (u / size).sum(axis=1) + np.exp(-top[:, 0]) * lik_none
    post = u / np.maximum(z, 1e-300)[:, None]
    truth = data.truth.astype(np.float64)
    out: FloatArray = np.clip(np.where(np.isnan(truth), post, truth), 0.0, 1.0)
    return out


def fit_accuracy(data: Snapshot, noise: float) -> tuple[FloatArray, FloatArray]:
    """EM fit of per-skill provider accuracies; returns ``(acc (S, M), posteriors (N, M))``."""
    s_count, m = len(data.skills), len(data.providers)
    acc = np.full((s_count, m), _PRIOR_ACC)
    post = np.zeros((data.n_records, m))
    if data.n_records == 0:
        return acc, post
    w = (np.clip(np.nan_to_num(data.weight.astype(np.float64)), 0.0, None)[:, None]
         * data.answered)
    for _ in range(_EM_STEPS):
        post = _posteriors(data, acc, noise)
        hits = np.zeros((s_count, m))
        seen = np.zeros((s_count, m))
        np.add.at(hits, data.skill, w * post)
        np.add.at(seen, data.skill, w)
        pooled = (hits.sum(0) + _PRIOR_N * _PRIOR_ACC) / (seen.sum(0) + _PRIOR_N)
        acc = (hits + _SKILL_K * pooled) / (seen + _SKILL_K)
        acc[0] = pooled
    return acc, _posteriors(data, acc, noise)


def record_values(data: Snapshot, noise: float) -> Float32Array:
    """Counterfactual value of serving provider m's answer on record n, shape (N, M)."""
    _, post = fit_accuracy(data, noise)
    out: Float32Array = np.nan_to_num(post, nan=0.0).astype(np.float32)
    return out
