"""Prometheus metrics on prometheus_client: a private registry and ``GET /metrics`` on aiohttp.

The daemon owns one :class:`Metrics` and passes it around; each has its own
:class:`prometheus_client.CollectorRegistry` (never the process-wide default
registry, so two instances in one process share nothing). :func:`serve_metrics`
exposes it as Prometheus text (format 0.0.4) on ``GET /metrics``, loopback by default.

Metrics (stable names; labels in braces)
----------------------------------------

* ``alchemist_requests_total{code}`` (counter): ``alchemist.infer`` requests answered, by
  outcome: ``ok`` or the error code (``bad_request``, ``overloaded``, ``deadline_exceeded``, ...).
* ``alchemist_request_latency_seconds`` (histogram): end-to-end latency of fused answers.
* ``alchemist_provider_latency_seconds{provider}`` (histogram): latency of each provider call.
* ``alchemist_provider_failures_total{provider,error}`` (counter): failed provider calls, by
  provider and error code (``Outcome.error``: ``timeout``, ``rate_limited``, ``unavailable``,
  ``auth``, ``bad_response``, ``deadline``, ...).
* ``alchemist_ratings_total{outcome}`` (counter): feedback messages, by outcome
  (``FeedbackConsumer.counts`` keys: ``accepted``, ``duplicate``, ``rejected_malformed``,
  ``rejected_unknown``, ``rejected_user_cap``).
* ``alchemist_evolver_generations_total`` (counter): GA generations run by the evolver.
* ``alchemist_promotions_total`` (counter): recipes promoted (published) by this instance.
* ``alchemist_recipe_version{recipe}`` (gauge): version of the recipe currently served.
* ``alchemist_weight{recipe,skill,provider}`` (gauge): current fusion weight of a provider
  for a skill in a recipe.
* ``alchemist_inflight_requests`` (gauge): requests being served right now.
* ``alchemist_breaker_open{provider}`` (gauge): 1 while the provider's circuit breaker is
  open (its calls are skipped), else 0.
* ``alchemist_lease_held{lease}`` (gauge): 1 while this instance holds the lease (a recipe's
  name: it evolves that recipe; ``_prober``: it probes), else 0. Summed over instances, 0
  for longer than a lease means nobody learns.
* ``alchemist_event_loop_tasks`` (gauge): asyncio tasks alive on the daemon's event loop (flat
  under steady load; a climb is a task leak).
* ``alchemist_experience_records{kind}`` (gauge): records held in memory by the experience
  index, by kind (``experiences``, ``rated``); bounded by ``experience.max_records`` each.
* ``alchemist_experience_dropped_total`` (counter): experience records the broker did not
  take (no ack within 5 s, an error ack, the journal's buffer full); their ratings will be
  rejected as unknown. Alert on any increase.

Histograms use fixed buckets (:data:`LATENCY_BUCKETS`, 5 ms .. 120 s). Metrics
without labels are exposed from the start (at 0). No ``_created`` series are
exposed (see ``series.Instrument.collect``).

Where the values come from
--------------------------

* *Live* metrics, updated on the request path (the two latency histograms and
  ``alchemist_provider_failures_total``), are prometheus_client ``Histogram`` and
  ``Counter`` instruments. Each label set's child is cached here, so an
  ``observe``/``inc`` is a dict lookup plus the child's own locked add.
* *Scraped* metrics (``MetricSpec.scraped``: running totals kept in ``Counter``
  objects, recipe versions, weights, in-flight count, breaker state) live elsewhere
  in the daemon. Hooks added with :meth:`Metrics.add_collector` copy them in with
  :meth:`Metrics.set` at every scrape. :class:`Metrics` is itself the registry's one
  custom collector: its ``collect()`` runs the hooks, then yields every family in
  :data:`METRICS` order.

Cardinality is bounded: each metric keeps at most ``max_series`` label sets
(1000 by default). prometheus_client has no such limit, so it is enforced here,
where a label set first appears: a live metric's child cache and a scraped
metric's value table are the only ways in, and once one holds ``max_series``
label sets, updates for new ones go to one series whose every label is ``other``
(a warning is logged once per metric, and again if it fills up again after a
:meth:`Metrics.clear`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import cast

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from alchemist.daemon.telemetry.series import LATENCY_BUCKETS, OTHER, Instrument, Kind, MetricSpec, Scraped

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "MAX_SERIES", "METRICS", "OTHER", "Kind", "MetricSpec",
           "Metrics", "ScrapeHook", "bound_port", "serve_metrics"]

log = structlog.get_logger("alchemist.metrics")

#: a scrape hook: ``fn(metrics)`` copies values kept elsewhere in with :meth:`Metrics.set`
ScrapeHook = Callable[["Metrics"], None]

#: default cap on label sets per metric
MAX_SERIES = 1000

#: the text format 0.0.4 content type: what prometheus_client's own server answers a scraper
#: that asks for nothing else; every Prometheus version reads it (CONTENT_TYPE_LATEST now says
#: 1.0.0, which only matters for UTF-8 metric names, and ours are plain)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
PREFIX = "alchemist_"

#: every metric the daemon exposes (see the module docstring)
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("alchemist_requests_total", "counter",
               "Inference requests answered, by outcome code (ok or the error code).", ("code",),
               scraped=True),
    MetricSpec("alchemist_request_latency_seconds", "histogram",
               "End-to-end latency of fused answers in seconds."),
    MetricSpec("alchemist_provider_latency_seconds", "histogram",
               "Latency of provider calls in seconds.", ("provider",)),
    MetricSpec("alchemist_provider_failures_total", "counter",
               "Failed provider calls, by provider and error kind.", ("provider", "error")),
    MetricSpec("alchemist_ratings_total", "counter",
               "Feedback messages, by outcome (accepted or the rejection reason).", ("outcome",),
               scraped=True),
    MetricSpec("alchemist_evolver_generations_total", "counter",
               "Genetic-algorithm generations run by the evolver.", scraped=True),
    MetricSpec("alchemist_promotions_total", "counter",
               "Recipes promoted and published by this instance.", scraped=True),
    MetricSpec("alchemist_recipe_version", "gauge",
               "Version of the recipe currently served.", ("recipe",), scraped=True),
    MetricSpec("alchemist_weight", "gauge",
               "Current fusion weight of a provider for a skill in a recipe.",
               ("recipe", "skill", "provider"), scraped=True),
    MetricSpec("alchemist_inflight_requests", "gauge", "Inference requests being served now.",
               scraped=True),
    MetricSpec("alchemist_breaker_open", "gauge",
               "1 while the provider's circuit breaker is open, else 0.", ("provider",),
               scraped=True),
    MetricSpec("alchemist_lease_held", "gauge",
               "1 while this instance holds the lease (a recipe's evolver, or _prober), else 0.",
               ("lease",), scraped=True),
    MetricSpec("alchemist_event_loop_tasks", "gauge",
               "Asyncio tasks alive on the daemon's event loop.", scraped=True),
    MetricSpec("alchemist_experience_records", "gauge",
               "Records held in memory by the experience index, by kind.", ("kind",),
               scraped=True),
    MetricSpec("alchemist_experience_dropped_total", "counter",
               "Experience records the broker did not take (no ack, an error, a full buffer).",
               scraped=True),
)


class Metrics(Collector):
    """Counters, gauges and histograms with fixed names, on a private prometheus_client registry.

    ``specs`` defaults to :data:`METRICS`; ``max_series`` caps the label sets per metric.
    Unknown metric names, a method that does not fit the metric's type, or label
    names that differ from the metric's raise ``ValueError`` (programming errors).
    Updates may come from any thread; scrape hooks run in the scraping thread (the
    event loop, for :func:`serve_metrics`).
    """

    def __init__(self, specs: Iterable[MetricSpec] = METRICS, *, max_series: int = MAX_SERIES) -> None:
        self.max_series = max_series
        self._families: dict[str, Instrument | Scraped] = {}
        self._hooks: list[ScrapeHook] = []
        for spec in specs:
            self.register(spec)
        #: the registry :func:`serve_metrics` exposes; this object is its one collector
        self.registry = CollectorRegistry()
        self.registry.register(self)

    # -- definition -------------------------------------------------------------------------

    def register(self, spec: MetricSpec) -> None:
        """Add a metric (its name must start with ``alchemist_`` and be new)."""
        if not spec.name.startswith(PREFIX) or not _valid_name(spec.name):
            raise ValueError(f"metric name {spec.name!r} must be a valid name starting with {PREFIX!r}")
        if spec.name in self._families:
            raise ValueError(f"metric {spec.name!r} is already registered")
        if spec.kind == "counter" and not spec.name.endswith("_total"):
            raise ValueError(f"counter {spec.name} must be named *_total")
        for label in spec.labels:
            if not _valid_name(label) or label.startswith("__") or label == "le":
                raise ValueError(f"invalid label name {label!r} for {spec.name}")
        if spec.kind == "histogram":
            if spec.scraped:
                raise ValueError(f"histogram {spec.name} cannot be scraped: observe() it instead")
            if not spec.buckets or list(spec.buckets) != sorted(set(spec.buckets)):
                raise ValueError(f"histogram {spec.name} needs strictly increasing buckets")
        family = Scraped if spec.scraped else Instrument
        self._families[spec.name] = family(spec, self.max_series)

    def add_collector(self, hook: ScrapeHook) -> None:
        """Call ``hook(self)`` at every scrape, before the values are read (to pull values kept
        elsewhere into scraped metrics with :meth:`set`).

        An exception in a hook is logged and the scrape goes on without it.
        """
        self._hooks.append(hook)

    @property
    def names(self) -> list[str]:
        """Every metric's name, in exposition order."""
        return list(self._families)

    # -- updates ----------------------------------------------------------------------------

    def inc(self, name: str, value: float = 1, **labels: object) -> None:
        """Add ``value`` to a counter (``value >= 0``) or a gauge (any sign)."""
        family = self._family(name, ("counter", "gauge"), "inc")
        if value < 0 and family.spec.kind == "counter":
            raise ValueError(f"counter {name} cannot decrease (inc by {value})")
        if isinstance(family, Scraped):
            family.update(labels, value, add=True)
        else:
            cast("Counter | Gauge", family.child(labels)).inc(value)

    def dec(self, name: str, value: float = 1, **labels: object) -> None:
        """Subtract ``value`` from a gauge."""
        family = self._family(name, ("gauge",), "dec")
        if isinstance(family, Scraped):
            family.update(labels, -value, add=True)
        else:
            cast("Gauge", family.child(labels)).dec(value)

    def set(self, name: str, value: float, **labels: object) -> None:
        """Set a gauge, or a scraped counter to a running total kept elsewhere (e.g. a ``Counter``)."""
        family = self._family(name, ("counter", "gauge"), "set")
        if isinstance(family, Scraped):
            family.update(labels, value, add=False)
        elif family.spec.kind == "gauge":
            cast("Gauge", family.child(labels)).set(value)
        else:
            raise ValueError(f"set() does not apply to live counter {name}: inc() it, or declare "
                             "it scraped to mirror a total kept elsewhere")

    def observe(self, name: str, seconds: float, **labels: object) -> None:
        """Record one observation in a histogram."""
        family = self._family(name, ("histogram",), "observe")
        cast("Histogram", cast("Instrument", family).child(labels)).observe(seconds)

    def remove(self, name: str, **labels: object) -> None:
        """Forget one series (e.g. the weight of a provider that was removed on reload)."""
        self._family(name, ("counter", "gauge", "histogram"), "remove").remove(labels)

    def clear(self, name: str) -> None:
        """Forget every series of a metric (e.g. before re-setting all weights)."""
        self._family(name, ("counter", "gauge", "histogram"), "clear").clear()

    def get(self, name: str, **labels: object) -> float | None:
        """A counter's or gauge's current value, a histogram's count; None if the series is absent."""
        return self._family(name, ("counter", "gauge", "histogram"), "get").value(labels)

    # -- exposition -------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """Run the scrape hooks, then yield every metric family (the registry calls this)."""
        for hook in list(self._hooks):
            try:
                hook(self)
            except Exception as exc:  # noqa: BLE001 - one broken hook must not break the scrape
                log.warning("metrics_collector_failed", collector=getattr(hook, "__qualname__", "?"),
                            error=f"{type(exc).__name__}: {exc}")
        for family in list(self._families.values()):
            yield from family.collect()

    def render(self) -> str:
        """The whole registry in Prometheus text exposition format 0.0.4."""
        return _generate_latest(self.registry).decode("utf-8")

    def _family(self, name: str, kinds: tuple[Kind, ...], method: str) -> Instrument | Scraped:
        family = self._families.get(name)
        if family is None:
            raise ValueError(f"unknown metric {name!r}")
        if family.spec.kind not in kinds:
            raise ValueError(f"{method}() does not apply to {family.spec.kind} {name}")
        return family


async def serve_metrics(metrics: Metrics, host: str = "127.0.0.1", port: int = 9464) -> web.AppRunner:
    """Serve ``GET /metrics`` on ``host:port`` (``port=0``: any free port, see :func:`bound_port`).

    Returns the started runner; stop it with ``await runner.cleanup()``.
    """

    async def handle(_: web.Request) -> web.Response:
        # on the loop on purpose: the scrape hooks read daemon state owned by the loop
        return web.Response(body=_generate_latest(metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    shown = f"[{host}]" if ":" in host else host
    log.info("metrics_listening", url=f"http://{shown}:{bound_port(runner)}/metrics")
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port a runner from :func:`serve_metrics` listens on."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    raise RuntimeError("the metrics server is not listening")


def _valid_name(name: str) -> bool:
    return bool(name) and not name[0].isdigit() and all((c.isalnum() and c.isascii()) or c == "_"
                                                        for c in name)
