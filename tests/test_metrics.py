"""The Prometheus endpoint: rendered text parsed back with a minimal exposition-format parser."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import aiohttp
import pytest

from alchemist.daemon.telemetry.metrics import (
    LATENCY_BUCKETS,
    METRICS,
    Metrics,
    MetricSpec,
    bound_port,
    serve_metrics,
)

# -- a minimal text format 0.0.4 parser --------------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


@dataclass
class Family:
    name: str
    kind: str = ""
    help: str = ""
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        assert m, f"bad label set {text!r} at {pos}"
        assert m.group(1) not in labels, f"duplicate label {m.group(1)}"
        labels[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
    return labels


def _float(text: str) -> float:
    return {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}.get(text) or float(text)


def parse(text: str) -> dict[str, Family]:
    """Families by name; asserts the structure the format requires (HELP/TYPE before samples,
    samples of one family together, known suffixes only)."""
    assert text.endswith("\n")
    families: dict[str, Family] = {}
    current: Family | None = None
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in families, f"{name} described twice"
            current = families[name] = Family(name, help=help_text)
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert current is not None and current.name == name and not current.samples
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            current.kind = kind
        elif line.startswith("#"):
            continue
        else:
            m = _SAMPLE.match(line)
            assert m, f"bad sample line {line!r}"
            name, labels, value = m.group(1), _parse_labels(m.group(3) or ""), _float(m.group(4))
            assert current is not None, line
            suffixes = ("_bucket", "_sum", "_count") if current.kind == "histogram" else ("",)
            assert any(name == current.name + s for s in suffixes), f"{name} outside {current.name}"
            current.samples.append((name, labels, value))
    return families


def value(families: dict[str, Family], name: str, **labels: str) -> float:
    base = name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in families:
            base = name[: -len(suffix)]
    hits = [v for n, ls, v in families[base].samples if n == name and ls == labels]
    assert len(hits) == 1, (name, labels, families[base].samples)
    return hits[0]


def check_histograms(families: dict[str, Family]) -> int:
    """Buckets cumulative and monotonic, ending at +Inf == _count; returns how many series."""
    series = 0
    for fam in families.values():
        if fam.kind != "histogram":
            continue
        groups: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        for name, labels, v in fam.samples:
            if name.endswith("_bucket"):
                rest = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
                groups.setdefault(rest, []).append((_float(labels["le"]), v))
        for rest, buckets in groups.items():
            series += 1
            bounds = [b for b, _ in buckets]
            counts = [c for _, c in buckets]
            assert bounds == sorted(bounds) and bounds[-1] == math.inf
            assert counts == sorted(counts), counts
            count = value(families, fam.name + "_count", **dict(rest))
            assert counts[-1] == count
            value(families, fam.name + "_sum", **dict(rest))
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
    return m


def test_every_documented_metric_is_exposed() -> None:
    families = parse(Metrics().render())
    assert {name: (f.kind, ()) for name, f in families.items()} == {
        name: (kind, ()) for name, (kind, _) in DOCUMENTED.items()}
    assert {s.name: (s.kind, s.labels) for s in METRICS} == DOCUMENTED
    for fam in families.values():
        assert fam.help and fam.name.startswith("alchemist_")
    # unlabelled metrics start at 0; labelled ones have no series yet
    assert value(families, "alchemist_promotions_total") == 0
    assert value(families, "alchemist_inflight_requests") == 0
    assert value(families, "alchemist_request_latency_seconds_count") == 0
    assert families["alchemist_requests_total"].samples == []
    assert check_histograms(families) == 1


def test_render_round_trip() -> None:
    families = parse(filled().render())
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
    assert check_histograms(families) == 3
    fused = "alchemist_request_latency_seconds"
    assert value(families, fused + "_count") == 6
    assert value(families, fused + "_sum") == pytest.approx(0.003 + 0.2 + 0.2 + 1.7 + 45.0 + 500.0)
    assert value(families, fused + "_bucket", le="0.005") == 1
    assert value(families, fused + "_bucket", le="0.25") == 3
    assert value(families, fused + "_bucket", le="60") == 5
    assert value(families, fused + "_bucket", le="120") == 5
    assert value(families, fused + "_bucket", le="+Inf") == 6
    les = [ls["le"] for n, ls, _ in families[fused].samples if n.endswith("_bucket")]
    assert [_float(x) for x in les] == [*LATENCY_BUCKETS, math.inf]
    per_provider = "alchemist_provider_latency_seconds"
    assert value(families, per_provider + "_bucket", provider="local-llama", le="30") == 0
    assert value(families, per_provider + "_bucket", provider="local-llama", le="60") == 1


def test_label_escaping() -> None:
    m = Metrics()
    nasty = 'a "quoted"\\ name\nnext'
    m.inc("alchemist_provider_failures_total", provider=nasty, error="x")
    text = m.render()
    assert '\\"quoted\\"\\\\ name\\nnext' in text
    families = parse(text)
    assert value(families, "alchemist_provider_failures_total", provider=nasty, error="x") == 1


def test_cardinality_cap(caplog: pytest.LogCaptureFixture) -> None:
    m = Metrics(max_series=10)
    for i in range(25):
        m.inc("alchemist_provider_failures_total", provider=f"p{i}", error="timeout")
        m.observe("alchemist_provider_latency_seconds", 0.1, provider=f"p{i}")
    m.inc("alchemist_provider_failures_total", provider="p3", error="timeout")  # existing series still count
    families = parse(m.render())
    fails = families["alchemist_provider_failures_total"].samples
    assert len(fails) == 11
    assert value(families, "alchemist_provider_failures_total", provider="other", error="other") == 15
    assert value(families, "alchemist_provider_failures_total", provider="p3", error="timeout") == 2
    assert check_histograms(families) == 1 + 11
    assert value(families, "alchemist_provider_latency_seconds_count", provider="other") == 15
    # the unlabelled metrics are unaffected
    m.inc("alchemist_promotions_total")
    assert value(parse(m.render()), "alchemist_promotions_total") == 1


def test_cardinality_warning_once(capsys: pytest.CaptureFixture[str]) -> None:
    import structlog

    with structlog.testing.capture_logs() as logs:
        m = Metrics(max_series=2)
        for i in range(10):
            m.set("alchemist_recipe_version", i, recipe=f"r{i}")
    capped = [e for e in logs if e["event"] == "metrics_cardinality_capped"]
    assert len(capped) == 1 and capped[0]["metric"] == "alchemist_recipe_version"
    assert m.get("alchemist_recipe_version", recipe="other") == 9


def test_misuse_is_an_error() -> None:
    m = Metrics()
    with pytest.raises(ValueError, match="unknown metric"):
        m.inc("alchemist_nope_total")
    with pytest.raises(ValueError, match="labels"):
        m.inc("alchemist_requests_total")  # missing code
    with pytest.raises(ValueError, match="labels"):
        m.inc("alchemist_requests_total", code="ok", extra="1")
    with pytest.raises(ValueError, match="cannot decrease"):
        m.inc("alchemist_requests_total", -1, code="ok")
    with pytest.raises(ValueError, match="does not apply"):
        m.observe("alchemist_requests_total", 1.0, code="ok")
    with pytest.raises(ValueError, match="does not apply"):
        m.inc("alchemist_request_latency_seconds")
    with pytest.raises(ValueError, match="alchemist_"):
        m.register(MetricSpec("other_total", "counter", "x"))
    with pytest.raises(ValueError, match="already"):
        m.register(MetricSpec("alchemist_weight", "gauge", "x"))


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
    families = parse(m.render())
    assert value(families, "alchemist_requests_total", code="ok") == 7
    assert value(families, "alchemist_requests_total", code="timeout") == 2
    external["ok"] = 9
    assert value(parse(m.render()), "alchemist_requests_total", code="ok") == 9
    m.remove("alchemist_requests_total", code="timeout")
    m.clear("alchemist_weight")
    assert m.get("alchemist_requests_total", code="timeout") is None


def test_instances_share_nothing() -> None:
    a, b = Metrics(), Metrics()
    a.inc("alchemist_promotions_total")
    assert b.get("alchemist_promotions_total") == 0
    assert a.get("alchemist_promotions_total") == 1


async def test_http_scrape() -> None:
    m = filled()
    runner = await serve_metrics(m, port=0)
    try:
        port = bound_port(runner)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
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
