"""Chaos: SIGKILL the daemon at random moments under load, restart it, and check what survived.

Usage::

    python benchmarks/chaos.py --kills 5 --seed 7 --out chaos.json

The same stack as the soak (:mod:`soak_stack`: an embedded ``nats-server``,
the fake providers, ``alchemist run`` as a child process), or an existing
broker (``--nats-url``). While ``--concurrency`` clients send valid requests
and rate a share of the answers through JetStream (some twice), the daemon is
killed (SIGKILL) after a seeded random wait of ``--min-gap`` to ``--max-gap``
seconds, restarted at once, and killed again once it answers, ``--kills``
times; between kills this process writes a new version of a recipe by hand
(``reason = "manual"``), as an operator would. A client that finds no
responders (the daemon is down) waits 20 ms and retries; a request times out
after ``--timeout`` seconds.

At the end (the load stopped, the feedback consumer drained) it checks
(:mod:`chaos_check`) that every acknowledged rating is in ``ALCHEMIST_RATED``
exactly once, that the recipe KV history is intact, and that clients saw
errors only for requests in flight at a kill, counted per kill. It prints the
verdict, writes it as JSON (``--out``) and exits 1 when a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
import nats.errors
import tomli_w
from chaos_check import Ledger, check_clients, check_ratings, check_recipes, served_versions
from nats.aio.client import Client
from soak_stack import JSON_HEADERS, SUBJECT, Child, DaemonProc, daemon_document, free_port

from alchemist.daemon.storage.broker import EmbeddedNats
from alchemist.daemon.storage.recipe_store import RecipeStore
from alchemist.daemon.telemetry import logs

SCRIPT = str(Path(__file__).resolve())
RECIPES = ["default", "hang", "reset"]


class Run:
    """The run clock, the ledger and the stop flag shared by clients and the killer."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.monotonic()
        self.ledger = Ledger()
        self.stop = asyncio.Event()
        self.n = 0

    def now(self) -> float:
        return time.monotonic() - self.t0


async def client(nc: Client, run: Run, index: int) -> None:
    """Valid requests back to back; rate a share of the answers (through JetStream)."""
    rng = random.Random(run.args.seed * 7919 + index)
    js = nc.jetstream(timeout=5.0)
    led = run.ledger
    while not run.stop.is_set():
        run.n += 1
        body = json.dumps({"prompt": f"Chaos question {run.n % 89}: capital of France?"}).encode()
        sent = run.now()
        try:
            msg = await nc.request(SUBJECT, body, timeout=run.args.timeout, headers=JSON_HEADERS)
        except nats.errors.NoRespondersError:
            led.refused.append(sent)
            await asyncio.sleep(0.02)
            continue
        except nats.errors.TimeoutError:
            led.errors.append((sent, run.now(), "client_timeout"))
            continue
        reply = json.loads(msg.data)
        if "error" in reply:
            led.errors.append((sent, run.now(), str(reply["error"].get("code"))))
            continue
        led.ok += 1
        rid = str(reply["request_id"])
        led.replied[rid] = run.now()
        if rng.random() >= run.args.feedback_share:
            continue
        user = f"user{rng.randrange(1000)}"
        rating = json.dumps({"request_id": rid, "rating": rng.choice((1, -1)), "user": user})
        for _ in range(2 if rng.random() < 0.05 else 1):  # some clients send it twice
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await js.publish("alchemist.feedback", rating.encode(), headers=JSON_HEADERS)
                led.acked.setdefault((rid, user), run.now())


async def killer(nc: Client, run: Run, daemon: DaemonProc) -> None:
    """Kill, restart, wait until it answers, write a recipe version by hand; ``--kills`` times."""
    rng = random.Random(run.args.seed)
    store = RecipeStore(nc, "alchemist")
    await store.open(create=False)
    for k in range(run.args.kills):
        await asyncio.sleep(rng.uniform(run.args.min_gap, run.args.max_gap))
        run.ledger.kills.append(run.now())
        daemon.kill()
        daemon.start()
        await daemon.ready(nc)
        run.ledger.ready.append(run.now())
        name = RECIPES[k % len(RECIPES)]
        new = await store.write_new_version(name, lambda r: r.successor(reason="manual"))
        run.ledger.manual.setdefault(name, []).append(new.version)
        print(f"[{run.now():6.1f} s] kill {k + 1}/{run.args.kills}: back after "
              f"{run.ledger.ready[-1] - run.ledger.kills[-1]:.2f} s; {run.ledger.ok} answered, "
              f"{len(run.ledger.acked)} ratings acked, {len(run.ledger.errors)} errors; "
              f"{name} v{new.version} written", flush=True)
    await asyncio.sleep(run.args.min_gap)  # load after the last restart too


