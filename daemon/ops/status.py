"""``alchemist status [--json]``: the live instances, the lease holders, the versions served.

The instances are whoever answers ``$SRV.STATS.alchemist`` (the NATS micro
service every instance runs) within ``--wait`` seconds: each reply carries the
instance id and host (service metadata), the requests served, the errors, and,
in the ``infer`` endpoint's ``data``, the requests in flight, the recipe
version it serves and the leases it holds. The leases are read from the recipes
bucket (:mod:`alchemist.daemon.storage.lease`).

``--json`` prints one object; scripts may rely on ``instances`` (a list, each
with ``id`` and ``recipes``: recipe name -> version served) and ``leaders``
(recipe name -> the id of the instance holding its evolver lease).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError

from alchemist.daemon.cli import CliError, _client
from alchemist.daemon.learning.prober import PROBER_LEASE
from alchemist.daemon.storage.lease import read_leases
from alchemist.daemon.storage.recipe_store import bucket_name

__all__ = ["add_status_verb", "cmd_status", "gather_status"]


async def _stats_replies(nc: Client, wait: float) -> list[dict[str, Any]]:
    """Every ``$SRV.STATS.alchemist`` reply that arrives within ``wait`` seconds."""
    inbox = nc.new_inbox()
    replies: list[dict[str, Any]] = []
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish("$SRV.STATS.alchemist", b"", reply=inbox)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + wait
        while (left := give_up - loop.time()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except TimeoutError:  # nats-py's TimeoutError is one too
                break
            if msg.data:  # an empty one is the server's "no responders"
                replies.append(json.loads(msg.data))
    finally:
        await sub.unsubscribe()
    return replies


def _instance(stats: dict[str, Any]) -> dict[str, Any]:
    infer: dict[str, Any] = next(
        (e for e in stats.get("endpoints") or [] if e.get("name") == "infer"), {})
    data = infer.get("data") or {}
    meta = stats.get("metadata") or {}
    return {"id": data.get("instance") or meta.get("instance") or stats.get("id"),
            "service_id": stats.get("id"), "host": meta.get("host", ""),
            "version": stats.get("version"), "started": stats.get("started"),
            "requests": infer.get("num_requests", 0), "errors": infer.get("num_errors", 0),
            "inflight": data.get("inflight"), "recipes": data.get("recipes") or {},
            "leases": data.get("leases") or []}


async def gather_status(nc: Client, prefix: str, wait: float = 1.0, *,
                        leases: bool = True) -> dict[str, Any]:
    """The deployment's status as one JSON-ready object (see the module docstring);
    ``leases=False`` asks the instances only (no JetStream request)."""
    instances = sorted((_instance(s) for s in await _stats_replies(nc, wait)),
                       key=lambda i: (i["host"], str(i["id"])))
    out: dict[str, Any] = {"instances": instances, "leaders": {}, "leases": {}}
    if not leases:
        return out
    names = sorted({n for i in instances for n in i["recipes"]} | {PROBER_LEASE})
    try:
        out["leases"] = await _leases(nc, prefix, names)
    except nats.errors.TimeoutError:  # JetStream electing a leader (a node lost): say so
        out["leases_error"] = "the recipes bucket did not answer in time"
    out["leaders"] = {name: v["holder"] for name, v in out["leases"].items()
                      if not name.startswith("_")}
    return out


async def _leases(nc: Client, prefix: str, names: list[str]) -> dict[str, Any]:
    """The lease of each of ``names`` that has a holder (the recipes the instances serve,
    and the prober's), with its age."""
    try:
        kv = await nc.jetstream(timeout=3.0).key_value(bucket_name(prefix))
    except BucketNotFoundError:
        return {}  # no daemon ever ran here: no leases
    now = time.time()
    return {name: {"holder": lease.holder, "host": lease.host,
                   "age_s": round(now - lease.since, 1),
                   "renewed_s_ago": round(now - lease.renewed, 1), "lease_s": lease.lease_s}
            for name, lease in sorted((await read_leases(kv, names)).items())}


def format_status(status: dict[str, Any]) -> str:
    """The status as text: one line per instance, then one per lease."""
    lines = [f"{len(status['instances'])} instance(s)"]
    lines.append(f"  {'id':<14} {'host':<20} {'requests':>9} {'errors':>7} {'in flight':>9}  recipes")
    for i in status["instances"]:
        recipes = ", ".join(f"{name} v{v}" for name, v in sorted(i["recipes"].items()))
        lines.append(f"  {i['id']!s:<14} {i['host'][:20]:<20} {i['requests']:>9} {i['errors']:>7} "
                     f"{i['inflight']!s:>9}  {recipes}")
    lines.append("leases (the holder learns that recipe; _prober: the one probing)")
    for name, lease in status["leases"].items():
        lines.append(f"  {name:<20} {lease['holder']:<14} on {lease['host'] or '?'}, held "
                     f"{lease['age_s']:.0f} s, renewed {lease['renewed_s_ago']:.1f} s ago")
    if not status["leases"]:
        lines.append(f"  none{' (' + status['leases_error'] + ')' if 'leases_error' in status else ''}")
    return "\n".join(lines)


async def cmd_status(args: argparse.Namespace) -> int:
    cfg, nc = await _client(args)
    try:
        status = await gather_status(nc, cfg.service.subject_prefix, args.wait)
    finally:
        await nc.close()
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    if not status["instances"]:
        raise CliError("no instance answered $SRV.STATS.alchemist")
    return 0


def add_status_verb(sub: Any, client_opts: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``status`` on the ``alchemist`` parser."""
    p = sub.add_parser("status", help="live instances, lease holders, recipe versions served")
    p.add_argument("--json", action="store_true", help="one JSON object (instances, leaders, leases)")
    p.add_argument("--wait", type=float, default=1.0,
                   help="seconds to collect the instances' replies (default 1)")
    client_opts(p)
    p.set_defaults(fn=cmd_status)
