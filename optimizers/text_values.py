"""What serving each provider's text would have been worth, under ``select``.

The latent-truth model of :mod:`.estimator` assumes one correct answer per
prompt: after a thumbs-down on the served answer, some *other* answer must be
right. Open text has no such class. Many texts can be good, or none, and
after a thumbs-down every other text looks better than it is. Under that
model the open-text bench claimed 20 to 50-point gains that were not there.

For texts the value is a rating model instead:

* ``r~[n] = (r[n] - noise) / (1 - 2 noise)`` is the debiased rating of the
  served text (its expectation is the chance that the text deserves a thumbs-up);
* ``q[s, m]``: provider ``m``'s quality on skill ``s``, the weighted mean
  ``r~`` of the records where ``m``'s text was served, shrunk toward ``m``'s
  pooled quality by ``_SKILL_K`` records, which is shrunk toward the mean
  rating by ``_PRIOR_K`` records;
* the value of serving ``x``'s text on record ``n`` blends the two by the
  text's similarity ``sigma = sim[n, x, served]`` to the served one::

      V[n, x] = sigma r~[n] + q[s, x] - sigma q[s, served]

  the served text (``sigma = 1``) is worth its own rating; a text unlike it,
  its provider's quality; one close to it, mostly the served text's rating.

Probe records with ground truth are worth it, as under ``vote``.

**Testing a gain with it.** ``V`` is linear in the ratings, and so is the mean
paired gain ``D`` of two recipes (picks ``c[n]`` and ``i[n]``) over records
``n``: ``D = sum_k r~[k] g[k] / W`` for coefficients ``g`` that depend only on
the picks, the similarities and who was served. When every provider is as
good as every other, ``E[r~[k]]`` is the same for all ``k`` and the ``g``
sum to zero, so ``E[D] = 0``; :func:`text_gains` returns the per-record terms
``(r~[k] - mean r~) g[k]``, whose mean is ``D`` and whose spread is the
ratings' own noise, quality estimates included. The promotion gate tests
those. On held-out records (or a cross-fitting fold) the qualities are
estimated from those records alone, so the candidate was not chosen on the
noise it is tested on.
"""

from __future__ import annotations

import numpy as np

from alchemist.optimizers.data import Float32Array, FloatArray, IntArray, Snapshot

__all__ = ["text_gains", "text_quality", "text_values"]

_PRIOR_K = 4.0   # records' worth of the mean rating in a provider's pooled quality
_SKILL_K = 10.0  # records' worth of the pooled quality in a skill's own


def _parts(data: Snapshot, noise: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Debiased ratings (N,; 0 where unrated), record weights (N,; 0 unless rated) and the
    linear map ``G`` (N, S, M) with ``q = einsum("k,ksm->sm", r~, G)``."""
    n, s, m = data.n_records, len(data.skills), len(data.providers)
    reward = data.reward.astype(np.float64)
    rated = ~np.isnan(reward)
    r = np.where(rated, (np.nan_to_num(reward) - noise) / (1.0 - 2.0 * noise), 0.0)
    w = np.where(rated, np.clip(np.nan_to_num(data.weight.astype(np.float64)), 0.0, None), 0.0)
    total = w.sum()
    if total <= 0:
        return r, w, np.zeros((n, s, m))
    served = np.zeros((n, m))
    served[np.arange(n), data.served] = w
    mean = w / total                                              # r~-bar = sum_k mean_k r~_k
    pooled_n = served.sum(axis=0)                                 # (M,)
    pooled = (served + _PRIOR_K * mean[:, None]) / (pooled_n + _PRIOR_K)  # (N, M)
    by_skill = np.zeros((n, s, m))
    by_skill[np.arange(n), data.skill] = served
    own_n = by_skill.sum(axis=0)                                  # (S, M)
    g = (by_skill + _SKILL_K * pooled[:, None, :]) / (own_n + _SKILL_K)[None]
    g[:, 0, :] = pooled                                           # "*" is the pooled row
    return r, w, g


def _sigma(data: Snapshot) -> FloatArray:
    """``sim[n, x, served[n]]`` for every record and provider, shape (N, M); 0 on an unrated
    record (no rating to lean on: every text is worth its provider's quality)."""
    rows = np.arange(data.n_records)
    rated = ~np.isnan(data.reward.astype(np.float64))
    out: FloatArray = data.sim[rows, :, data.served].astype(np.float64) * rated[:, None]
    return out


def text_quality(data: Snapshot, noise: float) -> FloatArray:
    """``q[s, m]``, each provider's estimated text quality per skill, shape (S, M)."""
    r, _, g = _parts(data, noise)
    out: FloatArray = np.einsum("k,ksm->sm", r, g)
    return out


def text_values(data: Snapshot, noise: float) -> Float32Array:
    """``V[n, m]``, the value of serving provider ``m``'s text on record ``n``, shape (N, M)."""
    r, _, g = _parts(data, noise)
    q = np.einsum("k,ksm->sm", r, g)[data.skill]                  # (N, M): q[s_n, m]
    sigma = _sigma(data)
    q_served = q[np.arange(data.n_records), data.served][:, None]
    value = sigma * r[:, None] + q - sigma * q_served
    truth = data.truth.astype(np.float64)
    out: Float32Array = np.where(np.isnan(truth), value, truth).astype(np.float32)
    return out


def text_gains(data: Snapshot, cand: IntArray, inc: IntArray, noise: float) -> FloatArray:
    """Per-record terms (N,) whose weighted mean is the paired gain of the picks ``cand``
    over ``inc`` (-1: none) under :func:`text_values`, and whose spread is the rating noise.

    Divide by each record's weight to feed a test of a weighted mean (the gate does): the
    terms are ``w_k d_k`` summed, then ``/ sum w``.
    """
    n = data.n_records
    r, w, g = _parts(data, noise)
    rows = np.arange(n)
    sigma = _sigma(data)
    pad = np.concatenate([sigma, np.zeros((n, 1))], axis=1)      # pick -1: worth nothing
    ds = pad[rows, cand] - pad[rows, inc]                         # sigma_c - sigma_i
    weight = np.clip(np.nan_to_num(data.weight.astype(np.float64)), 0.0, None)
    truth = data.truth.astype(np.float64)
    probe = ~np.isnan(truth).all(axis=1)
    live = weight * ~probe
    # q terms: sum_n live_n (q[s_n, c_n] - q[s_n, i_n] - ds_n q[s_n, served_n]) = sum_sm B q
    b = np.zeros((len(data.skills), len(data.providers) + 1))
    np.add.at(b, (data.skill, cand), live)
    np.add.at(b, (data.skill, inc), -live)
    np.add.at(b, (data.skill, data.served), -live * ds)
    coef = live * ds + np.einsum("ksm,sm->k", g, b[:, :-1])
    rated = w > 0
    centre = float(r[rated] @ w[rated] / w[rated].sum()) if rated.any() else 0.0
    # centred, the terms carry only the ratings' noise; the mean stays exact (the coefficients
    # sum to zero unless a pick is -1, whose share is put back evenly)
    share = np.where(rated, w, 0.0) / max(float(w.sum()), 1e-300)
    terms = np.where(rated, (r - centre) * coef + centre * float(coef.sum()) * share, 0.0)
    known = np.nan_to_num(np.concatenate([truth, np.zeros((n, 1))], axis=1))
    terms += np.where(probe, weight * (known[rows, cand] - known[rows, inc]), 0.0)
    out: FloatArray = np.divide(terms, weight, out=np.zeros(n), where=weight > 0)
    return out
