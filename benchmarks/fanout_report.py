"""Statistics and the printed table of ``benchmarks/fanout.py`` (kept apart from the runner)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from fanout_fleet import SCENARIOS, STEADY, TAIL, TAIL_LATENCY


@dataclass
class Sample:
    client_ms: float
    lag_ms: float  # how late the request left against its schedule
    reply: dict[str, Any] | None


def pct(values: Sequence[float], qs: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    if not values:
        return {"n": 0}
    a = np.asarray(values, dtype=float)
    out: dict[str, float] = {"n": int(a.size)}
    out.update({f"p{q:g}": round(float(np.percentile(a, q)), 3) for q in qs})
    out["max"] = round(float(a.max()), 3)
    return out


def added_latency(samples: Sequence[Sample]) -> dict[str, Any]:
    """Client latency minus the slowest provider that answered, per request."""
    added, client, lag = [], [], []
    failed = 0
    for s in samples:
        if s.reply is None:
            failed += 1
            continue
        answered = [float(p["latency_ms"]) for p in s.reply["providers"] if p.get("ok")]
        if not answered:
            failed += 1
            continue
        added.append(s.client_ms - max(answered))
        client.append(s.client_ms)
        lag.append(s.lag_ms)
    return {"added_ms": pct(added), "client_ms": pct(client), "send_lag_ms": pct(lag),
            "failed": failed}


def tail_report(daemon: Sequence[Sample], floor: Sequence[Sample]) -> dict[str, Any]:
    """Fused reply latency vs each provider's own latency distribution."""
    def per_provider(samples: Sequence[Sample]) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {m: [] for m in SCENARIOS["tail"]}
        for s in samples:
            for p in (s.reply or {}).get("providers", []):
                if p.get("ok"):
                    out[p["name"]].append(float(p["latency_ms"]))
        return out

    ok_daemon = [s for s in daemon if s.reply is not None]
    not_needed = sum(1 for s in ok_daemon for p in (s.reply or {})["providers"]
                     if p["name"] == TAIL and p.get("error") == "not_needed")
    floor_prov = per_provider(floor)
    daemon_prov = per_provider(daemon)
    rng = np.random.default_rng(0)
    model = TAIL_LATENCY.median_ms * np.exp(TAIL_LATENCY.sigma * rng.standard_normal(200_000))
    return {
        "daemon_reply_ms": pct([s.client_ms for s in ok_daemon]),
        "floor_reply_ms": pct([s.client_ms for s in floor if s.reply is not None]),
        "tail_own_ms": pct(floor_prov[TAIL]),
        "steady_own_ms": pct(floor_prov[STEADY[0]] + floor_prov[STEADY[1]]),
        "tail_model_p99_ms": round(float(np.percentile(model, 99)), 1),
        "daemon_view": {m: pct(v) for m, v in daemon_prov.items()},
        "tail_not_needed_share": round(not_needed / len(ok_daemon), 4) if ok_daemon else None,
        "daemon_failed": len(daemon) - len(ok_daemon),
    }


#: issue 13's targets: throughput daemon / floor, and latency the daemon adds beyond the floor's
RATIO_TARGET = {"f3": 0.70, "f8": 0.85}
BEYOND_TARGET_MS = {"p50": 0.3, "p99": 2.0}


def beyond_floor(entry: dict[str, Any]) -> dict[str, float]:
    """What the daemon adds beyond what the floor adds, per percentile, in one run."""
    d, f = entry["daemon"]["added_ms"], entry["floor"]["added_ms"]
    return {q: round(d[q] - f[q], 3) for q in ("p50", "p90", "p99") if q in d and q in f}


