"""Learning recipe weights: fitness replay, evolution, seeding and the promotion gate.

Nothing here imports NATS, aiohttp or the daemon: the daemon hands in a
:class:`~alchemist.optimizers.data.Snapshot`, the incumbent's genome and a
population, and one :class:`~alchemist.optimizers.policy.Policy` step gives back
arrays and a decision (:class:`~alchemist.optimizers.policy.Verdict`).

Modules: ``defaults`` (the learning defaults, no imports: the config reads them
without loading numpy), ``data`` (the snapshot), ``estimator``, ``fitness``,
``evolve`` (the PyGAD and numpy steps), ``seeding``, ``gate``, ``templates``,
``policy`` (one whole step), ``synthetic`` (test data). Import names from their
module; this package imports nothing, so reading ``defaults`` stays cheap.
"""
