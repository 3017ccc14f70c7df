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
providers by weight). The load generator is a nats-py client in this
process sending JSON with ``Content-Type: application/json``.

Measured:

(a/b) closed loop: ``--concurrency`` requesters send back to back for
      ``--seconds`` (after a warm-up), for the floor and the daemon at
      fan-out 3 and 8, in interleaved rounds; throughput and the ratio
      daemon / floor (target >= 0.5).
(b)   open loop at ``--rate`` requests/s on a fixed schedule: per request,
      the client-side reply latency minus the largest ``latency_ms`` among
      the providers that answered (what the responder adds over the slowest
      provider it waited for); p50 (target <= 2 ms) and p99 (target <= 10 ms).
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats
import nats.errors
import numpy as np
import tomli_w
from fanout_report import Sample, added_latency, pct, print_table, targets
from nats.aio.client import Client
from nats.aio.msg import Msg

import alchemist.daemon as daemon_pkg
from alchemist.adapters.base import Message
from alchemist.daemon.config import parse_config
from alchemist.daemon.sim.replay import Latency, RecordedAnswer, ReplayItem, ReplayServer, ReplaySet
from alchemist.daemon.storage.broker import EmbeddedNats

#: the source tree the children run from: where ``daemon`` was imported from (PYTHONPATH wins)
ROOT = Path(daemon_pkg.__file__).resolve().parents[1]
SCRIPT = str(Path(__file__).resolve())
JSON_HEADERS = {"Content-Type": "application/json"}
ERROR_HEADER = "Nats-Service-Error-Code"

INSTANT = tuple(f"p{i}" for i in range(8))
TAIL = "tail"
STEADY = ("steady1", "steady2")
MODELS = (*INSTANT, TAIL, *STEADY)
TAIL_LATENCY = Latency(median_ms=20.0, tail="lognormal", p99_ratio=10.0)
STEADY_LATENCY = Latency(median_ms=20.0, tail="fixed")
#: scenario -> the providers it fans out to
SCENARIOS: dict[str, tuple[str, ...]] = {
    "f3": INSTANT[:3],
    "f8": INSTANT,
    "tail": (TAIL, *STEADY),
}
PROMPTS = tuple(f"Benchmark question {i}: what is the capital of France?" for i in range(32))
ANSWER = "Paris"
FLOOR_PREFIX = "floor"
DAEMON_SUBJECT = "alchemist.infer"


# ---------------------------------------------------------------- fake providers

def replay_set() -> ReplaySet:
    """Every model answers every prompt with the same text (so votes agree)."""
    items = tuple(
        ReplayItem(id=f"q{i}", skill="bench", messages=(Message("user", prompt),), gold=ANSWER,
                   answers={m: RecordedAnswer(ANSWER, 1.0) for m in MODELS})
        for i, prompt in enumerate(PROMPTS))
    return ReplaySet(items, MODELS)


async def serve_providers() -> None:
    """Run the fake providers until SIGTERM; print the base URL on stdout once serving."""
    latency = {m: Latency(median_ms=0.0) for m in INSTANT}
    latency[TAIL] = TAIL_LATENCY
    for m in STEADY:
        latency[m] = STEADY_LATENCY
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with ReplayServer(replay_set(), latency=latency, seed=1) as server:
        print(server.base_url, flush=True)
        await stop.wait()


# ---------------------------------------------------------------- the floor responder

