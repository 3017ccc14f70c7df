"""The cascade's stop rule (alchemist.answers.fusion): pure, no I/O."""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from alchemist.answers.fusion import (
    Candidate,
    Cascade,
    decided,
    fuse,
    lead_of,
    margin_reached,
    similarity_matrix,
)

FAIL = "<failed>"  # a provider that was asked and gave no answer at all
KEYS = ("x", "y", "z")
# a coarse grid makes exact ties (the rule's edge) likely; floats cover the rest, down to
# 1e-9 (below ~1e-300 the pick rule's own 1e-6 * w tie-break underflows to nothing)
WEIGHTS = st.one_of(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), st.floats(1e-9, 1.0))


def candidates(names: list[str] | tuple[str, ...], answers: dict[str, str | None],
               weights: dict[str, float]) -> list[Candidate]:
    """The answered providers of ``names`` as candidates, in that order (text = key)."""
    return [Candidate(p, answers[p] or "", answers[p], weights[p])
            for p in names if answers[p] != FAIL]


@st.composite
def asked_so_far(draw: st.DrawFn) -> tuple[Cascade, tuple[str, ...], dict[str, str | None]]:
    """A vote cascade, the providers asked so far (its first waves) and their answers."""
    n = draw(st.integers(2, 6))
    weights = dict(zip([f"p{i}" for i in range(n)],
                       draw(st.lists(WEIGHTS, min_size=n, max_size=n)), strict=True))
    cascade = Cascade(weights, draw(st.integers(1, n - 1)))
    asked = cascade.order[:draw(st.integers(cascade.first_wave, n - 1))]
    answers: dict[str, str | None] = {
        p: draw(st.sampled_from([FAIL, None, *KEYS])) for p in asked}
    return cascade, asked, answers


#: the rule's edges, checked on every run: a lead exactly equal to the outstanding weight
#: (the outstanding provider can tie, and the tie-break favours the rival's heavier member),
#: and a lead over it by less than the tie-break term
EDGES = [
    (Cascade({"a": 1.0, "b": 0.5, "c": 0.5, "d": 0.25, "e": 0.25}, 4),
     ("a", "b", "c", "d"), {"a": "y", "b": "x", "c": "x", "d": "x"}),
    (Cascade({"a": 0.9, "b": 0.5, "c": 0.5, "d": 0.1 - 1e-7}, 3),
     ("a", "b", "c"), {"a": "y", "b": "x", "c": "x"}),
]


@settings(max_examples=400, deadline=None)
@given(asked_so_far())
@example(EDGES[0])
@example(EDGES[1])
def test_a_decided_cascade_picks_what_asking_everyone_would(
        case: tuple[Cascade, tuple[str, ...], dict[str, str | None]]) -> None:
    cascade, asked, answers = case
    weights = dict(cascade.weights)
    in_hand = candidates(asked, answers, weights)
    assume(cascade.stop(in_hand, set(asked)) == "decided")
    mine = fuse(in_hand, "vote")
    outstanding = [p for p in cascade.order if p not in asked]
    # every answer an outstanding provider could give: none at all, no key, a key in hand,
    # or new keys (as many as there are outstanding providers, so they can agree or not)
    fresh = [f"new{i}" for i in range(len(outstanding))]
    alphabet = [FAIL, None, *sorted({a for a in answers.values() if a not in (FAIL, None)}),
                *fresh]
    for combo in product(alphabet, repeat=len(outstanding)):
        everyone = {**answers, **dict(zip(outstanding, combo, strict=True))}
        all_at_once = candidates(list(weights), everyone, weights)  # the configured order
        theirs = fuse(all_at_once, "vote")
        assert theirs.answer == mine.answer
        # served by the same provider, or one the pick rule cannot tell from it: weights
        # closer than its tie-break resolves are ties, and ties go by candidate order
        served, ours = all_at_once[theirs.index].provider, in_hand[mine.index].provider
        assert served == ours or weights[served] == pytest.approx(weights[ours], rel=1e-9)


def test_the_rule_is_tight_where_the_outstanding_weight_could_overturn_the_lead() -> None:
    weights = {"a": 0.5, "b": 0.3, "c": 0.3}
    cascade = Cascade(weights, 2)
    in_hand = candidates(["a", "b"], {"a": "x", "b": "y"}, weights)
    assert cascade.stop(in_hand, {"a", "b"}) is None
    flipped = candidates(["a", "b", "c"], {"a": "x", "b": "y", "c": "y"}, weights)
    assert fuse(flipped, "vote").answer == "y"  # c could overturn it: rightly not decided


