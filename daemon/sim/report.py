"""What a replay run served, scored against the baselines a fusion system must beat.

Scores are means of recorded scores in percent, over the requests served (a
prompt served twice counts twice), so every baseline is measured on exactly
the prompts the daemon saw:

- ``served``: the recorded score of the answer served (0 when nothing was);
- ``best_single``: the one model with the best mean over those prompts;
- ``plurality_vote``: an unweighted majority vote over all models' extracted
  answers (a model whose answer can't be extracted abstains; ties, and a prompt
  where everyone abstains, go to the first model in the replay set's order),
  scored by the recorded score of the first model in the winning group;
- ``oracle``: the share of prompts where some model scored >= 0.5.

Provider calls: ``mean_providers_called`` (and over the last half) counts the
calls of the served requests; ``golden_calls`` those the prober made to ask the
golden prompts (``--golden``), which are never served nor scored; and
``provider_calls_per_request`` both, the golden ones amortised over the served
requests.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from alchemist.daemon.sim.replay import ReplaySet

__all__ = ["Served", "build_report", "format_table", "write_plot"]

#: the curve keeps at most about this many points
_MAX_CURVE_POINTS = 500


@dataclass(frozen=True, slots=True)
class Served:
    """One request of a replay run: which item, whose answer was served (None: none)."""

    item_id: str
    provider: str | None
    n_called: int
    rated: bool


def _plurality_score(replay: ReplaySet, item_id: str,
                     extract: Callable[[str], str | None]) -> float:
    item = replay.item(item_id)
    groups: dict[str, list[str]] = {}
    for model in replay.models:  # model order, so the first group member is the earliest model
        answer = item.answers.get(model)
        if answer is None:
            continue
        key = extract(answer.text)
        if key is not None:
            groups.setdefault(key, []).append(model)
    if not groups:
        first = next((m for m in replay.models if m in item.answers), None)
        return 0.0 if first is None else item.answers[first].score
    # max() keeps the first maximum; groups are ordered by their earliest model
    winner = max(groups.values(), key=len)
    return item.answers[winner[0]].score


def _windowed(values: npt.NDArray[np.float64], window: int) -> npt.NDArray[np.float64]:
    """Trailing mean at every index (over fewer values before the window fills)."""
    csum = np.concatenate(([0.0], np.cumsum(values)))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    result: npt.NDArray[np.float64] = (csum[idx] - csum[lo]) / (idx - lo)
    return result


def _pct(x: float) -> float:
    return round(100.0 * x, 3)


def build_report(replay: ReplaySet, served: Sequence[Served], *,
                 extract: Callable[[str], str | None], window: int = 100,
                 recipes_promoted: int = 0, golden: int = 0,
                 golden_calls: int = 0) -> dict[str, object]:
    """The JSON-ready report of a replay run (see the module docstring for the numbers);
    ``golden`` prompts were asked by the prober in ``golden_calls`` provider calls.

    ``curve`` holds trailing-window means against the request count ``x``, from
    the point the first window fills (or the last request, if there are fewer),
    thinned to about 500 points, always ending at the last request.
    """
    if not served:
        raise ValueError("build_report needs at least one served request")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not replay.models:
        raise ValueError("the replay set has no models")
    n = len(served)
    got = np.array([0.0 if s.provider is None else replay.score(s.item_id, s.provider)
                    for s in served])
    per_model = np.array([[replay.score(s.item_id, m) for m in replay.models] for s in served],
                         dtype=np.float64).reshape(n, len(replay.models))
    means = per_model.mean(axis=0)
    best = int(np.argmax(means))  # first maximum: ties go to model order
    vote_cache: dict[str, float] = {}
    for s in served:
        if s.item_id not in vote_cache:
            vote_cache[s.item_id] = _plurality_score(replay, s.item_id, extract)
    vote = np.array([vote_cache[s.item_id] for s in served])
    oracle = (per_model >= 0.5).any(axis=1)
    called = np.array([s.n_called for s in served], dtype=np.float64)

    start = min(window, n)
    stride = max(1, -(-(n - start + 1) // _MAX_CURVE_POINTS))  # ceil
    xs = list(range(start, n + 1, stride))
    if xs[-1] != n:
        xs.append(n)
    served_curve = _windowed(got, window)
    best_curve = _windowed(per_model[:, best], window)

    return {
        "requests": n,
        "served_score_all": _pct(float(got.mean())),
        "served_score_last_half": _pct(float(got[n // 2:].mean())),
        "best_single": {"model": replay.models[best], "score": _pct(float(means[best]))},
        "plurality_vote": _pct(float(vote.mean())),
        "oracle": _pct(float(oracle.mean())),
        "mean_providers_called": round(float(called.mean()), 3),
        "mean_providers_called_last_half": round(float(called[n // 2:].mean()), 3),
        "golden": golden,
        "golden_calls": golden_calls,
        "provider_calls_per_request": round(float((called.sum() + golden_calls) / n), 3),
        "recipes_promoted": recipes_promoted,
        "ratings_sent": sum(1 for s in served if s.rated),
        "curve": {
            "x": xs,
            "served": [_pct(float(served_curve[x - 1])) for x in xs],
            "best_single": [_pct(float(best_curve[x - 1])) for x in xs],
        },
    }


def _num(report: dict[str, object], key: str) -> float:
    value = report[key]
    if not isinstance(value, int | float):
        raise TypeError(f"report[{key!r}] is not a number: {value!r}")
    return float(value)


def _best(report: dict[str, object]) -> tuple[str, float]:
    best = report["best_single"]
    if not isinstance(best, dict):
        raise TypeError(f"report['best_single'] is not a mapping: {best!r}")
    return str(best["model"]), float(best["score"])


#: what a run says instead of drawing when matplotlib (the ``plot`` extra) is not installed
PLOT_EXTRA_HINT = "install the plot extra (pip install 'llm-alchemist[plot]')"


def write_plot(report: dict[str, object], path: Path, title: str) -> bool:
    """Draw the served and best-single curves with the baselines as a PNG (or any
    format matplotlib knows from the suffix) at ``path``.

    matplotlib is optional (the ``plot`` extra) and imported only here: without
    it, one line on stderr says so, nothing is written, and the result is False.
    """
    try:
        # Figure + Agg canvas directly: no pyplot global state, no backend switching
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "matplotlib":
            raise  # matplotlib is there but broken: that is worth a traceback
        print(f"{Path(path).name} not written: {PLOT_EXTRA_HINT}", file=sys.stderr)
        return False
    curve = report["curve"]
    if not isinstance(curve, dict):
        raise TypeError("report['curve'] is not a mapping")
    best_model, best_score = _best(report)
    fig = Figure(figsize=(9, 5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(curve["x"], curve["served"], color="tab:blue", linewidth=2,
            label="served (trailing window)")
    ax.plot(curve["x"], curve["best_single"], color="tab:orange", linewidth=1.2, alpha=0.8,
            label=f"{best_model} (same window)")
    ax.axhline(best_score, color="tab:orange", linestyle="--", linewidth=1,
               label=f"best single {best_score:.1f}%")
    ax.axhline(_num(report, "plurality_vote"), color="tab:green", linestyle="--", linewidth=1,
               label=f"plurality vote {_num(report, 'plurality_vote'):.1f}%")
    ax.axhline(_num(report, "oracle"), color="tab:gray", linestyle=":", linewidth=1,
               label=f"oracle {_num(report, 'oracle'):.1f}%")
    promotions = report.get("promotions")
    marks: list[tuple[int, int]] = [(int(a), int(v)) for a, v in promotions] \
        if isinstance(promotions, list) else []
    for i, (at, version) in enumerate(marks):
        ax.axvline(at, color="tab:purple", linestyle=":", linewidth=1,
                   label="recipe promoted" if i == 0 else None)
        ax.annotate(f"v{version}", (at, 1.0), xycoords=("data", "axes fraction"),
                    fontsize="x-small", color="tab:purple", ha="left", va="top")
    ax.set_xlabel("requests served")
    ax.set_ylabel("score of the answer (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return True


def format_table(report: dict[str, object]) -> str:
    """The headline numbers as an aligned text table (one screen)."""
    best_model, best_score = _best(report)
    served_all = _num(report, "served_score_all")
    rows: list[tuple[str, str]] = [
        ("requests", f"{int(_num(report, 'requests'))}"),
        ("served score, all", f"{served_all:.2f} %"),
        ("served score, last half", f"{_num(report, 'served_score_last_half'):.2f} %"),
        (f"best single ({best_model})", f"{best_score:.2f} %"),
        ("plurality vote", f"{_num(report, 'plurality_vote'):.2f} %"),
        ("oracle (some model right)", f"{_num(report, 'oracle'):.2f} %"),
        ("served - best single", f"{served_all - best_score:+.2f} pts"),
        ("providers called / request", f"{_num(report, 'mean_providers_called'):.2f}"),
        ("  last half", f"{_num(report, 'mean_providers_called_last_half'):.2f}"),
    ]
    if report.get("golden"):
        rows += [("golden prompts (not served)", f"{int(_num(report, 'golden'))}"),
                 ("golden provider calls", f"{int(_num(report, 'golden_calls'))}"),
                 ("calls / request, golden amortised",
                  f"{_num(report, 'provider_calls_per_request'):.2f}")]
    rows += [
        ("ratings sent", f"{int(_num(report, 'ratings_sent'))}"),
        ("recipes promoted", f"{int(_num(report, 'recipes_promoted'))}"),
    ]
    width = max(len(k) for k, _ in rows)
    vwidth = max(len(v) for _, v in rows)
    return "\n".join(f"{k:<{width}}  {v:>{vwidth}}" for k, v in rows)
