"""The whole file: TOML in, one frozen :class:`Config` out, refused early and clearly.

:class:`Document` is the file as written; :func:`parse_config` converts it in
one pass (``alchemist.schema``), then checks what needs more than one key:
provider kinds and names, recipes against the providers. Every message names
the key's path. ``alchemist config init`` writes :func:`default_document`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from alchemist.adapters import ADAPTERS, ProviderOptions
from alchemist.answers.recipes import DEFAULT_PARAMS
from alchemist.daemon.config.recipes import NAME, RecipeConfig, recipe_config
from alchemist.daemon.config.sections import (
    BreakerPolicy,
    ConfigError,
    EvolverConfig,
    ExperienceConfig,
    HttpConfig,
    MetricsConfig,
    NatsConfig,
    ProbesConfig,
    Section,
    ServiceConfig,
    StateTable,
    checked,
)

_KEY_SOURCES = ("api_key_env", "api_key_file", "api_key_credential")


class Document(Section, frozen=True):
    """``alchemist.toml`` as written: every top-level table, each with its defaults."""

    nats: NatsConfig = NatsConfig()
    service: ServiceConfig = ServiceConfig()
    state: StateTable = StateTable()
    experience: ExperienceConfig = ExperienceConfig()
    providers: tuple[ProviderOptions, ...] = ()
    #: ``{name: table}``, each table read by :func:`recipe_config` (which names the recipe)
    recipes: dict[str, Any] = msgspec.field(default_factory=dict)
    evolver: EvolverConfig = EvolverConfig()
    breaker: BreakerPolicy = BreakerPolicy()
    metrics: MetricsConfig = MetricsConfig()
    probes: ProbesConfig = ProbesConfig()
    http: HttpConfig = HttpConfig()


class Config(msgspec.Struct, frozen=True):
    """The whole daemon configuration, checked."""

    nats: NatsConfig
    service: ServiceConfig
    state_dir: Path
    experience: ExperienceConfig
    providers: tuple[ProviderOptions, ...]
    recipes: Mapping[str, RecipeConfig]
    evolver: EvolverConfig
    breaker: BreakerPolicy
    metrics: MetricsConfig
    probes: ProbesConfig
    http: HttpConfig = HttpConfig()
    source: str = "<defaults>"

    def provider(self, name: str) -> ProviderOptions:
        """The provider called ``name``; ``KeyError`` if none is."""
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(name)


def default_state_dir() -> Path:
    """``$STATE_DIRECTORY`` under systemd, else ``$XDG_STATE_HOME/alchemist``."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "alchemist"


def parse_config(raw: Mapping[str, Any], source: str = "<memory>") -> Config:
    """Validate a parsed TOML document into a :class:`Config` (raises ConfigError)."""
    doc = checked(dict(raw), Document, "")
    names = _provider_names(doc.providers)
    recipes = {name: recipe_config(name, table, names) for name, table in doc.recipes.items()}
    recipes.setdefault("default", RecipeConfig(name="default"))
    state_dir = Path(doc.state.dir or default_state_dir()).expanduser()
    return Config(nats=doc.nats, service=doc.service, state_dir=state_dir,
                  experience=doc.experience, providers=doc.providers, recipes=recipes,
                  evolver=doc.evolver, breaker=doc.breaker, metrics=doc.metrics,
                  probes=doc.probes, http=doc.http, source=source)


def _provider_names(providers: Sequence[ProviderOptions]) -> set[str]:
    """Check every provider's kind, name, URL and key source; their names, each once."""
    seen: set[str] = set()
    for index, p in enumerate(providers):
        where = f"providers[{index}]"
        if p.kind not in ADAPTERS:
            raise ConfigError(f"{where}.kind must be one of {', '.join(sorted(ADAPTERS))}; "
                              f"got {p.kind!r}")
        if not NAME.match(p.name) or p.name == "*":
            raise ConfigError(f"{where}.name must be 1-64 letters, digits, '.', '_' or '-', "
                              f"got {p.name!r}")
        schemes = ("nats://", "tls://") if p.kind == "alchemist" else ("http://", "https://")
        if not p.base_url.startswith(schemes):
            raise ConfigError(f"{where}.base_url must start with {' or '.join(schemes)} for kind "
                              f"{p.kind!r}, got {p.base_url!r}")
        given = [key for key in _KEY_SOURCES if getattr(p, key) is not None]
        for key in given:
            if not getattr(p, key):
                raise ConfigError(f"{where}.{key} must not be empty (leave it out for a keyless "
                                  "provider)")
        if len(given) > 1:
            raise ConfigError(f"{where}: give at most one of {', '.join(_KEY_SOURCES)}")
        if p.name in seen:
            raise ConfigError(f"providers: the name {p.name!r} is used twice; names must be unique")
        seen.add(p.name)
    return seen


def load_config(path: Path | None) -> Config:
    """Read and validate a TOML file; ``None`` gives the defaults (no providers)."""
    if path is None:
        return parse_config({}, "<defaults>")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist "
                          f"(write one with: alchemist config init {path})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        return parse_config(raw, str(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def default_document() -> dict[str, Any]:
    """A working config to start from: embedded NATS and two local providers.

    Values are the Structs' defaults, except what a starter file should show
    changed: a fixed NATS port, example providers, and a little exploration.
    """
    local = ProviderOptions(name="local-a", kind="openai", base_url="http://127.0.0.1:8080/v1",
                            model="model-a", timeout_s=20.0)
    hosted = ProviderOptions(name="openai", kind="openai", base_url="https://api.openai.com/v1",
                             model="gpt-4o-mini", api_key_env="OPENAI_API_KEY",
                             price_input=0.15, price_output=0.6)
    recipe = RecipeConfig(name="default", params=msgspec.structs.replace(DEFAULT_PARAMS, explore=0.05))
    return {
        "nats": {"url": NatsConfig().url, "port": 4222},
        "service": _pick(ServiceConfig(), "subject_prefix", "max_concurrency", "default_deadline_ms",
                         "max_payload"),
        "state": {"dir": str(default_state_dir())},
        "providers": [_pick(p, *ProviderOptions.__struct_fields__) for p in (local, hosted)],
        "recipes": {"default": {"strategy": recipe.strategy, "answer": recipe.answer.to_dict(),
                                "params": msgspec.to_builtins(recipe.params)}},
        "evolver": _pick(EvolverConfig(), "enabled", "population", "min_ratings"),
    }


def _pick(struct: msgspec.Struct, *names: str) -> dict[str, Any]:
    """``struct``'s ``names`` as TOML values (TOML has no null: None is left out)."""
    values = {name: getattr(struct, name) for name in names}
    return {name: value for name, value in values.items() if value is not None}
