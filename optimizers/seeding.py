"""Seeding a population from live evidence and the current recipe, not from noise alone.

:func:`agreement_weights` turns ratings into a weight matrix: for each skill,
how often each provider agreed with an up-voted served answer (and with the
truth on probe records), Laplace-smoothed, shrunk toward the pooled ``"*"``
row, and mapped into [0, 1] by log-odds (the optimal weights of a weighted
majority vote among independent voters), so a provider no better than a coin
flip gets weight 0. :func:`seed_population` mixes the incumbent recipe, these
agreement weights, noisy variants of both and a few uniform genomes; their
template genes (when the snapshot has any) are the incumbent's, each gene's
best-measured template, variants of those, and random options.
"""

from __future__ import annotations

import numpy as np

from alchemist.optimizers.data import FloatArray, Snapshot
from alchemist.optimizers.fitness import FitnessParams, Replay
from alchemist.optimizers.templates import TemplateStats
from alchemist.optimizers.text_values import text_quality

__all__ = ["agreement_weights", "seed_population"]

_UNIFORM_SHARE = 0.1  # share of seeded rows drawn uniformly, to keep diversity
_SIGMAS = (0.05, 0.1, 0.2)  # noise levels of the variants, cycled
_TEMPLATE_JUMP = 0.2  # share of a variant's template genes moved to another option
_SHARPNESS = (1.0, 2.0, 4.0, 8.0, 16.0)  # powers of the quality weights under select


def agreement_weights(data: Snapshot, params: FitnessParams) -> FloatArray:
    """Per-skill agreement-based weights in [0, 1], shape (S, M); row 0 is ``"*"``.

    Evidence per record and provider: ``sim[n, m, served[n]]`` on up-voted
    records where ``m`` answered, ``truth[n, m]`` on probe records. Rates are
    ``(agree + 1) / (seen + 2)`` pooled over all records for ``"*"``; a skill's
    rate is ``(agree_s + k * rate_*) / (seen_s + k)`` with ``k = shrink_k``.

    Under ``select`` texts do not agree the way answers do (a good text need not
    resemble the up-voted one): see :func:`_quality_weights`.
    """
    if params.strategy == "select":
        return _quality_weights(data, params)
    s_count, m = len(data.skills), len(data.providers)
    n = data.n_records
    agree = np.zeros((s_count, m))
    seen = np.zeros((s_count, m))
    if n:
        w = np.clip(np.nan_to_num(data.weight.astype(np.float64)), 0.0, None)
        truth = data.truth.astype(np.float64)
        has_truth = ~np.isnan(truth)
        up = np.nan_to_num(data.reward.astype(np.float64), nan=0.0) >= 0.5
        rated_up = up[:, None] & data.answered & ~has_truth  # NaN reward (probe) is not up
        to_served = data.sim[np.arange(n), :, data.served].astype(np.float64)
        evidence = np.where(has_truth, np.nan_to_num(truth), to_served)
        counted = (has_truth | rated_up) * w[:, None]
        np.add.at(agree, data.skill, counted * evidence)
        np.add.at(seen, data.skill, counted)
    pooled = (agree.sum(axis=0) + 1.0) / (seen.sum(axis=0) + 2.0)
    k = params.shrink_k
    rate = np.empty((s_count, m))
    rate[0] = pooled
    denom = seen[1:] + k
    rate[1:] = np.where(
        denom > 0, (agree[1:] + k * pooled) / np.where(denom > 0, denom, 1.0), pooled
    )
    rate = np.clip(rate, 1e-3, 1.0 - 1e-3)
    logit = np.maximum(np.log(rate / (1.0 - rate)), 0.0)
    top = logit.max(axis=1, keepdims=True)
    by_rate = rate / rate.max(axis=1, keepdims=True)
    out: FloatArray = np.where(top > 0, logit / np.where(top > 0, top, 1.0), by_rate)
    return np.clip(out, 0.0, 1.0)


def _quality_weights(data: Snapshot, params: FitnessParams) -> FloatArray:
    """``select``: each provider's estimated text quality
    (:func:`~alchemist.optimizers.text_values.text_quality`) over the best's, to the power
    of :data:`_SHARPNESS` that scores best on ``data`` (uniform while nobody's quality is
    above 0).

    The power decides how far a consensus of weaker texts may outvote a better one: at 1
    three bland providers that resemble each other outweigh one good provider whose texts
    resemble nobody's; at 16 the best provider's text is served unless its quality is shared.
    """
    quality = np.clip(text_quality(data, params.noise), 0.0, None)
    top = quality.max(axis=1, keepdims=True)
    base = np.where(top > 0, quality / np.where(top > 0, top, 1.0), 1.0)
    options: FloatArray = np.stack([base ** p for p in _SHARPNESS])
    pick = 0 if data.n_records == 0 else int(np.argmax(
        Replay(data, params).fitness(options.reshape(len(_SHARPNESS), -1))))
    best: FloatArray = options[pick]
    return best


def seed_population(
    incumbent: FloatArray,
    data: Snapshot,
    size: int,
    rng: np.random.Generator,
    params: FitnessParams,
) -> FloatArray:
    """A (size, genes) population: incumbent, agreement weights, noisy variants, a few uniform.

    Row 0 is the incumbent and row 1 the agreement weights with each template
    gene's best-measured option (when ``size`` allows); variants alternate
    between the two with Gaussian noise of increasing scale on the weights and
    a few template genes moved; about a tenth of the rows are uniform.
    """
    w, genes = data.n_weights, data.n_genes
    full = np.asarray(incumbent, dtype=np.float64).reshape(-1)
    if full.shape != (genes,):
        raise ValueError(f"incumbent has {full.size} genes; expected {genes}.")
    if size < 1:
        raise ValueError(f"population size must be at least 1, got {size}.")
    base = np.clip(full[:w], 0.0, 1.0)
    stats = TemplateStats.of(data)
    agreement = agreement_weights(data, params).reshape(-1)
    pop = np.empty((size, w))
    pop[0] = base
    if size > 1:
        pop[1] = agreement
    rest = size - 2
    n_variant = n_uniform = 0
    if rest > 0:
        n_uniform = min(rest, max(1, round(_UNIFORM_SHARE * size)))
        n_variant = rest - n_uniform
        parents = np.where((np.arange(n_variant) % 2 == 0)[:, None], base, agreement)
        sigmas = np.asarray(_SIGMAS)[np.arange(n_variant) // 2 % len(_SIGMAS)][:, None]
        pop[2 : 2 + n_variant] = parents + rng.normal(0.0, 1.0, (n_variant, w)) * sigmas
        pop[2 + n_variant :] = rng.random((n_uniform, w))
    out: FloatArray = np.clip(pop, 0.0, 1.0)
    if stats is None:
        return out
    space = stats.genes
    mine = space.clip(full[None, w:])[0]
    seeds = np.empty((size, space.n))
    seeds[0] = mine
    if size > 1:
        seeds[1] = stats.best()
    if n_variant:
        parents = np.where((np.arange(n_variant) % 2 == 0)[:, None], mine, seeds[1])
        hit = rng.random((n_variant, space.n)) < _TEMPLATE_JUMP
        seeds[2 : 2 + n_variant] = space.mutate(parents, rng.random(hit.shape), hit)
    if n_uniform:
        seeds[2 + n_variant :] = np.floor(rng.random((n_uniform, space.n)) * space.options)
    return np.concatenate([out, seeds], axis=1)