async def drained(nc: Client, timeout: float = 90.0) -> bool:
    """Until the feedback consumer has nothing pending or unacked."""
    js = nc.jetstream(timeout=5.0)
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        info = await js.consumer_info("ALCHEMIST_FEEDBACK", "alchemist-feedback")
        if not info.num_pending and not info.num_ack_pending:
            return True
        await asyncio.sleep(0.5)
    return False


async def chaos(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    broker = EmbeddedNats(work / "nats") if not args.nats_url else None
    url = await broker.start() if broker else args.nats_url
    providers = Child("providers", [SCRIPT, "--serve-providers"], work / "providers.log")
    port = free_port()
    cfg = work / "daemon.toml"
    daemon = DaemonProc(cfg, work / "daemon.log", port)
    nc: Client | None = None
    try:
        providers.start()
        cfg.write_text(tomli_w.dumps(daemon_document(
            url, await providers.first_line(), work / "state", max_records=args.max_records,
            evolver=True, metrics_port=port)))
        daemon.start()
        nc = await nats.connect(url, name="chaos", max_reconnect_attempts=-1)
        await daemon.ready(nc)
        run = Run(args)
        clients = [asyncio.create_task(client(nc, run, i)) for i in range(args.concurrency)]
        try:
            await killer(nc, run, daemon)
        finally:
            run.stop.set()
            await asyncio.gather(*clients, return_exceptions=True)
        print("load stopped; waiting for the feedback consumer to drain", flush=True)
        out: dict[str, Any] = {"drained": await drained(nc)}
        await asyncio.sleep(2.0)  # the last manual writes reach the daemon's KV watch
        out["ratings"] = await check_ratings(nc, run.ledger)
        out["recipes"] = await check_recipes(nc, run.ledger, await served_versions(nc, RECIPES))
        out["clients"] = check_clients(run.ledger, args.timeout)
        return out
    finally:
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        await daemon.stop()
        await providers.stop()
        if broker is not None:
            await broker.stop()


def verdict(out: dict[str, Any], kills: int) -> dict[str, bool]:
    r, c = out["ratings"], out["clients"]
    return {"feedback_drained": out["drained"],
            "kills_done": len(c["kills"]) == kills,
            "acked_ratings_once": r["in_rated_more_than_once"] == 0
            and r["lost_with_experience_present"] == 0
            and r["experience_never_recorded_unexplained"] == 0,
            "recipe_history_intact": all(v["intact"] for v in out["recipes"].values()),
            "errors_only_in_flight_at_kills": c["unexplained_errors"] == 0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--min-gap", type=float, default=3.0, help="least seconds between kills")
    ap.add_argument("--max-gap", type=float, default=10.0, help="most seconds between kills")
    ap.add_argument("--concurrency", type=int, default=16, help="clients")
    ap.add_argument("--feedback-share", type=float, default=0.5)
    ap.add_argument("--timeout", type=float, default=3.0, help="a client's request timeout")
    ap.add_argument("--max-records", type=int, default=50_000)
    ap.add_argument("--nats-url", default=None, help="use this broker (default: start one)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, config)")
    ap.add_argument("--serve-providers", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_providers:
        from soak_stack import serve_providers

        asyncio.run(serve_providers())
        return 0
    logs.configure("warning")  # the recipe store's info lines are not this run's output
    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    t0 = time.monotonic()
    try:
        out = asyncio.run(chaos(args, work))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    out["verdict"] = verdict(out, args.kills)
    out["params"] = {k: v for k, v in vars(args).items() if k not in ("out", "serve_providers")}
    out["wall_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps({k: out[k] for k in ("ratings", "clients", "verdict")}, indent=1))
    for name, rec in out["recipes"].items():
        print(f"recipe {name}: versions {rec['versions']}, served v{rec['served']}, "
              f"intact {rec['intact']}")
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=1))
        print(f"wrote {args.out}")
    return 0 if all(out["verdict"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