async def serve_floor(nats_url: str, providers_url: str) -> None:
    """A bare responder: per request, an aiohttp fan-out to the scenario's providers."""
    loop = asyncio.get_running_loop()
    nc = await nats.connect(nats_url, name="floor")
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024, limit_per_host=0))
    url = providers_url.rstrip("/") + "/chat/completions"
    tasks: set[asyncio.Task[None]] = set()

    async def call(model: str, messages: list[dict[str, str]]) -> tuple[dict[str, Any], str]:
        t0 = loop.time()
        try:
            async with session.post(url, json={"model": model, "messages": messages}) as resp:
                data: Any = await resp.json()
            text: str = data["choices"][0]["message"]["content"]
        except (aiohttp.ClientError, KeyError, IndexError, TypeError, ValueError) as exc:
            return ({"name": model, "ok": False, "latency_ms": (loop.time() - t0) * 1000,
                     "error": type(exc).__name__}, "")
        return {"name": model, "ok": True, "latency_ms": (loop.time() - t0) * 1000}, text

    async def handle(msg: Msg, models: Sequence[str]) -> None:
        t0 = loop.time()
        request: Any = json.loads(msg.data)
        messages = [{"role": "user", "content": str(request["prompt"])}]
        results = await asyncio.gather(*(call(m, messages) for m in models))
        texts = [text for status, text in results if status["ok"]]
        reply = {"text": texts[0] if texts else None, "providers": [s for s, _ in results],
                 "latency_ms": (loop.time() - t0) * 1000}
        await nc.publish(msg.reply, json.dumps(reply).encode(), headers=JSON_HEADERS)

    def subscriber(models: Sequence[str]) -> Callable[[Msg], Any]:
        async def cb(msg: Msg) -> None:  # nats-py runs callbacks one at a time: hand off
            task = asyncio.create_task(handle(msg, models))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return cb

    for name, models in SCENARIOS.items():
        await nc.subscribe(f"{FLOOR_PREFIX}.{name}", queue="floor", cb=subscriber(models))
    await nc.flush()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await nc.drain()
    await session.close()


# ---------------------------------------------------------------- the daemon's config

def daemon_document(nats_url: str, providers_url: str, state_dir: Path,
                    log_level: str) -> dict[str, Any]:
    """One daemon, all 11 providers; a recipe per scenario gives the others weight 0."""
    recipes = {
        name: {"strategy": "vote", "answer": {"kind": "text"},
               "weights": {"*": {m: 1.0 if m in used else 0.0 for m in MODELS}},
               "params": {"min_weight": 0.05, "explore": 0.0}}
        for name, used in SCENARIOS.items()}
    doc: dict[str, Any] = {
        "nats": {"url": nats_url},
        "service": {"log_level": log_level, "max_concurrency": 1024},
        "state": {"dir": str(state_dir)},
        # max_concurrency per provider above the requester count: the floor has no such limit
        "providers": [{"name": m, "kind": "openai", "base_url": providers_url, "model": m,
                       "timeout_s": 10.0, "max_retries": 0, "max_concurrency": 256}
                      for m in MODELS],
        "recipes": recipes,
        "evolver": {"enabled": False},
    }
    parse_config(doc)  # refuse a bad document here, not in the subprocess
    return doc


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


# ---------------------------------------------------------------- load

def body(scenario: str, i: int) -> bytes:
    """A request, the same JSON for the floor and the daemon."""
    return json.dumps({"prompt": PROMPTS[i % len(PROMPTS)], "recipe": scenario}).encode()


def subject_of(system: str, scenario: str) -> str:
    return DAEMON_SUBJECT if system == "daemon" else f"{FLOOR_PREFIX}.{scenario}"


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux ``/proc``; 0.0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass
class ClosedResult:
    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    #: CPU seconds per process over the measured window
    cpu: dict[str, float] = field(default_factory=dict)


async def closed_loop(nc: Client, system: str, scenario: str, concurrency: int,
                      warmup: float, seconds: float, pids: dict[str, int]) -> ClosedResult:
    """``concurrency`` requesters back to back; counts what completes in the window.

    ``pids`` names the processes whose CPU time over the window is recorded
    (``loadgen`` is this one).
    """
    subject = subject_of(system, scenario)
    out = ClosedResult(seconds=seconds)
    t_start = time.perf_counter() + warmup
    t_end = t_start + seconds

    async def cpu_meter() -> None:
        await asyncio.sleep(max(0.0, t_start - time.perf_counter()))
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
        out.cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}

    async def worker(w: int) -> None:
        i = w
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                return
            try:
                msg = await nc.request(subject, body(scenario, i), timeout=10.0,
                                       headers=JSON_HEADERS)
                failed = bool(msg.headers and ERROR_HEADER in msg.headers)
            except nats.errors.Error:
                failed = True
            t1 = time.perf_counter()
            i += concurrency
            if t_start <= t1 < t_end:  # completed inside the measured window
                if failed:
                    out.errors += 1
                else:
                    out.ok += 1
                    out.latencies.append(t1 - t0)

    await asyncio.gather(cpu_meter(), *(worker(w) for w in range(concurrency)))
    return out


