"""What the soak and the chaos run stand on: fake providers, the daemon as a process, probes.

- :func:`serve_providers` (a child process): one aiohttp server in the OpenAI
  dialect playing :data:`OK` providers that answer at once, ``hang`` (never
  answers: the request's deadline cuts it) and ``reset`` (drops the connection);
- :func:`daemon_document`: the daemon's config, recipes ``default`` (fan-out 3
  over the ok providers), ``hang`` and ``reset`` (two ok providers and the bad
  one, weighted so that the bad one's answer would decide: the daemon waits for
  it until it fails or the deadline passes);
- :class:`DaemonProc`: ``python -m alchemist.daemon run -c FILE`` as a child,
  started, SIGKILLed and restarted at will, its metrics URL read from its log;
- :func:`sample`: what the soak watches in the daemon, from outside (RSS and
  fds from ``/proc``, task count and index size from its Prometheus metrics,
  stream sizes from JetStream).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import nats.errors
from aiohttp import web
from nats.aio.client import Client
from prometheus_client.parser import text_string_to_metric_families

import alchemist.daemon as daemon_pkg
from alchemist.daemon.config import parse_config

#: the source tree the children run from: where ``daemon`` was imported from
ROOT = Path(daemon_pkg.__file__).resolve().parents[1]
JSON_HEADERS = {"Content-Type": "application/json"}
ERROR_HEADER = "Nats-Service-Error-Code"
SUBJECT = "alchemist.infer"
OK = ("ok0", "ok1", "ok2")
BAD = ("hang", "reset")
ANSWER = "Paris"
STREAMS = ("ALCHEMIST_EXPERIENCE", "ALCHEMIST_RATED", "ALCHEMIST_FEEDBACK")


# ---------------------------------------------------------------- fake providers

async def serve_providers() -> None:
    """Run the fake providers until SIGTERM; print the base URL on stdout once serving."""
    stopping = asyncio.Event()

    async def chat(request: web.Request) -> web.StreamResponse:
        body: Any = await request.json()
        model = str(body.get("model", ""))
        if model == "hang":  # holds the connection until the daemon gives up on it
            await stopping.wait()
        if model in BAD:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # aiohttp writes nothing to an aborted transport
        return web.json_response({
            "id": "chatcmpl-soak", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
    port = runner.addresses[0][1]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    print(f"http://127.0.0.1:{port}/v1", flush=True)
    await stopping.wait()
    await runner.cleanup()


# ---------------------------------------------------------------- the daemon's config

def _recipe(weights: dict[str, float]) -> dict[str, Any]:
    return {"strategy": "vote", "answer": {"kind": "text"},
            "weights": {"*": {m: weights.get(m, 0.0) for m in (*OK, *BAD)}},
            "params": {"min_weight": 0.05, "explore": 0.0}}


def free_port() -> int:
    """A TCP port nobody listens on now (the daemon binds it moments later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def daemon_document(nats_url: str, providers_url: str, state_dir: Path, *, max_records: int,
                    evolver: bool, metrics_port: int, log_level: str = "warning") -> dict[str, Any]:
    """The soak's daemon: five providers, three recipes of fan-out 3, metrics on ``metrics_port``
    (a fixed port: the log, at warning level, does not say which one it took)."""
    doc: dict[str, Any] = {
        "nats": {"url": nats_url},
        "service": {"log_level": log_level, "max_concurrency": 512, "max_payload": 64 << 10,
                    "default_deadline_ms": 5000},
        "state": {"dir": str(state_dir)},
        "providers": [{"name": m, "kind": "openai", "base_url": providers_url, "model": m,
                       "timeout_s": 10.0, "max_retries": 1, "max_concurrency": 256}
                      for m in (*OK, *BAD)],
        "recipes": {"default": _recipe(dict.fromkeys(OK, 1.0)),
                    "hang": _recipe({"ok0": 0.3, "ok1": 0.3, "hang": 1.0}),
                    "reset": _recipe({"ok0": 0.3, "ok1": 0.3, "reset": 1.0})},
        # a short cooldown: the bad providers keep being tried, not just skipped
        "breaker": {"cooldown_s": 1.0},
        "experience": {"max_records": max_records},
        # many ratings per user would hit the cap; a step per 1000 ratings keeps CPU for serving
        "evolver": {"enabled": evolver, "min_new_ratings": 1000, "user_cap": 100_000},
        "metrics": {"enabled": True, "port": metrics_port},
    }
    parse_config(doc)  # refuse a bad document here, not in the subprocess
    return doc


# ---------------------------------------------------------------- processes

class Child:
    """A child process of the benchmark (stdout a pipe, stderr a log file)."""

    def __init__(self, name: str, args: list[str], log_path: Path) -> None:
        self.name, self.args, self.log_path = name, args, log_path
        self.popen: subprocess.Popen[str] | None = None

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.popen = subprocess.Popen([sys.executable, *self.args], cwd=ROOT, text=True,
                                          stdout=subprocess.PIPE, stderr=log,
                                          stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    async def first_line(self, timeout: float = 30.0) -> str:
        assert self.popen is not None and self.popen.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.popen.stdout.readline), timeout)
        if not line:
            raise RuntimeError(f"{self.name} exited before it was ready; see {self.log_path}")
        return line.strip()

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.popen.wait, 20)
        except subprocess.TimeoutExpired:
            self.kill()


