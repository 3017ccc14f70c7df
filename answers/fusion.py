"""Fusion: pick one answer out of several providers' candidates under per-provider weights.

Two strategies share one pick rule, so the optimizer can replay any decision
offline from the stored similarity matrix and a candidate weight vector::

    w = weights (float64); score = sim @ w + 1e-6 * w; pick = argmax(score)

``argmax`` takes the first index on exact ties. The ``1e-6 * w`` term breaks
ties between members of one agreeing group in favour of the heaviest provider.

- ``vote``: ``sim[i, j]`` is 1 when candidates i and j extracted the same
  (non-None) answer key, else 0. ``score[i]`` is then the weight of i's answer
  group, so the pick is a weighted plurality, served by the group's heaviest
  provider.
- ``select``: ``sim[i, j]`` is a text similarity in [0, 1]: the Jaccard index
  of the sets of word unigrams and bigrams of the casefolded texts. The pick is
  the weighted medoid, the text the others agree with most. Word shingles were
  chosen over character 3-grams because they are several times cheaper on
  long answers (a few hundred set items instead of a few thousand) and
  separate a consensus from an outlier just as well; an empty text is similar
  to nothing but itself.

If every candidate has no answer under ``vote``, fusion falls back to
``select``; ``Fused.strategy`` names the strategy actually used.

Cascades
--------
A :class:`Cascade` asks the candidate providers in waves, heaviest first, and
stops as soon as the answers in hand make asking more pointless. The stop rule
is two pure functions of scalars or numpy arrays (elementwise), so a
vectorised replay can apply it to many records or genomes at once:

- ``lead``: the pick's score minus the best score of a candidate that
  disagrees with it (``sim < 0.5``), without the tie-break term, over the
  answers in hand (:func:`lead_of`); under ``vote`` the leading answer group's
  weight minus the runner-up group's (0 when there is none);
- ``outstanding``: the summed weight of the candidates not asked yet (a
  provider that failed counts as asked, with no answer);
- ``total``: the summed weight of all candidates; ``heaviest``: the largest.

:func:`decided` (``lead > outstanding + 1e-6 * heaviest``) means no answers of
the outstanding providers can change the vote's pick; the ``1e-6`` slack
covers the pick rule's tie-break term. :func:`margin_reached` (``stop_margin >
0`` and ``lead >= stop_margin * total > 0``) is the recipe's own, heuristic
stop. Under ``select`` nothing is ever decided while a provider is
outstanding (a new text may agree with every other), so only the margin stops
a ``select`` cascade early, and without a margin it asks everyone at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Final, Literal, overload

import numpy as np
import numpy.typing as npt

from alchemist.answers.recipes import STRATEGIES, Strategy

TIE_BREAK: Final = 1e-6  # weight share of the 1e-6 * w term of the pick rule
RIVAL_BELOW: Final = 0.5  # a candidate this dissimilar to the pick (or less) is its rival
#: why a cascade stopped before asking every candidate
Stop = Literal["decided", "margin"]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class Candidate:
    """One provider's answer: its raw text, extracted key (None if none) and weight."""

    provider: str
    text: str
    answer: str | None
    weight: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.weight) and self.weight >= 0.0):
            raise ValueError(
                f"The weight of provider {self.provider!r} must be a finite number >= 0, "
                f"not {self.weight!r}."
            )


@dataclass(frozen=True, slots=True)
class Fused:
    """The outcome of ``fuse``.

    ``index`` is the picked candidate; ``answer`` its key; ``confidence`` the
    weight share behind it (``sim[index] @ w / sum(w)``); ``scores`` the pick
    scores of all candidates; ``sim`` the read-only (M, M) float32 similarity
    matrix; ``strategy`` the strategy actually used (``select`` after a
    ``vote`` fallback).
    """

    index: int
    answer: str | None
    confidence: float
    scores: tuple[float, ...]
    sim: npt.NDArray[np.float32] = field(compare=False, repr=False)
    strategy: Strategy = "vote"


