"""One learning step: evolve, propose challengers, settle templates, gate.

The daemon hands in what it learned from as arrays (the incumbent recipe as a
genome, the population carried over from the last step, a :class:`Snapshot`,
each record's key and a seed source) and gets back a :class:`Verdict`: whether
to promote, the genome to promote, the population to carry and the evidence.
It never sees how the step decides.

A step:

1. splits the records into training and held-out ones (:func:`split_holdout`,
   stable per record key);
2. seeds the population afresh (none carried, or genes of another layout), or
   replaces the weakest individuals of the carried one by the incumbent and
   fresh agreement-based genomes: the evidence grew since it was seeded;
3. runs the optimizer on the training records;
4. proposes two challengers: the GA's best, and the plain agreement-based
   weights of all the training evidence with each provider's best-measured
   templates (low variance: it cannot chase noise the way a search can);
5. settles each challenger's template genes: a template changes only where its
   own gain is clear on the training probes (where it was picked) and again on
   the held-out ones (which confirm it);
6. gates the GA's best against the incumbent on the held-out records, as
   served (the weights decoded with the daemon's shrinkage already applied);
7. gates the agreement weights by cross-fitting instead: every record tests
   the weights fitted on the other folds, so no rating is set aside and small
   evidence goes further; the candidate is the agreement weights of *all* the
   evidence, with the templates settled in 5;
8. when the incumbent asks in waves, fits its cascade genes (``first_wave``,
   ``stop_margin``) with its own weights, cross-fitted on the records that asked
   everyone (:mod:`.cascade_fit`), as a third challenger;
9. picks the one that promotes, else the one with the strongest evidence.

Each of the two (or three) tests runs at its share of the level ``alpha = P(Z > z)``,
so together they promote a candidate no better than the incumbent with probability
at most ``alpha``, however many steps look (see :mod:`.gate`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from alchemist.optimizers import defaults
from alchemist.optimizers.cascade_fit import Waves, cascade_gate
from alchemist.optimizers.data import FloatArray, Snapshot
from alchemist.optimizers.evolve import PygadOptimizer
from alchemist.optimizers.fitness import FitnessParams, effective_weights, skill_counts
from alchemist.optimizers.gate import Fit, GateDecision, crossfit_gate, gate, split_holdout
from alchemist.optimizers.seeding import agreement_weights, seed_population
from alchemist.optimizers.sequential import alpha_of
from alchemist.optimizers.templates import TemplateStats

__all__ = ["Policy", "PolicyParams", "Verdict"]

_NO_SHRINK = 1e12  # skill evidence that makes shrinkage a no-op


@dataclass(frozen=True, slots=True)
class PolicyParams:
    """The settings of a learning step.

    ``population``: individuals; ``generations``: per step; ``reseed``: weakest
    individuals of a carried population replaced by fresh seeds;
    ``holdout_share``, ``margin``, ``z`` and ``min_records``: the gate's (see
    :func:`~alchemist.optimizers.gate.gate`).
    """

    fitness: FitnessParams = field(default_factory=FitnessParams)
    population: int = defaults.POPULATION
    generations: int = defaults.GENERATIONS
    reseed: int = defaults.RESEED
    holdout_share: float = defaults.HOLDOUT_SHARE
    margin: float = defaults.MARGIN
    z: float = defaults.Z
    min_records: int = defaults.MIN_RECORDS


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a step decided, and what it carries to the next one.

    ``genome``: the picked challenger (effective weights ``S * M``, then its
    template options); ``weights``: those weights as (S, M); ``population`` and
    ``fitness``: the population to carry; ``best_fitness``: the GA's best score.
    """

    decision: GateDecision
    genome: FloatArray
    weights: FloatArray
    population: FloatArray
    fitness: FloatArray
    best_fitness: float
    #: the cascade genes to promote with it (None: the incumbent's stay)
    waves: Waves | None = None

    @property
    def promote(self) -> bool:
        """Whether the gate lets the challenger replace the incumbent."""
        return self.decision.promote


