"""The evolver driver: when enough new ratings arrived, evolve, gate, promote.

For each recipe this keeps a population of weight genomes (persisted under
``<state>/evolver/<recipe>.npz``, so a restart resumes it). A step copies the
rated records on the event loop, then builds the numpy snapshot and runs the
optimizer in a worker thread; the best candidate goes through the promotion
gate on held-out ratings, and a winner is written to the KV bucket with
compare-and-set and announced. All of the learning maths lives in
``optimizers/``; this module only moves data and decisions.

Prompt templates: with a template catalog (``{skill: template names}`` from
the probe suites), the ``default`` recipe's genome (when its answers are
extracted, not ``text``) also holds one template gene per skill with
templates and provider (option 0: no template, ``i``: the ``i``-th name).
Other recipes learn from the probes as they were asked.
Probe records say which template each provider was asked with. The weight
replay counts a probe answer only when it was asked with the incumbent's
template; every probe answer, and the prober's template trials (extra asks
with other templates, user ``"probe-trial"``), count as trials of their
template (:mod:`alchemist.optimizers.templates`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import structlog

from alchemist.answers.recipes import FALLBACK, Recipe
from alchemist.daemon.config import Config
from alchemist.daemon.storage.experience import PROBES_KEY, TRIAL_USER, ExperienceIndex, Rated
from alchemist.daemon.storage.recipe_store import RecipeStore
from alchemist.daemon.tasks import cancel
from alchemist.optimizers import (
    FitnessParams,
    GateDecision,
    PygadOptimizer,
    Snapshot,
    agreement_weights,
    effective_weights,
    gate,
    seed_population,
    skill_counts,
    split_holdout,
)
from alchemist.optimizers.templates import TemplateGenes, TemplateStats

log = structlog.get_logger("alchemist.evolver")
_RESEED = 4  # individuals replaced by fresh seeds at each step
_NO_SHRINK = 1e12  # skill evidence that makes shrinkage a no-op
Weights = dict[str, dict[str, float]]
Templates = dict[str, dict[str, str]]
#: what a step returns: the gate's decision, the candidate's weights and templates, its fitness
_StepOut = tuple[GateDecision, Weights, Templates, float]


@dataclass(slots=True)
class _State:
    """What the evolver carries between steps for one recipe."""

    skills: tuple[str, ...] = (FALLBACK,)
    population: np.ndarray | None = None
    fitness: np.ndarray | None = None
    seen: int = 0
    last_step: float = 0.0
    generation: int = 0
    seeds: np.random.SeedSequence = field(default_factory=np.random.SeedSequence)
    #: the template catalog the template genes were built from (JSON; "" for none)
    layout: str = ""


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
    data = Snapshot(skills=tuple(skills), providers=tuple(providers), skill=skill,
                    answered=answered, sim=sim, served=served, reward=reward,
                    propensity=propensity, truth=truth, weight=weight, cost=cost)
    if not catalog:
        return data
    genes = template_genes(skills, providers, catalog, chosen or {})
    opt = np.full((n, m), -1, np.int64)
    for r, rec in enumerate(records):
        if rec.truth is None:
            continue
        e = rec.experience
        used = e.templates or (None,) * len(e.providers)
        for i, p in enumerate(e.providers):
            if p in pos and i < len(used):
                opt[r, pos[p]] = option(catalog, e.skill, used[i])
    current = np.zeros((len(skills), m), np.int64)  # option 0 where a skill has no gene
    current[genes.skill, genes.provider] = genes.current
    # a provider asked with a template and giving no answer (a timeout, an error) failed it
    trial = np.where(opt >= 0, np.nan_to_num(truth, nan=0.0), np.nan).astype(np.float32)
    probe = np.isnan(reward)  # a probe record has truth instead of a rating
    other = probe[:, None] & (opt != current[skill])  # asked with another template
    kept = answered & ~other
    emptied = answered.any(axis=1) & ~kept.any(axis=1)  # nothing left for the weights
    return replace(data, answered=kept, truth=np.where(other, np.nan, truth).astype(np.float32),
                   weight=np.where(emptied, 0.0, weight).astype(np.float32),
                   templates=genes, option=opt, trial=trial)


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


def weights_of(effective: np.ndarray, skills: Sequence[str],
               providers: Sequence[str]) -> dict[str, dict[str, float]]:
    """Effective (S, M) weights as the recipe's ``{skill: {provider: weight}}``."""
    return {s: {p: round(float(effective[i, j]), 4) for j, p in enumerate(providers)}
            for i, s in enumerate(skills)}


