"""The Prometheus endpoint: the exposition parsed back with prometheus_client's own parser."""

from __future__ import annotations

import math

import aiohttp
import pytest
import structlog
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from alchemist.daemon.telemetry.metrics import (
    CONTENT_TYPE,
    LATENCY_BUCKETS,
    METRICS,
    Metrics,
    MetricSpec,
    bound_port,
    serve_metrics,
)

# -- reading the exposition back ------------------------------------------------------------------

_SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def exposed_name(family: Metric) -> str:
    """The name as written after ``# TYPE`` (the parser keeps counters under their base name)."""
    return family.name + "_total" if family.type == "counter" else family.name


def parse(text: str) -> dict[str, Metric]:
    """Families by exposed name; each appears once and holds only its own samples."""
    assert text.endswith("\n")
    families: dict[str, Metric] = {}
    for family in text_string_to_metric_families(text):
        name = exposed_name(family)
        assert name not in families, f"{name} exposed twice"
        assert family.documentation, f"{name} has no help"
        for sample in family.samples:
            allowed = [name + s for s in _SUFFIXES[family.type]] if family.type != "counter" else [name]
            assert sample.name in allowed, f"{sample.name} outside {name}"
        families[name] = family
    return families


def value(families: dict[str, Metric], name: str, **labels: str) -> float:
    """The one sample called ``name`` with exactly ``labels`` (``le`` compared as a number)."""
    base = next(f for f in families if name == f or (name.startswith(f) and name[len(f):] in
                                                      ("_bucket", "_sum", "_count")))
    want_le = labels.pop("le", None)
    hits = [s.value for s in families[base].samples
            if s.name == name and {k: v for k, v in s.labels.items() if k != "le"} == labels
            and (want_le is None or float(s.labels["le"]) == float(want_le))]
    assert len(hits) == 1, (name, labels, want_le, families[base].samples)
    return hits[0]


def check_histograms(families: dict[str, Metric]) -> int:
    """Buckets cumulative and monotonic, ending at +Inf == _count; returns how many series."""
    series = 0
    for name, fam in families.items():
        if fam.type != "histogram":
            continue
        groups: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        for s in fam.samples:
            if s.name.endswith("_bucket"):
                rest = tuple(sorted((k, x) for k, x in s.labels.items() if k != "le"))
                groups.setdefault(rest, []).append((float(s.labels["le"]), s.value))
        for rest, buckets in groups.items():
            series += 1
            bounds = [b for b, _ in buckets]
            counts = [c for _, c in buckets]
            assert bounds == [*LATENCY_BUCKETS, math.inf]
            assert counts == sorted(counts), counts
            assert counts[-1] == value(families, name + "_count", **dict(rest))
            value(families, name + "_sum", **dict(rest))
    return series


# -- tests ----------------------------------------------------------------------------------------

DOCUMENTED = {
    "alchemist_requests_total": ("counter", ("code",)),
    "alchemist_request_latency_seconds": ("histogram", ()),
    "alchemist_provider_latency_seconds": ("histogram", ("provider",)),
    "alchemist_provider_failures_total": ("counter", ("provider", "error")),
    "alchemist_ratings_total": ("counter", ("outcome",)),
    "alchemist_evolver_generations_total": ("counter", ()),
    "alchemist_promotions_total": ("counter", ()),
    "alchemist_recipe_version": ("gauge", ("recipe",)),
    "alchemist_weight": ("gauge", ("recipe", "skill", "provider")),
    "alchemist_inflight_requests": ("gauge", ()),
    "alchemist_breaker_open": ("gauge", ("provider",)),
    "alchemist_lease_held": ("gauge", ("lease",)),
    "alchemist_event_loop_tasks": ("gauge", ()),
    "alchemist_experience_records": ("gauge", ("kind",)),
    "alchemist_experience_dropped_total": ("counter", ()),
}


