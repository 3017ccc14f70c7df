"""``alchemist bench replay --golden N``: N prompts of the replay set become a golden set.

The N prompts are chosen by the seed and spread over the skills in proportion to
their share of the set (:func:`choose_golden`). They are written as a golden probe
suite (gold = the recorded gold answer, checked under the bench's ``--answer``)
into a suites directory the daemon loads alone (``probes.shipped_suites = false``:
the starter suites' prompts mean nothing to a replay server, which answers only
the prompts it recorded). The prober asks every provider each of them once,
before the first request is served (:func:`await_golden`), and they are left out
of the served stream (:func:`served_order`), so no score counts them. Their
provider calls are counted apart in the report.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alchemist.answers.extract import AnswerSpec
from alchemist.daemon.sim.replay import ReplayItem, ReplaySet
from alchemist.probes.golden import BadLine, parse_line, read_items, suite_document, write_suite

if TYPE_CHECKING:
    from alchemist.daemon.sim.harness import Harness

#: the golden suite's name (and file name) in the bench's suites directory
GOLDEN_SUITE = "bench-golden"


def choose_golden(replay: ReplaySet, n: int, seed: int, answer: AnswerSpec) -> list[ReplayItem]:
    """``n`` items with a gold answer the ``answer`` check can use, drawn by ``seed``,
    spread over the skills: each skill gets its share of ``n`` by its share of those
    items (largest remainders first), and every skill at least one while ``n`` allows."""
    if all(i.gold is None for i in replay.items):
        raise ValueError("--golden needs gold answers, and every item of this replay set has "
                         "gold null (open text, judged by score alone): run it without --golden")
    labelled = [i for i in replay.items if i.gold is not None and _usable(i, answer)]
    if not 1 <= n < len(labelled) or n >= len(replay):
        raise ValueError(f"--golden must be between 1 and {min(len(labelled), len(replay)) - 1} "
                         f"for this replay set (the rest is served), not {n}")
    groups: dict[str, list[ReplayItem]] = {}
    for item in labelled:
        groups.setdefault(item.skill, []).append(item)
    shares = {s: n * len(g) / len(labelled) for s, g in groups.items()}
    quota = {s: int(v) for s, v in shares.items()}
    for s in sorted(shares, key=lambda s: quota[s] - shares[s])[: n - sum(quota.values())]:
        quota[s] += 1
    for s in [s for s in quota if quota[s] == 0]:
        donor = max(quota, key=lambda k: quota[k])  # the skill with the most gives one up
        if quota[donor] <= 1:
            break
        quota[donor] -= 1
        quota[s] = 1
    rng = random.Random(f"golden:{seed}")  # not the stream's order: that is Random(seed)
    return [item for s, g in groups.items() for item in rng.sample(g, quota[s])]


def _usable(item: ReplayItem, answer: AnswerSpec) -> bool:
    """Whether the item's gold makes a check under ``answer`` (CRUXEval's gold ``'   '``,
    blanks, does not under ``json:answer``: the extraction strips them)."""
    try:
        parse_line(_line(item, "x"), None, answer)
    except BadLine:
        return False
    return True


def _line(item: ReplayItem, pid: str) -> dict[str, Any]:
    return {"messages": [{"role": m.role, "content": m.content} for m in item.messages],
            "gold": item.gold, "skill": item.skill, "id": pid}


def served_order(replay: ReplaySet, n: int | None, seed: int,
                 skip: Collection[str] = ()) -> list[ReplayItem]:
    """:func:`~alchemist.daemon.sim.harness.ordered`'s stream without the items of ``skip``:
    the same seeded shuffles, so a run with golden prompts serves the same stream as one
    without, minus those prompts. ``n`` requests (default: every other item once)."""
    rng = random.Random(seed)
    items = list(replay.items)
    total = n or len(items) - len(skip)
    out: list[ReplayItem] = []
    while len(out) < total:
        rng.shuffle(items)
        out.extend(i for i in items if i.id not in skip)
    return out[:total]


def write_golden(items: list[ReplayItem], answer: AnswerSpec, directory: Path) -> Path:
    """The golden suite of ``items`` as ``DIR/bench-golden.toml`` (replaced if there)."""
    lines = [(n, json.dumps(_line(item, f"g{n}")).encode()) for n, item in enumerate(items, 1)]
    probes, problems = read_items(lines, answer=answer)
    if problems:
        n, why = problems[0]
        raise ValueError(f"--golden: item {items[n - 1].id!r} can't be a golden probe under "
                         f"--answer {answer.kind}: {why} ({len(problems)} item(s) in all)")
    doc = suite_document(probes, name=GOLDEN_SUITE, skill=None, answer=answer,
                         description=f"bench replay --golden {len(items)}")
    return write_suite(doc, directory, force=True).path


def probe_settings(directory: Path, n: int) -> dict[str, Any]:
    """The ``probes`` config that asks the golden suite alone, at once, without a budget
    in the way and without template trials."""
    return {"enabled": True, "suites_dir": str(directory), "shipped_suites": False,
            "first_run_s": 0.0, "interval_s": 1.0, "sample": min(n, 10_000),
            "calls_per_hour": 1_000_000, "cost_per_day": 1e9, "template_explore": 0.0}


async def await_golden(h: Harness, timeout_s: float = 120.0) -> None:
    """Wait until every provider has answered every golden prompt (a failed ask is asked
    again on the next round); past ``timeout_s``, say so and go on."""
    assert h.daemon is not None and h.daemon.prober is not None
    prober, names = h.daemon.prober, list(h.daemon.providers)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout_s
    while due := prober.golden_due(names):
        if loop.time() > give_up:
            print(f"\n--golden: {len(due)} golden prompt(s) still unanswered by some provider "
                  f"after {timeout_s:.0f} s; serving anyway", file=sys.stderr)
            return
        await asyncio.sleep(0.05)