class Evolver:
    """Evolves every configured recipe from this instance's rated experience."""

    def __init__(self, cfg: Config, recipes: RecipeStore, index: ExperienceIndex,
                 providers: Sequence[str],
                 templates: Mapping[str, Sequence[str]] | None = None) -> None:
        self.cfg = cfg
        self.ecfg = cfg.evolver
        self.recipes = recipes
        self.index = index
        self.providers = tuple(providers)
        #: ``{skill: template names}``: the options of the template genes
        self.catalog = {s: tuple(names) for s, names in (templates or {}).items() if names}
        self.state: dict[str, _State] = {}
        self.dir = cfg.state_dir / "evolver"
        self.counts = {"steps": 0, "promotions": 0, "generations": 0}
        self.last_gate: dict[str, GateDecision] = {}
        self._task: asyncio.Task[None] | None = None
        self._running: asyncio.Task[_StepOut] | None = None
        self._stop = threading.Event()  # ends a running PyGAD step early, at shutdown
        self._wake = asyncio.Event()

    def params(self, recipe: Recipe) -> FitnessParams:
        return FitnessParams(min_weight=recipe.min_weight, cost_weight=self.ecfg.cost_weight,
                             shrink_k=self.ecfg.shrink_k, noise=self.ecfg.noise)

    async def start(self) -> None:
        for name in self.recipes.current:
            self.state[name] = self._load(name)
        if self.ecfg.enabled and self.providers:
            self._task = asyncio.create_task(self._loop(), name="evolver")

    async def _loop(self) -> None:
        tick = min(0.1, self.ecfg.interval_s)  # a check is a counter comparison: cheap
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=tick)
            self._wake.clear()
            for name in list(self.recipes.current):
                try:
                    await self.maybe_step(name)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("evolver_step_failed", recipe=name)

    def _due(self, st: _State, total: int) -> bool:
        new = total - st.seen
        if new <= 0:
            return False
        return (new >= self.ecfg.min_new_ratings
                or time.monotonic() - st.last_step >= self.ecfg.interval_s)

    async def maybe_step(self, name: str, *, force: bool = False) -> GateDecision | None:
        """Run one evolution step for a recipe if enough new ratings arrived."""
        st = self.state.setdefault(name, _State())
        total = self.index.rated_total[name] + self.index.rated_total[PROBES_KEY]
        recipe = self.recipes.get(name)
        if recipe is None or not total or not (force or self._due(st, total)):
            return None
        revision = self.recipes.revision(name)  # the promotion must not overwrite a newer write
        records = list(self.index.rated_for(name))
        st.seen, st.last_step = total, time.monotonic()
        self._stop.clear()
        self._running = asyncio.create_task(
            asyncio.to_thread(self._step, st, recipe, records), name=f"evolve-{name}")
        # shielded: cancelling the evolver loop must not orphan the thread's result;
        # close() waits for the running step before it saves
        decision, weights, templates, fitness = await asyncio.shield(self._running)
        self._running = None
        self.counts["steps"] += 1
        self.counts["generations"] += self.ecfg.generations
        self.last_gate[name] = decision
        log.info("evolver_step", recipe=name, generation=st.generation, ratings=len(records),
                 best_fitness=round(fitness, 4), promote=decision.promote,
                 gain=round(decision.diff, 4), stderr=round(decision.stderr, 4),
                 reason=decision.reason)
        if decision.promote:
            new = recipe.successor(weights=weights, templates=templates, reason="evolved",
                                   fitness=round(decision.candidate, 6),
                                   baseline_fitness=round(decision.incumbent, 6),
                                   n_ratings=len(records), generation=st.generation)
            if await self.recipes.publish(new, expected_revision=revision):
                self.counts["promotions"] += 1
                for skill in sorted(set(templates) | set(recipe.templates)):
                    before, after = recipe.templates.get(skill, {}), templates.get(skill, {})
                    for provider in sorted(set(before) | set(after)):
                        if before.get(provider) != after.get(provider):
                            log.info("template_adopted", recipe=name, version=new.version,
                                     skill=skill, provider=provider,
                                     template=after.get(provider), previous=before.get(provider))
        await asyncio.to_thread(self._save, name, st)
        return decision

    def _step(self, st: _State, recipe: Recipe, records: list[Rated]) -> _StepOut:
        """Worker thread: snapshot, optimizer step, gate. Touches no shared state but ``st``."""
        seen_skills = {r.experience.skill for r in records} | set(recipe.weights)
        skills = (FALLBACK, *sorted(seen_skills - {FALLBACK}))
        catalog = self.catalog if templated(recipe) else None
        data = build_snapshot(records, skills, self.providers, self.cfg.probes.weight,
                              catalog, recipe.templates)
        layout = json.dumps(catalog, sort_keys=True) if catalog else ""
        params = self.params(recipe)
        holdout = split_holdout([r.key for r in records], self.ecfg.holdout_share)
        train, test = data.subset(~holdout), data.subset(holdout)
        # the incumbent's weights are already effective (shrunk when it was promoted)
        incumbent = genome_of(recipe, skills, self.providers, data.templates)
        pop = st.population
        rng = np.random.default_rng(st.seeds.spawn(1)[0])
        if (pop is None or skills != st.skills or pop.shape[1] != incumbent.size
                or layout != st.layout):  # the genes mean something else now: start afresh
            pop = seed_population(incumbent, train, self.ecfg.population, rng, params)
        else:
            # the evidence grew since the population was seeded: the incumbent and fresh
            # agreement-based genomes (and variants) replace the weakest individuals
            fresh = seed_population(incumbent, train, min(_RESEED, len(pop)), rng, params)
            order = np.argsort(st.fitness) if st.fitness is not None else np.arange(len(pop))
            pop = pop.copy()
            pop[order[: len(fresh)]] = fresh
        result = PygadOptimizer(params, generations=self.ecfg.generations,
                                stop_event=self._stop).step(pop, train, st.seeds.spawn(1)[0])
        # two challengers: the GA's best, and the plain agreement-based weights of all the
        # training evidence with each provider's best-measured templates (low variance: it
        # cannot chase noise the way a search can)
        w = data.n_weights
        stats = TemplateStats.of(train)
        agreement = np.concatenate([agreement_weights(train, params).ravel(),
                                    stats.best() if stats is not None else []])
        genomes = np.stack([result.best, agreement])
        held = TemplateStats.of(test)
        if stats is not None and held is not None:
            # a template changes only where its own gain is clear on the training probes
            # (where it was picked) and again on the held-out ones (which confirm it)
            for genome in genomes:
                for evidence in (stats, held):
                    genome[w:] = evidence.settle(genome[w:], incumbent[w:], self.ecfg.z)
        challengers = np.concatenate([effective_weights(genomes[:, :w], skill_counts(data), params)
                                      .reshape(2, -1), genomes[:, w:]], axis=1)
        decisions = [gate(genome, incumbent, test, params, margin=self.ecfg.margin,
                          z=self.ecfg.z, min_records=self.ecfg.min_ratings,
                          counts=np.full(len(skills), _NO_SHRINK))  # compared as served
                     for genome in challengers]
        pick = max(range(len(decisions)),
                   key=lambda i: (decisions[i].promote, decisions[i].diff - decisions[i].stderr))
        st.skills, st.population, st.fitness = skills, result.population, result.fitness
        st.layout = layout
        st.generation += self.ecfg.generations
        effective = challengers[pick, :w].reshape(len(skills), len(self.providers))
        evolved = {skills[i] for i in data.templates.skill} if data.templates is not None else set()
        kept = {s: dict(row) for s, row in recipe.templates.items() if s not in evolved}
        return (decisions[pick], weights_of(effective, skills, self.providers),
                kept | templates_of(challengers[pick], data, self.catalog),
                float(result.best_fitness))

    def wake(self) -> None:
        """Check for due steps now (used by tests and after bursts of ratings)."""
        self._wake.set()

    def _path(self, name: str) -> Path:
        return self.dir / f"{name}.npz"

    def _save(self, name: str, st: _State) -> None:
        if st.population is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{name}.tmp.npz"
        np.savez(tmp, population=st.population, skills=np.asarray(st.skills),
                 providers=np.asarray(self.providers), generation=st.generation,
                 layout=np.asarray(st.layout))
        os.replace(tmp, self._path(name))

    def _load(self, name: str) -> _State:
        st = _State()
        path = self._path(name)
        if not path.exists():
            return st
        try:
            with np.load(path) as z:
                if tuple(z["providers"].tolist()) == self.providers:
                    st.population = z["population"].astype(np.float64)
                    st.skills = tuple(z["skills"].tolist())
                    st.generation = int(z["generation"])
                    st.layout = str(z["layout"]) if "layout" in z else ""
                    log.info("evolver_resumed", recipe=name, generation=st.generation,
                             population=len(st.population))
        except (OSError, KeyError, ValueError) as exc:
            log.warning("evolver_state_unreadable", recipe=name, error=type(exc).__name__)
        return st

    async def close(self) -> None:
        """Stop stepping (a running step ends within a generation), then save every population."""
        self._stop.set()
        await cancel(self._task)
        self._task = None
        if self._running is not None:  # its thread still owns a state: let it finish first
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._running), timeout=5.0)
        for name, st in self.state.items():
            await asyncio.to_thread(self._save, name, st)
