"""The learning defaults, defined once.

:class:`~alchemist.optimizers.policy.PolicyParams`,
:class:`~alchemist.optimizers.fitness.FitnessParams`,
:func:`~alchemist.optimizers.gate.gate` and the daemon's ``[evolver]`` config
section all take their defaults from here. This module imports nothing (no
numpy, nothing of ours), so reading the config does not load the optimizers.
"""

from __future__ import annotations

from typing import Final

# the step (PolicyParams)
#: individuals in the population
POPULATION: Final = 32
#: generations per learning step
GENERATIONS: Final = 10
#: weakest individuals of a carried population replaced by fresh seeds each step
RESEED: Final = 4
#: share of the records held out to judge a challenger
HOLDOUT_SHARE: Final = 0.3

# the promotion gate (gate(); the config's evolver.margin, evolver.z, evolver.min_ratings)
#: gain, as a fraction of the score, a challenger's lower bound must clear
MARGIN: Final = 0.005
#: one-sided z of that lower bound (2.33: about 1 % false promotions per test)
Z: Final = 2.33
#: held-out ratings needed before any promotion
MIN_RECORDS: Final = 30

# scoring (FitnessParams)
#: assumed probability that a rating is flipped
NOISE: Final = 0.1
#: fitness points charged per unit of mean relative call cost
COST_WEIGHT: Final = 0.02
#: records of evidence at which a skill's own weight row counts half
SHRINK_K: Final = 20.0