class Policy:
    """The learning step; pure numpy, safe to run in a worker thread."""

    def __init__(self, params: PolicyParams, *, stop_event: threading.Event | None = None) -> None:
        """``stop_event``: set it to end a running optimizer step early (at shutdown)."""
        self.params = params
        self.stop_event = stop_event

    def step(self, incumbent: FloatArray, data: Snapshot, keys: Sequence[str],
             seeds: np.random.SeedSequence, population: FloatArray | None = None,
             fitness: FloatArray | None = None, waves: Waves | None = None) -> Verdict:
        """One step from ``population`` (None: seed one) on ``data``, keyed by record ``keys``.

        ``incumbent`` is the served recipe's genome (its weights already effective);
        ``fitness`` goes with ``population`` and says which individuals are weakest;
        ``waves``: the incumbent's cascade genes, when it asks in waves (they are then
        fitted too, :mod:`.cascade_fit`). Randomness comes only from ``seeds``.
        """
        p = self.params
        holdout = split_holdout(keys, p.holdout_share)
        train, test = data.subset(~holdout), data.subset(holdout)
        pop = self._population(incumbent, train, seeds, population, fitness)
        result = PygadOptimizer(p.fitness, generations=p.generations,
                                stop_event=self.stop_event).step(pop, train, seeds.spawn(1)[0])
        best, agreement = self._challengers(result.best, incumbent, data, train, test)
        # one test per challenger, each at its share of the level, so together they keep it
        tests = 2 if waves is None else 3
        z = NormalDist().inv_cdf(1.0 - alpha_of(p.z) / tests)
        flat = np.full(len(data.skills), _NO_SHRINK)  # genomes are compared as served
        held_out = gate(best, incumbent, test, p.fitness, margin=p.margin, z=z,
                        min_records=p.min_records, counts=flat)
        # texts are scored with qualities from the tested fold alone: two halves, not five
        # fifths, so each half's qualities rest on as many ratings as its fit does
        folds = 2 if p.fitness.strategy == "select" else 5
        crossfit, genome = crossfit_gate(self._agreement_fit(agreement), incumbent, data, keys,
                                         p.fitness, folds=folds, margin=p.margin, z=z,
                                         min_records=p.min_records, counts=flat)
        decisions, genomes = [held_out, crossfit], [best, genome]
        fitted: Waves | None = None
        if waves is not None:
            served = incumbent[: data.n_weights].reshape(len(data.skills), len(data.providers))
            cascade, fitted = cascade_gate(data, keys, served, waves, p.fitness, margin=p.margin,
                                           z=z, min_records=p.min_records)
            decisions.append(cascade)
            genomes.append(np.asarray(incumbent, np.float64))
        pick = max(range(len(decisions)), key=lambda i: (
            decisions[i].promote, decisions[i].log_lr, decisions[i].diff - decisions[i].stderr))
        w = data.n_weights
        chosen = np.asarray(genomes[pick], np.float64)
        return Verdict(decisions[pick], chosen,
                       chosen[:w].reshape(len(data.skills), len(data.providers)),
                       result.population, result.fitness, float(result.best_fitness),
                       fitted if pick == 2 else None)

    def _agreement_fit(self, settled: FloatArray) -> Fit:
        """The agreement weights of a snapshot as a served genome, with the template genes of
        ``settled`` (the agreement challenger's, each change already confirmed on its own
        held-out probes): a procedure that cross-fitting refits on every fold."""
        params = self.params.fitness

        def fit(data: Snapshot) -> FloatArray:
            rows = agreement_weights(data, params).reshape(1, -1)
            weights = effective_weights(rows, skill_counts(data), params).reshape(-1)
            out: FloatArray = np.concatenate([weights, settled[data.n_weights:]])
            return out

        return fit

    def _population(self, incumbent: FloatArray, train: Snapshot, seeds: np.random.SeedSequence,
                    population: FloatArray | None, fitness: FloatArray | None) -> FloatArray:
        """The population to evolve: a fresh one, or the carried one with fresh seeds in it."""
        p = self.params
        rng = np.random.default_rng(seeds.spawn(1)[0])
        if population is None or population.shape[1] != incumbent.size:
            return seed_population(incumbent, train, p.population, rng, p.fitness)
        fresh = seed_population(incumbent, train, min(p.reseed, len(population)), rng, p.fitness)
        order = np.argsort(fitness) if fitness is not None else np.arange(len(population))
        pop = population.copy()
        pop[order[: len(fresh)]] = fresh
        return pop

    def _challengers(self, best: FloatArray, incumbent: FloatArray, data: Snapshot,
                     train: Snapshot, test: Snapshot) -> FloatArray:
        """The GA's best and the agreement weights, templates settled, weights effective."""
        w, params = data.n_weights, self.params.fitness
        stats = TemplateStats.of(train)
        agreement = np.concatenate([agreement_weights(train, params).ravel(),
                                    stats.best() if stats is not None else []])
        genomes = np.stack([best, agreement])
        held = TemplateStats.of(test)
        if stats is not None and held is not None:
            for genome in genomes:
                for evidence in (stats, held):
                    genome[w:] = evidence.settle(genome[w:], incumbent[w:], self.params.z)
        out: FloatArray = np.concatenate(
            [effective_weights(genomes[:, :w], skill_counts(data), params).reshape(2, -1),
             genomes[:, w:]], axis=1)
        return out
