"""Does the daemon keep Python objects once its experience index is full?

Usage::

    python benchmarks/heap_growth.py [--full-at 8000] [--until 28000] [--max-records 2000] [--no-trace]

Runs the daemon in this process (the ``bench`` harness: embedded NATS, the
simulated fleet, 35 % of answers rated, the evolver on) with a small
``experience.max_records``, so the index is full early. With ``tracemalloc``
on from the first request, it prints the traced Python heap (live allocations)
and the process's RSS once the index is full and again at the end, then the
allocation sites whose live size changed most in between. ``--no-trace``
measures RSS alone (tracing slows the run several times).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
import tracemalloc
from pathlib import Path

import msgspec

from alchemist.daemon.config import Config
from alchemist.daemon.sim.fleet import make_fleet
from alchemist.daemon.sim.harness import Harness, LoopSettings, ordered
from alchemist.daemon.telemetry import logs


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class SmallIndex(Harness):
    """The harness with a small experience index."""

    max_records = 2000

    def config(self, base_url: str) -> Config:
        cfg = super().config(base_url)
        return msgspec.structs.replace(cfg, experience=msgspec.structs.replace(
            cfg.experience, max_records=self.max_records))


async def run(args: argparse.Namespace) -> None:
    trace = not args.no_trace
    if trace:
        tracemalloc.start(1)
    fleet = make_fleet(400, seed=2)
    SmallIndex.max_records = args.max_records
    h = SmallIndex(fleet.replay, LoopSettings(rated=0.35, noise=0.1, seed=1, concurrency=16,
                                              lockstep=False))
    async with h:
        items = ordered(fleet.replay, args.until, 1)
        await h.drive(items[:args.full_at])
        h.served.clear()  # the harness's own list of served requests
        gc.collect()
        first = tracemalloc.take_snapshot() if trace else None
        heap0, rss0, t0 = tracemalloc.get_traced_memory()[0] if trace else 0, rss_kib(), time.time()
        for start in range(args.full_at, args.until, 5000):
            await h.drive(items[start:start + 5000])
            h.served.clear()
        gc.collect()
        heap1, rss1 = tracemalloc.get_traced_memory()[0] if trace else 0, rss_kib()
        print(f"requests {args.full_at} -> {args.until} in {time.time() - t0:.0f} s: "
              f"RSS {rss0} -> {rss1} KiB ({100 * (rss1 - rss0) / rss0:+.1f} %)"
              + (f", traced heap {heap0 // 1024} -> {heap1 // 1024} KiB "
                 f"({100 * (heap1 - heap0) / max(heap0, 1):+.1f} %)" if trace else ""))
        if first is not None:
            for stat in tracemalloc.take_snapshot().compare_to(first, "lineno")[:args.top]:
                print(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d}  "
                      f"{stat.traceback.format()[-1].strip()}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full-at", type=int, default=8000, help="requests before the first look")
    ap.add_argument("--until", type=int, default=28000)
    ap.add_argument("--max-records", type=int, default=2000)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--no-trace", action="store_true")
    args = ap.parse_args(argv)
    logs.configure("error")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
