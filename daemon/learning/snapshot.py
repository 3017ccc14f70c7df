"""Between the daemon's words and the optimizer's arrays.

Rated records (and probe records) become a :class:`Snapshot`, a recipe becomes
a genome, and a genome goes back to a recipe's weights and template names.
Providers, skills and templates are names here and indices in ``optimizers/``;
how the arrays are learned from is :mod:`alchemist.optimizers.policy`'s business.

Template genes: with a template catalog (``{skill: template names}``), a
genome holds one template gene per skill with templates and provider (option
0: no template, ``i``: the ``i``-th name). A probe record says which template
each provider was asked with; :func:`~alchemist.optimizers.templates.with_templates`
decides what counts for the weights and what only for the templates.
Only the ``default`` recipe evolves template genes (:func:`templated`); other
recipes learn from the probes as they were asked. Probe answers, and the
prober's template trials (extra asks with other templates, user
``"probe-trial"``), measure the templates.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from alchemist.answers.recipes import Recipe
from alchemist.daemon.storage.experience import TRIAL_USER, Rated
from alchemist.optimizers.data import Snapshot
from alchemist.optimizers.templates import TemplateGenes, with_templates

__all__ = ["build_snapshot", "evidence", "genome_of", "option", "step_seed", "template_genes",
           "templated", "templates_of", "weights_of"]

Weights = dict[str, dict[str, float]]
Templates = dict[str, dict[str, str]]


def evidence(held: Sequence[Rated], total: int, upto: int, seed: int | None,
             recipe: str) -> tuple[list[Rated], list[str]]:
    """A step's records, the first ``upto`` of a recipe's evidence stream, and their keys.

    ``held`` are the records a bounded index still holds, in stream order: the
    last ``len(held)`` of the ``total`` so far. The keys decide the hold-out
    split: a record's own key (request id and user) differs from run to run;
    with a ``seed`` it is ``seed:recipe:position`` instead, so the same evidence
    is split the same way in every run.
    """
    first = total - len(held)  # the stream position of held[0]
    records = list(held[: max(0, upto - first)])
    if seed is None:
        return records, [r.key for r in records]
    return records, [f"{seed}:{recipe}:{first + i}" for i in range(len(records))]


def step_seed(seed: int, recipe: str, upto: int) -> np.random.SeedSequence:
    """The randomness of the recipe's step on its first ``upto`` evidence records: the same
    whatever ran before it (a restart included)."""
    return np.random.SeedSequence([seed, zlib.crc32(recipe.encode()), upto])


def template_genes(skills: Sequence[str], providers: Sequence[str],
                   catalog: Mapping[str, Sequence[str]],
                   chosen: Mapping[str, Mapping[str, str]]) -> TemplateGenes:
    """One gene per skill with templates and provider; current = the ``chosen`` template."""
    options = {i: 1 + len(catalog[s]) for i, s in enumerate(skills) if catalog.get(s)}
    current = {(i, j): option(catalog, s, chosen.get(s, {}).get(p))
               for i, s in enumerate(skills) if i in options for j, p in enumerate(providers)}
    return TemplateGenes.build(options, len(providers), {k: max(v, 0) for k, v in current.items()})


def templated(recipe: Recipe) -> bool:
    """Whether a recipe evolves template genes: the ``default`` recipe (the one the prober
    asks with), when its answers are extracted (under ``text``, a template that changes
    the format would split the vote; the daemon never applies templates there)."""
    return recipe.name == "default" and recipe.answer.kind != "text"


def option(catalog: Mapping[str, Sequence[str]], skill: str, name: str | None) -> int:
    """A template's option number: 0 for none, -1 for a name the catalog doesn't know."""
    if name is None:
        return 0
    names = list(catalog.get(skill, ()))
    return names.index(name) + 1 if name in names else -1


def build_snapshot(records: Sequence[Rated], skills: Sequence[str],
                   providers: Sequence[str], probe_weight: float = 1.0,
                   catalog: Mapping[str, Sequence[str]] | None = None,
                   chosen: Mapping[str, Mapping[str, str]] | None = None) -> Snapshot:
    """Turn rated records (and probe records) into the optimizer's arrays.

    Providers are in the global order given; a probe record carries ground
    truth per provider instead of a rating and counts ``probe_weight`` ratings.
    With a template ``catalog``, the snapshot has template genes whose current
    options are the ``chosen`` templates (the incumbent's). A probe answer
    asked with another template is a template trial only, and so is every
    template-trial record (their weight is 0).
    """
    data = _records(records, skills, providers, probe_weight)
    if not catalog:
        return data
    genes = template_genes(skills, providers, catalog, chosen or {})
    return with_templates(data, genes, _options(records, providers, catalog))


def _records(records: Sequence[Rated], skills: Sequence[str], providers: Sequence[str],
             probe_weight: float) -> Snapshot:
    """The snapshot without template genes."""
    n, m = len(records), len(providers)
    pos = {p: i for i, p in enumerate(providers)}
    sk = {s: i for i, s in enumerate(skills)}
    skill = np.zeros(n, np.int64)
    answered = np.zeros((n, m), bool)
    sim = np.zeros((n, m, m), np.float32)
    sim[:, np.arange(m), np.arange(m)] = 1.0
    served = np.zeros(n, np.int64)
    reward = np.zeros(n, np.float32)
    propensity = np.ones(n, np.float32)
    truth = np.full((n, m), np.nan, np.float32)
    weight = np.ones(n, np.float32)
    complete = np.zeros(n, bool)
    cost_sum = np.zeros(m)
    for r, rec in enumerate(records):
        e = rec.experience
        idx = [pos.get(p, -1) for p in e.providers]
        local = np.asarray(e.sim, np.float32).reshape(len(idx), len(idx))
        keep = [i for i, g in enumerate(idx) if g >= 0]
        g = np.asarray([idx[i] for i in keep], np.int64)
        sim[r][np.ix_(g, g)] = local[np.ix_(keep, keep)]
        answered[r, g] = np.asarray(e.answered, bool)[keep]
        skill[r] = sk.get(e.skill, 0)
        served[r] = idx[e.served] if 0 <= e.served < len(idx) and idx[e.served] >= 0 else 0
        reward[r] = 1.0 if rec.rating > 0 else 0.0
        propensity[r] = e.propensity
        complete[r] = not e.waves and rec.truth is None  # a rated request that asked at once
        if rec.truth is not None:
            reward[r] = np.nan
            weight[r] = probe_weight
            for i in keep:
                if rec.truth[i] is not None:
                    truth[r, idx[i]] = rec.truth[i]
        if e.cost:
            cost_sum[g] += np.asarray(e.cost)[keep]
    # a provider with no extracted answer (zero self-agreement under vote) backed nothing
    answered &= sim[:, np.arange(m), np.arange(m)] > 0
    cost = cost_sum / cost_sum.mean() if cost_sum.sum() > 0 else np.ones(m)
    # template trials are evidence about templates only, never about the weights
    weight[[rec.user == TRIAL_USER for rec in records]] = 0.0
    return Snapshot(skills=tuple(skills), providers=tuple(providers), skill=skill,
                    answered=answered, sim=sim, served=served, reward=reward,
                    propensity=propensity, truth=truth, weight=weight, cost=cost,
                    complete=complete)


def _options(records: Sequence[Rated], providers: Sequence[str],
             catalog: Mapping[str, Sequence[str]]) -> np.ndarray:
    """The template option each provider was asked with on each probe record (-1: none known)."""
    pos = {p: i for i, p in enumerate(providers)}
    opt = np.full((len(records), len(providers)), -1, np.int64)
    for r, rec in enumerate(records):
        if rec.truth is None:
            continue
        e = rec.experience
        used = e.templates or (None,) * len(e.providers)
        for i, p in enumerate(e.providers):
            if p in pos and i < len(used):
                opt[r, pos[p]] = option(catalog, e.skill, used[i])
    return opt


def genome_of(recipe: Recipe, skills: Sequence[str], providers: Sequence[str],
              genes: TemplateGenes | None = None) -> np.ndarray:
    """The recipe as a flat genome: weights (skills x providers), then its template options."""
    weights = np.asarray([[recipe.row(s, providers)[p] for p in providers] for s in skills],
                         np.float64).ravel()
    if genes is None:
        return weights
    return np.concatenate([weights, genes.current.astype(np.float64)])


def templates_of(genome: np.ndarray, data: Snapshot,
                 catalog: Mapping[str, Sequence[str]]) -> Templates:
    """A genome's template genes as the recipe's ``{skill: {provider: name}}`` (none left out)."""
    out: Templates = {}
    genes = data.templates
    if genes is None:
        return out
    for k, opt in enumerate(genes.chosen(np.asarray(genome)[data.n_weights :])):
        if opt > 0:
            skill = data.skills[genes.skill[k]]
            out.setdefault(skill, {})[data.providers[genes.provider[k]]] = catalog[skill][opt - 1]
    return out


def weights_of(effective: np.ndarray, skills: Sequence[str], providers: Sequence[str]) -> Weights:
    """Effective (S, M) weights as the recipe's ``{skill: {provider: weight}}``."""
    return {s: {p: round(float(effective[i, j]), 4) for j, p in enumerate(providers)}
            for i, s in enumerate(skills)}
