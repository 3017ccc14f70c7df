"""One metric's series: the definition, the label-set cap, and where the values are kept.

Internal to :mod:`alchemist.daemon.telemetry.metrics` (which documents the metrics
and the cap). A *live* metric (:class:`Instrument`) is a prometheus_client
instrument with its labelled children cached; a *scraped* one (:class:`Scraped`)
is a table of values copied in from elsewhere at scrape time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import structlog
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

log = structlog.get_logger("alchemist.metrics")

Kind = Literal["counter", "gauge", "histogram"]
Key = tuple[str, ...]
Child = Counter | Gauge | Histogram

#: histogram buckets (seconds) for every latency metric: LLM calls take 0.1 .. 60 s
LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                                      10.0, 20.0, 30.0, 60.0, 120.0)
#: the label value updates beyond the cap are folded into
OTHER = "other"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A metric's name, type, help text, label names and where its values come from.

    ``scraped``: the value lives elsewhere and is copied in at scrape time (see
    :meth:`Metrics.add_collector`); otherwise it is a prometheus_client instrument
    updated as things happen.
    """

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    scraped: bool = False


class Family:
    """One metric's label checking and cardinality cap, shared by both kinds of source."""

    def __init__(self, spec: MetricSpec, max_series: int) -> None:
        self.spec = spec
        self.max_series = max_series
        self._overflowed = False
        self._lock = threading.Lock()

    def key(self, labels: Mapping[str, object]) -> Key:
        """The label values in the metric's label order; ValueError if the names differ."""
        expected = self.spec.labels
        if len(labels) == len(expected):
            try:
                return tuple([str(labels[name]) for name in expected])
            except KeyError:
                pass
        raise ValueError(f"{self.spec.name} takes labels {list(expected)}, got {sorted(labels)}")

    def _admit(self, key: Key, known: Mapping[Key, object]) -> Key:
        """``key``, or the all-``other`` key once ``known`` holds ``max_series`` label sets (lock held)."""
        if not key or key in known or len(known) < self.max_series:
            return key
        if not self._overflowed:
            self._overflowed = True
            log.warning("metrics_cardinality_capped", metric=self.spec.name,
                        max_series=self.max_series, folded_into=OTHER)
        return (OTHER,) * len(key)


class Instrument(Family):
    """A live metric: a prometheus_client instrument with its children cached by label values."""

    def __init__(self, spec: MetricSpec, max_series: int) -> None:
        super().__init__(spec, max_series)
        self.metric = self._new()
        self._children: dict[Key, Child] = {} if spec.labels else {(): self.metric}

    def _new(self) -> Child:
        spec = self.spec
        # registry=None: exposed through Metrics.collect, never a registry of its own
        if spec.kind == "histogram":
            return Histogram(spec.name, spec.help, spec.labels, registry=None, buckets=spec.buckets)
        kind = Counter if spec.kind == "counter" else Gauge
        return kind(spec.name, spec.help, spec.labels, registry=None)

    def child(self, labels: Mapping[str, object]) -> Child:
        """The child for ``labels`` (made once; the lock is taken only then)."""
        key = self.key(labels)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                key = self._admit(key, self._children)
                child = self._children.get(key)
                if child is None:
                    child = self._children[key] = self.metric.labels(*key)
        return child

    def remove(self, labels: Mapping[str, object]) -> None:
        """Forget one series (an unlabelled metric starts again from zero)."""
        key = self.key(labels)
        if not key:
            self.clear()
            return
        with self._lock:
            if self._children.pop(key, None) is not None:
                self.metric.remove(*key)

    def clear(self) -> None:
        """Forget every series: a fresh instrument (prometheus_client cannot reset one in place)."""
        with self._lock:
            self.metric = self._new()
            self._children = {} if self.spec.labels else {(): self.metric}
            self._overflowed = False  # a metric that fills up again warns again

    def value(self, labels: Mapping[str, object]) -> float | None:
        """The current value (a histogram's count) read from the instrument's own samples."""
        want = dict(zip(self.spec.labels, self.key(labels), strict=True))
        sample = self.spec.name + ("_count" if self.spec.kind == "histogram" else "")
        for family in self.metric.collect():
            for s in family.samples:
                if s.name == sample and s.labels == want:
                    return float(s.value)
        return None

    def collect(self) -> Iterator[Metric]:
        """The instrument's families without their ``_created`` samples.

        Those are OpenMetrics timestamps; the 0.0.4 text format would show them as
        extra ``*_created`` gauge families, one series per label set: names not in
        the stable list, and twice the series. prometheus_client can turn them off
        only process-wide (``disable_created_metrics``), so they are dropped here.
        """
        for family in self.metric.collect():
            created = family.name + "_created"
            family.samples = [s for s in family.samples if s.name != created]
            yield family


class Scraped(Family):
    """A scraped metric: a table of values set from outside, rendered as a metric family."""

    def __init__(self, spec: MetricSpec, max_series: int) -> None:
        super().__init__(spec, max_series)
        self._values: dict[Key, float] = {}

    def update(self, labels: Mapping[str, object], value: float, *, add: bool) -> None:
        """Set the series for ``labels`` to ``value``, or add ``value`` to it."""
        key = self.key(labels)
        with self._lock:
            key = self._admit(key, self._values)
            self._values[key] = self._values.get(key, 0.0) + value if add else float(value)

    def remove(self, labels: Mapping[str, object]) -> None:
        """Forget one series."""
        key = self.key(labels)
        with self._lock:
            self._values.pop(key, None)

    def clear(self) -> None:
        """Forget every series."""
        with self._lock:
            self._values.clear()
            self._overflowed = False  # a metric that fills up again warns again

    def value(self, labels: Mapping[str, object]) -> float | None:
        """The series' value; an unlabelled metric reads 0 until set."""
        key = self.key(labels)
        with self._lock:
            return self._values.get(key, None if key else 0.0)

    def collect(self) -> Iterator[Metric]:
        """One family with every series (an unlabelled metric at 0 until set)."""
        with self._lock:
            values = dict(self._values)
        if not self.spec.labels:
            values.setdefault((), 0.0)
        kind = CounterMetricFamily if self.spec.kind == "counter" else GaugeMetricFamily
        family = kind(self.spec.name, self.spec.help, labels=self.spec.labels)
        for key in sorted(values):
            family.add_metric(key, values[key])
        yield family