async def open_loop(nc: Client, system: str, scenario: str, rate: float,
                    seconds: float, warmup: float = 0.5) -> list[Sample]:
    """Send at ``rate``/s on a fixed schedule; returns the samples after ``warmup``."""
    subject = subject_of(system, scenario)
    n = int((seconds + warmup) * rate)
    skip = int(warmup * rate)
    samples: list[Sample | None] = [None] * n
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int, due: float) -> None:
        t0 = time.perf_counter()
        try:
            msg = await nc.request(subject, body(scenario, i), timeout=10.0, headers=JSON_HEADERS)
            t1 = time.perf_counter()
            reply: dict[str, Any] | None = None
            if not (msg.headers and ERROR_HEADER in msg.headers):
                reply = json.loads(msg.data)
        except nats.errors.Error:
            t1, reply = time.perf_counter(), None
        samples[i] = Sample((t1 - t0) * 1000, (t0 - due) * 1000, reply)

    start = time.perf_counter() + 0.05
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    return [s for s in samples[skip:] if s is not None]


# ---------------------------------------------------------------- statistics

def tail_report(daemon: Sequence[Sample], floor: Sequence[Sample]) -> dict[str, Any]:
    """Fused reply latency vs each provider's own latency distribution."""
    def per_provider(samples: Sequence[Sample]) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {m: [] for m in SCENARIOS["tail"]}
        for s in samples:
            for p in (s.reply or {}).get("providers", []):
                if p.get("ok"):
                    out[p["name"]].append(float(p["latency_ms"]))
        return out

    ok_daemon = [s for s in daemon if s.reply is not None]
    not_needed = sum(1 for s in ok_daemon for p in (s.reply or {})["providers"]
                     if p["name"] == TAIL and p.get("error") == "not_needed")
    floor_prov = per_provider(floor)
    daemon_prov = per_provider(daemon)
    rng = np.random.default_rng(0)
    model = TAIL_LATENCY.median_ms * np.exp(TAIL_LATENCY.sigma * rng.standard_normal(200_000))
    return {
        "daemon_reply_ms": pct([s.client_ms for s in ok_daemon]),
        "floor_reply_ms": pct([s.client_ms for s in floor if s.reply is not None]),
        "tail_own_ms": pct(floor_prov[TAIL]),
        "steady_own_ms": pct(floor_prov[STEADY[0]] + floor_prov[STEADY[1]]),
        "tail_model_p99_ms": round(float(np.percentile(model, 99)), 1),
        "daemon_view": {m: pct(v) for m, v in daemon_prov.items()},
        "tail_not_needed_share": round(not_needed / len(ok_daemon), 4) if ok_daemon else None,
        "daemon_failed": len(daemon) - len(ok_daemon),
    }


# ---------------------------------------------------------------- the run

