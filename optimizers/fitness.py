"""Fitness of candidate recipes: a counterfactual replay over rated experience.

A *genome* is a flat float64 vector of ``S * M`` weights in [0, 1] (``S``
skills with ``"*"`` at row 0, ``M`` providers); ``W = genome.reshape(S, M)``.
A population is a ``(P, S * M)`` array, scored all at once.

Decoding (the live daemon does exactly this)
---------------------------------------------
*Shrinkage.* Per-skill rows borrow strength from the ``"*"`` row::

    eff[s] = a_s * W[s] + (1 - a_s) * W[0],   a_s = c_s / (c_s + shrink_k),   s >= 1
    eff[0] = W[0]

where ``c_s`` is the evidence for skill ``s``: the summed weight of its
records (ratings and probes alike, see :func:`skill_counts`). A skill with a
handful of ratings therefore decides almost like ``"*"``.

*Calling.* Provider ``m`` is called for skill ``s`` iff ``eff[s, m] >= min_weight``.

*Fusion pick* of one record under its skill's effective row ``w``::

    w_eff = w * called * answered[n]
    score = sim[n] @ w_eff + 1e-6 * w_eff
    score[~(called & answered[n])] = -inf
    pick  = argmax(score)          (first index on ties; -1 if nobody is available)

Estimator (what a pick is worth)
--------------------------------
``value[n, m]`` estimates the reward had provider ``m``'s answer been served
on record ``n``: ground truth on probe records, and on rated records the
posterior probability that ``m``'s answer is right under a latent-truth
model of provider accuracies fitted by EM (:mod:`alchemist.optimizers.estimator`,
which documents the model and its assumptions). Under ``select`` (open text,
no single right answer) it is a rating model of texts instead
(:mod:`alchemist.optimizers.text_values`).

Fitness of an individual is the record-weighted mean of ``value[n, pick]``
minus a cost term, ``cost_weight * mean_n(sum_m called[s_n, m] * cost[m]) / M``,
with the same record weights (with no records, skills count equally).

Template genes, when the snapshot has them, follow the weights in the genome
and add the measured accuracy gain of their templates
(:mod:`alchemist.optimizers.templates`); the weights are decoded as above.

Speed
-----
Picks for the whole population come from one small matrix product per skill
and record chunk (the unanswered mask and the tie-break ride along as extra
columns), then a max over providers whose lowest mantissa bits carry the
provider index, so the first index wins ties without a per-row ``argmax``
(measured 4x faster). Scores within a few ulps count as ties. Mathematically
equal scores can differ by an ulp under another summation order (BLAS, FMA)
in this replay as in the daemon's own ``sim @ w``, so between exactly tied
providers either may win; a clear winner is always the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from alchemist.answers.recipes import DEFAULT_PARAMS, STRATEGIES, Strategy
from alchemist.optimizers import defaults
from alchemist.optimizers.data import Float32Array, FloatArray, IntArray, Snapshot
from alchemist.optimizers.estimator import record_values
from alchemist.optimizers.templates import TemplateStats
from alchemist.optimizers.text_values import text_values

__all__ = [
    "FitnessParams",
    "Replay",
    "effective_weights",
    "fitness",
    "picks",
    "record_values",
    "skill_counts",
    "values_of",
]

_EPS = 1e-9
_TIE_BREAK = 1e-6
_UNANSWERED = -1e30  # added to the score of a provider that gave no answer
_UNCALLED = -1e300  # added to the score of a provider the recipe does not call
_NONE_LEFT = -1e29  # a best score below this means nobody was available
_CHUNK_BYTES = 1 << 20  # score block per matrix product, sized to stay in cache


@dataclass(frozen=True, slots=True)
class FitnessParams:
    """How a genome is decoded and scored.

    ``min_weight``: effective weight below which a provider is not called.
    ``cost_weight``: fitness points charged per unit of mean relative call cost.
    ``shrink_k``: records of evidence at which a skill's own row counts half.
    ``noise``: assumed probability that a rating is flipped.
    ``strategy``: the recipe's; it decides what a pick is worth (:func:`values_of`).
    """

    min_weight: float = DEFAULT_PARAMS.min_weight
    cost_weight: float = defaults.COST_WEIGHT
    shrink_k: float = defaults.SHRINK_K
    noise: float = defaults.NOISE
    strategy: Strategy = "vote"

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_weight <= 1.0:
            raise ValueError(f"min_weight must lie in [0, 1], got {self.min_weight}.")
        if not (self.cost_weight >= 0.0 and np.isfinite(self.cost_weight)):
            raise ValueError(
                f"cost_weight must be a finite number >= 0, got {self.cost_weight}."
            )
        if not (self.shrink_k >= 0.0 and np.isfinite(self.shrink_k)):
            raise ValueError(f"shrink_k must be a finite number >= 0, got {self.shrink_k}.")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, "
                             f"not {self.strategy!r}.")
        if not 0.0 <= self.noise < 0.5:
            raise ValueError(
                f"noise must lie in [0, 0.5): at 0.5 a rating carries no information; "
                f"got {self.noise}."
            )


def values_of(data: Snapshot, params: FitnessParams) -> Float32Array:
    """What serving each provider's answer on each record is worth, shape (N, M): the
    latent-truth estimator under ``vote``, the rating model of texts under ``select``."""
    if params.strategy == "select":
        return text_values(data, params.noise)
    return record_values(data, params.noise)


def skill_counts(data: Snapshot) -> FloatArray:
    """Evidence per skill: the summed weight of its records, ratings and probes, shape (S,)."""
    counts: FloatArray = np.bincount(
        data.skill, weights=data.weight.astype(np.float64), minlength=len(data.skills)
    ).astype(np.float64)
    return counts


def effective_weights(
    population: FloatArray, skill_counts: FloatArray, params: FitnessParams
) -> FloatArray:
    """Decode genomes into shrunk per-skill weights, shape (P, S, M).

    ``population`` is (P, S*M) or (P, S, M); ``skill_counts`` is (S,). Values
    are clipped to [0, 1] first (a no-op for valid genomes).
    """
    counts = np.asarray(skill_counts, dtype=np.float64)
    s = counts.shape[0]
    pop = np.asarray(population, dtype=np.float64)
    if pop.ndim == 2:
        if pop.shape[1] % s:
            raise ValueError(f"genome length {pop.shape[1]} is not a multiple of {s} skills.")
        pop = pop.reshape(pop.shape[0], s, -1)
    if pop.ndim != 3 or pop.shape[1] != s:
        raise ValueError(f"population has shape {pop.shape}; expected (P, {s}*M) or (P, {s}, M).")
    w = np.clip(pop, 0.0, 1.0)
    denom = counts + params.shrink_k
    alpha = np.divide(counts, denom, out=np.ones_like(counts), where=denom > 0)
    alpha[0] = 1.0
    a = alpha[None, :, None]
    out: FloatArray = a * w + (1.0 - a) * w[:, :1, :]
    return out


class Replay:
    """One snapshot prepared for scoring many populations (one evolution step).

    Build it once per step; :meth:`fitness` is then the per-generation cost.
    ``values`` defaults to :func:`record_values`, ``counts`` (the shrinkage
    evidence) to :func:`skill_counts` of ``data``; pass the training counts
    when scoring a hold-out subset so it decodes genomes like the daemon does.
    """

    def __init__(
        self,
        data: Snapshot,
        params: FitnessParams,
        *,
        values: Float32Array | None = None,
        counts: FloatArray | None = None,
    ) -> None:
        self.data = data
        self.params = params
        n, m = data.n_records, len(data.providers)
        self.counts = skill_counts(data) if counts is None else np.asarray(counts, np.float64)
        if self.counts.shape != (len(data.skills),):
            raise ValueError(
                f"counts has shape {self.counts.shape}; expected ({len(data.skills)},)."
            )
        vals = values_of(data, params) if values is None else values
        if vals.shape != (n, m):
            raise ValueError(f"values has shape {vals.shape}; expected ({n}, {m}).")
        self._order: IntArray = np.argsort(data.skill, kind="stable")
        self._bounds = np.searchsorted(data.skill[self._order], np.arange(len(data.skills) + 1))
        srt = self._order
        # Operand rows per provider m: [sim[n, m, k] * answered[n, k] for k] + [penalty, 1].
        operand = np.empty((m, m + 2, n), np.float64)
        operand[:, :m, :] = (data.sim[srt] * data.answered[srt][:, None, :]).transpose(1, 2, 0)
        operand[:, m, :] = np.where(data.answered[srt], 0.0, _UNANSWERED).T
        operand[:, m + 1, :] = 1.0
        self._operand = operand
        # Value table with a zero column M for "nobody available".
        padded = np.zeros((n, m + 1), np.float64)
        padded[:, :m] = np.nan_to_num(vals[srt].astype(np.float64), nan=0.0)
        self._values = padded.ravel()
        w = np.clip(np.nan_to_num(data.weight[srt].astype(np.float64)), 0.0, None)
        self._total = float(w.sum())
        per_skill = np.bincount(data.skill[srt], weights=w, minlength=len(data.skills))
        s = len(data.skills)
        self._skill_share = per_skill / self._total if self._total > 0 else np.full(s, 1.0 / s)
        self._index_bits = max(1, (m - 1).bit_length())
        self._weights = w
        self.templates = TemplateStats.of(data)

    def effective(self, population: FloatArray) -> FloatArray:
        """Effective (shrunk) weights of a population (its weight genes) under this replay's counts."""
        pop = np.asarray(population, dtype=np.float64)
        if pop.ndim == 2:
            pop = pop[:, : self.data.n_weights]
        return effective_weights(pop, self.counts, self.params)

    def _scan(self, eff: FloatArray, min_weight: float) -> Iterator[tuple[int, int, IntArray]]:
        """Yield (lo, hi, pick) per chunk of skill-sorted records; pick M = nobody available."""
        p, s_count, m = eff.shape
        want = (len(self.data.skills), len(self.data.providers))
        if (s_count, m) != want:
            raise ValueError(f"effective weights have shape {eff.shape}; expected (P, *{want}).")
        called = eff >= min_weight
        mask = np.int64((1 << self._index_bits) - 1)
        code = (mask - np.arange(m, dtype=np.int64))[:, None, None]
        chunk = max(32, _CHUNK_BYTES // (8 * m * max(p, 1)))
        lhs = np.empty((m, p, m + 2), np.float64)
        for s in range(s_count):
            lo, hi = int(self._bounds[s]), int(self._bounds[s + 1])
            if lo == hi:
                continue
            lhs[:, :, :m] = np.where(called[:, s, :], eff[:, s, :], 0.0)[None]
            lhs[:, :, m] = 1.0
            lhs[:, :, m + 1] = np.where(called[:, s, :], _TIE_BREAK * eff[:, s, :], _UNCALLED).T
            for c0 in range(lo, hi, chunk):
                c1 = min(hi, c0 + chunk)
                score = np.matmul(lhs, self._operand[:, :, c0:c1])  # (M, P, n)
                bits = score.view(np.int64)
                np.bitwise_and(bits, ~mask, out=bits)
                np.bitwise_or(bits, code, out=bits)
                best = score.max(axis=0)
                pick = mask - (best.view(np.int64) & mask)
                pick[best < _NONE_LEFT] = m
                yield c0, c1, pick

    def picks(self, eff: FloatArray, min_weight: float | None = None) -> IntArray:
        """Fusion picks (P, N) in record order under effective weights (P, S, M); -1 = none."""
        mw = self.params.min_weight if min_weight is None else min_weight
        m = len(self.data.providers)
        out = np.empty((eff.shape[0], self.data.n_records), np.int64)
        for c0, c1, pick in self._scan(eff, mw):
            out[:, self._order[c0:c1]] = np.where(pick == m, -1, pick)
        return out

    def charges(self, population: FloatArray) -> FloatArray:
        """The cost charge of each genome on each record, shape (P, N), in record order."""
        out: FloatArray = self._cost_per_skill(self.effective(population))[:, self.data.skill]
        return out

    def _cost_per_skill(self, eff: FloatArray) -> FloatArray:
        """Cost charge per individual and skill, shape (P, S)."""
        called = (eff >= self.params.min_weight).astype(np.float64)
        m = len(self.data.providers)
        charge: FloatArray = self.params.cost_weight * (called @ self.data.cost) / m
        return charge

    @property
    def skill_share(self) -> FloatArray:
        """Each skill's share of the record weight (S,); equal shares with no records."""
        return self._skill_share

    def record_scores(self, population: FloatArray) -> FloatArray:
        """Per-record score (P, N) in record order: value at the pick minus the cost charge."""
        eff = self.effective(population)
        m1 = len(self.data.providers) + 1
        out = np.empty((eff.shape[0], self.data.n_records), np.float64)
        for c0, c1, pick in self._scan(eff, self.params.min_weight):
            flat = pick + (np.arange(c0, c1) * m1)[None, :]
            out[:, self._order[c0:c1]] = self._values[flat]
        charge = self._cost_per_skill(eff)
        out -= charge[:, self.data.skill]
        return out

    def fitness(self, population: FloatArray) -> FloatArray:
        """Fitness (P,) of each genome: weighted mean value of its picks minus the cost term."""
        eff = self.effective(population)
        m1 = len(self.data.providers) + 1
        gain = np.zeros(eff.shape[0], np.float64)
        if self._total > 0:
            for c0, c1, pick in self._scan(eff, self.params.min_weight):
                flat = pick + (np.arange(c0, c1) * m1)[None, :]
                gain += self._values[flat] @ self._weights[c0:c1]
            gain /= self._total
        cost = self._cost_per_skill(eff) @ self._skill_share
        pop = np.asarray(population, np.float64)
        if self.templates is not None and pop.ndim == 2 and pop.shape[1] == self.data.n_genes:
            genes = pop[:, self.data.n_weights :]
            gain += self.templates.gain(genes, self._skill_share, len(self.data.providers))
        result: FloatArray = np.nan_to_num(gain - cost, nan=0.0, posinf=0.0, neginf=0.0)
        return result


def picks(eff: FloatArray, data: Snapshot, min_weight: float) -> IntArray:
    """Fusion picks (P, N) under effective weights (P, S, M); -1 where nobody is available."""
    values = np.zeros((data.n_records, len(data.providers)), np.float32)
    replay = Replay(data, FitnessParams(min_weight=min_weight), values=values)
    return replay.picks(np.asarray(eff, np.float64), min_weight)


def fitness(
    population: FloatArray,
    data: Snapshot,
    params: FitnessParams,
    values: Float32Array | None = None,
    *,
    counts: FloatArray | None = None,
) -> FloatArray:
    """Fitness (P,) of a population on a snapshot; never NaN. See the module docstring."""
    return Replay(data, params, values=values, counts=counts).fitness(population)
