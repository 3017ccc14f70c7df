"""Benchmark the HTTP front door: what ``POST /v1/chat/completions`` adds over NATS ``alchemist.infer``.

Usage::

    python benchmarks/http_front.py [--requests 3000] [--block 100] [--out http_front.json]

One run, one daemon, the same fake providers for both doors: an embedded
``nats-server``, the fan-out benchmark's fake providers (``fanout.py
--serve-providers``; recipe ``f3`` calls three providers that answer at once)
and the daemon as a child process (``python -m alchemist.daemon run``, evolver
off, ``[http]`` on). The load generator (this process) sends one request at a
time, in blocks of ``--block`` alternating between the doors (NATS, HTTP,
NATS, ...), the same prompts to both: over NATS a JSON request with
``Content-Type: application/json`` (nats-py), over HTTP the OpenAI body on a
kept-alive connection (aiohttp). Measured per door: client-side latency p50
and p99, and the daemon's process CPU time per request (``/proc``, summed over
that door's blocks). Added latency is HTTP minus NATS at each percentile
(target: p50 <= 1 ms). The machine is shared and noisy: the blocks interleave
so both doors see the same load; compare within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import nats
import tomli_w
from fanout import SCRIPT as FANOUT_SCRIPT
from fanout import Proc, spawn, wait_daemon
from fanout_fleet import DAEMON_SUBJECT, JSON_HEADERS, PROMPTS, daemon_document

from alchemist.daemon.storage.broker import EmbeddedNats

RECIPE = "f3"
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def run(args: argparse.Namespace, work: Path, procs: list[Proc]) -> dict[str, Any]:
    broker = EmbeddedNats(work / "nats", 0)
    url = await broker.start()
    try:
        providers = spawn("providers", [FANOUT_SCRIPT, "--serve-providers"], work / "providers.log")
        procs.append(providers)
        providers_url = await providers.first_line()
        port = free_port()
        doc = daemon_document(url, providers_url, work / "state", "warning", args.event_loop)
        doc["http"] = {"enabled": True, "listen": f"127.0.0.1:{port}"}
        (work / "daemon.toml").write_text(tomli_w.dumps(doc))
        daemon = spawn("daemon", ["-m", "alchemist.daemon", "run", "-c", str(work / "daemon.toml")],
                       work / "daemon.log")
        procs.append(daemon)
        nc = await nats.connect(url, name="http-front-bench")
        try:
            await wait_daemon(nc, daemon)
            async with aiohttp.ClientSession() as session:
                return await measure(args, nc, session, f"http://127.0.0.1:{port}", daemon.popen.pid)
        finally:
            await nc.close()
    finally:
        for proc in reversed(procs):
            await proc.stop()
        await broker.stop()


async def measure(args: argparse.Namespace, nc: Any, session: aiohttp.ClientSession,
                  base: str, pid: int) -> dict[str, Any]:
    url = base + "/v1/chat/completions"

    async def over_nats(i: int) -> None:
        data = json.dumps({"prompt": PROMPTS[i % len(PROMPTS)], "recipe": RECIPE}).encode()
        msg = await nc.request(DAEMON_SUBJECT, data, timeout=10.0, headers=JSON_HEADERS)
        assert b'"error"' not in msg.data[:20], msg.data[:200]

    async def over_http(i: int) -> None:
        body = {"model": RECIPE, "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}
        async with session.post(url, json=body) as r:
            await r.read()
            assert r.status == 200, r.status

    doors = {"nats": over_nats, "http": over_http}
    for i in range(args.warmup):  # connections, caches, the JIT-less warm path
        await over_nats(i)
        await over_http(i)
    lat: dict[str, list[float]] = {"nats": [], "http": []}
    cpu: dict[str, float] = {"nats": 0.0, "http": 0.0}
    for b in range(2 * args.requests // args.block):
        name = "nats" if b % 2 == 0 else "http"
        send = doors[name]
        c0 = cpu_s(pid)
        for i in range(args.block):
            t0 = time.perf_counter()
            await send(b * args.block + i)
            lat[name].append((time.perf_counter() - t0) * 1000)
        cpu[name] += cpu_s(pid) - c0
    out: dict[str, Any] = {"requests_per_door": len(lat["nats"]), "block": args.block,
                           "recipe": RECIPE, "doors": {}}
    for name, values in lat.items():
        out["doors"][name] = {"p50_ms": round(pct(values, 50), 3), "p99_ms": round(pct(values, 99), 3),
                              "mean_ms": round(statistics.fmean(values), 3),
                              "daemon_cpu_ms_per_request": round(1000 * cpu[name] / len(values), 3)}
    n, h = out["doors"]["nats"], out["doors"]["http"]
    out["added"] = {"p50_ms": round(h["p50_ms"] - n["p50_ms"], 3),
                    "p99_ms": round(h["p99_ms"] - n["p99_ms"], 3),
                    "daemon_cpu_ms_per_request": round(h["daemon_cpu_ms_per_request"]
                                                       - n["daemon_cpu_ms_per_request"], 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=3000, help="requests per door")
    ap.add_argument("--block", type=int, default=100, help="requests per block (doors alternate)")
    ap.add_argument("--warmup", type=int, default=100, help="requests per door before measuring")
    ap.add_argument("--event-loop", default="uvloop", choices=("uvloop", "asyncio"))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="http-front-") as tmp:
        result = asyncio.run(run(args, Path(tmp), procs))
    print(json.dumps(result, indent=2))
    added = result["added"]["p50_ms"]
    print(f"added by the HTTP door: p50 {added:+.3f} ms (target <= 1 ms: "
          f"{'met' if added <= 1.0 else 'NOT met'}), p99 {result['added']['p99_ms']:+.3f} ms")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