async def bench(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="fanout-bench-"))
    procs: list[Proc] = []
    broker = EmbeddedNats(work / "nats")
    nc: Client | None = None
    try:
        url = await broker.start()
        broker_proc = getattr(broker, "_proc", None)  # for CPU accounting only
        broker_pid: int | None = broker_proc.pid if broker_proc is not None else None
        providers = spawn("providers", [SCRIPT, "--serve-providers"],
                          work / "providers.log")
        procs.append(providers)
        providers_url = await providers.first_line()
        floor = spawn("floor", [SCRIPT, "--serve-floor", "--nats", url,
                                "--providers-url", providers_url], work / "floor.log")
        procs.append(floor)
        cfg = work / "daemon.toml"
        cfg.write_text(tomli_w.dumps(daemon_document(url, providers_url, work / "state",
                                                     args.daemon_log_level)))
        daemon = spawn("daemon", ["-m", "alchemist.daemon", "run", "-c", str(cfg)], work / "daemon.log")
        procs.append(daemon)
        await floor.first_line()
        nc = await nats.connect(url, name="fanout-bench")
        await wait_daemon(nc, daemon)
        print(f"ready: nats {url}, providers {providers_url}, daemon pid {daemon.popen.pid}, "
              f"floor pid {floor.popen.pid}", flush=True)
        if args.hold > 0:  # leave time to attach a profiler to the daemon
            await asyncio.sleep(args.hold)

        results: dict[str, Any] = {
            "env": {"python": sys.version.split()[0], "cpus": os.cpu_count(),
                    "machine": platform.machine(), "loadavg_before": os.getloadavg()},
            "params": {"concurrency": args.concurrency, "seconds": args.seconds,
                       "rounds": args.rounds, "rate": args.rate,
                       "open_seconds": args.open_seconds,
                       "daemon_log_level": args.daemon_log_level},
        }
        # (a, b) closed loop, interleaved rounds so drift hits both alike
        closed: dict[str, dict[str, Any]] = {}
        per_round = args.seconds / args.rounds
        for scenario in ("f3", "f8"):
            acc = {s: ClosedResult() for s in ("floor", "daemon")}
            for _ in range(args.rounds):
                for system in ("floor", "daemon"):
                    pids = {"responder": (daemon if system == "daemon" else floor).popen.pid,
                            "providers": providers.popen.pid, "loadgen": os.getpid()}
                    if broker_pid is not None:
                        pids["nats-server"] = broker_pid
                    r = await closed_loop(nc, system, scenario, args.concurrency,
                                          args.warmup, per_round, pids)
                    for name, cpu in r.cpu.items():
                        acc[system].cpu[name] = acc[system].cpu.get(name, 0.0) + cpu
                    acc[system].ok += r.ok
                    acc[system].errors += r.errors
                    acc[system].seconds += r.seconds
                    acc[system].latencies += r.latencies
            entry: dict[str, Any] = {}
            for system, r in acc.items():
                entry[system] = {"rps": round(r.ok / r.seconds, 1), "ok": r.ok,
                                 "errors": r.errors,
                                 "cpu_share": {k: round(v / r.seconds, 3)
                                               for k, v in r.cpu.items()},
                                 "cpu_us_per_request": {k: round(1e6 * v / max(1, r.ok), 1)
                                                        for k, v in r.cpu.items()},
                                 "latency_ms": pct([x * 1000 for x in r.latencies])}
            entry["ratio"] = round(entry["daemon"]["rps"] / max(1e-9, entry["floor"]["rps"]), 3)
            # the same ratio from responder CPU per request: steadier on a shared machine
            cpu_f = entry["floor"]["cpu_us_per_request"].get("responder", 0.0)
            cpu_d = entry["daemon"]["cpu_us_per_request"].get("responder", 0.0)
            entry["cpu_ratio"] = round(cpu_f / cpu_d, 3) if cpu_d else None
            closed[scenario] = entry
            print(f"closed {scenario}: floor {entry['floor']['rps']:.0f}/s, daemon "
                  f"{entry['daemon']['rps']:.0f}/s, ratio {entry['ratio']:.2f}", flush=True)
        results["closed_loop"] = closed

        # (b) open loop: what the responder adds over the slowest provider it waited for
        added: dict[str, dict[str, Any]] = {}
        for scenario in ("f3", "f8"):
            added[scenario] = {}
            for system in ("floor", "daemon"):
                samples = await open_loop(nc, system, scenario, args.rate, args.open_seconds)
                added[scenario][system] = added_latency(samples)
            d = added[scenario]["daemon"]["added_ms"]
            print(f"open {scenario} @ {args.rate:g}/s: daemon adds p50 {d.get('p50')} ms, "
                  f"p99 {d.get('p99')} ms", flush=True)
        results["added_latency"] = added

        # (c) a heavy-tailed provider among three
        floor_tail = await open_loop(nc, "floor", "tail", args.rate, args.open_seconds)
        daemon_tail = await open_loop(nc, "daemon", "tail", args.rate, args.open_seconds)
        results["tail"] = tail_report(daemon_tail, floor_tail)
        results["env"]["loadavg_after"] = os.getloadavg()
        results["targets"] = targets(results)
        return results
    finally:
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
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
        asyncio.run(serve_floor(args.nats, args.providers_url))
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
