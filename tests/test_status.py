"""``alchemist status``: instances from $SRV.STATS, lease holders, recipe versions served."""

from __future__ import annotations

import asyncio
import json

import pytest
from nats.aio.client import Client

from alchemist.daemon.cli import main
from alchemist.daemon.storage.broker import EmbeddedNats
from tests.conftest import DaemonFactory, infer


async def test_status_json_lists_instances_leaders_and_versions(
        daemon_factory: DaemonFactory, nc: Client, nats_server: EmbeddedNats,
        capsys: pytest.CaptureFixture[str]) -> None:
    a = await daemon_factory(models=["a"], state="a")
    b = await daemon_factory(models=["a"], state="b")
    for i in range(6):
        await infer(nc, {"prompt": f"q{i}"})
    code = await asyncio.to_thread(main, ["status", "--json", "--url", nats_server.url])
    assert code == 0
    status = json.loads(capsys.readouterr().out)
    by_id = {i["id"]: i for i in status["instances"]}
    assert set(by_id) == {a.instance, b.instance}
    assert all(i["recipes"] == {"default": 1} for i in status["instances"])
    assert sum(i["requests"] for i in status["instances"]) >= 6  # the self-checks count too
    assert all(i["inflight"] == 0 and i["errors"] == 0 and i["host"] for i in status["instances"])
    assert status["leaders"] == {"default": a.instance}  # the first one took the lease
    assert by_id[a.instance]["leases"] == ["default"] and by_id[b.instance]["leases"] == []
    assert status["leases"]["default"]["age_s"] >= 0
    code = await asyncio.to_thread(main, ["status", "--url", nats_server.url])
    text = capsys.readouterr().out
    assert code == 0 and "2 instance(s)" in text and a.instance in text and "default v1" in text


async def test_status_says_when_nobody_answers(nats_server: EmbeddedNats,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code = await asyncio.to_thread(main, ["status", "--wait", "0.2", "--url", nats_server.url])
    assert code == 2
    assert "no instance answered" in capsys.readouterr().err
