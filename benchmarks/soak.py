"""Soak the daemon: hundreds of thousands of requests, and watch for leaks.

Usage::

    python benchmarks/soak.py --requests 200000 --max-records 20000 \\
        --out soak.json --plot benchmarks/figures/soak.png

Processes, all on loopback: an embedded ``nats-server`` (JetStream), a fake
provider server (:mod:`soak_stack`: three providers that answer at once, one
that hangs, one that resets connections) and the daemon, ``alchemist run -c
FILE`` as its own process (``experience.max_records`` from
``--max-records``; its Prometheus endpoint on). The traffic (:mod:`soak_load`)
is a seeded mix of valid requests at fan-out 3, requests that wait on the bad
providers, malformed ones (bad JSON, wrong types, oversized, msgpack garbage),
and ratings for a share of the served ids (through JetStream, acked).

Every ``--sample-s`` seconds it samples, against the requests done so far:
the daemon's RSS and open file descriptors (``/proc``), its asyncio task
count and experience index size (``alchemist_event_loop_tasks`` and
``alchemist_experience_records`` on its metrics endpoint), its CPU seconds,
and the messages and bytes held by the three streams (JetStream stream info).
It writes the samples and a summary as JSON (``--out``) and a plot with one
panel per measure (``--plot``, needs matplotlib: the ``plot`` extra).

The summary: RSS once the index is full (both the experiences and the rated
maps at ``max_records``) against RSS at the end (growth %, the issue's target
<= 10 %), the RSS per held record while the index filled, file descriptors and
tasks first/last/max, and the outcome codes by request kind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import nats
import tomli_w
from soak_load import MIX, Load, run_load
from soak_report import plot, print_summary, summarize
from soak_stack import Child, DaemonProc, daemon_document, free_port, sample

from alchemist.daemon.storage.broker import EmbeddedNats

SCRIPT = str(Path(__file__).resolve())


async def sampler(nc: nats.NATS, daemon: DaemonProc, load: Load, every: float,
                  samples: list[dict[str, Any]], t0: float) -> None:
    """Sample every ``every`` seconds, and print a progress line every ten seconds."""
    last_print = 0.0
    async with aiohttp.ClientSession() as http:
        while True:
            s: dict[str, Any] = {"t": round(time.monotonic() - t0, 2), "requests": load.done,
                                 "ratings_acked": load.ratings["acked"]}
            s.update(await sample(nc, http, daemon))
            samples.append(s)
            if s["t"] - last_print >= 10.0:
                last_print = s["t"]
                progress(s, load)
            await asyncio.sleep(every)


def progress(s: dict[str, Any], load: Load) -> None:
    rate = s["requests"] / max(s["t"], 1e-9)
    errors = sum(v for k, v in load.codes().items() if k != "ok")
    print(f"[{s['t']:7.1f} s] {s['requests']:>7}/{load.total} requests ({rate:.0f}/s), "
          f"{load.ratings['acked']} ratings, {errors} error replies | rss "
          f"{s.get('rss_mb', '?')} MB, fds {s.get('fds', '?')}, tasks {s.get('tasks', '?')}, "
          f"index {s.get('index_experiences', '?')}/{s.get('index_rated', '?')}, "
          f"streams {s.get('stream_experience_msgs', '?')}/{s.get('stream_rated_msgs', '?')}",
          flush=True)


async def soak(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Start everything, run the traffic with the sampler beside it, stop everything."""
    broker = EmbeddedNats(work / "nats")
    url = await broker.start()
    providers = Child("providers", [SCRIPT, "--serve-providers"], work / "providers.log")
    cfg = work / "daemon.toml"
    port = free_port()
    daemon = DaemonProc(cfg, work / "daemon.log", port)
    nc: nats.NATS | None = None
    try:
        providers.start()
        providers_url = await providers.first_line()
        cfg.write_text(tomli_w.dumps(daemon_document(
            url, providers_url, work / "state", max_records=args.max_records,
            evolver=not args.no_evolver, metrics_port=port)))
        daemon.start()
        nc = await nats.connect(url, name="soak", max_reconnect_attempts=-1)
        ready_s = await daemon.ready(nc)
        print(f"ready in {ready_s:.1f} s: nats {url}, daemon pid {daemon.pid}, "
              f"metrics {daemon.metrics_url}", flush=True)
        load = Load(args.requests, args.feedback_share, args.users, args.seed)
        samples: list[dict[str, Any]] = []
        t0 = time.monotonic()
        watch = asyncio.create_task(sampler(nc, daemon, load, args.sample_s, samples, t0))
        try:
            await run_load(nc, load, args.concurrency)
            await asyncio.sleep(args.sample_s * 2)  # a last sample or two with the load done
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        wall = time.monotonic() - t0
        alive = daemon.popen is not None and daemon.popen.poll() is None
        return {"samples": samples, "outcomes": {k: dict(v) for k, v in load.outcomes.items()},
                "ratings": dict(load.ratings), "wall_s": round(wall, 1), "daemon_alive": alive}
    finally:
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        await daemon.stop()
        await providers.stop()
        await broker.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200_000, help="requests to send in all")
    ap.add_argument("--max-records", type=int, default=20_000,
                    help="the daemon's experience.max_records")
    ap.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    ap.add_argument("--feedback-share", type=float, default=0.35,
                    help="share of answered requests that get a rating")
    ap.add_argument("--users", type=int, default=5000, help="distinct users rating")
    ap.add_argument("--sample-s", type=float, default=2.0, help="seconds between samples")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--no-evolver", action="store_true", help="run the daemon without its evolver")
    ap.add_argument("--out", type=Path, default=None, help="write samples and summary as JSON")
    ap.add_argument("--plot", type=Path, default=None, help="write the plot (PNG) here")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, config)")
    ap.add_argument("--serve-providers", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_providers:
        from soak_stack import serve_providers

        asyncio.run(serve_providers())
        return 0
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        results = asyncio.run(soak(args, work))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["params"] = {"requests": args.requests, "max_records": args.max_records,
                         "concurrency": args.concurrency, "feedback_share": args.feedback_share,
                         "users": args.users, "seed": args.seed, "mix": MIX,
                         "evolver": not args.no_evolver, "cpus": os.cpu_count(),
                         "python": sys.version.split()[0]}
    results["summary"] = summarize(results, args.max_records)
    print_summary(results["summary"])
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.out}")
    if args.plot is not None:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0 if results["daemon_alive"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
