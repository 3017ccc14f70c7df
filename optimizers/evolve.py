"""The optimizer boundary: one ``step`` turns a population into the next.

The daemon carries only a population (a float64 array) and a seed source
between steps; each step scores against an immutable :class:`Snapshot` taken
when it starts. Two implementations share the operators (tournament
selection of size 3, uniform crossover, Gaussian mutation clipped to [0, 1],
elitism):

* :class:`PygadOptimizer`, the default: a *fresh* ``pygad.GA`` per step (a
  long-lived GA keeps stale cached fitness across ``run()`` calls, see
  ``PYGAD.md``), whole-population batched fitness, a vectorised mutation,
  a quiet logger, and a cooperative stop (event or time budget).
* :class:`NumpyOptimizer`: the same loop in plain numpy, far less overhead
  per generation; kept for comparison in ``benchmarks/evolver.py``.

Template genes (:mod:`alchemist.optimizers.templates`), when the snapshot has them,
follow the weights: whole numbers, copied whole by uniform crossover, and
mutated (by our vectorised mutation, at the same rate) by jumping to any other
option alike. PyGAD gets their option lists as ``gene_space`` and marks them
``gene_categorical``, which only its own operators (not used here) consult.

Whatever the GA reports, the final population is re-scored here with
:meth:`Replay.fitness` against the step's snapshot, and ``best`` comes from
that score, so a stale or mis-cached fitness can never be published.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from alchemist.optimizers.data import FloatArray, Snapshot
from alchemist.optimizers.fitness import FitnessParams, Replay

__all__ = ["NumpyOptimizer", "Optimizer", "PygadOptimizer", "StepResult"]


@dataclass(frozen=True, slots=True)
class StepResult:
    """The outcome of one step, scored on the step's snapshot.

    ``population`` (P, G) and ``fitness`` (P,) go together; ``best`` is the
    genome with the highest fitness, ``best_fitness`` its score;
    ``generations`` counts the generations actually run (a stop ends early).
    """

    population: FloatArray
    fitness: FloatArray
    best: FloatArray
    best_fitness: float
    generations: int = 0


@runtime_checkable
class Optimizer(Protocol):
    """Evolves a population of genomes against one snapshot of experience."""

    def step(
        self, population: FloatArray, data: Snapshot, seed: np.random.SeedSequence
    ) -> StepResult:
        """Run one step from ``population`` on ``data``; draw randomness only from ``seed``."""
        ...


Uniform = Callable[[tuple[int, ...]], FloatArray]  # draws in [0, 1) of a shape
Normal = Callable[[tuple[int, ...]], FloatArray]  # standard normal draws of a shape


@dataclass(frozen=True, slots=True)
class _Settings:
    """Operator settings shared by both implementations, validated once."""

    params: FitnessParams
    generations: int
    mutation_sigma: float
    mutation_rate: float
    elitism: int
    parents: int | None
    time_budget_s: float | None

    def __post_init__(self) -> None:
        if self.generations < 1:
            raise ValueError(f"generations must be at least 1, got {self.generations}.")
        if not self.mutation_sigma > 0:
            raise ValueError(f"mutation_sigma must be positive, got {self.mutation_sigma}.")
        if not 0.0 < self.mutation_rate <= 1.0:
            raise ValueError(f"mutation_rate must lie in (0, 1], got {self.mutation_rate}.")
        if self.elitism < 0:
            raise ValueError(f"elitism must be 0 or more, got {self.elitism}.")
        if self.parents is not None and self.parents < 2:
            raise ValueError(f"parents must be at least 2, got {self.parents}.")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"time_budget_s must be positive, got {self.time_budget_s}.")

    def check(self, population: FloatArray, data: Snapshot) -> tuple[FloatArray, int]:
        """Validate a population against the snapshot; return it as float64 and the parent count."""
        pop = np.asarray(population, dtype=np.float64)
        genes = data.n_genes
        if pop.ndim != 2 or pop.shape[1] != genes:
            raise ValueError(
                f"population has shape {pop.shape}; expected (P, {genes}) for "
                f"{len(data.skills)} skills x {len(data.providers)} providers"
                f" + {genes - data.n_weights} template genes."
            )
        size = pop.shape[0]
        if size < 4:
            raise ValueError(f"population needs at least 4 individuals, got {size}.")
        if self.elitism >= size:
            raise ValueError(
                f"elitism ({self.elitism}) must be smaller than the population ({size})."
            )
        parents = max(2, size // 2) if self.parents is None else min(self.parents, size)
        out = np.clip(pop, 0.0, 1.0)
        if data.templates is not None:
            out[:, data.n_weights :] = data.templates.clip(pop[:, data.n_weights :])
        return out, parents

    def mutate(self, offspring: FloatArray, data: Snapshot, uniform: Uniform,
               normal: Normal) -> FloatArray:
        """Gaussian steps on weight genes, jumps to another option on template genes."""
        w = data.n_weights
        hit = uniform(offspring.shape) < self.mutation_rate
        out = offspring.copy()
        out[:, :w] = np.clip(offspring[:, :w] + hit[:, :w] * normal(out[:, :w].shape) * self.mutation_sigma,
                             0.0, 1.0)
        if data.templates is not None and data.templates.n:
            genes = data.templates.clip(offspring[:, w:])
            out[:, w:] = data.templates.mutate(genes, uniform(genes.shape), hit[:, w:])
        return out


def _finish(replay: Replay, population: FloatArray, generations: int) -> StepResult:
    """Re-score the final population on the step's snapshot and pick the best from that."""
    pop = np.ascontiguousarray(population, dtype=np.float64)
    fit = replay.fitness(pop)
    i = int(np.argmax(fit))
    return StepResult(pop, fit, pop[i].copy(), float(fit[i]), generations)


