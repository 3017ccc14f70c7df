"""``[recipes.<name>]`` tables: what a recipe's first version is made from.

A table is converted to :class:`RecipeTable` (its shape and defaults; the
params are :class:`alchemist.answers.recipes.Params`, their one definition),
then resolved into a :class:`RecipeConfig`. Weights and templates are maps
keyed by skill and provider names, which msgspec does not name in its errors,
so they are read key by key here and every message names its full path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence, Set
from typing import Any

import msgspec

from alchemist.answers.extract import AnswerSpec
from alchemist.answers.recipes import DEFAULT_PARAMS, FALLBACK, STRATEGIES, SUITE_NAME, Params, Recipe
from alchemist.daemon.config.sections import ConfigError, Section, Unit, checked

#: names of providers and recipes
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: the config keeps a recipe's exploration to half its requests (a recipe document may say more)
_MAX_EXPLORE = 0.5


class RecipeTable(Section, frozen=True):
    """A ``[recipes.<name>]`` table as written (its name is the table's key)."""

    strategy: str = STRATEGIES[0]
    #: an extraction spec: ``"number"``, ``"json:answer"``, ``{kind = "regex", pattern = ...}``
    answer: str | dict[str, Any] | None = None
    #: ``{skill: {provider: weight}}``, weights from 0 to 1
    weights: dict[str, Any] = msgspec.field(default_factory=dict)
    params: Params = DEFAULT_PARAMS
    #: ``{skill: {provider: template name}}``
    templates: dict[str, Any] = msgspec.field(default_factory=dict)


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
                      reason="init", templates={s: dict(row) for s, row in self.templates.items()})


def recipe_config(name: str, raw: object, providers: Set[str]) -> RecipeConfig:
    """The recipe ``[recipes.<name>]`` describes; ``providers`` are the configured names."""
    where = f"recipes.{name}"
    if not NAME.match(name):
        raise ConfigError(f"{where}: a recipe name must be 1-64 letters, digits, '.', '_' or '-'")
    table = checked(raw, RecipeTable, where)
    if table.strategy not in STRATEGIES:
        raise ConfigError(f"{where}.strategy must be one of {', '.join(STRATEGIES)}; "
                          f"got {table.strategy!r}")
    if table.params.explore > _MAX_EXPLORE:
        raise ConfigError(f"{where}.params.explore must be a number <= {_MAX_EXPLORE} in the config, "
                          f"got {table.params.explore}")
    try:
        answer = AnswerSpec() if table.answer is None else AnswerSpec.parse(table.answer)
    except ValueError as exc:
        raise ConfigError(f"{where}.answer: {exc}") from None
    templates = _templates(table.templates, f"{where}.templates", providers)
    if templates and answer.kind == "text":
        raise ConfigError(f"{where}.templates: templates need an answer extraction other than "
                          "text (a template may change the reply's format, and whole texts in "
                          "another format never agree); set answer = \"number\", \"choice\", "
                          "\"json:<field>\" or a regex")
    return RecipeConfig(name=name, strategy=table.strategy, answer=answer, params=table.params,
                        weights=_weights(table.weights, f"{where}.weights", providers),
                        templates=templates)


def _weights(raw: Mapping[str, object], where: str, providers: Set[str]) -> dict[str, dict[str, float]]:
    """``[recipes.<name>.weights.<skill>]`` tables of ``provider = weight``."""
    weights: dict[str, dict[str, float]] = {}
    for skill, row in raw.items():
        weights[skill] = {}
        for provider, value in _table(row, f"{where}.{skill}").items():
            path = f"{where}.{skill}.{provider}"
            _known_provider(path, provider, providers)
            weights[skill][provider] = checked(value, Unit, path)
    return weights


def _templates(raw: Mapping[str, object], where: str, providers: Set[str]) -> dict[str, dict[str, str]]:
    """``[recipes.<name>.templates.<skill>]`` tables of ``provider = "template name"``."""
    templates: dict[str, dict[str, str]] = {}
    for skill, row in raw.items():
        if skill == FALLBACK:
            raise ConfigError(f"{where}.*: templates belong to a probe suite's skill and no "
                              "suite has skill '*'; name the skill (like 'math')")
        if not SUITE_NAME.match(skill):
            raise ConfigError(f"{where}.{skill}: a skill must be lowercase letters, digits, "
                              "'_', '-' or '.', as probe suites name them")
        templates[skill] = {}
        for provider, value in _table(row, f"{where}.{skill}").items():
            path = f"{where}.{skill}.{provider}"
            _known_provider(path, provider, providers)
            name = checked(value, str, path)
            if not SUITE_NAME.match(name):
                raise ConfigError(f"{path} must be a template name (lowercase letters, digits, "
                                  f"'_', '-' or '.'), got {name!r}")
            templates[skill][provider] = name
    return templates


def _table(raw: object, where: str) -> dict[str, object]:
    table: dict[str, object] = checked(raw, dict[str, object], where)
    return table


def _known_provider(path: str, provider: str, providers: Set[str]) -> None:
    if provider not in providers:
        raise ConfigError(f"{path} names no configured provider; "
                          f"providers are: {', '.join(sorted(providers)) or '(none)'}")
