"""Simulated users: thumbs up/down on a served answer, from its recorded score.

A user rates only a share (``rated``) of the answers they get. A right answer
(score 1) gets a thumbs up, a wrong one (score 0) a thumbs down; a judge
preference strictly between 0 and 1 is up with that probability. Then a share
(``noise``) of ratings is flipped: people misclick, and judge their answers
wrongly.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["Rating", "SimulatedUsers"]


@dataclass(frozen=True, slots=True)
class Rating:
    """One thumbs event: ``value`` is 1 (up) or -1 (down); ``user`` who gave it."""

    value: int
    user: str


def _unit(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) \
            or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


class SimulatedUsers:
    """A pool of ``n_users`` users who rate a share ``rated`` of answers, flipping ``noise``.

    Deterministic given ``seed`` and the sequence of calls. Whether an answer is
    rated (:meth:`will_rate`) and how (:meth:`judge`) come from two separate
    streams, so a driver can know which requests will be rated before their
    answers are in (the bench's lockstep mode).
    """

    def __init__(self, rated: float, noise: float, seed: int, n_users: int = 50) -> None:
        self.rated = _unit("rated", rated)
        self.noise = _unit("noise", noise)
        if isinstance(n_users, bool) or not isinstance(n_users, int) or n_users < 1:
            raise ValueError(f"n_users must be an integer >= 1, got {n_users!r}")
        width = len(str(n_users - 1))
        self.users: tuple[str, ...] = tuple(f"sim-user-{i:0{width}d}" for i in range(n_users))
        self._whether = random.Random(f"{seed}:whether")
        self._how = random.Random(f"{seed}:how")

    def will_rate(self) -> bool:
        """Whether the next answer gets rated (one draw per answer, rated or not)."""
        return self._whether.random() < self.rated

    def judge(self, score: float) -> Rating:
        """The rating a user gives an answer with this recorded score."""
        score = _unit("score", score)
        rng = self._how
        # a right/wrong score decides; a judge preference is a probability of up
        up = score >= 0.5 if score in (0.0, 1.0) else rng.random() < score
        if rng.random() < self.noise:
            up = not up
        return Rating(1 if up else -1, rng.choice(self.users))

    def rate(self, score: float) -> Rating | None:
        """The rating of an answer with this recorded score, or None if the user doesn't rate."""
        score = _unit("score", score)
        return self.judge(score) if self.will_rate() else None
