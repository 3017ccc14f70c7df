"""Scale out: throughput with 1, 2, 3 instances, recipe propagation, leader fail-over.

Usage::

    python benchmarks/scaleout.py --out scaleout.json [--max-concurrency 4] [--seconds 8]

Processes, all on loopback: one embedded ``nats-server`` (JetStream), one
fake-provider process (a :class:`ReplayServer`: ``--providers`` models, each
answering every prompt with the same text after ``--latency-ms``, fixed), and
up to ``--instances`` daemons (``python -m alchemist.daemon run``), each with
the same ``service.max_concurrency`` and a recipe that asks every provider.
The load generator is a nats-py client in this process.

Measured:

1. **Throughput** with 1, 2, ... instances under the same offered load:
   ``--offered x instances x max_concurrency`` requesters back to back (a
   request refused as ``overloaded`` is retried after 10 ms; the queue group
   spreads requests at random, so an instance can be full while another has a
   free slot: offering twice the capacity keeps every slot busy). Instances are added one at a
   time, removed in reverse order, added again (each count measured twice, the
   best of the two kept, against drift and other load on the machine); the CPU
   seconds of every process over each window are recorded, to show no
   instance is CPU-bound (the load is provider-latency-bound by design).
2. **Recipe propagation**: ``--writes`` new versions of the recipe written to
   the KV bucket (as ``alchemist recipe import`` does); for each, the time from
   the write's acknowledgement until every instance reports serving it in
   ``$SRV.STATS`` (polled every 10 ms: the figure includes up to one poll).
3. **Fail-over**: fresh instances with ``evolver.lease_s = --lease-s`` under
   rated traffic; the leader is SIGKILLed; from the kill to the new leader's
   ``lease_acquired`` and to its first ``evolver_step`` (log timestamps, one
   clock: one host).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import nats
import nats.errors
import tomli_w
from fanout_load import cpu_seconds
from fanout_report import pct
from nats.aio.client import Client

import alchemist.daemon as daemon_pkg
from alchemist.adapters.base import Message
from alchemist.daemon.config import parse_config
from alchemist.daemon.ops.status import gather_status
from alchemist.daemon.sim.replay import Latency, RecordedAnswer, ReplayItem, ReplayServer, ReplaySet
from alchemist.daemon.storage.broker import EmbeddedNats
from alchemist.daemon.storage.recipe_store import RecipeStore

ROOT = Path(daemon_pkg.__file__).resolve().parents[1]
SCRIPT = str(Path(__file__).resolve())
HEADERS = {"Content-Type": "application/json"}
ERROR = "Nats-Service-Error-Code"


# ---------------------------------------------------------------- children

async def serve_providers(models: int, latency_ms: float) -> None:
    """The fake providers until SIGTERM; prints the base URL once serving."""
    names = tuple(f"m{i}" for i in range(models))
    items = tuple(ReplayItem(f"q{i}", "bench", (Message("user", f"question {i}"),), "Paris",
                             {m: RecordedAnswer("Paris", 1.0) for m in names}) for i in range(64))
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with ReplayServer(ReplaySet(items, names), latency=Latency(median_ms=latency_ms),
                            seed=1) as server:
        print(server.base_url, flush=True)
        await stop.wait()


def document(url: str, providers_url: str, state: Path, args: argparse.Namespace, *,
             evolver: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "nats": {"url": url},
        "service": {"max_concurrency": args.max_concurrency},
        "state": {"dir": str(state)},
        "providers": [{"name": f"m{i}", "kind": "openai", "base_url": providers_url,
                       "model": f"m{i}", "timeout_s": 10.0, "max_retries": 0,
                       "max_concurrency": 256} for i in range(args.providers)],
        "recipes": {"default": {"strategy": "vote", "answer": {"kind": "text"}}},
        "evolver": evolver or {"enabled": False},
    }
    parse_config(doc)
    return doc


class Daemon:
    """One ``alchemist run`` child and its log."""

    def __init__(self, work: Path, name: str, doc: dict[str, Any], level: str) -> None:
        self.log = work / f"{name}.log"
        cfg = work / f"{name}.toml"
        cfg.write_text(tomli_w.dumps(doc))
        with open(self.log, "w") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "alchemist.daemon", "run", "-c", str(cfg), "--log-level",
                 level], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    async def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                await asyncio.to_thread(self.popen.wait, 20)
            except subprocess.TimeoutExpired:
                self.popen.kill()


async def instances_up(nc: Client, n: int, timeout: float = 60.0) -> None:
    """Until ``n`` instances answer ``$SRV.STATS``."""
    give_up = time.monotonic() + timeout
    while len((await gather_status(nc, "alchemist", wait=0.3, leases=False))["instances"]) < n:
        if time.monotonic() > give_up:
            raise RuntimeError(f"fewer than {n} instances answer after {timeout:.0f} s")


# ---------------------------------------------------------------- 1. throughput

async def closed_loop(nc: Client, requesters: int, seconds: float,
                      pids: dict[str, int]) -> dict[str, Any]:
    """``requesters`` back to back for ``seconds`` (after 1 s of warm-up)."""
    ok, overloaded, failed, latencies = 0, 0, 0, []
    t_start = time.perf_counter() + 1.0
    t_end = t_start + seconds
    cpu: dict[str, float] = {}

    async def meter() -> None:
        await asyncio.sleep(max(0.0, t_start - time.perf_counter()))
        before = {k: cpu_seconds(p) for k, p in pids.items()}
        await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
        cpu.update({k: round((cpu_seconds(p) - before[k]) / seconds, 3) for k, p in pids.items()})

    async def worker(w: int) -> None:
        nonlocal ok, overloaded, failed
        i = w
        while (t0 := time.perf_counter()) < t_end:
            body = json.dumps({"prompt": f"question {i % 64}"}).encode()
            i += requesters
            try:
                msg = await nc.request("alchemist.infer", body, timeout=10.0, headers=HEADERS)
                code = msg.headers.get(ERROR) if msg.headers else None
            except nats.errors.Error:
                code = "failed"
            t1 = time.perf_counter()
            counted = t_start <= t1 < t_end
            if code is None and counted:
                ok += 1
                latencies.append((t1 - t0) * 1000)
            elif code is not None:
                overloaded += counted and code == "503"
                failed += counted and code != "503"
                await asyncio.sleep(0.01)  # refused at once: don't spin

    await asyncio.gather(meter(), *(worker(w) for w in range(requesters)))
    return {"ok_per_s": round(ok / seconds, 1), "overloaded": overloaded, "failed": failed,
            "latency_ms": pct(latencies), "cpu_share": cpu}


async def throughput(work: Path, nc: Client, url: str, purl: str, pids: dict[str, int],
                     args: argparse.Namespace) -> dict[str, Any]:
    requesters = round(args.offered * args.instances * args.max_concurrency)
    runs: dict[int, list[dict[str, Any]]] = {}
    daemons: list[Daemon] = []
    up = [*range(1, args.instances + 1)]
    order = [*up, *up[-2::-1], *up[1:]]  # 1 2 3 2 1 2 3: every count twice, against drift
    try:
        for n in order:
            while len(daemons) < n:
                d = Daemon(work, f"t{len(daemons)}", document(url, purl, work / f"t{len(daemons)}",
                                                               args), "warning")
                daemons.append(d)
            while len(daemons) > n:
                await daemons.pop().stop()
            await instances_up(nc, n)
            procs = {**pids, **{f"daemon{k}": d.popen.pid for k, d in enumerate(daemons)}}
            result = await closed_loop(nc, requesters, args.seconds, procs)
            runs.setdefault(n, []).append(result)
            print(f"{n} instance(s): {result['ok_per_s']} ok/s, p50 "
                  f"{result['latency_ms']['p50']} ms, overloaded {result['overloaded']}, "
                  f"cpu {result['cpu_share']}", flush=True)
    finally:
        for d in daemons:
            await d.stop()
    best = {n: max(r["ok_per_s"] for r in rs) for n, rs in runs.items()}
    return {"requesters": requesters, "runs": runs,
            "ratio": {n: round(v / best[1], 2) for n, v in best.items()},
            "ideal_ok_per_s": round(args.max_concurrency / (args.latency_ms / 1000), 1)}


# ---------------------------------------------------------------- 2. propagation

async def propagation(nc: Client, n: int, writes: int) -> dict[str, Any]:
    from alchemist.daemon.telemetry import logs

    logs.configure("warning")  # the store logs every write at info
    store = RecipeStore(nc, "alchemist")
    await store.open(create=False)
    times = []
    for k in range(writes):
        new = await store.write_new_version("default", lambda cur: cur.successor(
            weights=cur.weights, reason="manual"))
        t0 = time.perf_counter()
        while True:
            status = await gather_status(nc, "alchemist", wait=0.01, leases=False)
            served = [i["recipes"].get("default") for i in status["instances"]]
            if len(served) >= n and all(v == new.version for v in served):
                break
            if time.perf_counter() - t0 > 10:
                raise RuntimeError(f"version {new.version} not everywhere after 10 s: {served}")
        times.append((time.perf_counter() - t0) * 1000)
        if k % 10 == 9:
            print(f"propagation: {k + 1} writes, p50 {pct(times)['p50']} ms", flush=True)
        await asyncio.sleep(0.05)
    return {"writes": writes, "ms": pct(times), "max_ms": round(max(times), 1)}


# ---------------------------------------------------------------- 3. fail-over

def stamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


async def rated_traffic(nc: Client, stop: asyncio.Event) -> None:
    js = nc.jetstream(timeout=5.0)
    i = 0
    while not stop.is_set():
        i += 1
        with contextlib.suppress(Exception):
            msg = await nc.request("alchemist.infer", json.dumps({"prompt": f"question {i % 64}"})
                                   .encode(), timeout=2.0, headers=HEADERS)
            reply = json.loads(msg.data)
            if "request_id" in reply:
                await js.publish("alchemist.feedback", json.dumps(
                    {"request_id": reply["request_id"], "rating": 1, "user": f"u{i}"}).encode())
        await asyncio.sleep(0.01)


async def failover(work: Path, nc: Client, url: str, purl: str,
                   args: argparse.Namespace) -> dict[str, Any]:
    evolver = {"min_new_ratings": 5, "min_ratings": 1000, "population": 16, "generations": 3,
               "lease_s": args.lease_s}
    daemons = [Daemon(work, f"f{k}", document(url, purl, work / f"f{k}", args, evolver=evolver),
                      "info") for k in range(args.instances)]
    stop = asyncio.Event()
    load = asyncio.create_task(rated_traffic(nc, stop))
    try:
        await instances_up(nc, args.instances)
        await asyncio.sleep(max(3.0, args.lease_s))  # steps running, renewals in their rhythm

        def taker(ds: list[Daemon]) -> tuple[Daemon, dict[str, Any]] | None:
            for d in ds:
                for e in d.events():
                    if e.get("event") == "lease_acquired" and e.get("lease") == "default":
                        return d, e
            return None

        found = taker(daemons)
        assert found is not None, "no leader"
        leader = found[0]
        killed = time.time()
        leader.popen.kill()
        others = [d for d in daemons if d is not leader]
        while (found := taker(others)) is None:
            assert time.time() - killed < args.lease_s + 30, "no new leader"
            await asyncio.sleep(0.05)
        new, taken = found
        while not (steps := [e for e in new.events() if e.get("event") == "evolver_step"
                             and stamp(e) > stamp(taken)]):
            assert time.time() - killed < args.lease_s + 60, "the new leader never stepped"
            await asyncio.sleep(0.05)
        return {"lease_s": args.lease_s, "kill_to_lease_s": round(stamp(taken) - killed, 2),
                "kill_to_first_step_s": round(stamp(steps[0]) - killed, 2),
                "lease_to_first_step_s": round(stamp(steps[0]) - stamp(taken), 2)}
    finally:
        stop.set()
        await load
        for d in daemons:
            await d.stop()


# ---------------------------------------------------------------- main

async def bench(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="scaleout-"))
    broker = EmbeddedNats(work / "nats")
    url = await broker.start()
    providers = subprocess.Popen(  # noqa: ASYNC220 - started once, before any load
        [sys.executable, SCRIPT, "--serve-providers", "--providers", str(args.providers),
         "--latency-ms", str(args.latency_ms)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert providers.stdout is not None
        purl = (await asyncio.to_thread(providers.stdout.readline)).strip()
        nc = await nats.connect(url, name="scaleout-bench")
        broker_proc = getattr(broker, "_proc", None)  # for CPU accounting only
        pids = {"providers": providers.pid, "loadgen": os.getpid()}
        if broker_proc is not None:
            pids["nats-server"] = broker_proc.pid
        out: dict[str, Any] = {"args": {k: str(v) if isinstance(v, Path) else v
                                        for k, v in vars(args).items()}, "cpus": os.cpu_count()}
        out["throughput"] = await throughput(work, nc, url, purl, pids, args)
        daemons = [Daemon(work, f"p{k}", document(url, purl, work / f"p{k}", args), "warning")
                   for k in range(args.instances)]
        try:
            await instances_up(nc, args.instances)
            out["propagation"] = await propagation(nc, args.instances, args.writes)
        finally:
            for d in daemons:
                await d.stop()
        if args.lease_s > 0:
            out["failover"] = await failover(work, nc, url, purl, args)
        await nc.close()
        return out
    finally:
        providers.terminate()
        await asyncio.to_thread(providers.wait)
        await broker.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path)
    p.add_argument("--instances", type=int, default=3)
    p.add_argument("--max-concurrency", type=int, default=4, help="service.max_concurrency each")
    p.add_argument("--offered", type=float, default=2.0,
                   help="requesters, in multiples of the largest deployment's capacity")
    p.add_argument("--providers", type=int, default=2)
    p.add_argument("--latency-ms", type=float, default=50.0)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--writes", type=int, default=100, help="recipe versions written")
    p.add_argument("--lease-s", type=float, default=10.0, help="0: skip the fail-over phase")
    p.add_argument("--serve-providers", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_providers:
        asyncio.run(serve_providers(args.providers, args.latency_ms))
        return 0
    result = asyncio.run(bench(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
