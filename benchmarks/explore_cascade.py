"""What a cascade costs the learner, and what `explore` buys back.

Usage::

    python benchmarks/explore_cascade.py [--seeds 0 1 2] [--requests 900] [--out results.json]

A cascade asks fewer providers, so the experience records fewer answers, and
the learner sees less of the providers it did not ask. ``explore`` (a share of
requests that ask everyone at once, and sometimes serve another answer) keeps
it informed, at the price of calls and of some served answers. The fleet is
:func:`alchemist.daemon.sim.fleet.specialist_fleet` (two weak providers that
share mistakes, listed first, and two opposite specialists): a uniform vote
serves it poorly, and what the learner must find is whom to trust per skill.
Lockstep runs, 50 % rated at 5 % noise (the issue's specialist-fleet setting),
for every combination of ``first_wave`` (0: at once, 2: a cascade) and
``explore`` (0, 0.1, 0.25). Reported: served accuracy over the last 200
requests, provider calls a request over them, and the promotions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path

from alchemist.answers.extract import AnswerSpec
from alchemist.daemon.sim.fleet import specialist_fleet
from alchemist.daemon.sim.harness import Harness, LoopSettings, ordered
from alchemist.daemon.sim.replay import Latency
from alchemist.daemon.telemetry import logs

WAVES = (0, 2)
EXPLORE = (0.0, 0.1, 0.25)


async def run(first_wave: int, explore: float, seed: int, requests: int) -> dict[str, float]:
    """One lockstep run; the last 200 requests' accuracy and calls, and the promotions."""
    replay = specialist_fleet(400, seed=1)
    settings = LoopSettings(answer=AnswerSpec.parse("json:answer"), rated=0.5, noise=0.05,
                            seed=seed, concurrency=8, lockstep=True, explore=explore,
                            first_wave=first_wave, latency=Latency(5.0, "lognormal", 4.0))
    async with Harness(replay, settings) as h:
        await h.drive(ordered(replay, requests, seed))
    last = h.served[-200:]
    right = sum(replay.score(s.item_id, s.provider) for s in last if s.provider)
    return {"accuracy": right / len(last), "calls": sum(s.n_called for s in last) / len(last),
            "promotions": len(h.progress.promotions)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--requests", type=int, default=900)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    logs.configure("error")
    results: dict[str, list[dict[str, float]]] = {}
    print("first_wave explore | last-200 accuracy per seed (median) | calls | promotions")
    for wave in WAVES:
        for explore in EXPLORE:
            runs = [asyncio.run(run(wave, explore, seed, args.requests)) for seed in args.seeds]
            results[f"{wave}/{explore}"] = runs
            acc = [r["accuracy"] for r in runs]
            print(f"{wave:>10} {explore:>7} | {' '.join(f'{a:.3f}' for a in acc)} "
                  f"({statistics.median(acc):.3f}) | "
                  f"{statistics.median(r['calls'] for r in runs):.2f} | "
                  f"{' '.join(str(int(r['promotions'])) for r in runs)}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
