"""Template genes: per skill and provider, which prompt template to send.

The genes' layout is :class:`~alchemist.optimizers.data.TemplateGenes` (it travels
in the :class:`~alchemist.optimizers.data.Snapshot`); this module measures them.
A genome is the ``S * M`` weights followed by ``K`` template genes, one per
(skill with templates, provider). A template gene holds a whole number
``0.0, 1.0, ...``: option 0 is "no template" (the request as its client wrote
it), options ``1..n-1`` are that skill's templates in the catalog's order (the
daemon keeps the names; nothing here knows them).

Evidence
--------
A template changes what a provider answers, so recorded answers can't be
replayed under another one. Templates are measured by probes: a probe
record says which option each provider was asked with (``Snapshot.option``)
and whether the answer passed (``Snapshot.trial``). Every such answer is one
trial of ``(gene, option)``, and a gene's pass rate under an option is
smoothed toward its pooled rate::

    p0[k]     = (sum_t passed[k, t] + 1) / (sum_t asked[k, t] + 2)
    acc[k, t] = (passed[k, t] + PRIOR * p0[k]) / (asked[k, t] + PRIOR)

so an option tried a few times stays close to the gene's average. The
estimate is per option, so it doesn't matter how often each one was asked.

Fitness term
------------
The weight replay (:mod:`alchemist.optimizers.fitness`) counts only probe answers asked
with the incumbent's templates (``current``): the weights learn how each
provider answers with what it is sent today. A genome choosing other
templates gains their measured accuracy difference, counted as if each
provider answered ``1 / M`` of its skill, weighted by the skill's share of
the evidence::

    gain[p] = sum_k share[s_k] / M * (acc[k, g[p, k]] - acc[k, current[k]])

The promotion gate tests the same difference on held-out probes, with its
binomial standard error (:func:`template_delta`), and a candidate's template
gene changes only where its own gain clears the gate's ``z``
(:meth:`TemplateStats.settle`; the learning step, :mod:`alchemist.optimizers.policy`,
asks it of the training probes and again of the held-out ones). Once a new template is adopted, the probes
asked with it teach the weights how that provider answers with it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from alchemist.optimizers.data import FloatArray, IntArray, Snapshot, TemplateGenes

__all__ = ["PRIOR", "TemplateGenes", "TemplateStats", "template_delta", "with_templates"]

PRIOR = 2.0  # pseudo-trials at the gene's pooled pass rate


@dataclass(frozen=True, slots=True)
class TemplateStats:
    """Probe trials per gene and option, and what they make of a population's template genes."""

    genes: TemplateGenes
    passed: FloatArray  # (K, T)
    asked: FloatArray  # (K, T)

    @staticmethod
    def of(data: Snapshot) -> TemplateStats | None:
        """Count the trials in ``data`` (None when it has no template genes)."""
        genes = data.templates
        if genes is None or data.option is None or data.trial is None:
            return None
        k, t = genes.n, int(genes.options.max(initial=1))
        passed, asked = np.zeros((k, t)), np.zeros((k, t))
        if k and data.n_records:
            lookup = np.full((len(data.skills), len(data.providers)), -1, np.int64)
            lookup[genes.skill, genes.provider] = np.arange(k)
            gene = lookup[data.skill[:, None], np.arange(len(data.providers))[None, :]]
            trial = data.trial.astype(np.float64)
            ok = (gene >= 0) & (data.option >= 0) & ~np.isnan(trial)
            ok &= data.option < genes.options[np.maximum(gene, 0)]
            np.add.at(asked, (gene[ok], data.option[ok]), 1.0)
            np.add.at(passed, (gene[ok], data.option[ok]), trial[ok])
        return TemplateStats(genes, passed, asked)

    def accuracy(self) -> FloatArray:
        """Smoothed pass rate (K, T) of each gene under each option (see the module docstring)."""
        p0 = (self.passed.sum(axis=1, keepdims=True) + 1.0) / (self.asked.sum(axis=1, keepdims=True) + 2.0)
        out: FloatArray = (self.passed + PRIOR * p0) / (self.asked + PRIOR)
        return out

    def variance(self) -> FloatArray:
        """Binomial variance (K, T) of :meth:`accuracy`."""
        acc = self.accuracy()
        out: FloatArray = acc * (1.0 - acc) / (self.asked + PRIOR)
        return out

    def best(self) -> FloatArray:
        """Each gene's best-measured option (K,); ties go to the lower option (no template first)."""
        acc = np.where(np.arange(self.asked.shape[1])[None, :] < self.genes.options[:, None],
                       self.accuracy(), -np.inf)
        out: FloatArray = np.argmax(acc, axis=1).astype(np.float64)
        return out

    def coefficient(self, share: FloatArray, n_providers: int) -> FloatArray:
        """Fitness points per unit of accuracy, per gene: its skill's share over ``M``."""
        out: FloatArray = np.asarray(share, np.float64)[self.genes.skill] / max(1, n_providers)
        return out

    def gain(self, genes: FloatArray, share: FloatArray, n_providers: int) -> FloatArray:
        """Fitness term (P,) of a population's template genes (P, K) against ``current``."""
        if not self.genes.n:
            return np.zeros(len(genes))
        acc = self.accuracy()
        rows = np.arange(self.genes.n)
        chosen = acc[rows[None, :], self.genes.clip(genes).astype(np.int64)]
        base = acc[rows, self.genes.current]
        out: FloatArray = (chosen - base[None, :]) @ self.coefficient(share, n_providers)
        return out

    def contrast(self, candidate: FloatArray, incumbent: FloatArray
                 ) -> tuple[IntArray, IntArray, FloatArray, FloatArray]:
        """Per gene: both genomes' options, the candidate's measured gain over the
        incumbent's, and the variance of that gain."""
        rows = np.arange(self.genes.n)
        cand, inc = self.genes.chosen(candidate), self.genes.chosen(incumbent)
        acc, var = self.accuracy(), self.variance()
        return cand, inc, acc[rows, cand] - acc[rows, inc], var[rows, cand] + var[rows, inc]

    def settle(self, candidate: FloatArray, incumbent: FloatArray, z: float) -> FloatArray:
        """The candidate's template genes, each kept only where its own measured gain over
        the incumbent's option clears ``z`` standard errors; the others revert.

        A provider that answers alike under every template keeps the one it has
        (no template, unless one was adopted on evidence): neutral drift of a
        search never changes what a provider is sent.
        """
        cand, inc, gain, var = self.contrast(candidate, incumbent)
        out: FloatArray = np.where(gain - z * np.sqrt(var) > 0, cand, inc).astype(np.float64)
        return out


