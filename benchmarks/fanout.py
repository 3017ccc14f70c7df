"""Benchmark the request path: the daemon against a bare nats-py + aiohttp fan-out floor.

Usage::

    python benchmarks/fanout.py --out fanout.json [--seconds 5] [--concurrency 64]

Everything runs on loopback, in one run, so ratios are measured under the
same machine load. Processes: one embedded ``nats-server`` (JetStream, the
daemon needs it), one fake-provider process (a :class:`ReplayServer` playing
11 models: ``p0..p7`` answer at once, ``tail`` has a log-normal latency with
median 20 ms and p99 = 10 x median, ``steady1``/``steady2`` take 20 ms
fixed; every model gives the same answer to every prompt), the *floor*
responder (this script with ``--serve-floor``: a queue-group subscription
that, per request, POSTs to the same providers with aiohttp, gathers them
and replies with a small JSON), and the daemon (``python -m alchemist.daemon run -c
cfg``, evolver off, recipes ``f3``, ``f8`` and ``tail`` selecting the
providers by weight). The floor runs on the daemon's event loop
(``--event-loop``, default the daemon's default ``service.event_loop``), so a
gain counts only where it is the daemon's own. The load generator is a nats-py
client in this process sending JSON with ``Content-Type: application/json``.

The parts: the fake providers, the floor and the daemon's config are in
``fanout_fleet.py``, the load generator in ``fanout_load.py``, the statistics and
the printed table in ``fanout_report.py``; this module starts the processes and
runs the measurements in order.

Measured:

(a/b) closed loop: ``--concurrency`` requesters send back to back for
      ``--seconds`` (after a warm-up), for the floor and the daemon at
      fan-out 3 and 8, in interleaved rounds; throughput, the ratio
      daemon / floor (targets >= 0.70 at fan-out 3, >= 0.85 at 8), and each
      responder's process CPU time per request (``cpu_ms_per_request``).
(b)   open loop at ``--rate`` requests/s on a fixed schedule: per request,
      the client-side reply latency minus the largest ``latency_ms`` among
      the providers that answered (what the responder adds over the slowest
      provider it waited for); and beyond the floor: the daemon's percentile
      minus the floor's, same run (targets p50 <= 0.3 ms, p99 <= 2 ms).
(c)   one heavy-tailed provider among three, open loop: the daemon's fused
      reply p99 against the tail provider's own p99 (measured uncensored
      through the floor, which always waits for everyone) and the steady
      providers' p99, and the share of requests where the daemon cancelled
      the tail provider as ``not_needed``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import tomli_w
from fanout_fleet import (
    DAEMON_SUBJECT,
    ERROR_HEADER,
    JSON_HEADERS,
    daemon_document,
    serve_floor,
    serve_providers,
)
from fanout_load import ClosedResult, body, closed_loop, open_loop
from fanout_report import added_latency, beyond_floor, pct, print_table, tail_report, targets
from nats.aio.client import Client

import alchemist.daemon as daemon_pkg
from alchemist.daemon.config import ServiceConfig
from alchemist.daemon.runtime.launch import loop_factory, run_on
from alchemist.daemon.storage.broker import EmbeddedNats

#: the source tree the children run from: where ``daemon`` was imported from (PYTHONPATH wins)
ROOT = Path(daemon_pkg.__file__).resolve().parents[1]
SCRIPT = str(Path(__file__).resolve())
SCENARIOS_MEASURED = ("f3", "f8")  # the fan-outs of the closed and open loops
SYSTEMS = ("floor", "daemon")
DEFAULT_LOOP = ServiceConfig().event_loop


# ---------------------------------------------------------------- processes

@dataclass
class Proc:
    """A child process of this benchmark, stopped with SIGTERM (then SIGKILL)."""

    name: str
    popen: subprocess.Popen[str]
    log_path: Path | None = None

    async def first_line(self, timeout: float = 30.0) -> str:
        assert self.popen.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.popen.stdout.readline), timeout)
        if not line:
            raise RuntimeError(f"{self.name} exited before it was ready ({self.popen.poll()})")
        return line.strip()

    async def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.popen.wait, 15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                await asyncio.to_thread(self.popen.wait)


def spawn(name: str, args: list[str], log_path: Path | None = None) -> Proc:
    """Start ``python args...`` in the repo root; stdout is a pipe, stderr a log file."""
    stderr: Any = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        popen = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=stderr, stdin=subprocess.DEVNULL, text=True)
    finally:
        if log_path:
            stderr.close()
    return Proc(name, popen, log_path)


async def wait_daemon(nc: Client, proc: Proc, timeout: float = 60.0) -> None:
    """Until the daemon answers a real request."""
    give_up = time.monotonic() + timeout
    while True:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"the daemon exited with {proc.popen.returncode}; see {proc.log_path}")
        try:
            msg = await nc.request(DAEMON_SUBJECT, body("f3", 0), timeout=2.0,
                                   headers=JSON_HEADERS)
            if not (msg.headers and ERROR_HEADER in msg.headers):
                return
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            pass
        if time.monotonic() > give_up:
            raise RuntimeError(f"the daemon was not ready within {timeout:.0f} s")
        await asyncio.sleep(0.1)


@dataclass
class Stack:
    """The running benchmark: the NATS URL and client and the child processes."""

    url: str
    nc: Client
    providers: Proc
    floor: Proc
    daemon: Proc
    broker_pid: int | None
    #: the event loop each responder runs on
    loops: dict[str, str]

    def pids(self, system: str) -> dict[str, int]:
        """The processes whose CPU time a closed loop against ``system`` records."""
        responder = self.daemon if system == "daemon" else self.floor
        out = {"responder": responder.popen.pid, "providers": self.providers.popen.pid,
               "loadgen": os.getpid()}
        if self.broker_pid is not None:
            out["nats-server"] = self.broker_pid
        return out


async def start_stack(work: Path, broker: EmbeddedNats, procs: list[Proc],
                      log_level: str, event_loop: str = DEFAULT_LOOP) -> Stack:
    """Start NATS, the providers, the floor and the daemon; ``procs`` collects the children
    as they start, so the caller stops them even when a later one fails."""
    url = await broker.start()
    broker_proc = getattr(broker, "_proc", None)  # for CPU accounting only
    broker_pid: int | None = broker_proc.pid if broker_proc is not None else None
    providers = spawn("providers", [SCRIPT, "--serve-providers"], work / "providers.log")
    procs.append(providers)
    providers_url = await providers.first_line()
    floor = spawn("floor", [SCRIPT, "--serve-floor", "--nats", url, "--event-loop", event_loop,
                            "--providers-url", providers_url], work / "floor.log")
    procs.append(floor)
    cfg = work / "daemon.toml"
    cfg.write_text(tomli_w.dumps(daemon_document(url, providers_url, work / "state", log_level,
                                                 event_loop)))
    daemon = spawn("daemon", ["-m", "alchemist.daemon", "run", "-c", str(cfg)], work / "daemon.log")
    procs.append(daemon)
    floor_loop = (await floor.first_line()).removeprefix("ready").strip()
    nc = await nats.connect(url, name="fanout-bench")
    try:
        await wait_daemon(nc, daemon)
    except Exception:
        with contextlib.suppress(Exception):
            await nc.close()
        raise
    daemon_loop = daemon_event_loop(work / "daemon.log")
    print(f"ready: nats {url}, providers {providers_url}, daemon pid {daemon.popen.pid} "
          f"({daemon_loop}), floor pid {floor.popen.pid} ({floor_loop})", flush=True)
    return Stack(url, nc, providers, floor, daemon, broker_pid,
                 {"floor": floor_loop, "daemon": daemon_loop})


def daemon_event_loop(log_path: Path) -> str:
    """The loop the daemon says it runs on (its ``ready`` log line)."""
    for line in log_path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("event") == "ready":
                return str(event.get("event_loop", "asyncio"))
    return "unknown"


# ---------------------------------------------------------------- the measurements

async def closed_phase(stack: Stack, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """(a, b) closed loop per fan-out, in interleaved rounds so drift hits both systems alike."""
    closed: dict[str, dict[str, Any]] = {}
    per_round = args.seconds / args.rounds
    for scenario in SCENARIOS_MEASURED:
        acc = {system: ClosedResult() for system in SYSTEMS}
        for _ in range(args.rounds):
            for system in SYSTEMS:
                acc[system].add(await closed_loop(stack.nc, system, scenario, args.concurrency,
                                                  args.warmup, per_round, stack.pids(system)))
        entry = closed_entry(acc)
        closed[scenario] = entry
        print(f"closed {scenario}: floor {entry['floor']['rps']:.0f}/s "
              f"({entry['floor']['cpu_ms_per_request']:.3f} CPU ms/req), daemon "
              f"{entry['daemon']['rps']:.0f}/s ({entry['daemon']['cpu_ms_per_request']:.3f} CPU "
              f"ms/req), ratio {entry['ratio']:.2f}", flush=True)
    return closed


def closed_entry(acc: dict[str, ClosedResult]) -> dict[str, Any]:
    """One fan-out's closed-loop figures per system, and the daemon / floor ratios."""
    entry: dict[str, Any] = {}
    for system, r in acc.items():
        entry[system] = {"rps": round(r.ok / r.seconds, 1), "ok": r.ok, "errors": r.errors,
                         # the responder's process CPU time over the window / requests
                         "cpu_ms_per_request": round(1e3 * r.cpu.get("responder", 0.0)
                                                     / max(1, r.ok), 3),
                         "cpu_share": {k: round(v / r.seconds, 3) for k, v in r.cpu.items()},
                         "cpu_us_per_request": {k: round(1e6 * v / max(1, r.ok), 1)
                                                for k, v in r.cpu.items()},
                         "latency_ms": pct([x * 1000 for x in r.latencies])}
    entry["ratio"] = round(entry["daemon"]["rps"] / max(1e-9, entry["floor"]["rps"]), 3)
    # the same ratio from responder CPU per request: steadier on a shared machine
    cpu_f = entry["floor"]["cpu_us_per_request"].get("responder", 0.0)
    cpu_d = entry["daemon"]["cpu_us_per_request"].get("responder", 0.0)
    entry["cpu_ratio"] = round(cpu_f / cpu_d, 3) if cpu_d else None
    return entry


