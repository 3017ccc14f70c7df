"""The prober's budget: calls per hour and USD per day, over sliding windows.

Seeded from the journal (the probe records of the rated stream) whenever an
instance starts probing, so what was spent survives restarts and counts on
whichever instance holds the prober lease next.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable

from alchemist.daemon.storage.experience import Rated

__all__ = ["COST_SLOT_S", "Budget"]

#: the costs of a day are summed in slots of this many seconds: at most 98 sums whatever the
#: limits (a cost counts until its slot has wholly left the day: up to this much longer)
COST_SLOT_S = 900.0
_DAY_S = 86400.0


class Budget:
    """Calls per hour and USD per day, over sliding windows (bounded memory).

    Calls are kept one timestamp each, at most ``calls_per_hour`` of them (more
    could never be allowed). Costs are summed per :data:`COST_SLOT_S` slot, so
    how many are kept does not depend on the limits: a smaller
    ``calls_per_hour`` never forgets money already spent.
    """

    def __init__(self, calls_per_hour: int, cost_per_day: float) -> None:
        self.calls_per_hour = calls_per_hour
        self.cost_per_day = cost_per_day
        self._calls: deque[float] = deque(maxlen=calls_per_hour)
        self._costs: deque[tuple[float, float]] = deque(maxlen=int(_DAY_S // COST_SLOT_S) + 2)

    def allows(self, calls: int, now: float) -> bool:
        """Whether ``calls`` more fit in the last hour's calls and the last day's costs."""
        while self._calls and now - self._calls[0] > 3600:
            self._calls.popleft()
        return (len(self._calls) + calls <= self.calls_per_hour
                and self.spent(now) < self.cost_per_day)

    def spent(self, now: float) -> float:
        """USD spent in the last day (counted by slot: see :data:`COST_SLOT_S`)."""
        while self._costs and now - (self._costs[0][0] + COST_SLOT_S) > _DAY_S:
            self._costs.popleft()
        return sum(c for _, c in self._costs)

    def resize(self, calls_per_hour: int, cost_per_day: float) -> None:
        """New limits; the calls and costs already spent still count (calls: the latest
        ``calls_per_hour``, enough to refuse more; costs: all of the last day's)."""
        self.calls_per_hour = calls_per_hour
        self.cost_per_day = cost_per_day
        self._calls = deque(self._calls, maxlen=calls_per_hour)

    def spend(self, calls: int, cost: float, now: float) -> None:
        """Count ``calls`` calls costing ``cost`` USD in all, made at ``now``."""
        self._calls.extend([now] * calls)
        slot = now - now % COST_SLOT_S
        if self._costs and self._costs[-1][0] == slot:
            self._costs[-1] = (slot, self._costs[-1][1] + cost)
        else:
            self._costs.append((slot, cost))

    @property
    def calls_last_hour(self) -> int:
        return len(self._calls)

    @classmethod
    def from_journal(cls, calls_per_hour: int, cost_per_day: float,
                     records: Iterable[Rated]) -> Budget:
        """A budget that has spent what the journaled probe records of the last day did:
        spending survives restarts and moves with the prober lease between instances."""
        budget = cls(calls_per_hour, cost_per_day)
        wall, mono = time.time(), time.monotonic()
        for r in sorted((r for r in records if r.is_probe and wall - r.ts < _DAY_S),
                        key=lambda r: r.ts):
            budget.spend(len(r.experience.providers), sum(r.experience.cost), mono - (wall - r.ts))
        return budget