def with_templates(data: Snapshot, genes: TemplateGenes, option: IntArray) -> Snapshot:
    """``data`` with template genes; ``option[n, m]`` is the option provider ``m`` was asked
    with on record ``n`` (-1: not a probe answer, or no gene for it).

    Every probe answer is a trial of its option (a provider asked with a template and
    giving no answer, a timeout or an error, failed it). The weight replay keeps only
    the probe answers asked with the genes' ``current`` options, and a record with no
    answer left for it counts for nothing.
    """
    m = len(data.providers)
    current = np.zeros((len(data.skills), m), np.int64)  # option 0 where a skill has no gene
    current[genes.skill, genes.provider] = genes.current
    trial = np.where(option >= 0, np.nan_to_num(data.truth, nan=0.0), np.nan).astype(np.float32)
    probe = np.isnan(data.reward)  # a probe record has truth instead of a rating
    other = probe[:, None] & (option != current[data.skill])  # asked with another template
    kept = data.answered & ~other
    emptied = data.answered.any(axis=1) & ~kept.any(axis=1)  # nothing left for the weights
    return replace(data, answered=kept,
                   truth=np.where(other, np.nan, data.truth).astype(np.float32),
                   weight=np.where(emptied, 0.0, data.weight).astype(np.float32),
                   templates=genes, option=option, trial=trial)


def template_delta(stats: TemplateStats, candidate: FloatArray, incumbent: FloatArray,
                   share: FloatArray, n_providers: int) -> tuple[float, float]:
    """The candidate's template gain over the incumbent's and its variance (genes that differ).

    ``candidate`` and ``incumbent`` are the K template genes of each.
    """
    if not stats.genes.n:
        return 0.0, 0.0
    cand, inc, gain, var = stats.contrast(candidate, incumbent)
    coef = stats.coefficient(share, n_providers) * (cand != inc)
    return float(coef @ gain), float((coef**2) @ var)
