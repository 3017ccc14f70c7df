"""``alchemist bench replay`` and ``alchemist demo``: the whole loop on one machine."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from alchemist.answers.extract import AnswerSpec, extract
from alchemist.daemon.sim.fleet import make_fleet
from alchemist.daemon.sim.golden import (
    await_golden,
    choose_golden,
    probe_settings,
    served_order,
    write_golden,
)
from alchemist.daemon.sim.harness import Harness, LoopSettings, Progress, ordered
from alchemist.daemon.sim.replay import Latency, ReplaySet, load_replay
from alchemist.daemon.sim.report import build_report, format_table, write_plot


def _replay(path: str, models: str | None) -> ReplaySet:
    replay = load_replay(Path(path))
    if not models:
        return replay
    wanted = [m.strip() for m in models.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in replay.models]
    if unknown:
        raise ValueError(f"--models: {', '.join(unknown)} not in {path}; it has "
                         f"{', '.join(replay.models)}")
    return ReplaySet(replay.items, tuple(wanted))


def _progress_line(p: Progress, total: int) -> None:
    version = p.versions[-1].version if p.versions else 1
    bar = int(30 * p.done / max(1, total))
    sys.stderr.write(f"\r[{'#' * bar}{'.' * (30 - bar)}] {p.done}/{total}  "
                     f"{p.rate:5.0f} req/s  served {p.served_pct:5.1f}%  "
                     f"last {len(p.window)}: {p.window_pct:5.1f}%  ratings {p.ratings}  "
                     f"recipe v{version}  errors {p.errors} ")
    sys.stderr.flush()


async def cmd_bench_replay(args: argparse.Namespace) -> int:
    from alchemist.daemon.telemetry import logs

    logs.configure("warning" if not args.verbose else "info")
    replay = _replay(args.dataset, args.models)
    spec = AnswerSpec.parse(args.answer)
    settings = LoopSettings(answer=spec, strategy=args.strategy, rated=args.rated,
                            noise=args.noise, seed=args.seed, concurrency=args.concurrency,
                            latency=Latency(median_ms=args.latency_ms,
                                            tail="lognormal" if args.p99_ratio > 1 else "fixed",
                                            p99_ratio=max(1.0, args.p99_ratio)),
                            failure_rate=args.failure_rate, explore=args.explore,
                            first_wave=args.first_wave, stop_margin=args.stop_margin,
                            lockstep=args.lockstep,
                            evolver={"calibrate": args.calibrate} if args.calibrate else {})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    golden = choose_golden(replay, args.golden, args.seed, spec) if args.golden else []
    if golden:
        settings = replace(settings, probes=probe_settings(
            write_golden(golden, spec, out / "golden").parent, len(golden)))
    items = served_order(replay, args.requests, args.seed, {i.id for i in golden})
    print(f"replaying {len(items)} prompts of {args.dataset} through the daemon "
          f"({len(replay.models)} providers, rated {args.rated:.0%}, noise {args.noise:.0%}, "
          f"seed {args.seed}" + (f", {len(golden)} golden prompts apart" if golden else "") + ")",
          file=sys.stderr)
    t0 = time.monotonic()
    async with Harness(replay, settings) as h:
        if golden:
            await await_golden(h)
        await h.drive(items, on_tick=lambda p: _progress_line(p, len(items)))
        promoted = sum(1 for r in h.progress.versions if r.reason in ("evolved", "calibrated"))
        final = h.daemon.recipes.get("default") if h.daemon and h.daemon.recipes else None
        golden_calls = h.daemon.prober.counts["golden_calls"] if h.daemon and h.daemon.prober else 0
    sys.stderr.write("\n")
    report = build_report(replay, h.served, extract=lambda t: extract(t, spec),
                          recipes_promoted=promoted, golden=len(golden), golden_calls=golden_calls)
    report.update(dataset=str(args.dataset), seed=args.seed, rated=args.rated, noise=args.noise,
                  strategy=args.strategy, answer=spec.to_dict(),
                  seconds=round(time.monotonic() - t0, 1),
                  promotions=[list(p) for p in h.progress.promotions],
                  final_recipe=final.to_dict() if final else None)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    plotted = write_plot(report, out / "curve.png", f"{Path(args.dataset).name}: served score "
                         f"while learning (rated {args.rated:.0%}, noise {args.noise:.0%}, "
                         f"seed {args.seed})")
    print(format_table(report))
    print(f"report: {out / 'report.json'}" + (f"  plot: {out / 'curve.png'}" if plotted else ""))
    return 0


def _screen(h: Harness, label: str, headless: bool) -> str:
    p = h.progress
    recipe = h.daemon.recipes.get("default") if h.daemon and h.daemon.recipes else None
    lines = [f"llm-alchemist demo — {label}", "",
             f"requests {p.done:>6}   {p.rate:6.1f} req/s   errors {p.errors}   "
             f"ratings sent {p.ratings}",
             f"served accuracy: all {p.served_pct:5.1f}%   last {len(p.window)} "
             f"{p.window_pct:5.1f}%", ""]
    if recipe is not None:
        models = list(h.replay.models)
        lines.append(f"recipe default v{recipe.version} ({recipe.reason})  weights:")
        lines.append("  " + "skill".ljust(11) + "".join(m[-13:].rjust(14) for m in models))
        for skill in sorted(recipe.weights):
            row = recipe.row(skill, models)
            lines.append("  " + skill[:11].ljust(11) + "".join(f"{row[m]:14.2f}" for m in models))
    lines.append("")
    lines.append("recipe versions published:")
    for r in p.versions[-6:]:
        fit = (f"fitness {r.fitness:.3f} vs {r.baseline_fitness:.3f}"
               if r.fitness is not None and r.baseline_fitness is not None else "")
        lines.append(f"  v{r.version:<3} {r.reason:<8} {r.n_ratings:>5} ratings  {fit}")
    text = "\n".join(lines)
    if headless:
        return f"[{time.strftime('%H:%M:%S')}] requests {p.done} served {p.served_pct:.1f}% " \
               f"last {p.window_pct:.1f}% ratings {p.ratings} recipe " \
               f"v{recipe.version if recipe else 1}"
    return "\x1b[H\x1b[2J" + text


async def cmd_demo(args: argparse.Namespace) -> int:
    from alchemist.daemon.telemetry import logs

    logs.configure("error")
    if args.replay:
        replay = _replay(args.replay, None)
        spec = AnswerSpec.parse(args.answer or "number")
        latency: Latency | dict[str, Latency] = Latency(median_ms=5.0, tail="lognormal",
                                                        p99_ratio=4.0)
        failure: float | dict[str, float] = 0.0
        label = f"recorded answers of real LLMs from {args.replay}"
    else:
        fleet = make_fleet(args.tasks, args.seed)
        replay, latency, failure = fleet.replay, fleet.latency, fleet.failure_rate
        spec = AnswerSpec.parse("json:answer")
        label = "SIMULATED fleet (generated locally; no real LLM is called)"
        if not args.headless:
            print(fleet.description)
    settings = LoopSettings(answer=spec, rated=args.rated, noise=args.noise, seed=args.seed,
                            concurrency=args.concurrency, latency=latency, failure_rate=failure,
                            deadline_ms=3000,
                            evolver={"min_new_ratings": 10, "interval_s": 1.0, "min_ratings": 20},
                            http={"enabled": True, "listen": args.http} if args.http != "off" else {})
    headless = args.headless or not sys.stdout.isatty()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.duration:
        loop.call_later(args.duration, stop.set)

    def endless() -> Any:
        epoch = 0
        while not stop.is_set():
            yield from ordered(replay, None, args.seed + epoch)
            epoch += 1

    async with Harness(replay, settings) as h:
        print(f"NATS at {h.daemon.url if h.daemon else '?'} — try: alchemist ask --url "
              f"{h.daemon.url if h.daemon else '?'} 'What is 2+2?'", file=sys.stderr)
        if h.daemon and h.daemon.http:
            print(f"status page and OpenAI-compatible API at {h.daemon.http.url}/ — try: "
                  f"curl {h.daemon.http.url}/v1/models", file=sys.stderr)
        await h.drive(endless(), stop=stop,
                      on_tick=lambda _: print(_screen(h, label, headless), flush=True))
    print(f"\nserved {h.progress.done} requests; accuracy {h.progress.served_pct:.1f}%, "
          f"last {len(h.progress.window)}: {h.progress.window_pct:.1f}%; "
          f"recipe versions published: {len(h.progress.versions)}")
    return 0


def add_sim_verbs(sub: Any) -> None:
    """Register ``bench replay`` and ``demo`` on the ``alchemist`` parser."""
    p = sub.add_parser("bench", help="benchmarks")
    bsub = p.add_subparsers(dest="action", required=True)
    b = bsub.add_parser("replay", help="replay recorded answers through the real daemon")
    b.add_argument("--dataset", required=True, help="replay file (.jsonl or .jsonl.gz)")
    b.add_argument("--answer", default="text", help="answer extraction: KIND[:FIELD]")
    b.add_argument("--strategy", choices=("vote", "select"), default="vote")
    b.add_argument("--models", help="comma-separated subset of the recorded models")
    b.add_argument("--rated", type=float, default=0.25, help="share of answers rated")
    b.add_argument("--noise", type=float, default=0.1, help="share of ratings flipped")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--requests", type=int, help="number of requests (default: the whole set)")
    b.add_argument("--out", default="bench-out", help="directory for report.json, curve.png")
    b.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    b.add_argument("--latency-ms", type=float, default=2.0, help="median replay latency per call")
    b.add_argument("--p99-ratio", type=float, default=1.0,
                   help="p99/median of a log-normal latency tail (1 = fixed latency)")
    b.add_argument("--failure-rate", type=float, default=0.0,
                   help="share of replay calls that fail with HTTP 500")
    b.add_argument("--explore", type=float, default=0.0,
                   help="recipe explore share (serves runner-up answers on uncertain requests)")
    b.add_argument("--first-wave", type=int, default=0, metavar="K",
                   help="cascade: ask the K heaviest providers first, more only while the vote "
                   "is open (0: everyone at once)")
    b.add_argument("--stop-margin", type=float, default=0.0,
                   help="cascade: also stop once the lead is this share of the total weight")
    b.add_argument("--lockstep", action=argparse.BooleanOptionalAction, default=True,
                   help="pause at evidence boundaries until the daemon has learned, so a seed "
                   "gives the same promotions however busy the machine is")
    b.add_argument("--golden", type=int, default=0, metavar="N",
                   help="take N prompts (by the seed, spread over skills) as a golden set the "
                   "prober asks every provider once; they are not served nor scored")
    b.add_argument("--calibrate", type=int, default=0, metavar="N",
                   help="evolver.calibrate: once N ground-truth records (the golden set's) are "
                   "in, promote the recipe fitted on them, ungated (0: off)")
    b.add_argument("--verbose", action="store_true", help="daemon logs on stderr")
    b.set_defaults(fn=cmd_bench_replay)

    d = sub.add_parser("demo", help="the whole loop, live, on this machine")
    d.add_argument("--replay", help="use a recorded replay set instead of the simulated fleet")
    d.add_argument("--answer", help="answer extraction for --replay (default number)")
    d.add_argument("--tasks", type=int, default=400, help="simulated tasks")
    d.add_argument("--rated", type=float, default=0.5)
    d.add_argument("--noise", type=float, default=0.1)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--concurrency", type=int, default=8)
    d.add_argument("--duration", type=float, help="stop after this many seconds")
    d.add_argument("--headless", action="store_true", help="one status line a second")
    d.add_argument("--http", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="the HTTP front door and status page (default: a free loopback port; "
                   "off: none)")
    d.set_defaults(fn=cmd_demo)
