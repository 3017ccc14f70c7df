"""Learning recipe weights: fitness replay, evolution, seeding and the promotion gate.

Nothing here imports NATS, aiohttp or the daemon: the daemon hands in a
:class:`Snapshot`, the incumbent's genome and a population, and one
:class:`Policy` step gives back arrays and a decision (:class:`Verdict`).
"""

from alchemist.optimizers.data import Snapshot
from alchemist.optimizers.evolve import NumpyOptimizer, Optimizer, PygadOptimizer, StepResult
from alchemist.optimizers.fitness import (
    FitnessParams,
    Replay,
    effective_weights,
    fitness,
    picks,
    record_values,
    skill_counts,
)
from alchemist.optimizers.gate import GateDecision, gate, split_holdout
from alchemist.optimizers.policy import Policy, PolicyParams, Verdict
from alchemist.optimizers.seeding import agreement_weights, seed_population

__all__ = [
    "FitnessParams",
    "GateDecision",
    "NumpyOptimizer",
    "Optimizer",
    "Policy",
    "PolicyParams",
    "PygadOptimizer",
    "Replay",
    "Snapshot",
    "StepResult",
    "Verdict",
    "agreement_weights",
    "effective_weights",
    "fitness",
    "gate",
    "picks",
    "record_values",
    "seed_population",
    "skill_counts",
    "split_holdout",
]
