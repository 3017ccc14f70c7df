"""What the fan-out benchmark runs against, besides the daemon itself.

- the fake providers (:func:`serve_providers`, a child process): a
  :class:`ReplayServer` playing 11 models; ``p0..p7`` answer at once, ``tail`` has a
  log-normal latency with median 20 ms and p99 = 10 x median, ``steady1`` and
  ``steady2`` take 20 ms fixed; every model gives the same answer to every prompt;
- the floor responder (:func:`serve_floor`, a child process): a bare nats-py +
  aiohttp fan-out to the same providers, the yardstick the daemon is measured by, on
  the same event loop as the daemon (``service.event_loop``);
- the daemon's config (:func:`daemon_document`): a recipe per scenario.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import nats
from nats.aio.msg import Msg

from alchemist.adapters.base import Message
from alchemist.daemon.config import parse_config
from alchemist.daemon.runtime.launch import loop_name
from alchemist.daemon.sim.replay import Latency, RecordedAnswer, ReplayItem, ReplayServer, ReplaySet

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
    print(f"ready {loop_name()}", flush=True)
    await stop.wait()
    await nc.drain()
    await session.close()


# ---------------------------------------------------------------- the daemon's config

def daemon_document(nats_url: str, providers_url: str, state_dir: Path,
                    log_level: str, event_loop: str) -> dict[str, Any]:
    """One daemon, all 11 providers; a recipe per scenario gives the others weight 0."""
    recipes = {
        name: {"strategy": "vote", "answer": {"kind": "text"},
               "weights": {"*": {m: 1.0 if m in used else 0.0 for m in MODELS}},
               "params": {"min_weight": 0.05, "explore": 0.0}}
        for name, used in SCENARIOS.items()}
    doc: dict[str, Any] = {
        "nats": {"url": nats_url},
        "service": {"log_level": log_level, "max_concurrency": 1024, "event_loop": event_loop},
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
