"""Which recipes this instance evolves, and the populations it hands on.

With ``evolver.lease_s`` > 0, an instance steps a recipe only while it holds the
recipe's lease (:mod:`alchemist.daemon.storage.lease`); its promotions are fenced
by that lease. After every step the leader also puts the population (the bytes of
:func:`~alchemist.daemon.learning.state.dump_state`) in the KV bucket
``alchemist_evolver`` (key = recipe name), so whichever instance takes the lease
next, on any host, resumes from it instead of from a fresh population. With
``lease_s = 0`` there is no lease: every instance steps every recipe, as before
leases, and compare-and-set decides which promotion lands.
"""

from __future__ import annotations

import contextlib

import structlog
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from alchemist.daemon.learning.state import State, dump_state, parse_state
from alchemist.daemon.storage.lease import Leases

__all__ = ["Leadership", "population_bucket"]

log = structlog.get_logger("alchemist.evolver")


def population_bucket(prefix: str) -> str:
    """The KV bucket of shared populations: ``alchemist_evolver`` for ``alchemist``."""
    return f"{prefix.replace('.', '_')}_evolver"


class Leadership:
    """The evolver's view of the leases and the shared populations (None: no lease)."""

    def __init__(self, leases: Leases | None = None, shared: KeyValue | None = None,
                 max_value: int = 1 << 20) -> None:
        self.leases = leases
        self.shared = shared
        self.max_value = max_value
        #: the lease term each recipe's state was last resumed for
        self._resumed: dict[str, int] = {}
        self._too_large: set[str] = set()

    def leads(self, name: str) -> bool:
        """Whether this instance steps ``name`` now."""
        return self.leases is None or self.leases.holds(name)

    async def resume(self, name: str, st: State, providers: tuple[str, ...]) -> State:
        """At the start of a lease term, the shared state when it is further along than
        ours (the last holder's population); otherwise ``st``."""
        if self.leases is None or self.shared is None:
            return st
        term = self.leases.terms.get(name, 0)
        if self._resumed.get(name) == term:
            return st
        try:
            data = (await self.shared.get(name)).value
        except KeyNotFoundError:
            data = None
        self._resumed[name] = term
        if not data:
            return st
        shared = parse_state(data, name, providers)
        if shared.done > st.done or (st.population is None and shared.population is not None):
            log.info("evolver_took_over", recipe=name, upto=shared.done,
                     generation=shared.generation, population=shared.population is not None)
            return shared
        return st

    async def share(self, name: str, st: State) -> None:
        """Put the leader's state where the next leader finds it (a failure is logged)."""
        if self.shared is None or self.leases is None or not self.leases.holds(name):
            return
        data = dump_state(st)
        if data is None:
            return
        if len(data) > self.max_value:
            if name not in self._too_large:  # said once: a new leader starts fresh
                self._too_large.add(name)
                log.warning("evolver_state_not_shared", recipe=name, bytes=len(data),
                            limit=self.max_value)
            return
        try:
            await self.shared.put(name, data)
        except Exception as exc:  # noqa: BLE001 - the local file has it; the next step shares again
            log.warning("evolver_state_share_failed", recipe=name, error=type(exc).__name__)

    async def close(self) -> None:
        """Release the leases (another instance takes them at once)."""
        if self.leases is not None:
            with contextlib.suppress(Exception):
                await self.leases.close()
