"""Issue 12: a simulated open-text fleet. Three providers write bland texts that resemble
each other, one writes distinctive texts readers like far more often; users rate the text
they were served. Uniform ``select`` serves a bland consensus; the learned one must serve at
least the best provider's rate over the last quarter of the run."""

from __future__ import annotations

from collections import Counter

import pytest

from alchemist.answers.extract import AnswerSpec
from alchemist.daemon.sim.harness import Harness, LoopSettings, ordered
from alchemist.daemon.sim.replay import Latency
from alchemist.daemon.sim.text_fleet import text_fleet

REQUESTS = 1600


async def _run(seed: int) -> tuple[float, float, float, list[tuple[int, int]]]:
    """Served rate over the first 100 and the last quarter, the best provider's over the
    last quarter, and the promotions."""
    replay = text_fleet(400, seed=1)
    settings = LoopSettings(answer=AnswerSpec.parse("text"), strategy="select", rated=0.5,
                            noise=0.05, seed=seed, concurrency=8, lockstep=True, explore=0.2,
                            latency=Latency(5.0, "lognormal", 4.0))
    async with Harness(replay, settings) as h:
        await h.drive(ordered(replay, REQUESTS, seed))
    first, last = h.served[:100], h.served[-REQUESTS // 4:]

    def rate(served: list, model: str | None = None) -> float:  # type: ignore[type-arg]
        return sum(replay.score(s.item_id, model or s.provider) for s in served
                   if s.provider) / len(served)

    assert Counter(s.provider for s in first).most_common(1)[0][0].startswith("stock")
    return rate(first), rate(last), rate(last, "sage"), h.progress.promotions


@pytest.mark.slow  # three runs of 1,600 requests (about 20 s each)
@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_learned_select_serves_the_best_texts(seed: int) -> None:
    first, last, best, promotions = await _run(seed)
    assert first < 0.6 < best  # the consensus is bland; the distinctive provider is liked
    assert promotions and last >= best, (first, last, best, promotions)
