"""Prometheus metrics: a small registry and a text-format (0.0.4) endpoint on aiohttp.

No ``prometheus_client`` and no global state: the daemon owns one
:class:`Metrics` and passes it around; :func:`serve_metrics` exposes it on
``GET /metrics`` (loopback by default).

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

Histograms use fixed buckets (:data:`LATENCY_BUCKETS`, 5 ms .. 120 s) and are
exposed as ``_bucket{le=...}`` (cumulative, ending at ``le="+Inf"``), ``_sum``
and ``_count``. Metrics without labels are exposed from the start (at 0).

Cardinality is bounded: each metric keeps at most ``max_series`` label sets
(1000 by default). Past that, updates for new label sets go to one series
whose every label is ``other``, and a warning is logged once per metric.

Use from the event loop (``inc``/``set``/``observe`` are cheap and guarded by
a lock, so a worker thread may call them too). Values that live elsewhere
(weights, breaker state, in-flight count, counters kept in ``Counter`` objects)
can be pulled at scrape time by a collector: ``metrics.add_collector(fn)``;
``fn(metrics)`` runs before every :meth:`Metrics.render` and may ``set`` any
metric, counters included (mirroring an external running total).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import structlog
from aiohttp import web

log = structlog.get_logger("alchemist.metrics")

Kind = Literal["counter", "gauge", "histogram"]
Collector = Callable[["Metrics"], None]

#: histogram buckets (seconds) for every latency metric: LLM calls take 0.1 .. 60 s
LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                                      10.0, 20.0, 30.0, 60.0, 120.0)
#: default cap on label sets per metric
MAX_SERIES = 1000
#: the label value updates beyond the cap are folded into
OTHER = "other"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "alchemist_"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A metric's name, type, help text and label names (in exposition order)."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = LATENCY_BUCKETS


#: every metric the daemon exposes (see the module docstring)
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("alchemist_requests_total", "counter",
               "Inference requests answered, by outcome code (ok or the error code).", ("code",)),
    MetricSpec("alchemist_request_latency_seconds", "histogram",
               "End-to-end latency of fused answers in seconds."),
    MetricSpec("alchemist_provider_latency_seconds", "histogram",
               "Latency of provider calls in seconds.", ("provider",)),
    MetricSpec("alchemist_provider_failures_total", "counter",
               "Failed provider calls, by provider and error kind.", ("provider", "error")),
    MetricSpec("alchemist_ratings_total", "counter",
               "Feedback messages, by outcome (accepted or the rejection reason).", ("outcome",)),
    MetricSpec("alchemist_evolver_generations_total", "counter",
               "Genetic-algorithm generations run by the evolver."),
    MetricSpec("alchemist_promotions_total", "counter",
               "Recipes promoted and published by this instance."),
    MetricSpec("alchemist_recipe_version", "gauge",
               "Version of the recipe currently served.", ("recipe",)),
    MetricSpec("alchemist_weight", "gauge",
               "Current fusion weight of a provider for a skill in a recipe.",
               ("recipe", "skill", "provider")),
    MetricSpec("alchemist_inflight_requests", "gauge", "Inference requests being served now."),
    MetricSpec("alchemist_breaker_open", "gauge",
               "1 while the provider's circuit breaker is open, else 0.", ("provider",)),
)


@dataclass(slots=True)
class _Histogram:
    buckets: list[int]  # per-bucket (not cumulative) counts; the last one is +Inf
    sum: float = 0.0
    count: int = 0


@dataclass(slots=True)
class _Family:
    spec: MetricSpec
    values: dict[tuple[str, ...], float] = field(default_factory=dict)
    histograms: dict[tuple[str, ...], _Histogram] = field(default_factory=dict)
    overflowed: bool = False

    def series_count(self) -> int:
        return len(self.histograms) if self.spec.kind == "histogram" else len(self.values)


class Metrics:
    """Counters, gauges and histograms with fixed names, rendered as Prometheus text.

    ``specs`` defaults to :data:`METRICS`; ``max_series`` caps the label sets per metric.
    Unknown metric names, a method that does not fit the metric's type, or label
    names that differ from the metric's raise ``ValueError`` (programming errors).
    """

    def __init__(self, specs: Iterable[MetricSpec] = METRICS, *, max_series: int = MAX_SERIES) -> None:
        self.max_series = max_series
        self._families: dict[str, _Family] = {}
        self._collectors: list[Collector] = []
        self._lock = threading.Lock()
        for spec in specs:
            self.register(spec)

    # -- definition -------------------------------------------------------------------------

    def register(self, spec: MetricSpec) -> None:
        """Add a metric (its name must start with ``alchemist_`` and be new)."""
        if not spec.name.startswith(PREFIX) or not _valid_name(spec.name):
            raise ValueError(f"metric name {spec.name!r} must be a valid name starting with {PREFIX!r}")
        if spec.name in self._families:
            raise ValueError(f"metric {spec.name!r} is already registered")
        for label in spec.labels:
            if not _valid_name(label) or label.startswith("__") or label == "le":
                raise ValueError(f"invalid label name {label!r} for {spec.name}")
        if spec.kind == "histogram" and (not spec.buckets or list(spec.buckets) != sorted(set(spec.buckets))):
            raise ValueError(f"histogram {spec.name} needs strictly increasing buckets")
        self._families[spec.name] = _Family(spec)

    def add_collector(self, collector: Collector) -> None:
        """Call ``collector(self)`` before each :meth:`render` (to pull values kept elsewhere).

        An exception in a collector is logged and the scrape goes on without it.
        """
        self._collectors.append(collector)

    @property
    def names(self) -> list[str]:
        return list(self._families)

    # -- updates ----------------------------------------------------------------------------

    def inc(self, name: str, value: float = 1, **labels: object) -> None:
        """Add ``value`` to a counter (``value >= 0``) or a gauge (any sign)."""
        family = self._family(name, ("counter", "gauge"), "inc")
        if family.spec.kind == "counter" and value < 0:
            raise ValueError(f"counter {name} cannot decrease (inc by {value})")
        with self._lock:
            key = self._key(family, labels)
            family.values[key] = family.values.get(key, 0.0) + value

    def dec(self, name: str, value: float = 1, **labels: object) -> None:
        """Subtract ``value`` from a gauge."""
        family = self._family(name, ("gauge",), "dec")
        with self._lock:
            key = self._key(family, labels)
            family.values[key] = family.values.get(key, 0.0) - value

    def set(self, name: str, value: float, **labels: object) -> None:
        """Set a gauge, or a counter to a running total kept elsewhere (e.g. a ``Counter``)."""
        family = self._family(name, ("counter", "gauge"), "set")
        with self._lock:
            family.values[self._key(family, labels)] = float(value)

    def observe(self, name: str, seconds: float, **labels: object) -> None:
        """Record one observation in a histogram."""
        family = self._family(name, ("histogram",), "observe")
        bounds = family.spec.buckets
        with self._lock:
            key = self._key(family, labels)
            hist = family.histograms.get(key)
            if hist is None:
                hist = family.histograms[key] = _Histogram([0] * (len(bounds) + 1))
            index = len(bounds)
            for i, bound in enumerate(bounds):
                if seconds <= bound:
                    index = i
                    break
            hist.buckets[index] += 1
            hist.sum += seconds
            hist.count += 1

    def remove(self, name: str, **labels: object) -> None:
        """Forget one series (e.g. the weight of a provider that was removed on reload)."""
        family = self._family(name, ("counter", "gauge", "histogram"), "remove")
        key = self._label_values(family, labels)
        with self._lock:
            family.values.pop(key, None)
            family.histograms.pop(key, None)

    def clear(self, name: str) -> None:
        """Forget every series of a metric (e.g. before re-setting all weights)."""
        family = self._family(name, ("counter", "gauge", "histogram"), "clear")
        with self._lock:
            family.values.clear()
            family.histograms.clear()

    def get(self, name: str, **labels: object) -> float | None:
        """A counter's or gauge's current value, a histogram's count; None if the series is absent."""
        family = self._family(name, ("counter", "gauge", "histogram"), "get")
        key = self._label_values(family, labels)
        with self._lock:
            if family.spec.kind == "histogram":
                hist = family.histograms.get(key)
                return None if hist is None else float(hist.count)
            if key not in family.values and not family.spec.labels:
                return 0.0
            return family.values.get(key)

    # -- exposition -------------------------------------------------------------------------

    def render(self) -> str:
        """The whole registry in Prometheus text exposition format 0.0.4."""
        for collector in list(self._collectors):
            try:
                collector(self)
            except Exception as exc:  # noqa: BLE001 - one broken collector must not break the scrape
                log.warning("metrics_collector_failed", collector=getattr(collector, "__qualname__", "?"),
                            error=f"{type(exc).__name__}: {exc}")
        lines: list[str] = []
        with self._lock:
            for family in self._families.values():
                _render_family(family, lines)
        return "\n".join(lines) + "\n"

    # -- internals --------------------------------------------------------------------------

    def _family(self, name: str, kinds: Sequence[Kind], method: str) -> _Family:
        family = self._families.get(name)
        if family is None:
            raise ValueError(f"unknown metric {name!r}")
        if family.spec.kind not in kinds:
            raise ValueError(f"{method}() does not apply to {family.spec.kind} {name}")
        return family

    @staticmethod
    def _label_values(family: _Family, labels: Mapping[str, object]) -> tuple[str, ...]:
        expected = family.spec.labels
        if set(labels) != set(expected):
            raise ValueError(f"{family.spec.name} takes labels {list(expected)}, got {sorted(labels)}")
        return tuple(str(labels[label]) for label in expected)

    def _key(self, family: _Family, labels: Mapping[str, object]) -> tuple[str, ...]:
        """The series key for ``labels``, folded into the ``other`` series past the cap (lock held)."""
        key = self._label_values(family, labels)
        if not key or key in family.values or key in family.histograms:
            return key
        if family.series_count() < self.max_series:
            return key
        if not family.overflowed:
            family.overflowed = True
            log.warning("metrics_cardinality_capped", metric=family.spec.name, max_series=self.max_series,
                        folded_into=OTHER)
        return (OTHER,) * len(key)


