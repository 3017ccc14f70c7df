"""The evolver driver: at every ``evolver.min_new_ratings``-th evidence record, learn, and
promote a winner.

A recipe's evidence is its rated records and every probe record, in the rated
stream's order (the same on every instance, :attr:`ExperienceIndex.log`). The
step at record ``n`` (a multiple of ``min_new_ratings``) learns from exactly
the first ``n`` records; those that arrive while it runs wait for the next
boundary, so a slower machine runs the same steps on the same evidence, only
later. With ``evolver.seed``, that step draws from ``(seed, recipe, n)``
whatever ran before (a restart too). ``evolver.interval_s`` (0: off) adds a
step on the records in hand after that long without new evidence: lower
latency at low traffic, but such a step depends on timing.

Per recipe, a population of genomes persists under ``<state>/evolver/<recipe>.npz``
with the stream position it learned up to, so a restart resumes both. A step
copies its records on the event loop; a worker thread turns them into a
snapshot (:mod:`alchemist.daemon.learning.snapshot`, which also says how
template genes are learned) and runs :class:`alchemist.optimizers.Policy`
(evolve, challengers, templates, gate); back on the loop, a winner is written
to the KV bucket with compare-and-set and announced, and the population saved.
With several instances, only the holder of a recipe's lease steps it, and its
writes are fenced by the lease (:mod:`alchemist.daemon.learning.leadership`).
How to learn is decided in ``optimizers/``; this module only moves data and decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import structlog

from alchemist.answers.recipes import FALLBACK, Recipe
from alchemist.daemon.config import Config, EvolverConfig
from alchemist.daemon.learning.leadership import Leadership
from alchemist.daemon.learning.snapshot import (
    Templates,
    Weights,
    build_snapshot,
    evidence,
    genome_of,
    step_seed,
    templated,
    templates_of,
    weights_of,
)
from alchemist.daemon.learning.state import State as _State
from alchemist.daemon.learning.state import load_state, save_state
from alchemist.daemon.storage.experience import PROBES_KEY, ExperienceIndex, Rated
from alchemist.daemon.storage.recipe_store import RecipeStore
from alchemist.daemon.tasks import cancel
from alchemist.optimizers.calibrate import Calibration, calibrate, truth_records
from alchemist.optimizers.cascade_fit import Waves
from alchemist.optimizers.fitness import FitnessParams
from alchemist.optimizers.gate import GateDecision
from alchemist.optimizers.policy import Policy, PolicyParams, Verdict

__all__ = ["Evolver", "build_snapshot", "genome_of", "templates_of"]

log = structlog.get_logger("alchemist.evolver")
#: boundaries a recipe's steps may fall behind its evidence before the evolver skips to the
#: latest one (reproducibility gives way to keeping up; logged as ``evolver_behind``)
MAX_BEHIND = 4


@dataclass(frozen=True, slots=True)
class _Job:
    """What one step learns from, taken on the event loop (a reload can't change it)."""

    recipe: Recipe
    records: list[Rated]
    #: the records' keys for the hold-out split (see :func:`evidence`)
    keys: list[str]
    #: the stream position the records end at (the step's identity under ``evolver.seed``)
    upto: int
    seeds: np.random.SeedSequence
    providers: tuple[str, ...]
    probe_weight: float
    settings: EvolverConfig


@dataclass(frozen=True, slots=True)
class _Outcome:
    """A step's verdict, with the candidate in the recipe's words."""

    verdict: Verdict
    weights: Weights
    templates: Templates
    #: the fitted recipe when the step calibrated (it replaces the verdict's candidate)
    calibration: Calibration | None = None


class Evolver:
    """Evolves every configured recipe from this instance's rated experience."""

    def __init__(self, cfg: Config, recipes: RecipeStore, index: ExperienceIndex,
                 providers: Sequence[str],
                 templates: Mapping[str, Sequence[str]] | None = None,
                 leadership: Leadership | None = None) -> None:
        self.cfg = cfg
        self.leadership = leadership or Leadership()
        self.ecfg = cfg.evolver
        self.recipes = recipes
        self.index = index
        self.providers = tuple(providers)
        self.probe_weight = cfg.probes.weight
        #: ``{skill: template names}``: the options of the template genes
        self.catalog = {s: tuple(names) for s, names in (templates or {}).items() if names}
        self.state: dict[str, _State] = {}
        self.dir = cfg.state_dir / "evolver"
        self.counts = {"steps": 0, "promotions": 0, "generations": 0}
        self.last_gate: dict[str, GateDecision] = {}
        self._task: asyncio.Task[None] | None = None
        self._running: asyncio.Task[_Outcome] | None = None
        self._stop = threading.Event()  # ends a running PyGAD step early, at shutdown
        self._wake = asyncio.Event()
        #: set (and replaced) at the end of every pass of the loop: :meth:`settled` waits on it
        self._passed = asyncio.Event()

    def reload(self, cfg: Config, providers: Sequence[str]) -> None:
        """Take a reloaded config's providers, probe weight and evolver settings.

        A step running now finishes with what it started with; the next one
        uses the new settings, and seeds a fresh population when the providers
        changed. ``evolver.enabled`` turns stepping off or on at once.
        """
        self.cfg = cfg
        self.ecfg = cfg.evolver
        self.providers = tuple(providers)
        self.probe_weight = cfg.probes.weight

    def params(self, recipe: Recipe, settings: EvolverConfig | None = None) -> FitnessParams:
        """How the recipe's genomes are decoded and scored (``settings``: the current ones)."""
        e = settings or self.ecfg
        return FitnessParams(min_weight=recipe.min_weight, cost_weight=e.cost_weight,
                             shrink_k=e.shrink_k, noise=e.noise,
                             strategy="select" if recipe.strategy == "select" else "vote")

    def policy(self, recipe: Recipe, settings: EvolverConfig | None = None) -> Policy:
        """The learning step for a recipe, with the evolver's settings (``settings``: the
        current ones); how many individuals are reseeded is the policy's own default."""
        e = settings or self.ecfg
        return Policy(PolicyParams(self.params(recipe, e), population=e.population,
                                   generations=e.generations, holdout_share=e.holdout_share,
                                   margin=e.margin, z=e.z, min_records=e.min_ratings),
                      stop_event=self._stop)

    async def start(self) -> None:
        """Load the saved populations and start checking for due steps.

        The loop runs even while stepping is off or there are no providers: a reload
        can change either.
        """
        for name in self.recipes.current:
            self.state[name] = self._load(name)
        self._task = asyncio.create_task(self._loop(), name="evolver")

    async def _loop(self) -> None:
        while True:
            interval = self.ecfg.interval_s
            tick = min(0.1, interval) if interval > 0 else 0.1  # a check is a count comparison
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=tick)
            self._wake.clear()
            if self.ecfg.enabled and self.providers:
                for name in list(self.recipes.current):
                    if not self.leadership.leads(name):
                        continue
                    try:
                        self.state[name] = await self.leadership.resume(
                            name, self.state.get(name) or _State(), self.providers)
                        await self.maybe_step(name)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("evolver_step_failed", recipe=name)
            passed, self._passed = self._passed, asyncio.Event()
            passed.set()

    def total(self, name: str) -> int:
        """The recipe's evidence records so far: its ratings and every probe record, as the
        rated stream's follower delivered them."""
        return self.index.logged[name] + self.index.logged[PROBES_KEY]

    def _next(self, st: _State, total: int) -> int:
        """The stream position the next step learns up to (0: no step is due)."""
        n = self.ecfg.min_new_ratings
        boundary = (st.seen // n + 1) * n
        if total >= boundary:
            latest = total // n * n
            if latest - boundary >= MAX_BEHIND * n:  # steps slower than evidence: keep up
                log.warning("evolver_behind", skipped=(latest - boundary) // n, upto=latest)
                return latest
            return boundary
        interval = self.ecfg.interval_s
        if interval > 0 and total > st.seen and time.monotonic() - st.changed >= interval:
            return total  # no new evidence for interval_s: learn from what is in hand
        return 0

    async def maybe_step(self, name: str, *, force: bool = False) -> GateDecision | None:
        """Run the recipe's next due step (``force``: one on every record in hand now)."""
        st = self.state.setdefault(name, _State())
        total = self.total(name)
        if total != st.total:
            st.total, st.changed = total, time.monotonic()
        if total < st.seen:  # the stream lost records (limits, age): count from what it holds
            st.seen = st.done = total // self.ecfg.min_new_ratings * self.ecfg.min_new_ratings
        recipe = self.recipes.get(name)
        upto = total if force else self._next(st, total)
        if recipe is None or not total or not upto:
            return None
        revision = self.recipes.revision(name)  # the promotion must not overwrite a newer write
        seed = self.ecfg.seed
        records, keys = evidence(list(self.index.streamed_for(name)), total, upto, seed, name)
        job = _Job(recipe, records, keys, upto,
                   st.seeds if seed is None else step_seed(seed, name, upto),
                   self.providers, self.probe_weight, self.ecfg)
        st.seen = upto
        try:
            return await self._run(name, st, job, revision)
        except asyncio.CancelledError:
            st.seen = st.done  # interrupted by shutdown: the step runs again after a restart
            raise
        except Exception:
            st.done = max(st.done, upto)  # a failed step is not retried: nobody waits for it
            raise
        finally:
            self._wake.set()

    async def _run(self, name: str, st: _State, job: _Job, revision: int) -> GateDecision:
        """Run the step in a worker thread, promote its winner, save the population."""
        recipe = job.recipe
        self._stop.clear()
        self._running = asyncio.create_task(asyncio.to_thread(self._step, st, job),
                                            name=f"evolve-{name}")
        # shielded: cancelling the evolver loop must not orphan the thread's result;
        # close() waits for the running step before it saves
        out = await asyncio.shield(self._running)
        self._running = None
        if out.calibration is not None:
            return await self._calibrated(name, st, job, revision, out)
        decision = out.verdict.decision
        self.counts["steps"] += 1
        self.counts["generations"] += job.settings.generations
        self.last_gate[name] = decision
        log.info("evolver_step", recipe=name, generation=st.generation, records=len(job.records),
                 upto=job.upto, best_fitness=round(out.verdict.best_fitness, 4),
                 promote=decision.promote, gain=round(decision.diff, 4),
                 stderr=round(decision.stderr, 4), reason=decision.reason,
                 **({} if out.verdict.waves is None else {
                     "first_wave": out.verdict.waves.first_wave,
                     "stop_margin": out.verdict.waves.stop_margin}))
        if decision.promote:
            waves = out.verdict.waves
            cascade = {} if waves is None else {"first_wave": waves.first_wave,
                                                "stop_margin": waves.stop_margin}
            new = recipe.successor(weights=out.weights, templates=out.templates, reason="evolved",
                                   **cascade,
                                   fitness=round(decision.candidate, 6),
                                   baseline_fitness=round(decision.incumbent, 6),
                                   n_ratings=len(job.records), generation=st.generation)
            if await self.recipes.publish(new, expected_revision=revision, fence=self.leadership.leases):
                self.counts["promotions"] += 1
                _log_adopted(new, recipe.templates)
        st.done = max(st.done, job.upto)
        await self._persist(name, st)
        return decision

    async def _calibrated(self, name: str, st: _State, job: _Job, revision: int,
                          out: _Outcome) -> GateDecision:
        """Promote the recipe fitted on the ground-truth records, ungated (``evolver.calibrate``)."""
        fitted = out.calibration
        assert fitted is not None
        reason = (f"calibrated on {fitted.n} ground-truth records (evolver.calibrate; not "
                  f"gated): {100 * fitted.score:.1f} % on them at {fitted.calls:.2f} calls")
        decision = GateDecision(True, fitted.score, 0.0, 0.0, 0.0, fitted.n, reason)
        self.counts["steps"] += 1
        self.last_gate[name] = decision
        margin = job.recipe.stop_margin if fitted.stop_margin is None else fitted.stop_margin
        new = job.recipe.successor(weights=out.weights, stop_margin=margin, reason="calibrated",
                                   fitness=round(fitted.score, 6), n_ratings=len(job.records),
                                   generation=st.generation)
        if await self.recipes.publish(new, expected_revision=revision, fence=self.leadership.leases):
            self.counts["promotions"] += 1
            st.calibrated = True
        log.info("evolver_calibrated", recipe=name, version=new.version, records=fitted.n,
                 score=round(fitted.score, 4), calls=round(fitted.calls, 2),
                 stop_margin=margin, published=st.calibrated)
        st.done = max(st.done, job.upto)
        await self._persist(name, st)
        return decision

    async def _persist(self, name: str, st: _State) -> None:
        """Save the state here, and where the recipe's next leader finds it."""
        await asyncio.to_thread(self._save, name, st)
        await self.leadership.share(name, st)

    async def settled(self, name: str, records: int, timeout: float = 300.0) -> None:
        """Wait until ``records`` evidence records of recipe ``name`` are indexed and every
        step due by then has finished, its promotion (if any) in force.

        For drivers that must not move on while a step runs (the bench's lockstep
        mode). Raises :class:`TimeoutError` after ``timeout`` s, saying what is missing.
        """
        woken = False
        try:
            async with asyncio.timeout(timeout):
                while not self._settled(name, records):
                    passed = self._passed
                    if not woken and self.total(name) >= records:
                        woken = True  # the records are in: check now, not at the next tick
                        self._wake.set()
                    await passed.wait()
        except TimeoutError:
            st = self.state.get(name, _State())
            raise TimeoutError(f"evolver not settled at {records} records of {name!r} after "
                               f"{timeout} s: {self.total(name)} indexed, steps done up to "
                               f"{st.done}") from None

    def _settled(self, name: str, records: int) -> bool:
        if self.total(name) < records:
            return False
        if not (self.ecfg.enabled and self.providers) or self.recipes.get(name) is None:
            return True
        due = records // self.ecfg.min_new_ratings * self.ecfg.min_new_ratings
        st = self.state.get(name)
        return due == 0 or (st is not None and st.done >= due)

    def _step(self, st: _State, job: _Job) -> _Outcome:
        """Worker thread: snapshot, learning step. Touches no shared state but ``st``."""
        recipe, records, providers = job.recipe, job.records, job.providers
        seen_skills = {r.experience.skill for r in records} | set(recipe.weights)
        skills = (FALLBACK, *sorted(seen_skills - {FALLBACK}))
        catalog = self.catalog if templated(recipe) else None
        data = build_snapshot(records, skills, providers, job.probe_weight, catalog,
                              recipe.templates)
        layout = json.dumps(catalog, sort_keys=True) if catalog else ""
        # the incumbent's weights are already effective (shrunk when it was promoted)
        incumbent = genome_of(recipe, skills, providers, data.templates)
        # a population of other skills, providers or templates means something else now
        carried = (skills, providers, layout) == (st.skills, st.providers, st.layout)
        cascades = recipe.first_wave > 0 and recipe.strategy == "vote"
        verdict = self.policy(recipe, job.settings).step(
            incumbent, data, job.keys, job.seeds,
            st.population if carried else None, st.fitness if carried else None,
            Waves(recipe.first_wave, recipe.stop_margin) if cascades else None)
        st.skills, st.providers, st.layout = skills, providers, layout
        st.population, st.fitness = verdict.population, verdict.fitness
        st.generation += job.settings.generations
        evolved = {skills[i] for i in data.templates.skill} if data.templates is not None else set()
        kept = {s: dict(row) for s, row in recipe.templates.items() if s not in evolved}
        due = job.settings.calibrate
        if due and recipe.strategy == "vote" and not st.calibrated \
                and int(truth_records(data).sum()) >= due:
            fitted = calibrate(data, self.params(recipe, job.settings), recipe.first_wave)
            return _Outcome(verdict, weights_of(fitted.weights, skills, providers),
                            {s: dict(row) for s, row in recipe.templates.items()}, fitted)
        return _Outcome(verdict, weights_of(verdict.weights, skills, providers),
                        kept | templates_of(verdict.genome, data, self.catalog))

    def wake(self) -> None:
        """Check for due steps now (used by tests and after bursts of ratings)."""
        self._wake.set()

    def _save(self, name: str, st: _State) -> None:
        save_state(self.dir, name, st)

    def _load(self, name: str) -> _State:
        return load_state(self.dir, name, self.providers)

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
        await self.leadership.close()


def _log_adopted(new: Recipe, before: Mapping[str, Mapping[str, str]]) -> None:
    """One event per provider and skill whose template the promotion changed."""
    after = new.templates
    for skill in sorted(set(after) | set(before)):
        was, now = before.get(skill, {}), after.get(skill, {})
        for provider in sorted(set(was) | set(now)):
            if was.get(provider) != now.get(provider):
                log.info("template_adopted", recipe=new.name, version=new.version, skill=skill,
                         provider=provider, template=now.get(provider),
                         previous=was.get(provider))