def _gene_space(data: Snapshot) -> Any:
    """PyGAD's gene space: [0, 1] for weights; the option lists of template genes."""
    unit = {"low": 0.0, "high": 1.0}
    if data.templates is None or not data.templates.n:
        return unit
    return [unit] * data.n_weights + data.templates.gene_space()


def _categorical(data: Snapshot) -> list[bool] | None:
    """Template genes are unordered categories; weights are not."""
    if data.templates is None or not data.templates.n:
        return None
    return [False] * data.n_weights + [True] * data.templates.n


def _quiet_logger() -> logging.Logger:
    """A private logger that drops PyGAD's doubled tracebacks (the exception still raises)."""
    logger = logging.Logger("optimizers.pygad")  # not registered globally on purpose
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


class _GeneticBase:
    """Shared construction: operator settings and the cooperative stop."""

    def __init__(
        self,
        params: FitnessParams,
        generations: int = 5,
        mutation_sigma: float = 0.08,
        mutation_rate: float = 0.2,
        elitism: int = 2,
        parents: int | None = None,
        stop_event: threading.Event | None = None,
        time_budget_s: float | None = None,
    ) -> None:
        self._cfg = _Settings(
            params, generations, mutation_sigma, mutation_rate, elitism, parents, time_budget_s
        )
        self._stop = stop_event

    @property
    def params(self) -> FitnessParams:
        """The fitness parameters this optimizer scores with."""
        return self._cfg.params

    def _stopped(self, deadline: float | None) -> bool:
        """Whether the stop event is set or the step's time budget is spent."""
        if self._stop is not None and self._stop.is_set():
            return True
        return deadline is not None and time.monotonic() >= deadline


class PygadOptimizer(_GeneticBase):
    """The default optimizer: PyGAD behind the :class:`Optimizer` boundary.

    ``parents`` is the mating pool size (default half the population);
    ``stop_event`` and ``time_budget_s`` end a step after the current
    generation. Instances hold no state between steps, so one can serve
    several recipes.
    """

    def step(
        self, population: FloatArray, data: Snapshot, seed: np.random.SeedSequence
    ) -> StepResult:
        """Run up to ``generations`` PyGAD generations from ``population`` on ``data``."""
        import pygad  # deferred: ~0.1 s import, only needed once the evolver runs

        cfg = self._cfg
        pop, parents = cfg.check(population, data)
        replay = Replay(data, cfg.params)
        if self._stop is not None and self._stop.is_set():
            return _finish(replay, pop, 0)
        deadline = None if cfg.time_budget_s is None else time.monotonic() + cfg.time_budget_s

        def fitness_func(ga: Any, rows: FloatArray, indices: Any) -> FloatArray:
            return replay.fitness(np.asarray(rows, dtype=np.float64))

        def mutate(offspring: FloatArray, ga: Any) -> FloatArray:
            rs = ga.numpy_random_generator  # seeded from random_seed: reproducible per step
            return cfg.mutate(np.asarray(offspring, np.float64), data, rs.random_sample,
                              rs.standard_normal)

        def on_generation(ga: Any) -> str | None:
            return "stop" if self._stopped(deadline) else None

        ga = pygad.GA(
            num_generations=cfg.generations,
            num_parents_mating=parents,
            fitness_func=fitness_func,
            fitness_batch_size=pop.shape[0],
            initial_population=pop,
            gene_type=float,
            gene_space=_gene_space(data),
            gene_categorical=_categorical(data),
            parent_selection_type="tournament",
            K_tournament=3,
            crossover_type="uniform",
            mutation_type=mutate,
            keep_elitism=cfg.elitism,
            on_generation=on_generation,
            save_solutions=False,
            save_best_solutions=False,
            suppress_warnings=True,
            random_seed=int(seed.generate_state(1, np.uint32)[0]),
            logger=_quiet_logger(),
        )
        ga.run()
        return _finish(replay, ga.population, int(ga.generations_completed))


class NumpyOptimizer(_GeneticBase):
    """The same GA as :class:`PygadOptimizer` in plain numpy (for comparison).

    Tournament selection (size 3) of a mating pool, uniform crossover of
    random pairs from the pool, Gaussian mutation clipped to [0, 1], and the
    ``elitism`` best carried over unchanged.
    """

    def step(
        self, population: FloatArray, data: Snapshot, seed: np.random.SeedSequence
    ) -> StepResult:
        """Run up to ``generations`` numpy generations from ``population`` on ``data``."""
        cfg = self._cfg
        pop, n_parents = cfg.check(population, data)
        replay = Replay(data, cfg.params)
        rng = np.random.default_rng(seed)
        deadline = None if cfg.time_budget_s is None else time.monotonic() + cfg.time_budget_s
        size, genes = pop.shape
        fit = replay.fitness(pop)
        done = 0
        for _ in range(cfg.generations):
            if self._stopped(deadline):
                break
            entrants = rng.integers(0, size, (n_parents, 3))
            pool = pop[entrants[np.arange(n_parents), np.argmax(fit[entrants], axis=1)]]
            n_kids = size - cfg.elitism
            mates = rng.integers(0, n_parents, (n_kids, 2))
            take_second = rng.random((n_kids, genes)) < 0.5
            kids = np.where(take_second, pool[mates[:, 1]], pool[mates[:, 0]])
            kids = cfg.mutate(kids, data, rng.random, rng.standard_normal)
            elite = np.argsort(-fit, kind="stable")[: cfg.elitism]
            pop = np.concatenate([pop[elite], kids])
            fit = np.concatenate([fit[elite], replay.fitness(kids)])
            done += 1
        return _finish(replay, pop, done)
