"""Configuration: TOML in, frozen typed objects out, refused early and clearly.

Every key is read through a :class:`_Section`, which knows the key's dotted
path, so a bad value says exactly where it is and what is accepted, and a key
nobody read is refused as unknown (a typo never silently falls back to a
default). ``alchemist config init`` writes :func:`default_document`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from alchemist.adapters import ADAPTERS
from alchemist.answers.extract import AnswerSpec
from alchemist.answers.recipes import FALLBACK, SUITE_NAME, Recipe

T = TypeVar("T")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SUBJECT_TOKEN = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
#: skills and template names, as probe suites spell them (``probes/suites.py``)
#: when the daemon renders requests with the recipe's templates (``alchemist.probes.apply_templates``)
APPLY_TEMPLATES = ("hinted", "routed", "never")


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a breaker opens and how long it stays open."""

    consecutive: int = 5
    window: int = 50
    min_volume: int = 20
    failure_share: float = 0.5
    cooldown_s: float = 30.0


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the key's path."""


class _Section:
    """Typed reads from one TOML table, remembering which keys were used."""

    def __init__(self, raw: object, path: str) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must be a table, got {type(raw).__name__}")
        self.raw: dict[str, Any] = raw
        self.path = path
        self._used: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, kinds: tuple[type, ...], what: str, default: object) -> Any:
        self._used.add(key)
        if key not in self.raw:
            return default
        value = self.raw[key]
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigError(f"{self._key(key)} must be {what}, got a boolean")
        if not isinstance(value, kinds):
            raise ConfigError(f"{self._key(key)} must be {what}, got {value!r}")
        return value

    def string(self, key: str, default: str) -> str:
        value: str = self._get(key, (str,), "a string", default)
        return value

    def opt_str(self, key: str) -> str | None:
        value: str | None = self._get(key, (str,), "a string", None)
        return value or None

    def boolean(self, key: str, default: bool) -> bool:
        value: bool = self._get(key, (bool,), "true or false", default)
        return value

    def integer(self, key: str, default: int, lo: int, hi: int | None = None) -> int:
        value: int = self._get(key, (int,), "an integer", default)
        self._check_range(key, value, lo, hi)
        return value

    def number(self, key: str, default: float, lo: float, hi: float | None = None) -> float:
        value = float(self._get(key, (int, float), "a number", default))
        self._check_range(key, value, lo, hi)
        return value

    def opt_float(self, key: str, lo: float) -> float | None:
        if key not in self.raw:
            self._used.add(key)
            return None
        return self.number(key, 0.0, lo)

    def choice(self, key: str, default: str, options: tuple[str, ...]) -> str:
        value = self.string(key, default)
        if value not in options:
            raise ConfigError(f"{self._key(key)} must be one of {', '.join(options)}; got {value!r}")
        return value

    def table(self, key: str) -> _Section:
        self._used.add(key)
        return _Section(self.raw.get(key, {}), self._key(key))

    def _check_range(self, key: str, value: float, lo: float, hi: float | None) -> None:
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise ConfigError(f"{self._key(key)} must be {bound}, got {value}")

    def done(self) -> None:
        """Refuse any key that was not read."""
        unknown = sorted(set(self.raw) - self._used)
        if unknown:
            known = ", ".join(sorted(self._used)) or "(none)"
            raise ConfigError(
                f"unknown key {self._key(unknown[0])!s}; keys accepted here: {known}")