def targets(r: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, met or not."""
    out: dict[str, Any] = {}
    for scenario, entry in r["closed_loop"].items():
        goal = RATIO_TARGET.get(scenario, 0.70)
        out[f"throughput_ratio_{scenario}>={goal}"] = entry["ratio"] >= goal
    for scenario, entry in r["added_latency"].items():
        beyond = beyond_floor(entry)
        for q, limit in BEYOND_TARGET_MS.items():
            out[f"beyond_floor_{q}_{scenario}<={limit}ms"] = beyond.get(q, float("inf")) <= limit
    return out


def print_table(r: dict[str, Any]) -> None:
    env = r["env"]
    p = r["params"]
    print(f"\n{env['cpus']} CPUs, python {env['python']}; closed loop: {p['concurrency']} "
          f"requesters x {p['seconds']:g} s ({p['rounds']} interleaved rounds); open loop: "
          f"{p['rate']:g}/s x {p['open_seconds']:g} s; daemon log level {p['daemon_log_level']}")
    print(f"\n{'fan-out':<8}{'floor rps':>10}{'daemon rps':>11}{'ratio':>7}{'cpu ratio':>10}"
          f"{'floor cpu':>11}{'daemon cpu':>11}"
          f"{'floor p50':>11}{'daemon p50':>11}{'errors':>8}")
    for scenario, e in r["closed_loop"].items():
        print(f"{scenario:<8}{e['floor']['rps']:>10.0f}{e['daemon']['rps']:>11.0f}"
              f"{e['ratio']:>7.2f}{e['cpu_ratio'] or 0:>10.2f}"
              f"{e['floor']['cpu_ms_per_request']:>7.3f}ms{e['daemon']['cpu_ms_per_request']:>8.3f}ms"
              f"{e['floor']['latency_ms']['p50']:>9.1f}ms"
              f"{e['daemon']['latency_ms']['p50']:>9.1f}ms"
              f"{e['floor']['errors'] + e['daemon']['errors']:>8}")
    print("\nCPU per request in the closed loop, us (share of one core in brackets)")
    names = ("responder", "providers", "nats-server", "loadgen")
    print(f"{'fan-out':<8}{'system':<8}" + "".join(f"{n:>18}" for n in names))
    for scenario, e in r["closed_loop"].items():
        for system in ("floor", "daemon"):
            per, share = e[system]["cpu_us_per_request"], e[system]["cpu_share"]
            cells = "".join(f"{per.get(n, 0):>10.0f} ({share.get(n, 0):.2f})" for n in names)
            print(f"{scenario:<8}{system:<8}{cells}")
    print(f"\nadded over slowest provider @ {p['rate']:g}/s   (ms)")
    print(f"{'fan-out':<8}{'system':<8}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}"
          f"{'client p50':>12}{'failed':>8}")
    for scenario, by_system in r["added_latency"].items():
        for system, e in by_system.items():
            a = e["added_ms"]
            print(f"{scenario:<8}{system:<8}{a.get('p50', 0):>8.2f}{a.get('p90', 0):>8.2f}"
                  f"{a.get('p99', 0):>8.2f}{a.get('max', 0):>8.1f}"
                  f"{e['client_ms'].get('p50', 0):>12.2f}{e['failed']:>8}")
    print("daemon beyond the floor (daemon added minus floor added, this run): " + ", ".join(
        f"{scenario} p50 {b.get('p50', 0):.2f} / p99 {b.get('p99', 0):.2f} ms"
        for scenario, b in r.get("beyond_floor", {}).items()))
    t = r["tail"]
    print(f"\nheavy tail (tail: median 20 ms lognormal, p99 ratio 10; steady: 20 ms fixed) "
          f"@ {p['rate']:g}/s   (ms)")
    print(f"{'':<34}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}")
    rows = [("daemon fused reply (client)", t["daemon_reply_ms"]),
            ("floor reply, waits for all (client)", t["floor_reply_ms"]),
            ("tail provider, own (via floor)", t["tail_own_ms"]),
            ("steady providers, own (via floor)", t["steady_own_ms"])]
    for label, s in rows:
        print(f"{label:<34}{s.get('p50', 0):>8.1f}{s.get('p90', 0):>8.1f}{s.get('p99', 0):>8.1f}"
              f"{s.get('max', 0):>8.1f}")
    print(f"tail model p99 {t['tail_model_p99_ms']} ms; tail not_needed in "
          f"{100 * (t['tail_not_needed_share'] or 0):.1f}% of daemon replies; "
          f"daemon failures {t['daemon_failed']}")
    print("\ntargets: " + ", ".join(f"{k} {'ok' if v else 'MISSED'}"
                                    for k, v in r["targets"].items()))