async def serve_metrics(metrics: Metrics, host: str = "127.0.0.1", port: int = 9464) -> web.AppRunner:
    """Serve ``GET /metrics`` on ``host:port`` (``port=0``: any free port, see :func:`bound_port`).

    Returns the started runner; stop it with ``await runner.cleanup()``.
    """

    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render().encode("utf-8"),
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


# -- text format helpers ----------------------------------------------------------------------


def _render_family(family: _Family, lines: list[str]) -> None:
    spec = family.spec
    lines.append(f"# HELP {spec.name} {_escape_help(spec.help)}")
    lines.append(f"# TYPE {spec.name} {spec.kind}")
    if spec.kind == "histogram":
        histograms = dict(family.histograms)
        if not spec.labels and () not in histograms:
            histograms[()] = _Histogram([0] * (len(spec.buckets) + 1))
        for key in sorted(histograms):
            hist = histograms[key]
            base = list(zip(spec.labels, key, strict=True))
            cumulative = 0
            for bound, count in zip((*spec.buckets, math.inf), hist.buckets, strict=True):
                cumulative += count
                lines.append(f"{spec.name}_bucket{_labels([*base, ('le', _number(bound))])} {cumulative}")
            lines.append(f"{spec.name}_sum{_labels(base)} {_number(hist.sum)}")
            lines.append(f"{spec.name}_count{_labels(base)} {hist.count}")
        return
    values = dict(family.values)
    if not spec.labels and () not in values:
        values[()] = 0.0
    for key in sorted(values):
        lines.append(f"{spec.name}{_labels(list(zip(spec.labels, key, strict=True)))} "
                     f"{_number(values[key])}")


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{name}="{_escape_label(value)}"' for name, value in pairs) + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _valid_name(name: str) -> bool:
    return bool(name) and not name[0].isdigit() and all((c.isalnum() and c.isascii()) or c == "_"
                                                        for c in name)