@dataclass(frozen=True, slots=True)
class NatsConfig:
    """How to reach NATS: ``url = "embedded"`` starts a private nats-server."""

    url: str = "embedded"
    port: int = 0
    name: str = "alchemist"
    user: str | None = None
    password: str | None = None
    password_env: str | None = None
    token: str | None = None
    token_env: str | None = None
    creds: str | None = None
    nkey_seed: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_handshake_first: bool = False

    @property
    def embedded(self) -> bool:
        return self.url == "embedded"

    def __repr__(self) -> str:  # never show credentials
        return f"NatsConfig(url={self.url!r}, port={self.port}, name={self.name!r})"


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Request handling limits."""

    subject_prefix: str = "alchemist"
    max_concurrency: int = 256
    default_deadline_ms: int = 30_000
    max_deadline_ms: int = 120_000
    max_payload: int = 1 << 20
    drain_timeout_s: float = 10.0
    log_level: str = "info"


@dataclass(frozen=True, slots=True)
class ExperienceConfig:
    """Bounds of the experience journal (JetStream) and its in-memory index."""

    max_records: int = 50_000
    stream_max_bytes: int = 256 << 20
    max_age_days: float = 30.0


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One ``[[providers]]`` entry; the key is resolved later, never stored here."""

    name: str
    kind: str
    base_url: str
    model: str
    api_key_env: str | None = None
    api_key_file: str | None = None
    api_key_credential: str | None = None
    timeout_s: float = 30.0
    max_retries: int = 2
    max_concurrency: int = 16
    rate_per_s: float | None = None
    price_input: float | None = None
    price_output: float | None = None
    logprobs: bool = False


@dataclass(frozen=True, slots=True)
class RecipeConfig:
    """The initial recipe of a ``[recipes.<name>]`` table."""

    name: str
    strategy: str = "vote"
    answer: AnswerSpec = AnswerSpec()
    weights: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    min_weight: float = 0.05
    explore: float = 0.0
    #: ``{skill: {provider: template name}}``: the template of each provider's requests
    templates: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def initial(self, providers: Sequence[str]) -> Recipe:
        """Version 1 of this recipe: uniform weights unless the config gives them."""
        weights = {skill: dict(row) for skill, row in self.weights.items()}
        fallback = weights.setdefault(FALLBACK, {})
        for p in providers:
            fallback.setdefault(p, 1.0)
        return Recipe(name=self.name, version=1, strategy=self.strategy, answer=self.answer,
                      weights=weights, min_weight=self.min_weight, explore=self.explore,
                      reason="init", templates={s: dict(row) for s, row in self.templates.items()})


@dataclass(frozen=True, slots=True)
class EvolverConfig:
    """The online learning loop (see README, "How recipes learn")."""

    enabled: bool = True
    population: int = 32
    generations: int = 10
    min_new_ratings: int = 20
    interval_s: float = 30.0
    min_ratings: int = 30
    holdout_share: float = 0.3
    margin: float = 0.005
    z: float = 2.33
    noise: float = 0.1
    cost_weight: float = 0.02
    shrink_k: float = 20.0
    user_cap: int = 200
    user_window_s: float = 3600.0


def _breaker(s: _Section) -> BreakerPolicy:
    cfg = BreakerPolicy(
        consecutive=s.integer("consecutive", 5, 1), window=s.integer("window", 50, 1, 10_000),
        min_volume=s.integer("min_volume", 20, 1), failure_share=s.number("failure_share", 0.5, 0.01, 1.0),
        cooldown_s=s.number("cooldown_s", 30.0, 0.01),
    )
    s.done()
    return cfg


@dataclass(frozen=True, slots=True)
class ProbesConfig:
    """The prober (see README, "Probes"): off unless enabled; it spends provider calls."""

    enabled: bool = False
    suites_dir: str | None = None
    interval_s: float = 600.0
    first_run_s: float = 5.0
    jitter: float = 0.2
    sample: int = 8
    timeout_s: float = 60.0
    calls_per_hour: int = 200
    cost_per_day: float = 1.0
    weight: float = 3.0
    #: the share of probe asks, per provider, sent with another template than the recipe's
    template_explore: float = 0.25
    #: which requests get the recipe's templates: "hinted" (a client-given skill),
    #: "routed" (also a skill the router assigned) or "never"
    apply_templates: str = "hinted"