async def open_phase(nc: Client, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """(b) open loop: what the responder adds over the slowest provider it waited for."""
    added: dict[str, dict[str, Any]] = {}
    for scenario in SCENARIOS_MEASURED:
        added[scenario] = {}
        for system in SYSTEMS:
            samples = await open_loop(nc, system, scenario, args.rate, args.open_seconds)
            added[scenario][system] = added_latency(samples)
        d = added[scenario]["daemon"]["added_ms"]
        print(f"open {scenario} @ {args.rate:g}/s: daemon adds p50 {d.get('p50')} ms, "
              f"p99 {d.get('p99')} ms", flush=True)
    return added


async def measure(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement, in order, as the results document."""
    results: dict[str, Any] = {
        "env": {"python": sys.version.split()[0], "cpus": os.cpu_count(),
                "machine": platform.machine(), "loadavg_before": os.getloadavg(),
                "event_loop": stack.loops},
        "params": {"concurrency": args.concurrency, "seconds": args.seconds,
                   "rounds": args.rounds, "rate": args.rate, "open_seconds": args.open_seconds,
                   "daemon_log_level": args.daemon_log_level},
    }
    results["closed_loop"] = await closed_phase(stack, args)
    results["added_latency"] = await open_phase(stack.nc, args)
    results["beyond_floor"] = {s: beyond_floor(e) for s, e in results["added_latency"].items()}
    # (c) a heavy-tailed provider among three
    floor_tail = await open_loop(stack.nc, "floor", "tail", args.rate, args.open_seconds)
    daemon_tail = await open_loop(stack.nc, "daemon", "tail", args.rate, args.open_seconds)
    results["tail"] = tail_report(daemon_tail, floor_tail)
    results["env"]["loadavg_after"] = os.getloadavg()
    results["targets"] = targets(results)
    return results


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Start everything, measure, and stop everything (whatever happened)."""
    work = Path(tempfile.mkdtemp(prefix="fanout-bench-"))
    procs: list[Proc] = []
    broker = EmbeddedNats(work / "nats")
    stack: Stack | None = None
    try:
        stack = await start_stack(work, broker, procs, args.daemon_log_level, args.event_loop)
        if args.hold > 0:  # leave time to attach a profiler to the daemon
            await asyncio.sleep(args.hold)
        return await measure(stack, args)
    finally:
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.nc.close()
        for p in reversed(procs):
            await p.stop()
        await broker.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    ap.add_argument("--concurrency", type=int, default=64, help="closed-loop requesters")
    ap.add_argument("--seconds", type=float, default=5.0, help="closed-loop time per system")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved closed-loop rounds")
    ap.add_argument("--warmup", type=float, default=0.5, help="closed-loop warm-up per round")
    ap.add_argument("--rate", type=float, default=200.0, help="open-loop requests/s")
    ap.add_argument("--open-seconds", type=float, default=5.0, help="open-loop time per run")
    ap.add_argument("--daemon-log-level", default="info",
                    choices=("debug", "info", "warning", "error"))
    ap.add_argument("--event-loop", default=DEFAULT_LOOP, choices=("uvloop", "asyncio"),
                    help="the daemon's service.event_loop, and the floor's loop")
    ap.add_argument("--hold", type=float, default=0.0,
                    help="wait this long once ready (to attach a profiler)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, config)")
    ap.add_argument("--serve-providers", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--nats", help=argparse.SUPPRESS)
    ap.add_argument("--providers-url", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.serve_providers:
        asyncio.run(serve_providers())
        return 0
    if args.serve_floor:
        run_on(serve_floor(args.nats, args.providers_url), loop_factory(args.event_loop))
        return 0
    t0 = time.monotonic()
    results = asyncio.run(bench(args))
    results["wall_s"] = round(time.monotonic() - t0, 1)
    print_table(results)
    print(f"\nwall time {results['wall_s']} s")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
