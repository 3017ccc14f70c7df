"""Extraction and plain voting checked against real recorded LLM answers (shared/bench).

For every recorded answer, correctness by our extraction (extracted key equals
the gold's key) is compared with the recorded ``score`` (ZeroEval's own
checker); the two must agree on at least 97% of answers. The plain majority
vote (equal weights) is scored by the recorded score of the winning group and
must land within 1.5 points of the README's reference. The README's numbers
split exact ties between answer groups evenly, so this test does the same; the
daemon's pick rule (first index on ties) is printed alongside, for information.

Run with ``-s`` to see the numbers.
"""

from __future__ import annotations

import ast
import gzip
import json
import warnings
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from alchemist.answers.extract import AnswerSpec, canonical_number, extract
from alchemist.answers.fusion import Candidate, fuse
from tests.conftest import BENCH_DIR

pytestmark = pytest.mark.skipif(
    not BENCH_DIR.is_dir(),
    reason=f"replay data not found at {BENCH_DIR} (set ALCHEMIST_BENCH_DIR to its folder)",
)


def _literal(text: str) -> str:
    """A CRUXEval answer as a Python value: 'abc', "abc" and abc are the same string."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # "\w" in model text
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return text.strip()
    return value if isinstance(value, str) else repr(value)


def _gsm_correct(answer: str, gold: str) -> bool:
    return answer == canonical_number(gold)


def _crux_correct(answer: str, gold: str) -> bool:
    return _literal(answer) == _literal(gold)


SETS: dict[str, tuple[AnswerSpec, Callable[[str, str], bool], float]] = {
    "gsm8k": (AnswerSpec.parse("number"), _gsm_correct, 94.05),
    "cruxeval": (AnswerSpec.parse("json:answer"), _crux_correct, 66.10),
}


def _rows(name: str) -> list[dict[str, Any]]:
    path = BENCH_DIR / f"{name}.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"replay file {path} is missing")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.mark.parametrize("name", sorted(SETS))
def test_extraction_agrees_with_recorded_scores_and_vote_matches_reference(name: str) -> None:
    spec, correct, reference_vote = SETS[name]
    rows = _rows(name)
    agree: dict[str, int] = defaultdict(int)
    right: dict[str, int] = defaultdict(int)
    vote_split = vote_rule = 0.0
    for row in rows:
        answers: dict[str, dict[str, Any]] = row["answers"]
        cands = [
            Candidate(model, rec["text"], extract(rec["text"], spec), 1.0)
            for model, rec in answers.items()
        ]
        groups: dict[str, list[float]] = defaultdict(list)
        for cand in cands:
            score = float(answers[cand.provider]["score"])
            ok = cand.answer is not None and correct(cand.answer, row["gold"])
            right[cand.provider] += ok
            agree[cand.provider] += ok == (score == 1.0)
            if cand.answer is not None:
                groups[cand.answer].append(score)
        if groups:
            top = max(len(g) for g in groups.values())
            tied = [g[0] for g in groups.values() if len(g) == top]
            vote_split += sum(tied) / len(tied)
        vote_rule += float(answers[cands[fuse(cands, "vote").index].provider]["score"])

    n = len(rows)
    agreement = sum(agree.values()) / sum(len(r["answers"]) for r in rows)
    vote = 100.0 * vote_split / n
    print(f"\n{name}: {n} prompts; extraction/score agreement {100 * agreement:.2f}%")
    for model in sorted(right, key=lambda m: -right[m]):
        print(f"  {model:32s} accuracy {100 * right[model] / n:6.2f}%  "
              f"agreement {100 * agree[model] / n:6.2f}%")
    print(f"  plain majority vote {vote:.2f}% (ties split; reference {reference_vote:.2f}%), "
          f"pick rule with first-index ties {100 * vote_rule / n:.2f}%")
    assert agreement >= 0.97
    assert abs(vote - reference_vote) <= 1.5