def test_the_tie_break_is_part_of_the_rule() -> None:
    # lead 0.1 against 0.0999999 outstanding: without the tie-break slack this would be
    # "decided", yet d joining a's answer makes a (heavier than b and c) the pick
    weights = {"a": 0.9, "b": 0.5, "c": 0.5, "d": 0.0999999}
    cascade = Cascade(weights, 3)
    in_hand = candidates(["a", "b", "c"], {"a": "y", "b": "x", "c": "x"}, weights)
    assert cascade.stop(in_hand, {"a", "b", "c"}) is None
    everyone = candidates(list(weights), {"a": "y", "b": "x", "c": "x", "d": "y"}, weights)
    assert fuse(everyone, "vote").answer == "y"


def test_waves_go_by_weight_then_one_at_a_time() -> None:
    cascade = Cascade({"a": 0.5, "b": 0.9, "c": 0.9, "d": 0.1}, 2)
    assert cascade.order == ("b", "c", "a", "d")  # ties keep the configured order
    assert cascade.waves() == (("b", "c"), ("a",), ("d",))
    assert cascade.outstanding({"b", "c"}) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="at least 1 provider"):
        Cascade({"a": 1.0}, 0)


@pytest.mark.parametrize(("first_wave", "stop_margin", "strategy", "cascades"), [
    (0, 0.0, "vote", False),       # the default: everyone at once
    (3, 0.0, "vote", False),       # a first wave of everyone is no cascade
    (5, 0.5, "vote", False),
    (1, 0.0, "vote", True),
    (2, 0.0, "select", False),     # select is never decided: without a margin, at once
    (2, 0.3, "select", True),
])
def test_plan_asks_everyone_at_once_unless_a_cascade_can_save_calls(
        first_wave: int, stop_margin: float, strategy: str, cascades: bool) -> None:
    weights = {"a": 1.0, "b": 1.0, "c": 1.0}
    plan = Cascade.plan(weights, first_wave, stop_margin, strategy)  # type: ignore[arg-type]
    assert (plan is not None) is cascades


def test_margin_stops_what_is_not_decided() -> None:
    weights = dict.fromkeys("abcd", 1.0)
    agree = candidates(["a", "b"], {"a": "x", "b": "x"}, weights)
    assert Cascade(weights, 2).stop(agree, {"a", "b"}) is None  # 2 vs 2 outstanding
    assert Cascade(weights, 2, stop_margin=0.5).stop(agree, {"a", "b"}) == "margin"
    assert Cascade(weights, 2, stop_margin=0.6).stop(agree, {"a", "b"}) is None
    failed = candidates(["a", "b"], {"a": FAIL, "b": FAIL}, weights)
    assert Cascade(weights, 2, stop_margin=0.01).stop(failed, {"a", "b"}) is None


def test_select_stops_only_on_its_margin() -> None:
    weights = {"a": 1.0, "b": 1.0, "c": 0.01}
    same = [Candidate(p, "the cat sat on the mat", None, weights[p]) for p in "ab"]
    # two identical texts and almost nothing outstanding: a vote would be decided, select is not
    assert Cascade(weights, 2, strategy="select").stop(same, {"a", "b"}) is None
    assert Cascade(weights, 2, 0.5, "select").stop(same, {"a", "b"}) == "margin"
    apart = [Candidate("a", "the cat sat on the mat", None, 1.0),
             Candidate("b", "dogs bark at night", None, 1.0)]
    assert Cascade(weights, 2, 0.5, "select").stop(apart, {"a", "b"}) is None


def test_lead_is_the_leading_group_over_the_runner_up() -> None:
    cands = [Candidate(p, a or "", a, w) for p, a, w in
             [("a", "x", 0.5), ("b", "y", 0.3), ("c", "x", 0.2), ("d", None, 0.9)]]
    assert lead_of(similarity_matrix(cands, "vote"), [c.weight for c in cands]) == (
        pytest.approx(0.4))
    assert lead_of(np.zeros((0, 0)), []) == 0.0


def test_the_rule_works_on_arrays_as_on_scalars() -> None:
    lead = np.array([0.5, 0.2, 0.0, 0.3])
    outstanding = np.array([0.4, 0.2, 0.0, 0.1])
    heaviest = np.array([1.0, 1.0, 1.0, 1.0])
    got = decided(lead, outstanding, heaviest)
    assert got.tolist() == [decided(float(a), float(b), 1.0) for a, b in
                            zip(lead, outstanding, strict=True)] == [True, False, False, True]
    margins = np.array([0.0, 0.1, 0.5, 0.1])
    got = margin_reached(lead, 2.0, margins)
    assert got.tolist() == [margin_reached(float(a), 2.0, float(m)) for a, m in
                            zip(lead, margins, strict=True)] == [False, True, False, True]
