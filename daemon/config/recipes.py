"""``[recipes.<name>]`` tables: what a recipe's first version is made from.

A table is converted to :class:`RecipeTable`, whose fields are typed with the
recipe model's own types (:mod:`alchemist.answers.recipes`: the strategy, the
params, the weight and template maps), so the schema layer names every bad key
by its path. What is left here is what only the config knows: the configured
providers, and the config's cap on exploration.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence, Set
from typing import Any

import msgspec

from alchemist.answers.extract import AnswerSpec
from alchemist.answers.recipes import (
    DEFAULT_PARAMS,
    FALLBACK,
    Params,
    Recipe,
    Strategy,
    Templates,
    Weights,
)
from alchemist.daemon.config.sections import ConfigError, Section, checked

#: names of providers and recipes
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: the config keeps a recipe's exploration to half its requests (a recipe document may say more)
_MAX_EXPLORE = 0.5


class RecipeTable(Section, frozen=True):
    """A ``[recipes.<name>]`` table as written (its name is the table's key)."""

    strategy: Strategy = "vote"
    #: an extraction spec: ``"number"``, ``"json:answer"``, ``{kind = "regex", pattern = ...}``
    answer: str | dict[str, Any] | None = None
    weights: Weights = msgspec.field(default_factory=dict)
    params: Params = DEFAULT_PARAMS
    templates: Templates = msgspec.field(default_factory=dict)


_WRITTEN = RecipeTable()


class RecipeConfig(msgspec.Struct, frozen=True):
    """The initial recipe of a ``[recipes.<name>]`` table, checked against the providers."""

    name: str
    strategy: str = _WRITTEN.strategy
    answer: AnswerSpec = AnswerSpec()
    weights: Mapping[str, Mapping[str, float]] = {}
    params: Params = _WRITTEN.params
    #: ``{skill: {provider: template name}}``: the template of each provider's requests
    templates: Mapping[str, Mapping[str, str]] = {}

    @property
    def min_weight(self) -> float:
        """Providers whose effective weight is below this are not called."""
        return self.params.min_weight

    @property
    def explore(self) -> float:
        """The share of requests that call every provider."""
        return self.params.explore

    def initial(self, providers: Sequence[str]) -> Recipe:
        """Version 1 of this recipe: uniform weights unless the config gives them."""
        weights = {skill: dict(row) for skill, row in self.weights.items()}
        fallback = weights.setdefault(FALLBACK, {})
        for p in providers:
            fallback.setdefault(p, 1.0)
        return Recipe(name=self.name, version=1, strategy=self.strategy, answer=self.answer,
                      weights=weights, min_weight=self.min_weight, explore=self.explore,
                      first_wave=self.params.first_wave, stop_margin=self.params.stop_margin,
                      reason="init", templates={s: dict(row) for s, row in self.templates.items()})


def recipe_config(name: str, raw: object, providers: Set[str]) -> RecipeConfig:
    """The recipe ``[recipes.<name>]`` describes; ``providers`` are the configured names."""
    where = f"recipes.{name}"
    if not NAME.match(name):
        raise ConfigError(f"{where}: a recipe name must be 1-64 letters, digits, '.', '_' or '-'")
    templates = raw.get("templates") if isinstance(raw, Mapping) else None
    if isinstance(templates, Mapping) and FALLBACK in templates:
        # the schema would only say '*' is no skill name; say why there is none
        raise ConfigError(f"{where}.templates.*: templates belong to a probe suite's skill and no "
                          "suite has skill '*'; name the skill (like 'math')")
    table = checked(raw, RecipeTable, where)
    if table.params.explore > _MAX_EXPLORE:
        raise ConfigError(f"{where}.params.explore must be a number <= {_MAX_EXPLORE} in the config, "
                          f"got {table.params.explore}")
    try:
        answer = AnswerSpec() if table.answer is None else AnswerSpec.parse(table.answer)
    except ValueError as exc:
        raise ConfigError(f"{where}.answer: {exc}") from None
    _known_providers(table.templates, f"{where}.templates", providers)
    if table.templates and answer.kind == "text":
        raise ConfigError(f"{where}.templates: templates need an answer extraction other than "
                          "text (a template may change the reply's format, and whole texts in "
                          "another format never agree); set answer = \"number\", \"choice\", "
                          "\"json:<field>\" or a regex")
    _known_providers(table.weights, f"{where}.weights", providers)
    return RecipeConfig(name=name, strategy=table.strategy, answer=answer, params=table.params,
                        weights=table.weights, templates=table.templates)


def _known_providers(rows: Mapping[str, Mapping[str, object]], where: str,
                     providers: Set[str]) -> None:
    """Every ``{skill: {provider: ...}}`` entry names a configured provider."""
    for skill, row in rows.items():
        for provider in row:
            if provider not in providers:
                raise ConfigError(f"{where}.{skill}.{provider} names no configured provider; "
                                  f"providers are: {', '.join(sorted(providers)) or '(none)'}")