def filled() -> Metrics:
    m = Metrics()
    m.inc("alchemist_requests_total", code="ok")
    m.inc("alchemist_requests_total", 2, code="ok")
    m.inc("alchemist_requests_total", code="overloaded")
    for s in (0.003, 0.2, 0.2, 1.7, 45.0, 500.0):
        m.observe("alchemist_request_latency_seconds", s)
    m.observe("alchemist_provider_latency_seconds", 0.4, provider="gpt-4o-mini")
    m.observe("alchemist_provider_latency_seconds", 31.0, provider="local-llama")
    m.inc("alchemist_provider_failures_total", provider="local-llama", error="timeout")
    m.inc("alchemist_ratings_total", outcome="accepted")
    m.inc("alchemist_evolver_generations_total", 5)
    m.inc("alchemist_promotions_total")
    m.set("alchemist_recipe_version", 4, recipe="default")
    m.set("alchemist_weight", 0.625, recipe="default", skill="math", provider="gpt-4o-mini")
    m.set("alchemist_inflight_requests", 3)
    m.dec("alchemist_inflight_requests")
    m.set("alchemist_breaker_open", 1, provider="local-llama")
    m.set("alchemist_breaker_open", 0, provider="gpt-4o-mini")
    m.set("alchemist_lease_held", 1, lease="default")
    m.set("alchemist_event_loop_tasks", 17)
    m.set("alchemist_experience_records", 1200, kind="experiences")
    return m


def label_names(family: Metric) -> set[str]:
    return {k for s in family.samples for k in s.labels if k != "le"}


