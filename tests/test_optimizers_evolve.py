"""The optimizer boundary: a contract every Optimizer passes, and learning behaviour."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from alchemist.optimizers.data import Snapshot
from alchemist.optimizers.evolve import NumpyOptimizer, Optimizer, PygadOptimizer, StepResult
from alchemist.optimizers.fitness import FitnessParams, effective_weights, fitness, skill_counts
from tests.scenarios import ACCURACY, PROVIDERS, SKILLS, experience

FLIPPED = [[0.65, 0.65, 0.6], [0.4, 0.9, 0.6], [0.9, 0.4, 0.6]]
PARAMS = FitnessParams()

Factory = Callable[..., Optimizer]


def uniform_population(size: int = 24, seed: int = 0) -> np.ndarray:
    """A near-uniform starting population (weights around 0.5)."""
    rng = np.random.default_rng(seed)
    return np.clip(0.5 + rng.normal(0.0, 0.05, (size, 9)), 0.0, 1.0)


class OptimizerContract:
    """What every :class:`Optimizer` implementation guarantees; subclass and set ``make``."""

    make: Factory

    def test_is_an_optimizer(self) -> None:
        assert isinstance(self.make(PARAMS), Optimizer)

    def test_result_shapes_and_range(self) -> None:
        pop, data = uniform_population(), experience(n=500)
        result = self.make(PARAMS, generations=3).step(pop, data, np.random.SeedSequence(1))
        assert isinstance(result, StepResult)
        assert result.population.shape == pop.shape and result.population.dtype == np.float64
        assert result.fitness.shape == (len(pop),) and result.best.shape == (9,)
        assert ((result.population >= 0) & (result.population <= 1)).all()
        assert result.best_fitness == pytest.approx(result.fitness.max())
        assert 1 <= result.generations <= 3

    def test_reported_fitness_is_fresh(self) -> None:
        pop, data = uniform_population(), experience(n=500)
        result = self.make(PARAMS).step(pop, data, np.random.SeedSequence(2))
        np.testing.assert_allclose(result.fitness, fitness(result.population, data, PARAMS))
        assert result.best_fitness == pytest.approx(fitness(result.best[None], data, PARAMS)[0])

    def test_same_seed_same_result_and_input_untouched(self) -> None:
        pop, data = uniform_population(), experience(n=500)
        before = pop.copy()
        opt = self.make(PARAMS)
        a = opt.step(pop, data, np.random.SeedSequence(3))
        b = opt.step(pop, data, np.random.SeedSequence(3))
        np.testing.assert_array_equal(a.population, b.population)
        np.testing.assert_array_equal(pop, before)

    def test_fresh_seed_each_step_gives_different_populations(self) -> None:
        pop, data = uniform_population(), experience(n=500)
        root = np.random.SeedSequence(4)
        first, second = root.spawn(2)
        opt = self.make(PARAMS)
        a, b = opt.step(pop, data, first), opt.step(pop, data, second)
        assert not np.array_equal(a.population, b.population)

    def test_stale_fitness_trap(self) -> None:
        """After the data changes, the reported best is scored on the new data."""
        old, new = experience(ACCURACY), experience(FLIPPED, seed=2)
        opt = self.make(PARAMS, generations=4)
        seeds = np.random.SeedSequence(5).spawn(2)
        first = opt.step(uniform_population(), old, seeds[0])
        second = opt.step(first.population, new, seeds[1])
        assert second.best_fitness == pytest.approx(fitness(second.best[None], new, PARAMS)[0])
        np.testing.assert_allclose(second.fitness, fitness(second.population, new, PARAMS))

    def test_empty_data_scores_cost_only(self) -> None:
        data = Snapshot.empty(SKILLS, PROVIDERS)
        result = self.make(PARAMS).step(uniform_population(), data, np.random.SeedSequence(6))
        assert np.isfinite(result.fitness).all() and (result.fitness <= 0).all()

    def test_stop_event_ends_the_step(self) -> None:
        stop = threading.Event()
        stop.set()
        opt = self.make(PARAMS, generations=10_000, stop_event=stop)
        t0 = time.monotonic()
        result = opt.step(uniform_population(), experience(n=500), np.random.SeedSequence(7))
        # generous bound: one generation at most, never the 10,000 asked for
        assert time.monotonic() - t0 < 10.0 and result.generations <= 1

    def test_time_budget_ends_the_step(self) -> None:
        opt = self.make(PARAMS, generations=1_000_000, time_budget_s=0.2)
        t0 = time.monotonic()
        result = opt.step(uniform_population(), experience(n=500), np.random.SeedSequence(8))
        # generous bound: the 0.2 s budget and one generation, never the million asked for
        assert time.monotonic() - t0 < 10.0 and result.generations >= 1

    def test_rejects_a_population_of_the_wrong_shape(self) -> None:
        with pytest.raises(ValueError, match="expected \\(P, 9\\)"):
            self.make(PARAMS).step(np.zeros((8, 7)), experience(n=50), np.random.SeedSequence())

    def test_rejects_bad_settings(self) -> None:
        with pytest.raises(ValueError, match="mutation_rate"):
            self.make(PARAMS, mutation_rate=0.0)

    def test_learns_the_right_provider_per_skill(self) -> None:
        data = experience(n=3000)
        opt = self.make(PARAMS, generations=10)
        pop = uniform_population(32)
        start = fitness(pop, data, PARAMS).max()
        for seed in np.random.SeedSequence(9).spawn(6):
            result = opt.step(pop, data, seed)
            pop = result.population
        assert result.best_fitness > start + 0.01
        eff = effective_weights(result.best[None], skill_counts(data), PARAMS)[0]
        assert eff[1, 0] > eff[1, 1]  # math: A over B
        assert eff[2, 1] > eff[2, 0]  # code: B over A


class TestPygadOptimizer(OptimizerContract):
    make = staticmethod(PygadOptimizer)


class TestNumpyOptimizer(OptimizerContract):
    make = staticmethod(NumpyOptimizer)


def test_pygad_step_runs_in_a_worker_thread_with_stop_from_outside() -> None:
    stop = threading.Event()
    opt = PygadOptimizer(PARAMS, generations=100_000, stop_event=stop)
    box: list[StepResult] = []
    worker = threading.Thread(
        target=lambda: box.append(
            opt.step(uniform_population(), experience(n=500), np.random.SeedSequence(10))
        )
    )
    worker.start()
    time.sleep(0.2)  # let a few generations run before asking it to stop
    stop.set()
    worker.join(timeout=5.0)
    assert not worker.is_alive() and box and box[0].generations >= 1
