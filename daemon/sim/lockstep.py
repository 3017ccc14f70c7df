"""The bench's lockstep mode: the same promotions on a busy machine as on an idle one.

Requests fly concurrently, and the recipe that serves a request depends on
when promotions land; so without lockstep a run's learning depends on how fast
the machine is. In lockstep, the simulated users decide whether they will rate
a request when it is sent (the rating itself is drawn when its answer is in),
ratings are published in request order, not reply order, and before sending a
request the driver checks whether an evidence boundary (every
``evolver.min_new_ratings``-th rating) falls among the requests before it. If
one does, it waits until those requests are answered and rated, and the daemon
has indexed every rating and finished the step they trigger (its promotion, if
any, in force: :meth:`Evolver.settled`). Between boundaries requests fly with
one recipe, so which recipe serves a request depends only on the evidence.

What else the harness does for the same purpose: the service's explore draws
come from a seeded RNG, the fan-out decides its early answer on prefixes of
the providers (:attr:`FanOut.ordered`), and the evolver is seeded with the
run's seed. Provider failures drawn by the replay server (``failure_rate``) and
answers cut by the deadline still depend on timing, and so would evidence that
arrives from elsewhere during the run (probe records); evidence in before the
run (a golden set probed up front) is counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from alchemist.daemon.learning.evolver import Evolver
from alchemist.daemon.sim.replay import ReplayItem
from alchemist.daemon.storage.recipe_store import RecipeStore

__all__ = ["Lockstep", "Record"]

#: accounts one answered request in request order (``rated``: whether its user rates it);
#: returns whether a rating was published
Record = Callable[[ReplayItem, dict[str, Any], bool], Awaitable[bool]]


class Lockstep:
    """Gates the sending of requests at evidence boundaries and records replies in order."""

    def __init__(self, evolver: Evolver, recipes: RecipeStore, every: int, record: Record,
                 recipe: str = "default", promotions: list[tuple[int, int]] | None = None) -> None:
        self.evolver, self.recipes, self.every = evolver, recipes, every
        self.record, self.recipe = record, recipe
        #: whether each request sent so far will be rated (drawn when it is sent)
        self.flags: list[bool] = []
        self.replies: dict[int, tuple[ReplayItem, dict[str, Any]]] = {}
        self.next = 0  # the next request to record, in request order
        #: the recipe's evidence records: those in before the run (e.g. golden probe records),
        #: then one per rating published
        self.evidence = evolver.total(recipe)
        self.at = self.evidence  # the evidence the daemon had settled at, at the last boundary
        current = recipes.get(recipe)
        self.version = current.version if current else 0
        #: (requests sent before it served, version) of every evolved recipe, in order
        self.promotions = promotions if promotions is not None else []
        self._moved = asyncio.Condition()

    def sent(self, rated: bool) -> None:
        """Note that the next request was sent, and whether its user will rate it."""
        self.flags.append(rated)

    async def before(self, i: int) -> None:
        """Return once request ``i`` may be sent: every boundary among the requests
        before it has been learned from."""
        while True:
            boundary = (self.at // self.every + 1) * self.every
            if self.evidence + sum(self.flags[self.next : i]) < boundary:
                return
            async with self._moved:
                await self._moved.wait_for(lambda: self.next >= i)
            if self.evidence < boundary:
                continue  # a request that was to be rated failed: the boundary comes later
            await self.evolver.settled(self.recipe, self.evidence)
            self.at = self.evidence
            current = self.recipes.get(self.recipe)
            if current is not None and current.version != self.version:
                self.version = current.version
                if current.reason == "evolved":
                    self.promotions.append((i, current.version))

    async def done(self, i: int, item: ReplayItem, reply: dict[str, Any]) -> None:
        """Request ``i`` was answered: record it, and every later one waiting for it."""
        self.replies[i] = (item, reply)
        async with self._moved:
            while self.next in self.replies:
                item, reply = self.replies.pop(self.next)
                if await self.record(item, reply, self.flags[self.next]):
                    self.evidence += 1
                self.next += 1
            self._moved.notify_all()