class DaemonProc(Child):
    """``alchemist run -c cfg`` as a child; its log accumulates over restarts."""

    def __init__(self, cfg_path: Path, log_path: Path, metrics_port: int) -> None:
        super().__init__("daemon", ["-m", "alchemist.daemon", "run", "-c", str(cfg_path)],
                         log_path)
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    async def ready(self, nc: Client, timeout: float = 90.0) -> float:
        """Wait until it answers a real request; returns the seconds it took."""
        t0 = time.monotonic()
        while True:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise RuntimeError(f"the daemon exited with {self.popen.returncode}; "
                                   f"see {self.log_path}")
            with contextlib.suppress(nats.errors.NoRespondersError, nats.errors.TimeoutError):
                msg = await nc.request(SUBJECT, json.dumps({"prompt": "ready?"}).encode(),
                                       timeout=2.0, headers=JSON_HEADERS)
                if not (msg.headers and ERROR_HEADER in msg.headers):
                    break
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"the daemon was not ready within {timeout:.0f} s")
            await asyncio.sleep(0.05)
        return time.monotonic() - t0


# ---------------------------------------------------------------- what the soak watches

def proc_figures(pid: int) -> dict[str, float]:
    """RSS (MB) and open file descriptors of a process, from /proc."""
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    return {"rss_mb": round(rss_kb / 1024, 2), "fds": fds}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def scrape(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """The daemon's gauges the soak plots, and its request counts by code."""
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "alchemist_event_loop_tasks":
                out["tasks"] = s.value
            elif s.name == "alchemist_experience_records":
                out[f"index_{s.labels['kind']}"] = s.value
            elif s.name == "alchemist_inflight_requests":
                out["inflight"] = s.value
            elif s.name == "alchemist_requests_total":
                out[f"daemon_{s.labels['code']}"] = s.value
            elif s.name == "alchemist_ratings_total":
                out[f"ratings_{s.labels['outcome']}"] = s.value
    return out


async def stream_sizes(nc: Client) -> dict[str, float]:
    """Messages and bytes held by each of the daemon's streams."""
    js = nc.jetstream(timeout=5.0)
    out: dict[str, float] = {}
    for name in STREAMS:
        state = (await js.stream_info(name)).state
        short = name.removeprefix("ALCHEMIST_").lower()
        out[f"stream_{short}_msgs"] = state.messages
        out[f"stream_{short}_mb"] = round(state.bytes / 2**20, 2)
    return out


async def sample(nc: Client, http: aiohttp.ClientSession, daemon: DaemonProc) -> dict[str, float]:
    """Every measure of one sample (missing keys: that probe failed this time)."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        out.update(proc_figures(daemon.pid))
        out["cpu_s"] = cpu_seconds(daemon.pid)
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
        out.update(await scrape(http, daemon.metrics_url))
    with contextlib.suppress(nats.errors.Error, TimeoutError):
        out.update(await stream_sizes(nc))
    return out
