"""What makes one daemon an instance among several: its id, its leases, its micro-service
identity.

Each process gets a random instance id. It names the holder of the leases this
instance takes (:mod:`alchemist.daemon.storage.lease`: one per recipe's evolver,
one for the prober) and is published, with the host, in the micro service's
metadata; each ``$SRV.STATS`` reply also carries the requests in flight and
the recipe version this instance serves, which ``alchemist status`` reads.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.micro.service import EndpointStats

from alchemist.daemon.config import Config
from alchemist.daemon.learning.leadership import Leadership, population_bucket
from alchemist.daemon.learning.prober import PROBER_LEASE
from alchemist.daemon.storage.buckets import open_kv
from alchemist.daemon.storage.lease import Leases
from alchemist.daemon.storage.recipe_store import RecipeStore
from alchemist.daemon.telemetry.metrics import Metrics

__all__ = ["instance_id", "leadership", "service_identity"]


def instance_id() -> str:
    """A new instance's id: 12 random hex digits."""
    return os.urandom(6).hex()


async def leadership(cfg: Config, nc: Client, recipes: RecipeStore, instance: str,
                     metrics: Metrics) -> Leadership:
    """The leases of this instance, taken where free (none with ``evolver.lease_s = 0``);
    ``alchemist_lease_held`` says which, at every scrape."""
    lease_s = cfg.evolver.lease_s
    if lease_s <= 0:
        return Leadership()
    host = socket.gethostname()
    probing = cfg.probes.enabled

    def names() -> list[str]:
        return [*recipes.current, *([PROBER_LEASE] if probing else [])]

    shared = await open_kv(nc.jetstream(timeout=5.0), population_bucket(cfg.service.subject_prefix),
                           replicas=cfg.nats.replicas,
                           description="llm-alchemist evolver populations, for the next leader")
    leases = Leases(recipes.kv, instance, host=host, slot=f"{host}:{cfg.state_dir.resolve()}",
                    lease_s=lease_s, names=names)
    await leases.start()

    def collect(m: Metrics) -> None:
        for name in names():
            m.set("alchemist_lease_held", 1.0 if leases.holds(name) else 0.0, lease=name)

    metrics.add_collector(collect)
    return Leadership(leases, shared, max_value=max(1024, nc.max_payload - 4096))


def service_identity(instance: str, recipes: Callable[[], RecipeStore | None],
                     inflight: Callable[[], int],
                     leadership: Callable[[], Leadership | None]) -> dict[str, Any]:
    """The micro service's ``metadata`` and ``stats_handler`` for this instance."""

    def stats(_: EndpointStats) -> dict[str, Any]:
        store, lead = recipes(), leadership()
        leases = lead.leases if lead is not None else None
        current = store.current if store is not None else {}
        return {"instance": instance, "inflight": inflight(),
                "recipes": {name: r.version for name, r in sorted(current.items())},
                "leases": sorted(n for n in ([*current, PROBER_LEASE] if leases else [])
                                 if leases is not None and leases.holds(n))}

    return {"metadata": {"instance": instance, "host": socket.gethostname()},
            "stats_handler": stats}