def _probes(s: _Section) -> ProbesConfig:
    cfg = ProbesConfig(
        enabled=s.boolean("enabled", False), suites_dir=s.opt_str("suites_dir"),
        interval_s=s.number("interval_s", 600.0, 1.0), first_run_s=s.number("first_run_s", 5.0, 0.0),
        jitter=s.number("jitter", 0.2, 0.0, 1.0), sample=s.integer("sample", 8, 1, 10_000),
        timeout_s=s.number("timeout_s", 60.0, 0.1), calls_per_hour=s.integer("calls_per_hour", 200, 1),
        cost_per_day=s.number("cost_per_day", 1.0, 0.0), weight=s.number("weight", 3.0, 0.0, 100.0),
        template_explore=s.number("template_explore", 0.25, 0.0, 1.0),
        apply_templates=s.choice("apply_templates", "hinted", APPLY_TEMPLATES),
    )
    s.done()
    return cfg


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """The Prometheus endpoint (off by default; loopback by default)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9464


def _metrics(s: _Section) -> MetricsConfig:
    cfg = MetricsConfig(enabled=s.boolean("enabled", False), host=s.string("host", "127.0.0.1"),
                        port=s.integer("port", 9464, 0, 65535))
    s.done()
    return cfg


@dataclass(frozen=True, slots=True)
class Config:
    """The whole daemon configuration."""

    nats: NatsConfig
    service: ServiceConfig
    state_dir: Path
    experience: ExperienceConfig
    providers: tuple[ProviderConfig, ...]
    recipes: Mapping[str, RecipeConfig]
    evolver: EvolverConfig
    breaker: BreakerPolicy = BreakerPolicy()
    metrics: MetricsConfig = MetricsConfig()
    probes: ProbesConfig = ProbesConfig()
    source: str = "<defaults>"

    def provider(self, name: str) -> ProviderConfig:
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(name)


def _nats(s: _Section) -> NatsConfig:
    cfg = NatsConfig(
        url=s.string("url", "embedded"), port=s.integer("port", 0, 0, 65535),
        name=s.string("name", "alchemist"),
        user=s.opt_str("user"), password=s.opt_str("password"), password_env=s.opt_str("password_env"),
        token=s.opt_str("token"), token_env=s.opt_str("token_env"), creds=s.opt_str("creds"),
        nkey_seed=s.opt_str("nkey_seed"), tls_ca=s.opt_str("tls_ca"), tls_cert=s.opt_str("tls_cert"),
        tls_key=s.opt_str("tls_key"), tls_handshake_first=s.boolean("tls_handshake_first", False),
    )
    s.done()
    if not cfg.embedded and not re.match(r"^(nats|tls|ws|wss)://", cfg.url.split(",")[0].strip()):
        raise ConfigError(f'nats.url must be "embedded" or a nats:// or tls:// URL, got {cfg.url!r}')
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise ConfigError("nats.tls_cert and nats.tls_key must be given together")
    return cfg


def _service(s: _Section) -> ServiceConfig:
    cfg = ServiceConfig(
        subject_prefix=s.string("subject_prefix", "alchemist"),
        max_concurrency=s.integer("max_concurrency", 256, 1, 100_000),
        default_deadline_ms=s.integer("default_deadline_ms", 30_000, 100),
        max_deadline_ms=s.integer("max_deadline_ms", 120_000, 100),
        max_payload=s.integer("max_payload", 1 << 20, 1024, 64 << 20),
        drain_timeout_s=s.number("drain_timeout_s", 10.0, 0.1, 600),
        log_level=s.choice("log_level", "info", ("debug", "info", "warning", "error")),
    )
    s.done()
    if not _SUBJECT_TOKEN.match(cfg.subject_prefix):
        raise ConfigError(f"service.subject_prefix must be a NATS subject like 'alchemist' or "
                          f"'team.alchemist' (letters, digits, _ and -), got {cfg.subject_prefix!r}")
    if cfg.default_deadline_ms > cfg.max_deadline_ms:
        raise ConfigError("service.default_deadline_ms must not exceed service.max_deadline_ms")
    return cfg


def _provider(s: _Section, index: int) -> ProviderConfig:
    for required in ("name", "kind", "base_url", "model"):
        if required not in s.raw:
            raise ConfigError(f"{s.path} is missing the required key {required!r} "
                              f"(a provider needs name, kind, base_url and model)")
    kinds = tuple(sorted(ADAPTERS))
    cfg = ProviderConfig(
        name=s.string("name", ""), kind=s.choice("kind", "openai", kinds), base_url=s.string("base_url", ""),
        model=s.string("model", ""), api_key_env=s.opt_str("api_key_env"),
        api_key_file=s.opt_str("api_key_file"), api_key_credential=s.opt_str("api_key_credential"),
        timeout_s=s.number("timeout_s", 30.0, 0.01, 3600), max_retries=s.integer("max_retries", 2, 0, 10),
        max_concurrency=s.integer("max_concurrency", 16, 1, 10_000),
        rate_per_s=s.opt_float("rate_per_s", 0.001),
        price_input=s.opt_float("price_input", 0.0), price_output=s.opt_float("price_output", 0.0),
        logprobs=s.boolean("logprobs", False),
    )
    s.done()
    if not _NAME.match(cfg.name) or cfg.name == "*":
        raise ConfigError(f"{s.path}.name must be 1-64 letters, digits, '.', '_' or '-', "
                          f"got {cfg.name!r}")
    schemes = ("nats://", "tls://") if cfg.kind == "alchemist" else ("http://", "https://")
    if not cfg.base_url.startswith(schemes):
        raise ConfigError(f"{s.path}.base_url must start with {' or '.join(schemes)} for kind "
                          f"{cfg.kind!r}, got {cfg.base_url!r}")
    if sum(x is not None for x in (cfg.api_key_env, cfg.api_key_file, cfg.api_key_credential)) > 1:
        raise ConfigError(f"{s.path}: give at most one of api_key_env, api_key_file, "
                          "api_key_credential")
    return cfg


def _recipe(name: str, s: _Section, providers: set[str]) -> RecipeConfig:
    answer_raw = s.raw.get("answer", {"kind": "text"})
    s._used.add("answer")  # AnswerSpec.parse checks its own keys
    try:
        answer = AnswerSpec.parse(answer_raw)
    except ValueError as exc:
        raise ConfigError(f"{s.path}.answer: {exc}") from None
    weights: dict[str, dict[str, float]] = {}
    wsec = s.table("weights")
    for skill in list(wsec.raw):
        row = wsec.table(skill)
        weights[skill] = {}
        for provider in list(row.raw):
            _known_provider(row, provider, providers)
            weights[skill][provider] = row.number(provider, 1.0, 0.0, 1.0)
        row.done()
    wsec.done()
    templates = _templates(s.table("templates"), providers)
    if templates and answer.kind == "text":
        raise ConfigError(f"{s.path}.templates: templates need an answer extraction other than "
                          "text (a template may change the reply's format, and whole texts in "
                          "another format never agree); set answer = \"number\", \"choice\", "
                          "\"json:<field>\" or a regex")
    params = s.table("params")
    cfg = RecipeConfig(
        name=name, strategy=s.choice("strategy", "vote", ("vote", "select")), answer=answer,
        weights=weights, min_weight=params.number("min_weight", 0.05, 0.0, 1.0),
        explore=params.number("explore", 0.0, 0.0, 0.5), templates=templates,
    )
    params.done()
    s.done()
    return cfg


def _known_provider(row: _Section, provider: str, providers: set[str]) -> None:
    if provider not in providers:
        raise ConfigError(f"{row.path}.{provider} names no configured provider; "
                          f"providers are: {', '.join(sorted(providers)) or '(none)'}")


def _templates(tsec: _Section, providers: set[str]) -> dict[str, dict[str, str]]:
    """``[recipes.<name>.templates.<skill>]`` tables of ``provider = "template name"``."""
    templates: dict[str, dict[str, str]] = {}
    for skill in list(tsec.raw):
        if skill == "*":
            raise ConfigError(f"{tsec.path}.*: templates belong to a probe suite's skill and no "
                              "suite has skill '*'; name the skill (like 'math')")
        if not SUITE_NAME.match(skill):
            raise ConfigError(f"{tsec.path}.{skill}: a skill must be lowercase letters, digits, "
                              "'_', '-' or '.', as probe suites name them")
        row = tsec.table(skill)
        templates[skill] = {}
        for provider in list(row.raw):
            _known_provider(row, provider, providers)
            name = row.string(provider, "")
            if not SUITE_NAME.match(name):
                raise ConfigError(f"{row.path}.{provider} must be a template name (lowercase "
                                  f"letters, digits, '_', '-' or '.'), got {name!r}")
            templates[skill][provider] = name
        row.done()
    tsec.done()
    return templates


def _evolver(s: _Section) -> EvolverConfig:
    cfg = EvolverConfig(
        enabled=s.boolean("enabled", True), population=s.integer("population", 32, 4, 4096),
        generations=s.integer("generations", 10, 1, 1000),
        min_new_ratings=s.integer("min_new_ratings", 20, 1),
        interval_s=s.number("interval_s", 30.0, 0.05), min_ratings=s.integer("min_ratings", 30, 1),
        holdout_share=s.number("holdout_share", 0.3, 0.05, 0.9), margin=s.number("margin", 0.005, 0.0, 1.0),
        z=s.number("z", 2.33, 0.0, 10.0), noise=s.number("noise", 0.1, 0.0, 0.49),
        cost_weight=s.number("cost_weight", 0.02, 0.0, 10.0), shrink_k=s.number("shrink_k", 20.0, 0.0),
        user_cap=s.integer("user_cap", 200, 1), user_window_s=s.number("user_window_s", 3600.0, 1.0),
    )
    s.done()
    return cfg


def default_state_dir() -> Path:
    """``$STATE_DIRECTORY`` under systemd, else ``$XDG_STATE_HOME/alchemist``."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "alchemist"


