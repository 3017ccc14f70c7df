"""Recipes: the weights and rules the daemon fuses with, and their wire forms.

A recipe is immutable; a promotion makes a new one with ``version + 1``. The
same dict form travels as the KV value, as the ``alchemist.recipes.<name>``
event, and (through tomli-w) as the TOML of ``alchemist recipe export``.
"""

from __future__ import annotations

import re
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Final, Literal, get_args

import msgspec
import tomli_w

from alchemist.answers.extract import AnswerSpec
from alchemist.schema import SchemaError, convert

Reason = Literal["init", "evolved", "calibrated", "rollback", "manual"]
#: how the answers are fused (see :mod:`alchemist.answers.fusion`, which imports it from here)
Strategy = Literal["vote", "select"]
STRATEGIES: Final[tuple[str, ...]] = get_args(Strategy)
FALLBACK = "*"
#: how probe suites, their skills and their templates are named
SUITE_NAME = re.compile(r"^[a-z0-9_.-]+$")
_NAMED = "lowercase letters, digits, '_', '-' or '.'"


class Params(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A recipe's ``params``: the one definition of their ranges and defaults."""

    #: providers whose effective weight is below this are not called (sparsity saves cost)
    min_weight: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.05
    #: the share of requests that call every provider so ratings reach other answers
    explore: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0
    #: a cascade asks this many providers first, by effective weight, then one at a time until
    #: the vote is decided (see :class:`alchemist.answers.fusion.Cascade`); 0: all at once
    first_wave: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: a cascade also stops once the lead is at least this share of the total weight (0: only
    #: when the outstanding weight cannot overturn it)
    stop_margin: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0


DEFAULT_PARAMS = Params()
#: the params a recipe document lists even at their defaults (older readers know only these)
_ALWAYS_WRITTEN = ("min_weight", "explore")


class RecipeError(ValueError):
    """A recipe document that cannot be used; the message says which field."""


#: a provider's weight
Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Skill = Annotated[str, msgspec.Meta(pattern=SUITE_NAME.pattern, description=(
    f"a probe suite's skill name ({_NAMED}; not the fallback '*')"))]
Provider = Annotated[str, msgspec.Meta(min_length=1, description="a non-empty provider name")]
TemplateName = Annotated[str, msgspec.Meta(pattern=SUITE_NAME.pattern, description=(
    f"a template name ({_NAMED})"))]
#: ``{skill: {provider: weight}}``; ``"*"`` is the fallback skill
Weights = Annotated[dict[str, dict[str, Unit]], msgspec.Meta(
    description="a map {skill: {provider: weight from 0 to 1}}")]
#: ``{skill: {provider: template name}}``
Templates = Annotated[
    dict[Skill, Annotated[dict[Provider, TemplateName], msgspec.Meta(
        description="a map {provider: template name}")]],
    msgspec.Meta(description="a map {skill: {provider: template name}}")]


class RecipeDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The dict form of a recipe (KV value, ``alchemist.recipes.<name>`` event, TOML export).

    Only read here (see :meth:`Recipe.from_dict`); :meth:`Recipe.to_dict`
    writes the same fields. Documents of older versions load too: every field
    added since has a default.
    """

    name: Annotated[str, msgspec.Meta(min_length=1)]
    version: Annotated[int, msgspec.Meta(ge=1)] = 1
    strategy: Strategy = "vote"
    #: an answer spec: a map or the short form ``"json:answer"`` (see AnswerSpec.parse)
    answer: str | dict[str, Any] = msgspec.field(default_factory=lambda: {"kind": "text"})
    weights: Weights = {}
    params: Params = DEFAULT_PARAMS
    parent: int | None = None
    #: left out: now
    created_at: float | None = None
    reason: Reason = "manual"
    fitness: float | None = None
    baseline_fitness: float | None = None
    n_ratings: int | None = None
    generation: int | None = None
    templates: Templates = {}


@dataclass(frozen=True, slots=True)
class Recipe:
    """One version of a named recipe."""

    name: str
    version: int
    strategy: str
    answer: AnswerSpec
    #: ``{skill: {provider: weight}}``; ``"*"`` is the fallback skill
    weights: Mapping[str, Mapping[str, float]]
    min_weight: float = DEFAULT_PARAMS.min_weight
    explore: float = DEFAULT_PARAMS.explore
    first_wave: int = DEFAULT_PARAMS.first_wave
    stop_margin: float = DEFAULT_PARAMS.stop_margin
    parent: int | None = None
    created_at: float = field(default_factory=time.time)
    reason: str = "init"
    fitness: float | None = None
    baseline_fitness: float | None = None
    n_ratings: int = 0
    generation: int = 0
    #: ``{skill: {provider: template name}}``: the probe-suite template each provider's
    #: requests of that skill are rendered with (none: sent as the client wrote them)
    templates: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def row(self, skill: str | None, providers: Sequence[str]) -> dict[str, float]:
        """The weight of every configured provider for a skill (``"*"`` as fallback).

        A provider missing from the row gets the fallback row's weight, and 1.0
        when the fallback has none either (a new provider starts trusted, and
        the evolver learns otherwise).
        """
        base = self.weights.get(FALLBACK, {})
        row = self.weights.get(skill, base) if skill else base
        return {p: float(row.get(p, base.get(p, 1.0))) for p in providers}

    def template(self, skill: str, provider: str) -> str | None:
        """The name of the template ``provider``'s requests of ``skill`` are rendered with.

        No fallback through ``"*"``: a template belongs to one skill's suites.
        """
        return self.templates.get(skill, {}).get(provider)

    def to_dict(self) -> dict[str, Any]:
        """The JSON/msgpack/TOML-ready form (None fields left out)."""
        out: dict[str, Any] = {
            "name": self.name, "version": self.version, "strategy": self.strategy,
            "answer": self.answer.to_dict(),
            "weights": {s: dict(row) for s, row in self.weights.items()},
            "params": self._params(),
            "created_at": self.created_at, "reason": self.reason,
            "n_ratings": self.n_ratings, "generation": self.generation,
        }
        for key in ("parent", "fitness", "baseline_fitness"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        templates = {s: dict(row) for s, row in self.templates.items() if row}
        if templates:
            out["templates"] = templates
        return out

    def _params(self) -> dict[str, float]:
        """The ``params`` map: the cascade's only when they differ from the defaults, so a
        recipe without a cascade stays readable by a daemon that predates cascades."""
        out: dict[str, float] = {}
        for key in Params.__struct_fields__:
            value = getattr(self, key)
            if key in _ALWAYS_WRITTEN or value != getattr(DEFAULT_PARAMS, key):
                out[key] = value
        return out

    @staticmethod
    def from_dict(raw: object) -> Recipe:
        """Validate a dict form (from KV, an event, or an imported TOML file)."""
        try:
            doc = convert(raw, RecipeDoc, document="a recipe")
        except SchemaError as exc:
            raise RecipeError(exc.about(f"recipe field {exc.path!r}") if exc.path
                              else exc.about("the recipe")) from None
        try:
            answer = AnswerSpec.parse(doc.answer)
        except ValueError as exc:
            raise RecipeError(f"recipe field 'answer': {exc}") from None
        return Recipe(
            name=doc.name, version=doc.version, strategy=doc.strategy, answer=answer,
            weights=doc.weights, min_weight=doc.params.min_weight, explore=doc.params.explore,
            first_wave=doc.params.first_wave, stop_margin=doc.params.stop_margin,
            parent=doc.parent,
            created_at=time.time() if doc.created_at is None else doc.created_at,
            reason=doc.reason, fitness=doc.fitness, baseline_fitness=doc.baseline_fitness,
            n_ratings=doc.n_ratings or 0, generation=doc.generation or 0,
            templates=doc.templates,
        )

    def to_toml(self) -> str:
        """TOML for ``alchemist recipe export``."""
        return tomli_w.dumps(self.to_dict())

    @staticmethod
    def from_toml(text: str) -> Recipe:
        """Parse what :meth:`to_toml` wrote (or a hand-edited copy)."""
        try:
            return Recipe.from_dict(tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            raise RecipeError(f"not valid TOML: {exc}") from None

    def successor(self, **changes: Any) -> Recipe:
        """The next version, with ``parent`` set to this one."""
        return replace(self, version=self.version + 1, parent=self.version,
                       created_at=time.time(), **changes)
