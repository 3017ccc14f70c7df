"""Skill routing: leave-one-out accuracy over the shipped probe prompts, thresholds, fallbacks."""

from __future__ import annotations

import pytest

from alchemist.probes.router import FALLBACK, SkillRouter, tokens
from alchemist.probes.suites import load_suites

SUITES = load_suites()
PROBES = [p for s in SUITES for p in s.probes]

# Measured: 67 of 70 prompts (95.7%) go to their own skill when classified by a
# router built from the other 69 (threshold 0, so every prompt gets a skill).
# The misses are instruction prompts that read like arithmetic or formatting.
LOO_ACCURACY_FLOOR = 0.9


def leave_one_out_accuracy() -> float:
    hits = 0
    for i, probe in enumerate(PROBES):
        rest = PROBES[:i] + PROBES[i + 1:]
        router = SkillRouter.fit([p.prompt for p in rest], [p.skill for p in rest], threshold=0.0)
        hits += router.classify(probe.prompt)[0] == probe.skill
    return hits / len(PROBES)


def test_leave_one_out_accuracy_on_the_suites() -> None:
    accuracy = leave_one_out_accuracy()
    print(f"skill router leave-one-out accuracy: {accuracy:.3f} over {len(PROBES)} probe prompts")
    assert accuracy >= LOO_ACCURACY_FLOOR


def test_every_shipped_prompt_routes_to_its_own_skill() -> None:
    router = SkillRouter.from_suites(SUITES)
    assert set(router.skills) == {s.skill for s in SUITES}
    for probe in PROBES:
        skill, score = router.classify(probe.prompt)
        assert skill == probe.skill, probe.key
        assert 0.0 < score <= 1.0 + 1e-9


@pytest.mark.parametrize(("text", "skill"), [
    ("A shop sells 5 pens for $2 each. How much do 7 pens cost?", "math"),
    ("What does this Python code print?\n```python\nprint(len([1, 2, 3]))\n```", "code"),
    ("Which of the following is a mammal?\nA) Shark\nB) Whale\nC) Trout\nD) Eel", "knowledge"),
    ('Return a JSON object with the keys "city" and "country". Output only the JSON object.', "format"),
    ("Write one sentence about the moon that includes the word 'silver'.", "instructions"),
])
def test_unseen_prompts(text: str, skill: str) -> None:
    assert SkillRouter.from_suites(SUITES).classify(text)[0] == skill


def test_unrelated_text_falls_back() -> None:
    router = SkillRouter.from_suites(SUITES)
    assert router.classify("") == (FALLBACK, 0.0)
    assert router.classify("zxqv blorf") == (FALLBACK, 0.0)
    skill, score = router.classify("hello there")
    assert skill == FALLBACK and score < router.threshold
    strict = SkillRouter.from_suites(SUITES, threshold=0.99)
    assert strict.classify(PROBES[0].prompt)[0] == FALLBACK


def test_scores_and_tokens() -> None:
    router = SkillRouter.from_suites(SUITES)
    scores = router.scores("How many apples are left?")
    assert set(scores) == set(router.skills)
    assert max(scores, key=lambda s: scores[s]) == "math"
    assert tokens("Add 17 and 25!") == ["add", "<num>", "and", "<num>", "!",
                                       "add <num>", "<num> and", "and <num>", "<num> !"]
    assert SkillRouter.fit([], []).classify("anything") == (FALLBACK, 0.0)
    with pytest.raises(ValueError, match="2 texts but 1 skills"):
        SkillRouter.fit(["a", "b"], ["x"])