def similarity_matrix(
    candidates: Sequence[Candidate], strategy: Strategy
) -> npt.NDArray[np.float32]:
    """The (M, M) float32 similarity matrix of ``candidates`` under ``strategy``.

    Symmetric, values in [0, 1]; diagonal 1 except, under vote, for a
    candidate with no extracted answer (0: it backs nobody). See the module docstring for the
    definition of each strategy.
    """
    if strategy == "vote":
        return _vote_matrix([c.answer for c in candidates])
    if strategy == "select":
        return _select_matrix([c.text for c in candidates])
    raise ValueError(f"The strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}.")


def pick(
    sim: npt.NDArray[np.floating], weights: npt.ArrayLike
) -> tuple[int, float, npt.NDArray[np.float64]]:
    """Apply the pick rule: return (index, confidence, scores) for ``sim`` and ``weights``.

    This is the one rule both the daemon and the optimizer's offline replay use.
    """
    w = np.asarray(weights, dtype=np.float64)
    scores = sim @ w + TIE_BREAK * w
    index = int(np.argmax(scores))
    total = float(w.sum())
    confidence = float(sim[index] @ w) / total if total > 0.0 else 0.0
    return index, min(max(confidence, 0.0), 1.0), scores


def fuse(candidates: Sequence[Candidate], strategy: Strategy) -> Fused:
    """Fuse ``candidates`` under ``strategy`` with the pick rule of the module docstring.

    Raises ValueError on an empty candidate list or an unknown strategy.
    """
    if not candidates:
        raise ValueError("Fusion needs at least one candidate; the candidate list is empty.")
    if strategy not in STRATEGIES:
        raise ValueError(
            f"The strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}."
        )
    used: Strategy = strategy
    if strategy == "vote" and all(c.answer is None for c in candidates):
        used = "select"
    sim = similarity_matrix(candidates, used)
    sim.setflags(write=False)
    index, confidence, scores = pick(sim, [c.weight for c in candidates])
    return Fused(
        index=index,
        answer=candidates[index].answer,
        confidence=confidence,
        scores=tuple(float(s) for s in scores),
        sim=sim,
        strategy=used,
    )


def _vote_matrix(answers: Sequence[str | None]) -> npt.NDArray[np.float32]:
    # Code each distinct key as an integer (None as -1, unequal to everything,
    # itself included: an answer that could not be extracted gets no vote, so it
    # can never beat one that was), then compare all pairs at once.
    codes: dict[str, int] = {}
    coded = np.array(
        [-1 if a is None else codes.setdefault(a, len(codes)) for a in answers], dtype=np.int64
    )
    same = (coded[:, None] == coded[None, :]) & (coded[:, None] >= 0)
    sim: npt.NDArray[np.float32] = same.astype(np.float32)
    return sim


def shingles(text: str) -> frozenset[str]:
    """The word unigrams and bigrams of ``text``, casefolded (the ``select`` features)."""
    words = _WORD.findall(text.casefold())
    return frozenset(words).union(f"{a} {b}" for a, b in pairwise(words))


def _select_matrix(texts: Sequence[str]) -> npt.NDArray[np.float32]:
    sets = [shingles(t) for t in texts]
    m = len(sets)
    sim = np.eye(m, dtype=np.float32)
    for i in range(m):
        a = sets[i]
        for j in range(i + 1, m):
            b = sets[j]
            union = len(a) + len(b)
            if union == 0:
                continue  # two empty texts agree on nothing
            inter = len(a & b)
            sim[i, j] = sim[j, i] = inter / (union - inter)
    return sim


# ------------------------------------------------------------------------------ cascades

