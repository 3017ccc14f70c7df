"""Served confidence and the rating rate over time, for the status page.

Every ``interval_s`` the front door samples the daemon's running totals
(answers served and the sum of their confidences, ratings accepted) and keeps
the difference since the previous sample as one point: requests a second, the
mean confidence of the answers served in it, ratings a second, and the share of
answers rated. At most :data:`POINTS` points are kept (an hour at 10 s): the
timeline is bounded whatever the uptime. ``GET /status/timeline`` returns them,
oldest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from alchemist.daemon.http.status import Parts
from alchemist.daemon.tasks import cancel

__all__ = ["POINTS", "Point", "Timeline"]

POINTS = 360
INTERVAL_S = 10.0


@dataclass(frozen=True, slots=True)
class Point:
    """One interval: its end (unix seconds), its length, and what happened in it."""

    t: float
    seconds: float
    requests_per_s: float
    #: the mean confidence of the answers served in the interval (None: none served)
    confidence: float | None
    ratings_per_s: float
    #: ratings accepted over answers served in the interval (None: none served)
    rated_share: float | None


class Timeline:
    """The sampler and its bounded points."""

    def __init__(self, parts: Parts, interval_s: float = INTERVAL_S,
                 points: int = POINTS) -> None:
        self.parts = parts
        self.interval_s = interval_s
        self.points: deque[Point] = deque(maxlen=points)
        self._last: tuple[float, int, float, int] | None = None
        self._task: asyncio.Task[None] | None = None

    def _totals(self) -> tuple[float, int, float, int]:
        service, feedback = self.parts.service, self.parts.feedback
        served = service.counts.get("ok", 0) if service else 0
        confidence = service.confidence_sum if service else 0.0
        rated = feedback.counts.get("accepted", 0) if feedback else 0
        return time.time(), served, confidence, rated

    def sample(self) -> Point | None:
        """Close the current interval as a point (the first call only starts one)."""
        now = self._totals()
        last, self._last = self._last, now
        if last is None or now[0] <= last[0]:
            return None
        seconds = now[0] - last[0]
        served, confidence, rated = now[1] - last[1], now[2] - last[2], now[3] - last[3]
        point = Point(round(now[0], 3), round(seconds, 3), round(served / seconds, 3),
                      round(confidence / served, 4) if served else None,
                      round(rated / seconds, 3), round(rated / served, 4) if served else None)
        self.points.append(point)
        return point

    def to_json(self) -> dict[str, Any]:
        return {"interval_s": self.interval_s, "points": [asdict(p) for p in self.points]}

    async def start(self) -> None:
        self.sample()
        self._task = asyncio.create_task(self._run(), name="http-timeline")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            with contextlib.suppress(Exception):  # a sample must never stop the page's data
                self.sample()

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
