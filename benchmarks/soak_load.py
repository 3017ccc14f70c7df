"""The soak's traffic: a seeded mix of valid and malformed requests, and ratings.

Each of ``concurrency`` workers sends requests back to back, drawing each one's
kind from :data:`MIX` (valid requests to the ``default`` recipe; to ``hang``
and ``reset``, which wait on a provider that never answers or drops the
connection; undecodable JSON; wrong types and unknown fields; bodies over the
daemon's ``max_payload``; msgpack garbage). A share of the answered requests is
rated on ``alchemist.feedback`` through JetStream (the publish is acked), a few
ratings twice, and a few feedback messages are malformed.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgpack
import nats.errors
from nats.aio.client import Client
from soak_stack import ERROR_HEADER, JSON_HEADERS, SUBJECT

#: kind -> share of requests (the rest of 1.0 is ``valid``)
MIX: dict[str, float] = {
    "hang": 0.04, "reset": 0.04, "bad_json": 0.03, "wrong_type": 0.03, "oversized": 0.02,
    "msgpack_garbage": 0.02,
}
#: the request bodies of ``wrong_type`` (each fails validation for another reason)
WRONG = ({"prompt": 17}, {"prompt": "x", "temperature": "hot"}, {"prompt": "x", "colour": "red"},
         {"messages": "hello"}, {"prompt": "x", "deadline_ms": -5}, [1, 2, 3])
OVERSIZED = 70 << 10  # over the soak daemon's service.max_payload of 64 KiB
HANG_DEADLINE_MS = 300


@dataclass
class Load:
    """What the workers did, shared by them (one event loop: no locks needed)."""

    total: int
    feedback_share: float
    users: int
    seed: int
    sent: int = 0
    done: int = 0
    #: ``kind -> outcome code -> count`` (``ok``, an error code, ``client_timeout``, ...)
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    ratings: Counter[str] = field(default_factory=Counter)

    def count(self, kind: str, code: str) -> None:
        self.outcomes.setdefault(kind, Counter())[code] += 1
        self.done += 1

    def codes(self) -> Counter[str]:
        """Outcome codes over every kind."""
        out: Counter[str] = Counter()
        for c in self.outcomes.values():
            out.update(c)
        return out


def draw_kind(rng: random.Random) -> str:
    x = rng.random()
    for kind, share in MIX.items():
        if x < share:
            return kind
        x -= share
    return "valid"


def request_of(kind: str, n: int, rng: random.Random) -> tuple[bytes, dict[str, str] | None]:
    """The body and headers of one request of ``kind``."""
    prompt = f"Soak question {n % 97}: what is the capital of France?"
    body: Any
    if kind == "valid":
        body = {"prompt": prompt, "user": f"u{n % 1000}"}
    elif kind in ("hang", "reset"):
        body = {"prompt": prompt, "recipe": kind, "deadline_ms": HANG_DEADLINE_MS}
    elif kind == "bad_json":
        return b'{"prompt": "unterminated', JSON_HEADERS
    elif kind == "wrong_type":
        body = WRONG[rng.randrange(len(WRONG))]
    elif kind == "oversized":
        body = {"prompt": "x" * OVERSIZED}
    else:  # msgpack_garbage: no JSON header, so the daemon reads msgpack
        return b"\xc1\xff\x00garbage", None
    return json.dumps(body).encode(), JSON_HEADERS


async def send(nc: Client, data: bytes, headers: dict[str, str] | None,
               timeout: float) -> tuple[str, dict[str, Any] | None]:
    """One request: its outcome code, and the reply when it is an answer."""
    try:
        msg = await nc.request(SUBJECT, data, timeout=timeout, headers=headers)
    except nats.errors.TimeoutError:
        return "client_timeout", None
    except nats.errors.NoRespondersError:
        return "no_responders", None
    if msg.headers and ERROR_HEADER in msg.headers:
        try:
            return str(_decode(msg.data, headers)["error"]["code"]), None
        except (KeyError, TypeError, ValueError):
            return "undecodable_error", None
    return "ok", _decode(msg.data, headers)


def _decode(data: bytes, headers: dict[str, str] | None) -> dict[str, Any]:
    if headers:
        out: dict[str, Any] = json.loads(data)
        return out
    unpacked: dict[str, Any] = msgpack.unpackb(data, raw=False)
    return unpacked


async def rate(nc: Client, load: Load, request_id: str, rng: random.Random) -> None:
    """Rate one served id through JetStream (sometimes twice, sometimes a broken message)."""
    js = nc.jetstream(timeout=10.0)
    user = f"user{rng.randrange(load.users)}"
    body = json.dumps({"request_id": request_id, "rating": rng.choice(("up", "down")),
                       "user": user}).encode()
    times = 2 if rng.random() < 0.03 else 1
    for _ in range(times):
        try:
            await js.publish("alchemist.feedback", body, headers=JSON_HEADERS)
            load.ratings["acked"] += 1
        except (nats.errors.Error, TimeoutError):
            load.ratings["publish_failed"] += 1
    if rng.random() < 0.01:
        await js.publish("alchemist.feedback", b'{"request_id": 5, "rating": "sideways"}',
                         headers=JSON_HEADERS)
        load.ratings["malformed_sent"] += 1


async def worker(nc: Client, load: Load, index: int, timeout: float) -> None:
    """Send requests until ``load.total`` have been sent; rate a share of the answers."""
    rng = random.Random(load.seed * 1_000_003 + index)
    while load.sent < load.total:
        n = load.sent
        load.sent += 1
        kind = draw_kind(rng)
        data, headers = request_of(kind, n, rng)
        code, reply = await send(nc, data, headers, timeout)
        load.count(kind, code)
        if reply is not None and rng.random() < load.feedback_share:
            await rate(nc, load, str(reply["request_id"]), rng)


async def run_load(nc: Client, load: Load, concurrency: int, timeout: float = 10.0) -> None:
    """Every worker, to the end."""
    await asyncio.gather(*(worker(nc, load, i, timeout) for i in range(concurrency)))
