"""Fusion: the weighted pick rule, confidence, ties, select consensus and the all-None fallback."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alchemist.answers.fusion import Candidate, fuse, pick, similarity_matrix


def cands(*rows: tuple[str, str | None, float]) -> list[Candidate]:
    return [Candidate(f"p{i}", f"text {i}", ans, w) for i, (_, ans, w) in enumerate(rows)]


def test_vote_matrix_is_answer_equality_and_none_backs_nobody() -> None:
    cs = cands(("", "1", 1), ("", "1", 1), ("", None, 1), ("", None, 1), ("", "2", 1))
    sim = similarity_matrix(cs, "vote")
    assert sim.dtype == np.float32
    expected = np.eye(5, dtype=np.float32)
    expected[0, 1] = expected[1, 0] = 1.0
    expected[2, 2] = expected[3, 3] = 0.0  # no answer: not even its own vote
    np.testing.assert_array_equal(sim, expected)


def test_heavier_group_beats_bigger_group() -> None:
    cs = cands(("", "7", 1.0), ("", "7", 1.0), ("", "7", 1.0), ("", "9", 2.0), ("", "9", 1.5))
    fused = fuse(cs, "vote")
    assert fused.answer == "9"
    assert fused.index == 3  # the heaviest provider inside the winning group
    assert fused.confidence == pytest.approx(3.5 / 6.5)
    assert fused.strategy == "vote"


def test_bigger_group_wins_on_equal_weights() -> None:
    fused = fuse(cands(("", "7", 1), ("", "9", 1), ("", "9", 1)), "vote")
    assert (fused.index, fused.answer) == (1, "9")
    assert fused.confidence == pytest.approx(2 / 3)


def test_exact_tie_goes_to_the_first_index() -> None:
    fused = fuse(cands(("", "a", 1), ("", "b", 1), ("", "b", 1), ("", "a", 1)), "vote")
    assert fused.index == 0
    assert fused.confidence == pytest.approx(0.5)


def test_tie_between_groups_goes_to_heavier_single_provider() -> None:
    # Groups weigh 2.0 each; the 1e-6 * w term favours the 1.5 provider's group.
    fused = fuse(cands(("", "a", 1.0), ("", "a", 1.0), ("", "b", 1.5), ("", "b", 0.5)), "vote")
    assert fused.index == 2


def test_a_none_answer_never_beats_an_extracted_one() -> None:
    # A provider whose answer could not be extracted gets no vote under vote,
    # however heavy it is; its weight still counts in the confidence denominator.
    fused = fuse(cands(("", None, 1.0), ("", "x", 1.0), ("", "x", 1.0)), "vote")
    assert fused.answer == "x"
    assert fused.confidence == pytest.approx(2 / 3)
    heavy_none = fuse(cands(("", None, 5.0), ("", "x", 1.0)), "vote")
    assert (heavy_none.index, heavy_none.answer) == (1, "x")
    assert heavy_none.confidence == pytest.approx(1 / 6)


def test_zero_weights_give_zero_confidence() -> None:
    fused = fuse(cands(("", "a", 0.0), ("", "b", 0.0)), "vote")
    assert (fused.index, fused.confidence) == (0, 0.0)


def test_all_none_vote_falls_back_to_select() -> None:
    cs = [
        Candidate("a", "the cat sat on the mat", None, 1.0),
        Candidate("b", "the cat sat on a mat", None, 1.0),
        Candidate("c", "quantum chromodynamics", None, 1.0),
    ]
    fused = fuse(cs, "vote")
    assert fused.strategy == "select"
    assert fused.index in (0, 1)
    assert fused.answer is None


def test_select_picks_consensus_among_paraphrases_over_outlier() -> None:
    texts = [
        "Bananas grow in tropical regions and are botanically berries.",
        "The tallest mountain on Earth is Mount Everest, in the Himalayas.",
        "Mount Everest in the Himalayas is the tallest mountain on Earth.",
        "The tallest mountain on Earth is Everest, at 8,849 metres.",
    ]
    # The outlier is the heaviest single provider, yet the paraphrase cluster wins.
    cs = [Candidate(f"p{i}", t, None, 1.5 if i == 0 else 1.0) for i, t in enumerate(texts)]
    sim = similarity_matrix(cs, "select")
    assert np.all(np.diag(sim) == 1.0)
    np.testing.assert_array_equal(sim, sim.T)
    assert float(sim.min()) >= 0.0
    fused = fuse(cs, "select")
    assert fused.strategy == "select"
    assert fused.index in (1, 2, 3)
    assert 0.0 < fused.confidence < 1.0


def test_select_empty_texts_agree_with_nothing() -> None:
    cs = [Candidate("a", "", None, 1.0), Candidate("b", "  ", None, 1.0)]
    np.testing.assert_array_equal(similarity_matrix(cs, "select"), np.eye(2, dtype=np.float32))


def test_fused_matrix_is_read_only_and_scores_follow_the_rule() -> None:
    cs = cands(("", "a", 0.5), ("", "b", 0.25), ("", "a", 0.25))
    fused = fuse(cs, "vote")
    with pytest.raises(ValueError, match="read-only"):
        fused.sim[0, 0] = 0.0
    w = np.array([0.5, 0.25, 0.25])
    np.testing.assert_allclose(fused.scores, fused.sim @ w + 1e-6 * w)


def test_refusals() -> None:
    with pytest.raises(ValueError, match="candidate list is empty"):
        fuse([], "vote")
    with pytest.raises(ValueError, match="must be one of vote, select"):
        fuse(cands(("", "a", 1)), "mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite number >= 0"):
        Candidate("p", "t", "a", float("nan"))
    with pytest.raises(ValueError, match="finite number >= 0"):
        Candidate("p", "t", "a", -1.0)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", None]), st.floats(0, 10)),
        min_size=1,
        max_size=8,
    )
)
def test_vote_matches_the_replayed_rule(rows: list[tuple[str | None, float]]) -> None:
    cs = [Candidate(f"p{i}", str(a), a, w) for i, (a, w) in enumerate(rows)]
    fused = fuse(cs, "vote")
    w = np.array([c.weight for c in cs], dtype=np.float64)
    index, confidence, _ = pick(fused.sim, w)
    assert (fused.index, fused.confidence) == (index, confidence)
    assert int(np.argmax(fused.sim @ w + 1e-6 * w)) == fused.index
    assert 0.0 <= fused.confidence <= 1.0
    if fused.strategy == "vote" and w.sum() > 0:
        share = sum(c.weight for c in cs if c.answer == fused.answer) / w.sum()
        if fused.answer is not None:
            assert fused.confidence == pytest.approx(share)
