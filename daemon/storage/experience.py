"""Experience: what each served request leaves behind for the learning loop.

An :class:`Experience` keeps what is needed to re-decide the request under
other weights without calling a provider again (the skill, who answered, the
agreement matrix of their answers, what was served and with what
probability). Experiences go to the bounded JetStream stream
``ALCHEMIST_EXPERIENCE``; a rating joined to its experience becomes a
:class:`Rated` record in ``ALCHEMIST_RATED``. Every instance follows both
streams, so whichever instance takes a rating can join it, and every
evolver learns from all of them. In memory, both live in bounded maps.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

#: the ``recipe`` of probe records, which serve every recipe (and their rated_total key)
PROBES_KEY = "*probes*"
#: the ``user`` of a probe record and of a template-trial record (an extra ask of a probe with
#: another template than the recipe's: evidence about templates only, not about weights)
PROBE_USER = "probe"
TRIAL_USER = "probe-trial"


@dataclass(frozen=True, slots=True)
class Experience:
    """One answered request, as the learning loop needs it."""

    request_id: str
    recipe: str
    version: int
    skill: str
    strategy: str
    providers: tuple[str, ...]
    answered: tuple[bool, ...]
    answers: tuple[str | None, ...]
    #: row-major M x M agreement of the providers' answers (rounded to 1/1000)
    sim: tuple[float, ...]
    served: int
    propensity: float = 1.0
    cost: tuple[float, ...] = ()
    ts: float = field(default_factory=time.time)
    #: the template each provider of ``providers`` was asked with (``()`` or all None: none)
    templates: tuple[str | None, ...] = ()
    #: the cascade wave (1-based) each provider of ``providers`` was asked in; ``()``: the
    #: request asked every candidate at once (and records from before cascades)
    waves: tuple[int, ...] = ()

    def sim_matrix(self) -> np.ndarray:
        m = len(self.providers)
        return np.asarray(self.sim, dtype=np.float32).reshape(m, m)

    def to_wire(self) -> dict[str, Any]:
        out = {"id": self.request_id, "r": self.recipe, "v": self.version, "k": self.skill,
               "st": self.strategy, "p": list(self.providers), "ok": list(self.answered),
               "a": list(self.answers), "sim": list(self.sim), "s": self.served,
               "pi": self.propensity, "c": list(self.cost), "ts": self.ts}
        if any(t is not None for t in self.templates):  # untemplated records stay as they were
            out["tp"] = list(self.templates)
        if self.waves:  # so do records of requests that asked everyone at once
            out["wv"] = list(self.waves)
        return out

    @staticmethod
    def from_wire(d: dict[str, Any]) -> Experience:
        return Experience(
            request_id=d["id"], recipe=d["r"], version=d["v"], skill=d["k"], strategy=d["st"],
            providers=tuple(d["p"]), answered=tuple(d["ok"]), answers=tuple(d["a"]),
            sim=tuple(d["sim"]), served=d["s"], propensity=d["pi"], cost=tuple(d["c"]),
            ts=d["ts"], templates=tuple(d.get("tp") or ()), waves=tuple(d.get("wv") or ()))


@dataclass(frozen=True, slots=True)
class Rated:
    """An experience with evidence: one user's rating of the served answer (+1 / -1),
    or, for a probe (``user`` ``"probe"``), the ground truth of every provider's answer.
    """

    experience: Experience
    rating: int
    user: str
    ts: float
    #: probe records: 1.0 / 0.0 per provider of ``experience.providers`` (None: no answer)
    truth: tuple[float | None, ...] | None = None

    @property
    def key(self) -> str:
        """The idempotency key: one rating per request and user."""
        return f"{self.experience.request_id}:{self.user}"

    @property
    def is_probe(self) -> bool:
        return self.truth is not None

    def to_wire(self) -> dict[str, Any]:
        out = {"e": self.experience.to_wire(), "y": self.rating, "u": self.user, "ts": self.ts}
        if self.truth is not None:
            out["t"] = list(self.truth)
        return out

    @staticmethod
    def from_wire(d: dict[str, Any]) -> Rated:
        truth = d.get("t")
        return Rated(Experience.from_wire(d["e"]), int(d["y"]), str(d["u"]), float(d["ts"]),
                     tuple(truth) if truth is not None else None)


def pack(obj: dict[str, Any]) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def unpack(data: bytes) -> dict[str, Any]:
    out = msgpack.unpackb(data, raw=False)
    if not isinstance(out, dict):
        raise ValueError("not a map")
    return out


class BoundedMap(OrderedDict[str, Any]):
    """An insertion-ordered map that forgets its oldest entries past ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: str, value: Any) -> bool:
        """Insert if new (returns False for a key already present)."""
        if key in self:
            return False
        self[key] = value
        while len(self) > self.limit:
            self.popitem(last=False)
        return True


class ExperienceIndex:
    """The in-memory, bounded view of both streams on this instance."""

    def __init__(self, limit: int) -> None:
        self.experiences = BoundedMap(limit)
        self.rated = BoundedMap(limit)
        #: rated records ever added, per recipe (only grows, unlike the bounded map)
        self.rated_total: Counter[str] = Counter()
        #: the rated records in the rated stream's order, as its follower delivers them (a
        #: record this instance rated is in ``rated`` as soon as it is durable, and joins this
        #: log when the follower reaches it); the order every instance sees, which the evolver
        #: learns in
        self.log = BoundedMap(limit)
        #: records ever logged, per recipe (``PROBES_KEY`` for probe records)
        self.logged: Counter[str] = Counter()

    def add_experience(self, exp: Experience) -> None:
        self.experiences.put(exp.request_id, exp)

    def get(self, request_id: str) -> Experience | None:
        exp: Experience | None = self.experiences.get(request_id)
        return exp

    def add_rated(self, rec: Rated) -> bool:
        added = self.rated.put(rec.key, rec)
        if added:
            self.rated_total[rec.experience.recipe] += 1
        return added

    def add_streamed(self, rec: Rated) -> None:
        """A rated record as the stream's follower delivers it (in stream order)."""
        self.add_rated(rec)
        rec = self.rated.get(rec.key, rec)  # one object per record: the log only orders them
        if self.log.put(rec.key, rec):
            self.logged[rec.experience.recipe] += 1

    def streamed_for(self, recipe: str) -> Iterator[Rated]:
        """:meth:`rated_for` in the rated stream's order, of the records the follower delivered."""
        for rec in self.log.values():
            if rec.experience.recipe == recipe or rec.truth is not None:
                yield rec

    def has_rating(self, key: str) -> bool:
        return key in self.rated

    def rated_for(self, recipe: str) -> Iterator[Rated]:
        """The rated records of a recipe, and every probe record (probes serve all recipes)."""
        for rec in self.rated.values():
            if rec.experience.recipe == recipe or rec.truth is not None:
                yield rec
