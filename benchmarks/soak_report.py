"""The soak's summary (from its samples) and its plot: one panel per measure."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

#: (panel title, unit, sample keys drawn in it)
PANELS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("daemon RSS", "MB", ("rss_mb",)),
    ("open file descriptors", "fds", ("fds",)),
    ("asyncio tasks", "tasks", ("tasks",)),
    ("experience index", "records", ("index_experiences", "index_rated")),
    ("stream messages", "messages", ("stream_experience_msgs", "stream_rated_msgs",
                                     "stream_feedback_msgs")),
    ("stream bytes", "MB", ("stream_experience_mb", "stream_rated_mb", "stream_feedback_mb")),
)


def _first(samples: list[dict[str, Any]], pred: Any) -> dict[str, Any] | None:
    return next((s for s in samples if pred(s)), None)


def _span(samples: list[dict[str, Any]], key: str) -> dict[str, float | None]:
    values = [s[key] for s in samples if key in s]
    if not values:
        return {"first": None, "last": None, "max": None}
    return {"first": values[0], "last": values[-1], "max": max(values)}


def summarize(results: dict[str, Any], max_records: int) -> dict[str, Any]:
    """RSS once the index is full vs at the end, per-record cost, fds, tasks, outcome codes."""
    samples = [s for s in results["samples"] if "rss_mb" in s]
    full = _first(samples, lambda s: s.get("index_experiences", 0) >= max_records
                  and s.get("index_rated", 0) >= max_records)
    full_what = "experiences and rated"
    if full is None:  # too few ratings to fill the rated map: the experiences alone
        full = _first(samples, lambda s: s.get("index_experiences", 0) >= max_records)
        full_what = "experiences only (the rated map never filled)"
    total = results["samples"][-1]["requests"] if samples else 0
    loaded = [s for s in samples if s["requests"] >= 0.1 * total]  # past the warm-up
    out: dict[str, Any] = {"fds": _span(samples, "fds"), "tasks": _span(samples, "tasks"),
                           "fds_after_10pct": _span(loaded, "fds"),
                           "tasks_after_10pct": _span(loaded, "tasks"), "requests": total}
    end = samples[-1] if samples else None
    if full is not None and end is not None:
        after = [s["rss_mb"] for s in samples if s["requests"] >= full["requests"]]
        out["rss"] = {"index_full_at_requests": full["requests"], "full_means": full_what,
                      "at_full_mb": full["rss_mb"], "at_end_mb": end["rss_mb"],
                      "max_after_full_mb": max(after),
                      "growth_pct": round(100 * (end["rss_mb"] / full["rss_mb"] - 1), 2),
                      "max_growth_pct": round(100 * (max(after) / full["rss_mb"] - 1), 2)}
        out["rss_per_record"] = per_record(samples, full)
    codes: Counter[str] = Counter()
    for by_code in results["outcomes"].values():
        codes.update(by_code)
    out["codes"] = dict(codes.most_common())
    out["by_kind"] = results["outcomes"]
    out["ratings"] = results["ratings"]
    # the daemon's own count of what became of them (alchemist_ratings_total)
    out["daemon_ratings"] = {k.removeprefix("ratings_"): v for k, v in (end or {}).items()
                             if k.startswith("ratings_") and k != "ratings_acked"}
    last_cpu = end.get("cpu_s") if end else None
    if last_cpu and out["requests"]:
        out["cpu_ms_per_request"] = round(1000 * last_cpu / out["requests"], 3)
    return out


def per_record(samples: list[dict[str, Any]], full: dict[str, Any]) -> dict[str, Any]:
    """RSS growth per record held, while the index filled (from 10 % of it held to full)."""
    def held(s: dict[str, Any]) -> float:
        return float(s.get("index_experiences", 0) + s.get("index_rated", 0))

    start = _first(samples, lambda s: held(s) >= 0.1 * held(full))
    if start is None or held(full) <= held(start):
        return {}
    kb = 1024 * (full["rss_mb"] - start["rss_mb"]) / (held(full) - held(start))
    return {"from_records": held(start), "to_records": held(full), "from_mb": start["rss_mb"],
            "to_mb": full["rss_mb"], "kb_per_record": round(kb, 3),
            "note": "records = experiences + rated held in memory (both bounded by max_records)"}


def print_summary(summary: dict[str, Any]) -> None:
    print("\n== soak summary ==")
    print(f"requests: {summary['requests']}")
    rss = summary.get("rss")
    if rss:
        print(f"RSS: {rss['at_full_mb']} MB once the index was full ({rss['full_means']}, at "
              f"{rss['index_full_at_requests']} requests), {rss['at_end_mb']} MB at the end: "
              f"growth {rss['growth_pct']} % (max after full {rss['max_after_full_mb']} MB, "
              f"{rss['max_growth_pct']} %)")
    else:
        print("RSS: the index never filled; run longer or with a smaller --max-records")
    rec = summary.get("rss_per_record")
    if rec:
        print(f"RSS per held record while filling: {rec['kb_per_record']} KB "
              f"({rec['from_mb']} -> {rec['to_mb']} MB over {rec['from_records']:.0f} -> "
              f"{rec['to_records']:.0f} records)")
    for key in ("fds", "tasks", "fds_after_10pct", "tasks_after_10pct"):
        s = summary[key]
        print(f"{key}: first {s['first']}, last {s['last']}, max {s['max']}")
    if "cpu_ms_per_request" in summary:
        print(f"daemon CPU: {summary['cpu_ms_per_request']} ms per request")
    print(f"outcomes: {summary['codes']}")
    for kind, codes in sorted(summary["by_kind"].items()):
        print(f"  {kind:16} {codes}")
    print(f"ratings sent: {summary['ratings']}; the daemon's outcomes: "
          f"{summary['daemon_ratings']}")


def plot(results: dict[str, Any], path: Path) -> None:
    """One panel per measure, against requests done."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = results["samples"]
    fig, axes = plt.subplots(3, 2, figsize=(10, 8.5), sharex=True)
    full = results.get("summary", {}).get("rss", {}).get("index_full_at_requests")
    for ax, (title, unit, keys) in zip(axes.flat, PANELS, strict=True):
        for key in keys:
            pts = [(s["requests"] / 1000, s[key]) for s in samples if key in s]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, label=key, linewidth=1.2)
        if full is not None:
            ax.axvline(full / 1000, color="grey", linestyle=":", linewidth=1)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("requests done (thousands)")
    p = results.get("params", {})
    fig.suptitle(f"soak: {p.get('requests')} requests, max_records {p.get('max_records')} "
                 "(dotted: index full)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=70)
    plt.close(fig)