def parse_config(raw: Mapping[str, Any], source: str = "<memory>") -> Config:
    """Validate a parsed TOML document into a :class:`Config` (raises ConfigError)."""
    top = _Section(dict(raw), "")
    nats = _nats(top.table("nats"))
    service = _service(top.table("service"))
    state = top.table("state")
    state_dir = Path(state.string("dir", str(default_state_dir()))).expanduser()
    state.done()
    exp = top.table("experience")
    experience = ExperienceConfig(
        max_records=exp.integer("max_records", 50_000, 100, 10_000_000),
        stream_max_bytes=exp.integer("stream_max_bytes", 256 << 20, 1 << 20),
        max_age_days=exp.number("max_age_days", 30.0, 0.01),
    )
    exp.done()
    top._used.add("providers")
    raw_providers = top.raw.get("providers", [])
    if not isinstance(raw_providers, list):
        raise ConfigError("providers must be an array of tables: [[providers]]")
    providers = tuple(_provider(_Section(p, f"providers[{i}]"), i)
                      for i, p in enumerate(raw_providers))
    seen: set[str] = set()
    for p in providers:
        if p.name in seen:
            raise ConfigError(f"providers: the name {p.name!r} is used twice; names must be unique")
        seen.add(p.name)
    rsec = top.table("recipes")
    recipes = {name: _recipe(name, rsec.table(name), seen) for name in list(rsec.raw)}
    rsec.done()
    if "default" not in recipes:
        recipes["default"] = RecipeConfig(name="default")
    for name in recipes:
        if not _NAME.match(name):
            raise ConfigError(f"recipes.{name}: a recipe name must be 1-64 letters, digits, "
                              "'.', '_' or '-'")
    evolver = _evolver(top.table("evolver"))
    breaker = _breaker(top.table("breaker"))
    metrics = _metrics(top.table("metrics"))
    probes = _probes(top.table("probes"))
    top.done()
    return Config(nats=nats, service=service, state_dir=state_dir, experience=experience,
                  providers=providers, recipes=recipes, evolver=evolver, breaker=breaker,
                  metrics=metrics, probes=probes, source=source)


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
    """A working config to start from: embedded NATS and two local providers."""
    return {
        "nats": {"url": "embedded", "port": 4222},
        "service": {"subject_prefix": "alchemist", "max_concurrency": 256,
                    "default_deadline_ms": 30_000, "max_payload": 1 << 20},
        "state": {"dir": str(default_state_dir())},
        "providers": [
            {"name": "local-a", "kind": "openai", "base_url": "http://127.0.0.1:8080/v1",
             "model": "model-a", "timeout_s": 20.0},
            {"name": "openai", "kind": "openai", "base_url": "https://api.openai.com/v1",
             "model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY", "timeout_s": 30.0,
             "price_input": 0.15, "price_output": 0.6},
        ],
        "recipes": {"default": {"strategy": "vote", "answer": {"kind": "text"},
                                "params": {"min_weight": 0.05, "explore": 0.05}}},
        "evolver": {"enabled": True, "population": 32, "min_ratings": 30},
    }
