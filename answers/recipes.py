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
from typing import Annotated, Any

import msgspec
import tomli_w

from alchemist.answers.extract import AnswerSpec

REASONS = ("init", "evolved", "rollback", "manual")
STRATEGIES = ("vote", "select")
FALLBACK = "*"
#: how probe suites, their skills and their templates are named
SUITE_NAME = re.compile(r"^[a-z0-9_.-]+$")


class Params(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A recipe's ``params``: the one definition of their ranges and defaults."""

    #: providers whose effective weight is below this are not called (sparsity saves cost)
    min_weight: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.05
    #: the share of requests that call every provider so ratings reach other answers
    explore: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0


DEFAULT_PARAMS = Params()


class RecipeError(ValueError):
    """A recipe document that cannot be used; the message says which field."""


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
            "params": {"min_weight": self.min_weight, "explore": self.explore},
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

    @staticmethod
    def from_dict(raw: object) -> Recipe:
        """Validate a dict form (from KV, an event, or an imported TOML file)."""
        if not isinstance(raw, dict):
            raise RecipeError("a recipe must be a map")
        known = {"name", "version", "strategy", "answer", "weights", "params", "parent",
                 "created_at", "reason", "fitness", "baseline_fitness", "n_ratings", "generation",
                 "templates"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise RecipeError(f"unknown recipe field {unknown[0]!r}; fields: {', '.join(sorted(known))}")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise RecipeError("recipe field 'name' must be a non-empty string")
        version = raw.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise RecipeError("recipe field 'version' must be a positive integer")
        strategy = raw.get("strategy", "vote")
        if strategy not in STRATEGIES:
            raise RecipeError(f"recipe field 'strategy' must be one of {', '.join(STRATEGIES)}")
        reason = raw.get("reason", "manual")
        if reason not in REASONS:
            raise RecipeError(f"recipe field 'reason' must be one of {', '.join(REASONS)}")
        try:
            answer = AnswerSpec.parse(raw.get("answer", {"kind": "text"}))
        except ValueError as exc:
            raise RecipeError(f"recipe field 'answer': {exc}") from None
        weights = _weights(raw.get("weights", {}))
        params = raw.get("params", {})
        if not isinstance(params, dict) or set(params) - {"min_weight", "explore"}:
            raise RecipeError("recipe field 'params' accepts only min_weight and explore")
        min_weight = _unit(params.get("min_weight", DEFAULT_PARAMS.min_weight), "params.min_weight")
        explore = _unit(params.get("explore", DEFAULT_PARAMS.explore), "params.explore")
        return Recipe(
            name=name, version=version, strategy=strategy, answer=answer, weights=weights,
            min_weight=min_weight, explore=explore, parent=_opt_int(raw.get("parent"), "parent"),
            created_at=float(raw.get("created_at", time.time())), reason=reason,
            fitness=_opt_float(raw.get("fitness"), "fitness"),
            baseline_fitness=_opt_float(raw.get("baseline_fitness"), "baseline_fitness"),
            n_ratings=_opt_int(raw.get("n_ratings"), "n_ratings") or 0,
            generation=_opt_int(raw.get("generation"), "generation") or 0,
            templates=_templates(raw.get("templates", {})),
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


def _weights(raw: object) -> dict[str, dict[str, float]]:
    if not isinstance(raw, dict):
        raise RecipeError("recipe field 'weights' must be a map {skill: {provider: weight}}")
    out: dict[str, dict[str, float]] = {}
    for skill, row in raw.items():
        if not isinstance(skill, str) or not isinstance(row, dict):
            raise RecipeError("recipe field 'weights' must be a map {skill: {provider: weight}}")
        out[skill] = {str(p): _unit(w, f"weights.{skill}.{p}") for p, w in row.items()}
    return out


def _templates(raw: object) -> dict[str, dict[str, str]]:
    shape = "recipe field 'templates' must be a map {skill: {provider: template name}}"
    if not isinstance(raw, dict):
        raise RecipeError(shape)
    out: dict[str, dict[str, str]] = {}
    for skill, row in raw.items():
        if skill == FALLBACK:
            raise RecipeError("recipe field 'templates.*': templates belong to a probe suite's "
                              "skill and no suite has skill '*'; name the skill (like 'math')")
        if not isinstance(skill, str) or not SUITE_NAME.match(skill):
            raise RecipeError(f"recipe field 'templates': the skill {skill!r} must be lowercase "
                              "letters, digits, '_', '-' or '.', as probe suites name them")
        if not isinstance(row, dict):
            raise RecipeError(f"{shape}; 'templates.{skill}' is not a map")
        out[skill] = {}
        for provider, name in row.items():
            if not isinstance(provider, str) or not provider:
                raise RecipeError(f"recipe field 'templates.{skill}': provider names must be "
                                  f"non-empty strings, got {provider!r}")
            if not isinstance(name, str) or not SUITE_NAME.match(name):
                raise RecipeError(f"recipe field 'templates.{skill}.{provider}' must be a "
                                  "template name (lowercase letters, digits, '_', '-' or '.'), "
                                  f"got {name!r}")
            out[skill][provider] = name
    return out


def _unit(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise RecipeError(f"recipe field {where!r} must be a number in [0, 1], got {value!r}")
    return float(value)


def _opt_float(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecipeError(f"recipe field {where!r} must be a number")
    return float(value)


def _opt_int(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecipeError(f"recipe field {where!r} must be an integer")
    return value
