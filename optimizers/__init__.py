"""Learning recipe weights: fitness replay, evolution, seeding and the promotion gate.

Nothing here imports NATS, aiohttp or the daemon: the daemon hands in a
:class:`Snapshot`, the incumbent's genome and a population, and one
:class:`Policy` step gives back arrays and a decision (:class:`Verdict`).

The names below load their module (and numpy, PyGAD) on first use, so that
reading :mod:`alchemist.optimizers.defaults` (as the config does) stays cheap.
The functions ``fitness`` and ``gate`` are imported from their modules
(:mod:`.fitness`, :mod:`.gate`): loaded lazily, the package's attribute of that
name is the module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alchemist.optimizers.data import Snapshot
    from alchemist.optimizers.evolve import NumpyOptimizer, Optimizer, PygadOptimizer, StepResult
    from alchemist.optimizers.fitness import (
        FitnessParams,
        Replay,
        effective_weights,
        picks,
        record_values,
        skill_counts,
    )
    from alchemist.optimizers.gate import GateDecision, split_holdout
    from alchemist.optimizers.policy import Policy, PolicyParams, Verdict
    from alchemist.optimizers.seeding import agreement_weights, seed_population

#: public name -> the module that defines it
_HOMES = {
    "Snapshot": "data",
    "NumpyOptimizer": "evolve", "Optimizer": "evolve", "PygadOptimizer": "evolve",
    "StepResult": "evolve",
    "FitnessParams": "fitness", "Replay": "fitness", "effective_weights": "fitness",
    "picks": "fitness", "record_values": "fitness", "skill_counts": "fitness",
    "GateDecision": "gate", "split_holdout": "gate",
    "Policy": "policy", "PolicyParams": "policy", "Verdict": "policy",
    "agreement_weights": "seeding", "seed_population": "seeding",
}

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
    "picks",
    "record_values",
    "seed_population",
    "skill_counts",
    "split_holdout",
]


def __getattr__(name: str) -> object:
    """Load a public name's module on first use (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
