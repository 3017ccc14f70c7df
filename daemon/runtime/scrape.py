"""What the daemon's metrics read at scrape time: running totals kept by its parts."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from alchemist.daemon.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from alchemist.daemon.runtime.app import Daemon

__all__ = ["collect"]


def collect(daemon: Daemon, m: Metrics) -> None:
    """Copy the running totals kept elsewhere into the metrics, at scrape time."""
    m.set("alchemist_event_loop_tasks", len(asyncio.all_tasks()))  # scrapes run on the loop
    m.set("alchemist_experience_records", len(daemon.index.experiences), kind="experiences")
    m.set("alchemist_experience_records", len(daemon.index.rated), kind="rated")
    if daemon.service is not None:
        for key, value in daemon.service.counts.items():
            if key == "ok" or key.startswith("error_"):
                m.set("alchemist_requests_total", value, code=key.removeprefix("error_"))
        m.set("alchemist_inflight_requests", daemon.service.inflight)
        m.set("alchemist_experience_dropped_total", daemon.service.counts["experience_dropped"])
        m.clear("alchemist_breaker_open")  # providers removed by a reload disappear
        for name, breaker in daemon.service.fanout.breakers.items():
            m.set("alchemist_breaker_open", 1.0 if breaker.state == "open" else 0.0,
                  provider=name)
    if daemon.feedback is not None:
        for outcome, value in daemon.feedback.counts.items():
            m.set("alchemist_ratings_total", value, outcome=outcome)
    if daemon.evolver is not None:
        m.set("alchemist_evolver_generations_total", daemon.evolver.counts["generations"])
        m.set("alchemist_promotions_total", daemon.evolver.counts["promotions"])
    if daemon.recipes is not None:
        m.clear("alchemist_weight")
        for recipe in daemon.recipes.current.values():
            m.set("alchemist_recipe_version", recipe.version, recipe=recipe.name)
            for skill, row in recipe.weights.items():
                for provider, weight in row.items():
                    m.set("alchemist_weight", weight, recipe=recipe.name, skill=skill,
                          provider=provider)
