"""One user's rating cap holds across instances and restarts (it lives in a KV bucket)."""

from __future__ import annotations

from nats.aio.client import Client

from alchemist.daemon.runtime.app import Daemon
from tests.conftest import DaemonFactory, infer, rate, until

CAP = {"user_cap": 10, "user_window_s": 3600}


def _handled(daemons: list[Daemon]) -> int:
    return sum(d.feedback.counts["accepted"] + d.feedback.counts["rejected_user_cap"]
               for d in daemons if d.feedback is not None)


def _accepted(daemons: list[Daemon]) -> int:
    return sum(d.feedback.counts["accepted"] for d in daemons if d.feedback is not None)


async def test_one_users_flood_through_three_instances_and_a_restart_is_capped(
        daemon_factory: DaemonFactory, nc: Client) -> None:
    daemons = [await daemon_factory(models=["a"], state=s, evolver=CAP) for s in "xyz"]
    ids = [(await infer(nc, {"prompt": f"q{i}"}))["request_id"] for i in range(45)]
    for rid in ids[:15]:
        await rate(nc, rid, "up", user="flood")
    await until(lambda: _handled(daemons) == 15, timeout=20)
    assert _accepted(daemons) == 10
    assert sum(1 for d in daemons if d.feedback and d.feedback.counts["accepted"]) >= 2, \
        "the ratings should have been spread over the instances"
    await daemons[0].stop()  # a restart: the new process has no memory of the flood
    daemons.append(await daemon_factory(models=["a"], state="x", evolver=CAP))
    for rid in ids[15:]:
        await rate(nc, rid, "down", user="flood")
    await rate(nc, ids[0], "up", user="someone-else")  # another user is not held back
    await until(lambda: _handled(daemons) == 46, timeout=30)
    assert _accepted(daemons) == 11
    flood = [r for r in daemons[-1].index.rated.values() if r.user == "flood"]
    assert len(flood) == 10
