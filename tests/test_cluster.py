"""A three-node NATS cluster: replicas, leader fail-over, a node lost under load.

Daemons run in-process here (fast); tests/test_cluster_kill.py runs them as
processes and kills them.
"""

from __future__ import annotations

from pathlib import Path

import nats

from alchemist.daemon.runtime.app import Daemon
from tests.cluster import Cluster, nats_cluster
from tests.conftest import make_config
from tests.fakes import FakeOpenAI

__all__ = ["nats_cluster"]  # the fixture, used by name


async def test_every_stream_and_bucket_has_the_configured_replicas(
        nats_cluster: Cluster, fake: FakeOpenAI, tmp_path: Path) -> None:
    cfg = make_config(nats_cluster.url(0), tmp_path / "state", fake.base_url, ["a", "b"],
                      nats={"replicas": 3}, probes={"enabled": False})
    d = Daemon(cfg)
    await d.start()
    try:
        nc = await nats.connect(nats_cluster.urls[1])
        js = nc.jetstream()
        names = [s.config.name for s in await js.streams_info()]
        assert set(names) >= {"ALCHEMIST_FEEDBACK", "ALCHEMIST_EXPERIENCE", "ALCHEMIST_RATED",
                              "KV_alchemist_recipes", "KV_alchemist_evolver"}
        for name in names:
            info = await js.stream_info(name)
            assert info.config.num_replicas == 3, name
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2, name
        await nc.close()
    finally:
        await d.stop()