def lead_of(sim: npt.NDArray[np.floating], weights: npt.ArrayLike) -> float:
    """How far the pick of ``sim`` and ``weights`` is ahead of its strongest rival.

    The pick's score minus the best score of a candidate whose similarity to
    it is below 0.5, both without the tie-break term (the pick's score when
    there is no rival). Under ``vote``: the leading group's weight minus the
    runner-up group's.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.size == 0:
        return 0.0
    index, _, _ = pick(sim, w)
    scores = sim @ w
    rivals = scores[sim[index] < RIVAL_BELOW]
    return float(scores[index] - (rivals.max() if rivals.size else 0.0))


@overload
def decided(lead: float, outstanding: float, heaviest: float) -> bool: ...
@overload
def decided(lead: FloatArray, outstanding: FloatArray | float,
            heaviest: FloatArray | float) -> BoolArray: ...
def decided(lead: FloatArray | float, outstanding: FloatArray | float,
            heaviest: FloatArray | float) -> BoolArray | bool:
    """Under ``vote``: can no answers of the outstanding providers change the pick?

    True when ``lead > outstanding + TIE_BREAK * heaviest`` (see the module
    docstring for the inputs; numpy arrays are compared elementwise).
    """
    return lead > outstanding + TIE_BREAK * heaviest


@overload
def margin_reached(lead: float, total: float, stop_margin: float) -> bool: ...
@overload
def margin_reached(lead: FloatArray, total: FloatArray | float,
                   stop_margin: FloatArray | float) -> BoolArray: ...
def margin_reached(lead: FloatArray | float, total: FloatArray | float,
                   stop_margin: FloatArray | float) -> BoolArray | bool:
    """Is the lead at least ``stop_margin`` of the total weight (a margin of 0 never stops)?"""
    out = (np.greater(stop_margin, 0.0) & np.greater(lead, 0.0)
           & np.greater_equal(lead, np.multiply(stop_margin, total)))
    return bool(out) if np.ndim(out) == 0 else out


@dataclass(frozen=True, slots=True)
class Cascade:
    """Which of a request's candidate providers to ask in which wave, and when to stop.

    ``weights`` are the candidates' effective weights (the providers the
    request would call all at once), in their configured order. ``order`` is
    by weight, heaviest first (ties in configured order). Wave 1 asks the first
    ``first_wave``; every later wave asks one more provider, the next by
    weight: the fewest calls, at the price of one provider's latency per wave.
    """

    weights: Mapping[str, float]
    first_wave: int
    stop_margin: float = 0.0
    strategy: Strategy = "vote"
    order: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.first_wave < 1:
            raise ValueError(f"A cascade's first wave asks at least 1 provider, "
                             f"not {self.first_wave}.")
        object.__setattr__(self, "order", tuple(sorted(self.weights,
                                                       key=lambda p: -self.weights[p])))

    @staticmethod
    def plan(weights: Mapping[str, float], first_wave: int, stop_margin: float,
             strategy: Strategy) -> Cascade | None:
        """The cascade of a request, or None to ask every candidate at once.

        At once: ``first_wave`` 0 or at least the number of candidates, and
        ``select`` without a ``stop_margin`` (it would never stop early).
        """
        if first_wave <= 0 or first_wave >= len(weights):
            return None
        if strategy == "select" and stop_margin <= 0.0:
            return None
        return Cascade(weights, first_wave, stop_margin, strategy)

    def waves(self) -> tuple[tuple[str, ...], ...]:
        """The providers of each wave, in order."""
        head, rest = self.order[:self.first_wave], self.order[self.first_wave:]
        return (head, *((p,) for p in rest))

    def outstanding(self, asked: Collection[str]) -> float:
        """The summed weight of the candidates not in ``asked``."""
        return float(sum(w for p, w in self.weights.items() if p not in asked))

    def stop(self, answers: Sequence[Candidate], asked: Collection[str]) -> Stop | None:
        """Whether to stop, with ``answers`` in hand from the providers ``asked`` so far.

        ``asked`` includes those that failed; None: ask the next wave.
        """
        if not answers:
            return None
        sim = similarity_matrix(answers, self.strategy)
        lead = lead_of(sim, [c.weight for c in answers])
        values = self.weights.values()
        if self.strategy == "vote" and decided(lead, self.outstanding(asked), max(values)):
            return "decided"
        if margin_reached(lead, float(sum(values)), self.stop_margin):
            return "margin"
        return None
