"""From provider outcomes to what goes back: answer keys, the reply, the experience record.

:class:`Votes` extracts each answer's key once and tells the fan-out when the
answers in hand already decide a vote; :func:`build_reply` and
:func:`experience_of` turn the fused outcome into the reply and the record the
learning loop journals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from alchemist.answers.extract import AnswerSpec, extract
from alchemist.answers.fusion import Candidate, Fused, decided
from alchemist.answers.recipes import Recipe
from alchemist.daemon.serving.fanout import DEADLINE, Outcome
from alchemist.daemon.serving.wire import InferError
from alchemist.daemon.storage.experience import Experience
from alchemist.probes.suites import Template

__all__ = ["MAX_ANSWER_KEY", "Votes", "build_reply", "experience_of", "no_answer"]

MAX_ANSWER_KEY = 512


class Votes:
    """The answer key of each outcome (extracted once), and whether those in hand
    already decide a vote."""

    def __init__(self, strategy: str, row: Mapping[str, float], spec: AnswerSpec) -> None:
        self.strategy, self.row, self.spec = strategy, row, spec
        self.keys: dict[str, str | None] = {}
        #: the pick rule's tie-break can favour any provider of the row, asked or not
        self.heaviest = max(row.values(), default=0.0)

    def key(self, o: Outcome) -> str | None:
        """The outcome's answer key (None: no answer, or none extracted)."""
        if o.name not in self.keys:
            self.keys[o.name] = _key(extract(o.result.text, self.spec)) if o.result else None
        return self.keys[o.name]

    def candidates(self, outcomes: Sequence[Outcome]) -> list[Candidate]:
        """The answered outcomes as fusion candidates, in order."""
        return [Candidate(o.name, o.result.text, self.key(o), self.row[o.name])
                for o in outcomes if o.result is not None]

    def settled(self, done: Sequence[Outcome], pending: Sequence[str]) -> bool:
        """Under vote: can the pending providers no longer change the winning answer?

        The rule is :func:`alchemist.answers.fusion.decided`'s (the cascade's).
        """
        if self.strategy != "vote":
            return False
        groups: dict[str, float] = {}
        for o in done:
            key = self.key(o)
            if key is not None:
                groups[key] = groups.get(key, 0.0) + self.row[o.name]
        if not groups:
            return False
        top = [*sorted(groups.values(), reverse=True), 0.0]
        return decided(top[0] - top[1], sum(self.row[p] for p in pending), self.heaviest)


def no_answer(outcomes: Sequence[Outcome], deadline_ms: int) -> InferError:
    """The error when no provider answered: the deadline, or their failures."""
    errors = ", ".join(f"{o.name}: {o.error}" for o in outcomes)
    if all(o.error in (DEADLINE, "timeout") for o in outcomes):
        return InferError("deadline_exceeded", f"no provider answered within "
                          f"{deadline_ms} ms ({errors})")
    return InferError("no_providers", f"no provider answered ({errors})")


def build_reply(request_id: str, recipe: Recipe, fused: Fused, candidates: list[Candidate],
                served: int, outcomes: list[Outcome], templates: Mapping[str, Template],
                latency_ms: float) -> dict[str, Any]:
    """The reply for the served candidate (its confidence: the fused weight behind it)."""
    winner = candidates[served]
    confidence = fused.confidence if served == fused.index else float(
        (fused.sim[served] @ [c.weight for c in candidates]) / max(
            1e-12, sum(c.weight for c in candidates)))
    by_name = {c.provider: c for c in candidates}
    return {
        "request_id": request_id, "text": winner.text, "answer": winner.answer,
        "confidence": round(min(1.0, max(0.0, confidence)), 6), "provider": winner.provider,
        "recipe": {"name": recipe.name, "version": recipe.version},
        "strategy": fused.strategy,
        "providers": [_status(o, by_name.get(o.name), templates.get(o.name)) for o in outcomes],
        "usage": _usage([o for o in outcomes if o.result is not None]),
        "latency_ms": round(latency_ms, 3),
    }


def _key(answer: str | None) -> str | None:
    return answer[:MAX_ANSWER_KEY] if answer is not None else None


def _status(o: Outcome, cand: Candidate | None, template: Template | None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": o.name, "ok": o.result is not None,
                           "latency_ms": round(o.latency_ms, 3), "wave": o.wave}
    if o.error:
        out["error"] = o.error
    if cand is not None:
        out["answer"] = cand.answer
    if template is not None:
        out["template"] = template.name
    return out


def _usage(answered: list[Outcome]) -> dict[str, Any]:
    prompt = sum(o.result.usage.prompt_tokens for o in answered if o.result)
    completion = sum(o.result.usage.completion_tokens for o in answered if o.result)
    costs = [o.result.usage.cost for o in answered if o.result and o.result.usage.cost is not None]
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "cost": round(sum(costs), 8) if costs else None}


def experience_of(request_id: str, recipe: Recipe, skill: str, strategy: str,
                  outcomes: list[Outcome], candidates: list[Candidate], sim: Any,
                  served: str, propensity: float, templates: Mapping[str, Template],
                  *, cascaded: bool = False) -> Experience:
    """The experience record of one request, for the learning loop's journal.

    One entry per provider called (in ``outcomes`` order): whether it answered,
    its extracted answer, its cost, its template and, when the request ran as
    a cascade (``cascaded``), its wave; ``sim`` (the candidates'
    agreement matrix) is placed in the rows and columns of all providers called,
    1 on the diagonal of those that gave no answer. ``served`` names the provider
    whose answer was returned, ``propensity`` the probability it was served with.
    """
    names = tuple(o.name for o in outcomes)
    pos = {c.provider: i for i, c in enumerate(candidates)}
    # the candidates' agreement matrix, placed in the rows/columns of all providers called
    full = np.eye(len(names), dtype=np.float64)
    rows = [i for i, n in enumerate(names) if n in pos]
    cols = [pos[names[i]] for i in rows]
    full[np.ix_(rows, rows)] = np.asarray(sim, dtype=np.float64)[np.ix_(cols, cols)]
    by_name = {c.provider: c for c in candidates}
    return Experience(
        request_id=request_id, recipe=recipe.name, version=recipe.version, skill=skill,
        strategy=strategy, providers=names, answered=tuple(n in pos for n in names),
        answers=tuple(by_name[n].answer if n in by_name else None for n in names),
        sim=tuple(np.round(full, 3).ravel().tolist()), served=names.index(served),
        propensity=propensity,
        cost=tuple(float(o.result.usage.cost or 0.0) if o.result else 0.0 for o in outcomes),
        templates=tuple(templates[n].name if n in templates else None for n in names),
        waves=tuple(o.wave for o in outcomes) if cascaded else (),
    )