def test_every_documented_metric_is_exposed() -> None:
    text = Metrics().render()
    families = parse(text)
    assert {name: f.type for name, f in families.items()} == {
        name: kind for name, (kind, _) in DOCUMENTED.items()}
    assert {s.name: (s.kind, s.labels) for s in METRICS} == DOCUMENTED
    assert sorted(line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")) \
        == sorted(DOCUMENTED)
    # unlabelled metrics start at 0; labelled ones have no series yet
    assert value(families, "alchemist_promotions_total") == 0
    assert value(families, "alchemist_evolver_generations_total") == 0
    assert value(families, "alchemist_inflight_requests") == 0
    assert value(families, "alchemist_request_latency_seconds_count") == 0
    assert families["alchemist_requests_total"].samples == []
    assert check_histograms(families) == 1


def test_render_round_trip() -> None:
    text = filled().render()
    assert "_created" not in text  # OpenMetrics-only series stay out of the stable name list
    families = parse(text)
    for name, (_, labels) in DOCUMENTED.items():
        assert label_names(families[name]) == set(labels), name
    assert value(families, "alchemist_requests_total", code="ok") == 3
    assert value(families, "alchemist_requests_total", code="overloaded") == 1
    assert value(families, "alchemist_provider_failures_total", provider="local-llama", error="timeout") == 1
    assert value(families, "alchemist_ratings_total", outcome="accepted") == 1
    assert value(families, "alchemist_evolver_generations_total") == 5
    assert value(families, "alchemist_promotions_total") == 1
    assert value(families, "alchemist_recipe_version", recipe="default") == 4
    assert value(families, "alchemist_weight", recipe="default", skill="math",
                 provider="gpt-4o-mini") == 0.625
    assert value(families, "alchemist_inflight_requests") == 2
    assert value(families, "alchemist_breaker_open", provider="local-llama") == 1
    assert value(families, "alchemist_breaker_open", provider="gpt-4o-mini") == 0
    assert value(families, "alchemist_lease_held", lease="default") == 1
    assert check_histograms(families) == 3
    fused = "alchemist_request_latency_seconds"
    assert value(families, fused + "_count") == 6
    assert value(families, fused + "_sum") == pytest.approx(0.003 + 0.2 + 0.2 + 1.7 + 45.0 + 500.0)
    assert value(families, fused + "_bucket", le="0.005") == 1
    assert value(families, fused + "_bucket", le="0.25") == 3
    assert value(families, fused + "_bucket", le="60") == 5
    assert value(families, fused + "_bucket", le="120") == 5
    assert value(families, fused + "_bucket", le="+Inf") == 6
    per_provider = "alchemist_provider_latency_seconds"
    assert value(families, per_provider + "_bucket", provider="local-llama", le="30") == 0
    assert value(families, per_provider + "_bucket", provider="local-llama", le="60") == 1
    assert value(families, per_provider + "_count", provider="gpt-4o-mini") == 1


def test_label_escaping() -> None:
    m = Metrics()
    nasty = 'a "quoted"\\ name\nnext'
    m.inc("alchemist_provider_failures_total", provider=nasty, error="x")
    m.set("alchemist_breaker_open", 1, provider=nasty)
    text = m.render()
    assert text.count('\\"quoted\\"\\\\ name\\nnext') == 2
    families = parse(text)
    assert value(families, "alchemist_provider_failures_total", provider=nasty, error="x") == 1
    assert value(families, "alchemist_breaker_open", provider=nasty) == 1


def test_cardinality_cap() -> None:
    m = Metrics(max_series=10)
    for i in range(25):
        m.inc("alchemist_provider_failures_total", provider=f"p{i}", error="timeout")
        m.observe("alchemist_provider_latency_seconds", 0.1, provider=f"p{i}")
        m.set("alchemist_weight", i, recipe="r", skill="s", provider=f"p{i}")
    m.inc("alchemist_provider_failures_total", provider="p3", error="timeout")  # existing series still count
    families = parse(m.render())
    fails = families["alchemist_provider_failures_total"].samples
    assert len(fails) == 11
    assert value(families, "alchemist_provider_failures_total", provider="other", error="other") == 15
    assert value(families, "alchemist_provider_failures_total", provider="p3", error="timeout") == 2
    assert check_histograms(families) == 1 + 11
    assert value(families, "alchemist_provider_latency_seconds_count", provider="other") == 15
    assert len(families["alchemist_weight"].samples) == 11
    assert value(families, "alchemist_weight", recipe="other", skill="other", provider="other") == 24
    # the unlabelled metrics are unaffected
    m.inc("alchemist_promotions_total")
    assert value(parse(m.render()), "alchemist_promotions_total") == 1


def test_default_cap_is_1000() -> None:
    m = Metrics()
    for i in range(1100):
        m.inc("alchemist_provider_failures_total", provider=f"p{i}", error="timeout")
    families = parse(m.render())
    assert len(families["alchemist_provider_failures_total"].samples) == 1001
    assert value(families, "alchemist_provider_failures_total", provider="other", error="other") == 100


def test_cardinality_warning_once() -> None:
    with structlog.testing.capture_logs() as logs:
        m = Metrics(max_series=2)
        for i in range(10):
            m.set("alchemist_recipe_version", i, recipe=f"r{i}")
            m.observe("alchemist_provider_latency_seconds", 0.1, provider=f"p{i}")
    capped = [e["metric"] for e in logs if e["event"] == "metrics_cardinality_capped"]
    assert sorted(capped) == ["alchemist_provider_latency_seconds", "alchemist_recipe_version"]
    assert m.get("alchemist_recipe_version", recipe="other") == 9
    assert m.get("alchemist_provider_latency_seconds", provider="other") == 8


def test_a_cleared_metric_warns_again_when_it_fills_up_again() -> None:
    m = Metrics(max_series=2)
    for name, update in (("alchemist_weight", lambda i: m.set(  # scraped
            "alchemist_weight", i, recipe="r", skill="s", provider=f"p{i}")),
                         ("alchemist_provider_latency_seconds", lambda i: m.observe(  # live
            "alchemist_provider_latency_seconds", 0.1, provider=f"p{i}"))):
        with structlog.testing.capture_logs() as logs:
            for _ in range(2):
                m.clear(name)
                for i in range(5):
                    update(i)
        capped = [e for e in logs if e["event"] == "metrics_cardinality_capped"]
        assert [e["metric"] for e in capped] == [name, name]


def test_misuse_is_an_error() -> None:
    m = Metrics()
    with pytest.raises(ValueError, match="unknown metric"):
        m.inc("alchemist_nope_total")
    with pytest.raises(ValueError, match="labels"):
        m.inc("alchemist_requests_total")  # missing code
    with pytest.raises(ValueError, match="labels"):
        m.inc("alchemist_requests_total", code="ok", extra="1")
    with pytest.raises(ValueError, match="labels"):
        m.observe("alchemist_provider_latency_seconds", 1.0, model="x")
    with pytest.raises(ValueError, match="cannot decrease"):
        m.inc("alchemist_requests_total", -1, code="ok")
    with pytest.raises(ValueError, match="cannot decrease"):
        m.inc("alchemist_provider_failures_total", -1, provider="p", error="e")
    with pytest.raises(ValueError, match="does not apply"):
        m.observe("alchemist_requests_total", 1.0, code="ok")
    with pytest.raises(ValueError, match="does not apply"):
        m.inc("alchemist_request_latency_seconds")
    with pytest.raises(ValueError, match="does not apply to live counter"):
        m.set("alchemist_provider_failures_total", 3, provider="p", error="e")
    with pytest.raises(ValueError, match="alchemist_"):
        m.register(MetricSpec("other_total", "counter", "x"))
    with pytest.raises(ValueError, match="already"):
        m.register(MetricSpec("alchemist_weight", "gauge", "x"))
    with pytest.raises(ValueError, match="_total"):
        m.register(MetricSpec("alchemist_things", "counter", "x"))
    with pytest.raises(ValueError, match="cannot be scraped"):
        m.register(MetricSpec("alchemist_lag_seconds", "histogram", "x", scraped=True))


def test_collectors_run_at_render_and_failures_are_contained() -> None:
    m = Metrics()
    external = {"ok": 7, "error_timeout": 2}

    def mirror(metrics: Metrics) -> None:
        for key, count in external.items():
            metrics.set("alchemist_requests_total", count, code=key.removeprefix("error_"))

    def broken(_: Metrics) -> None:
        raise RuntimeError("boom")

    m.add_collector(broken)
    m.add_collector(mirror)
    with structlog.testing.capture_logs() as logs:
        families = parse(m.render())
    assert [e["error"] for e in logs if e["event"] == "metrics_collector_failed"] == ["RuntimeError: boom"]
    assert value(families, "alchemist_requests_total", code="ok") == 7
    assert value(families, "alchemist_requests_total", code="timeout") == 2
    external["ok"] = 9
    assert value(parse(m.render()), "alchemist_requests_total", code="ok") == 9
    m.remove("alchemist_requests_total", code="timeout")
    m.clear("alchemist_weight")
    assert m.get("alchemist_requests_total", code="timeout") is None


def test_live_series_can_be_forgotten() -> None:
    m = filled()
    m.remove("alchemist_provider_latency_seconds", provider="local-llama")
    m.remove("alchemist_provider_failures_total", provider="nobody", error="x")  # absent: no error
    assert m.get("alchemist_provider_latency_seconds", provider="local-llama") is None
    assert m.get("alchemist_provider_latency_seconds", provider="gpt-4o-mini") == 1
    m.clear("alchemist_provider_failures_total")
    m.clear("alchemist_request_latency_seconds")
    families = parse(m.render())
    assert families["alchemist_provider_failures_total"].samples == []
    assert value(families, "alchemist_request_latency_seconds_count") == 0
    # a forgotten series comes back from zero
    m.observe("alchemist_provider_latency_seconds", 0.1, provider="local-llama")
    m.inc("alchemist_provider_failures_total", provider="local-llama", error="timeout")
    assert m.get("alchemist_provider_latency_seconds", provider="local-llama") == 1
    assert m.get("alchemist_provider_failures_total", provider="local-llama", error="timeout") == 1


def test_instances_share_nothing() -> None:
    a, b = Metrics(), Metrics()
    a.inc("alchemist_promotions_total")
    a.observe("alchemist_request_latency_seconds", 0.1)
    assert b.get("alchemist_promotions_total") == 0
    assert a.get("alchemist_promotions_total") == 1
    assert b.get("alchemist_request_latency_seconds") == 0
    assert a.registry is not b.registry and a.registry is not REGISTRY
    assert not any(f.name.startswith("alchemist_") for f in REGISTRY.collect())


async def test_http_scrape() -> None:
    m = filled()
    runner = await serve_metrics(m, port=0)
    try:
        port = bound_port(runner)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == CONTENT_TYPE
                assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
                text = await resp.text()
            async with session.get(f"http://127.0.0.1:{port}/") as resp:
                assert resp.status == 404
            async with session.post(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 405
        families = parse(text)
        assert value(families, "alchemist_requests_total", code="ok") == 3
        assert check_histograms(families) == 3
    finally:
        await runner.cleanup()
