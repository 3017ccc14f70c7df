"""The chaos run's verdict: what JetStream holds at the end against what clients were told.

- ratings: every rating whose publish JetStream acknowledged is in
  ``ALCHEMIST_RATED`` exactly once, unless its request's experience record never
  reached ``ALCHEMIST_EXPERIENCE`` (the daemon was killed between its reply and
  its record; the contract rejects a rating of an unknown request), which is
  counted per kill;
- the recipe KV: every key's history decodes, its versions go up by one at each
  write, one ``init``, every manual write of the run is there, and the daemon
  serves the latest;
- clients: each error is a request in flight at a kill (sent before it, not
  answered by then), or it is unexplained.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgpack
import nats.errors
from nats.aio.client import Client
from nats.js.api import DeliverPolicy

from alchemist.daemon.storage.recipe_store import RecipeStore


@dataclass
class Ledger:
    """What the clients saw during the run."""

    #: (request_id, user) -> seconds (run clock) when the rating's publish was acked
    acked: dict[tuple[str, str], float] = field(default_factory=dict)
    #: request_id -> seconds when its reply arrived
    replied: dict[str, float] = field(default_factory=dict)
    #: (sent, failed at, code) of every request that got no answer
    errors: list[tuple[float, float, str]] = field(default_factory=list)
    #: sent while the daemon was down: no responders (the client waits and retries)
    refused: list[float] = field(default_factory=list)
    ok: int = 0
    #: the run clock at each kill, and when the restarted daemon answered again
    kills: list[float] = field(default_factory=list)
    ready: list[float] = field(default_factory=list)
    #: recipe name -> versions this run wrote by hand
    manual: dict[str, list[int]] = field(default_factory=dict)


async def read_stream(nc: Client, subject: str, expected: int,
                      timeout: float = 60.0) -> list[dict[str, Any]]:
    """Every message of a stream (``expected`` of them), decoded from msgpack."""
    js = nc.jetstream(timeout=10.0)
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL,
                             pending_msgs_limit=2_000_000)
    out: list[dict[str, Any]] = []
    try:
        while len(out) < expected:
            msg = await sub.next_msg(timeout=timeout)
            out.append(msgpack.unpackb(msg.data, raw=False))
    finally:
        await sub.unsubscribe()
    return out


def kill_of(t: float, kills: list[float], window: float) -> int | None:
    """The index of the kill at or before ``t`` and at most ``window`` s earlier, if any."""
    best = None
    for i, k in enumerate(kills):
        if k - 0.05 <= t <= k + window:
            best = i
    return best


async def check_ratings(nc: Client, ledger: Ledger) -> dict[str, Any]:
    js = nc.jetstream(timeout=10.0)
    rated_n = (await js.stream_info("ALCHEMIST_RATED")).state.messages
    exp_n = (await js.stream_info("ALCHEMIST_EXPERIENCE")).state.messages
    rated = Counter((r["e"]["id"], r["u"]) for r in await read_stream(nc, "alchemist.rated", rated_n))
    experiences = {e["id"] for e in await read_stream(nc, "alchemist.experience", exp_n)}
    once = twice = lost = 0
    no_experience: Counter[int] = Counter()
    unexplained_no_experience = 0
    for key in ledger.acked:
        n = rated.get(key, 0)
        if n == 1:
            once += 1
        elif n > 1:
            twice += 1
        elif key[0] in experiences:
            lost += 1
        else:  # answered, then killed before its experience record was durable
            k = kill_of(ledger.replied.get(key[0], -1.0), ledger.kills, 1.0)
            if k is None:
                unexplained_no_experience += 1
            else:
                no_experience[k] += 1
    return {"acked": len(ledger.acked), "in_rated_once": once, "in_rated_more_than_once": twice,
            "lost_with_experience_present": lost,
            "rejected_experience_never_recorded": sum(no_experience.values()),
            "experience_never_recorded_per_kill": [no_experience[i] for i in range(len(ledger.kills))],
            "experience_never_recorded_unexplained": unexplained_no_experience,
            "rated_stream_messages": rated_n, "experience_stream_messages": exp_n}


async def check_recipes(nc: Client, ledger: Ledger, served: dict[str, int]) -> dict[str, Any]:
    store = RecipeStore(nc, "alchemist")
    await store.open(create=False)
    out: dict[str, Any] = {}
    for name in sorted(served):
        history = await store.history(name)
        versions = [r.version for r in history]
        steps_ok = all(b == a + 1 for a, b in itertools.pairwise(versions))
        latest = await store.refresh(name)
        out[name] = {"versions": versions, "consecutive": steps_ok,
                     "inits": sum(r.reason == "init" for r in history),
                     "manual_written": ledger.manual.get(name, []),
                     "manual_all_present": set(ledger.manual.get(name, [])) <= set(versions),
                     "latest": latest.version if latest else None, "served": served[name]}
        out[name]["intact"] = (steps_ok and out[name]["inits"] <= 1
                               and out[name]["manual_all_present"]
                               and out[name]["latest"] == served[name])
    return out


def check_clients(ledger: Ledger, timeout: float) -> dict[str, Any]:
    """Each error attributed to the kill it was in flight at (or unexplained)."""
    per_kill: Counter[int] = Counter()
    unexplained: list[tuple[float, float, str]] = []
    for sent, failed, code in ledger.errors:
        hit = [i for i, k in enumerate(ledger.kills) if sent <= k <= failed]
        if hit and failed - sent <= timeout + 1.0:
            per_kill[hit[-1]] += 1
        else:
            unexplained.append((round(sent, 3), round(failed, 3), code))
    refused: Counter[int] = Counter()
    for t in ledger.refused:
        k = kill_of(t, ledger.kills, 120.0)
        refused[k if k is not None else -1] += 1
    kills = []
    for i, t in enumerate(ledger.kills):
        up = ledger.ready[i] if i < len(ledger.ready) else None
        kills.append({"at_s": round(t, 2), "back_after_s": round(up - t, 2) if up else None,
                      "errors_in_flight": per_kill[i], "refused_while_down": refused[i]})
    return {"ok": ledger.ok, "kills": kills, "unexplained_errors": len(unexplained),
            "unexplained_examples": unexplained[:10], "refused_not_near_a_kill": refused[-1]}


async def served_versions(nc: Client, names: list[str]) -> dict[str, int]:
    """The recipe version the daemon answers with now, per recipe."""
    out: dict[str, int] = {}
    for name in names:
        for _ in range(50):
            try:
                msg = await nc.request("alchemist.infer", json.dumps(
                    {"prompt": "which version?", "recipe": name}).encode(), timeout=5.0,
                    headers={"Content-Type": "application/json"})
                out[name] = int(json.loads(msg.data)["recipe"]["version"])
                break
            except (nats.errors.Error, KeyError, ValueError):
                await asyncio.sleep(0.2)
    return out
