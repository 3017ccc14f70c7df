"""A cheap skill classifier for requests that carry no ``skill`` hint.

Built from the probe suites: every probe prompt is a labelled example of its
skill. Texts become word unigram + bigram TF-IDF vectors (sublinear term
frequency, smoothed IDF, L2-normalized); each skill is the normalized centroid
of its examples; a text goes to the skill whose centroid is most cosine-similar,
or to ``"*"`` (the recipe's fallback row) when the best similarity is below
``threshold``. numpy only; classifying one text costs one small dot product.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from alchemist.probes.suites import Suite

FALLBACK: Final = "*"
DEFAULT_THRESHOLD: Final = 0.1
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
_MAX_CHARS: Final = 20_000


def tokens(text: str) -> list[str]:
    """Word unigrams and bigrams of ``text`` (lowercased; punctuation marks are words,
    every number is the word ``<num>``)."""
    words = ["<num>" if w.isdigit() else w for w in _WORD.findall(text[:_MAX_CHARS].lower())]
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]


class SkillRouter:
    """Nearest-centroid TF-IDF classifier over skills."""

    def __init__(self, vocabulary: dict[str, int], idf: npt.NDArray[np.float64],
                 skills: Sequence[str], centroids: npt.NDArray[np.float64],
                 threshold: float = DEFAULT_THRESHOLD) -> None:
        self.vocabulary = vocabulary
        self.idf = idf
        self.skills = tuple(skills)
        self.centroids = centroids
        self.threshold = threshold

    @classmethod
    def fit(cls, texts: Sequence[str], skills: Sequence[str],
            threshold: float = DEFAULT_THRESHOLD) -> SkillRouter:
        """Learn from labelled example texts (``texts[i]`` is an example of ``skills[i]``)."""
        if len(texts) != len(skills):
            raise ValueError(f"SkillRouter.fit got {len(texts)} texts but {len(skills)} skills.")
        counts = [Counter(tokens(t)) for t in texts]
        df: Counter[str] = Counter()
        for c in counts:
            df.update(c.keys())
        vocabulary = {term: i for i, term in enumerate(sorted(df))}
        n = len(texts)
        idf = np.array([math.log((1 + n) / (1 + df[t])) + 1.0 for t in sorted(df)], dtype=np.float64)
        labels = sorted(set(skills))
        centroids = np.zeros((len(labels), len(vocabulary)), dtype=np.float64)
        router = cls(vocabulary, idf, labels, centroids, threshold)
        for c, skill in zip(counts, skills, strict=True):
            centroids[labels.index(skill)] += router._vector(c)
        norms = np.linalg.norm(centroids, axis=1, keepdims=True)
        np.divide(centroids, norms, out=centroids, where=norms > 0)
        return router

    @classmethod
    def from_suites(cls, suites: Iterable[Suite], threshold: float = DEFAULT_THRESHOLD) -> SkillRouter:
        """A router whose examples are the prompts of every probe in ``suites``."""
        probes = [p for s in suites for p in s.probes]
        return cls.fit([p.prompt for p in probes], [p.skill for p in probes], threshold)

    def _vector(self, counts: Counter[str]) -> npt.NDArray[np.float64]:
        vec = np.zeros(len(self.vocabulary), dtype=np.float64)
        for term, count in counts.items():
            index = self.vocabulary.get(term)
            if index is not None:
                vec[index] = (1.0 + math.log(count)) * self.idf[index]
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm > 0 else vec

    def scores(self, text: str) -> dict[str, float]:
        """Cosine similarity of ``text`` to every skill's centroid."""
        if not self.skills:
            return {}
        sims = self.centroids @ self._vector(Counter(tokens(text)))
        return {skill: float(s) for skill, s in zip(self.skills, sims, strict=True)}

    def classify(self, text: str) -> tuple[str, float]:
        """``(skill, cosine score)``; ``("*", score)`` when the best score is below the threshold."""
        scores = self.scores(text)
        if not scores:
            return FALLBACK, 0.0
        skill = max(scores, key=lambda s: (scores[s], s))
        score = scores[skill]
        return (skill if score >= self.threshold else FALLBACK), score
