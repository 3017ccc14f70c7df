"""The chaos run's checks, at small scale: two SIGKILLs of ``alchemist run`` under load.

``benchmarks/chaos.py`` against the test's own nats-server: every acknowledged
rating is in ``ALCHEMIST_RATED`` exactly once, the recipe KV history is intact,
and clients saw errors only for requests in flight at a kill.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from alchemist.daemon.storage.broker import EmbeddedNats

CHAOS = Path(__file__).resolve().parents[1] / "benchmarks" / "chaos.py"


@pytest.mark.slow  # about 25 s alone, a minute on a busy machine
async def test_two_kills_lose_no_acknowledged_rating(nats_server: EmbeddedNats,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(CHAOS), "--kills", "2", "--seed", "3", "--min-gap", "1.5",
         "--max-gap", "3", "--concurrency", "8", "--nats-url", nats_server.url, "--out", str(out)],
        capture_output=True, text=True, timeout=240)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["verdict"] == dict.fromkeys(result["verdict"], True), result["verdict"]
    assert proc.returncode == 0
    ratings = result["ratings"]
    assert ratings["acked"] > 50  # ratings flowed across the kills
    assert ratings["in_rated_once"] + ratings["rejected_experience_never_recorded"] == ratings["acked"]
    assert [k["errors_in_flight"] <= 8 for k in result["clients"]["kills"]] == [True, True]
    assert result["recipes"]["default"]["versions"][-1] == result["recipes"]["default"]["served"]
