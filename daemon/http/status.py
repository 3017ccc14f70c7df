"""What the status page shows, as JSON the page and the tests share.

``GET /status/recipes``: each recipe served, its version, strategy, weights
(skill x provider) and the history of its versions still in the KV bucket, each
with the reason it was written and the gate's evidence (fitness against the
incumbent's, ratings, generation). ``GET /status/providers``: each provider's
breaker state, p50/p99 latency of its last answered calls, error share and
calls per request, plus the daemon's request and rating counts.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any, Protocol

import structlog

from alchemist.answers.recipes import Recipe
from alchemist.daemon.learning.evolver import Evolver
from alchemist.daemon.learning.feedback import FeedbackConsumer
from alchemist.daemon.serving.service import InferenceService
from alchemist.daemon.storage.recipe_store import RecipeStore
from alchemist.daemon.storage.streams import Streams
from alchemist.daemon.telemetry.metrics import Metrics

__all__ = ["Parts", "providers_status", "recipes_status"]

log = structlog.get_logger("alchemist.http")
HISTORY_SHOWN = 20  # versions per recipe on the page (the bucket keeps up to 64)


class Parts(Protocol):
    """The running daemon's parts the front door reads (``Daemon`` has them all)."""

    service: InferenceService | None
    recipes: RecipeStore | None
    streams: Streams | None
    feedback: FeedbackConsumer | None
    evolver: Evolver | None
    metrics: Metrics


def _version(r: Recipe) -> dict[str, Any]:
    return {"version": r.version, "reason": r.reason, "created_at": r.created_at,
            "parent": r.parent, "fitness": r.fitness, "baseline_fitness": r.baseline_fitness,
            "n_ratings": r.n_ratings, "generation": r.generation}


async def _history(store: RecipeStore, name: str) -> list[dict[str, Any]]:
    try:
        versions = await store.history(name)
    except Exception as exc:  # noqa: BLE001 - the page still shows the recipe without it
        log.warning("status_history_failed", recipe=name, error=type(exc).__name__)
        return []
    return [_version(r) for r in versions[-HISTORY_SHOWN:]][::-1]


async def recipes_status(parts: Parts) -> dict[str, Any]:
    """Every recipe served: version, strategy, weights as a grid, history (newest first)."""
    store = parts.recipes
    providers = sorted(parts.service.providers) if parts.service else []
    out = []
    for recipe in sorted(store.current.values() if store else (), key=lambda r: r.name):
        skills = ["*", *sorted(s for s in recipe.weights if s != "*")]
        grid = {skill: recipe.row(skill, providers) for skill in skills}
        out.append({"name": recipe.name, "version": recipe.version,
                    "strategy": recipe.strategy, "answer": recipe.answer.to_dict(),
                    "min_weight": recipe.min_weight, "explore": recipe.explore,
                    "providers": providers, "skills": skills, "weights": grid,
                    "current": _version(recipe),
                    "history": await _history(store, recipe.name) if store else []})
    return {"recipes": out}


def _samples(metrics: Metrics, names: set[str]) -> list[tuple[str, Mapping[str, str], float]]:
    """The samples of ``names`` in the metrics registry (as a scrape would read them)."""
    return [(s.name, s.labels, float(s.value)) for family in metrics.collect()
            for s in family.samples if s.name in names]


def _percentile(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 3)


def providers_status(parts: Parts) -> dict[str, Any]:
    """Each provider's health, and the daemon's counts."""
    service = parts.service
    calls: dict[str, float] = {}
    failures: dict[str, float] = {}
    for name, labels, value in _samples(parts.metrics, {
            "alchemist_provider_latency_seconds_count", "alchemist_provider_failures_total"}):
        table = calls if name.endswith("_count") else failures
        table[labels["provider"]] = table.get(labels["provider"], 0.0) + value
    counts = dict(service.counts) if service else {}
    answered = counts.get("ok", 0) + sum(v for k, v in counts.items() if k.startswith("error_"))
    rows = []
    for name, breaker in sorted(service.fanout.breakers.items() if service else ()):
        recent = list(service.fanout.latencies.get(name, ())) if service else []
        n = calls.get(name, 0.0)
        rows.append({"name": name, "breaker": breaker.state, "calls": int(n),
                     "failures": int(failures.get(name, 0.0)),
                     "error_share": round(failures.get(name, 0.0) / n, 4) if n else None,
                     "calls_per_request": round(n / answered, 4) if answered else None,
                     "p50_ms": _percentile(recent, 50), "p99_ms": _percentile(recent, 99),
                     "latency_window": len(recent)})
    ratings = dict(parts.feedback.counts) if parts.feedback else {}
    evolver = dict(parts.evolver.counts) if parts.evolver else {}
    return {"providers": rows, "requests": {"answered": counts.get("ok", 0),
                                            "errors": answered - counts.get("ok", 0),
                                            "inflight": service.inflight if service else 0},
            "ratings": ratings, "evolver": evolver}
