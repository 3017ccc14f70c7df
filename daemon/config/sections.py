"""The fixed sections of ``alchemist.toml``: one msgspec Struct each.

Each Struct is the one definition of its section's keys, their ranges (as
``msgspec.Meta``), their choices (as ``Literal``) and their defaults (in the
field). ``alchemist.schema.convert`` refuses unknown keys and bad values with
the key's path; rules that tie two keys together live in ``__post_init__``
(the schema layer prefixes their message with the section's path).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal, TypeVar

import msgspec

from alchemist.optimizers import defaults as learning
from alchemist.schema import SchemaError, convert

T = TypeVar("T")

_SUBJECT_TOKEN = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_NATS_SCHEMES = re.compile(r"^(nats|tls|ws|wss)://")

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
#: a share or probability, 0 to 1
Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
#: when the daemon renders requests with the recipe's templates: "hinted" (a client-given
#: skill), "routed" (also a skill the router assigned) or "never"
ApplyTemplates = Literal["hinted", "routed", "never"]


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the key's path."""


def checked(raw: object, kind: type[T], where: str) -> T:
    """``raw`` converted to ``kind``, or :class:`ConfigError` naming the key's path."""
    try:
        return convert(raw, kind, where=where)
    except SchemaError as exc:
        raise ConfigError(str(exc)) from None


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A config table: immutable, and a key nobody declared is refused (a typo never
    silently falls back to a default)."""


class NatsConfig(Section, frozen=True):
    """How to reach NATS: ``url = "embedded"`` starts a private nats-server."""

    url: str = "embedded"
    port: Port = 0
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
    #: copies of every stream and KV bucket the daemon creates (3 on a three-node cluster)
    replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1

    def __post_init__(self) -> None:
        if not self.embedded and not _NATS_SCHEMES.match(self.url.split(",")[0].strip()):
            raise ValueError(f'url must be "embedded" or a nats:// or tls:// URL, got {self.url!r}')
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key must be given together")

    @property
    def embedded(self) -> bool:
        """Whether the daemon starts its own nats-server."""
        return self.url == "embedded"

    def __repr__(self) -> str:  # never show credentials
        return f"NatsConfig(url={self.url!r}, port={self.port}, name={self.name!r})"


class ServiceConfig(Section, frozen=True):
    """Request handling limits."""

    subject_prefix: str = "alchemist"
    max_concurrency: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 256
    default_deadline_ms: Annotated[int, msgspec.Meta(ge=100)] = 30_000
    max_deadline_ms: Annotated[int, msgspec.Meta(ge=100)] = 120_000
    max_payload: Annotated[int, msgspec.Meta(ge=1024, le=64 << 20)] = 1 << 20
    drain_timeout_s: Annotated[float, msgspec.Meta(ge=0.1, le=600)] = 10.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: the daemon's event loop: "uvloop" (falls back to "asyncio", with a warning, where
    #: uvloop cannot be imported) or "asyncio"; read at start only
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"

    def __post_init__(self) -> None:
        if not _SUBJECT_TOKEN.match(self.subject_prefix):
            raise ValueError(f"subject_prefix must be a NATS subject like 'alchemist' or "
                             f"'team.alchemist' (letters, digits, _ and -), got {self.subject_prefix!r}")
        if self.default_deadline_ms > self.max_deadline_ms:
            raise ValueError("default_deadline_ms must not exceed max_deadline_ms")


class StateTable(Section, frozen=True):
    """``[state]``: where the daemon keeps its files (default: :func:`default_state_dir`)."""

    dir: str | None = None


class ExperienceConfig(Section, frozen=True):
    """Bounds of the experience journal (JetStream) and its in-memory index."""

    max_records: Annotated[int, msgspec.Meta(ge=100, le=10_000_000)] = 50_000
    stream_max_bytes: Annotated[int, msgspec.Meta(ge=1 << 20)] = 256 << 20
    max_age_days: Annotated[float, msgspec.Meta(ge=0.01)] = 30.0


class BreakerPolicy(Section, frozen=True):
    """When a breaker opens and how long it stays open."""

    consecutive: Annotated[int, msgspec.Meta(ge=1)] = 5
    window: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 50
    min_volume: Annotated[int, msgspec.Meta(ge=1)] = 20
    failure_share: Annotated[float, msgspec.Meta(ge=0.01, le=1.0)] = 0.5
    cooldown_s: Annotated[float, msgspec.Meta(ge=0.01)] = 30.0


class EvolverConfig(Section, frozen=True):
    """The online learning loop (see README, "How recipes learn").

    The learning knobs' defaults are the optimizers' own (:mod:`alchemist.optimizers.defaults`),
    not copies.
    """

    enabled: bool = True
    population: Annotated[int, msgspec.Meta(ge=4, le=4096)] = learning.POPULATION
    generations: Annotated[int, msgspec.Meta(ge=1, le=1000)] = learning.GENERATIONS
    #: a step is due at every ``min_new_ratings``-th evidence record (ratings and probe
    #: records) of a recipe, and learns from exactly the records up to it, in stream order
    min_new_ratings: Annotated[int, msgspec.Meta(ge=1)] = 20
    #: 0: off. Otherwise a step also runs on the records in hand when no new one came for
    #: this long: lower latency at low traffic, but what it learns from depends on timing
    interval_s: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0
    #: the steps' randomness: None draws fresh entropy; an integer makes the step at the
    #: n-th record of a recipe draw from (seed, recipe, n), whatever ran before it
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] | None = None
    min_ratings: Annotated[int, msgspec.Meta(ge=1)] = learning.MIN_RECORDS
    holdout_share: Annotated[float, msgspec.Meta(ge=0.05, le=0.9)] = learning.HOLDOUT_SHARE
    margin: Unit = learning.MARGIN
    z: Annotated[float, msgspec.Meta(ge=0.0, le=10.0)] = learning.Z
    noise: Annotated[float, msgspec.Meta(ge=0.0, le=0.49)] = learning.NOISE
    cost_weight: Annotated[float, msgspec.Meta(ge=0.0, le=10.0)] = learning.COST_WEIGHT
    shrink_k: Annotated[float, msgspec.Meta(ge=0.0)] = learning.SHRINK_K
    #: 0: off. N: once a recipe's evidence holds N ground-truth records (golden sets,
    #: probes), promote once, without the gate, the recipe fitted on them
    #: (:mod:`alchemist.optimizers.calibrate`): the operator's decision to trust them
    calibrate: Annotated[int, msgspec.Meta(ge=0)] = 0
    user_cap: Annotated[int, msgspec.Meta(ge=1)] = 200
    user_window_s: Annotated[float, msgspec.Meta(ge=1.0)] = 3600.0
    #: seconds a recipe's evolver lease lasts without renewal (renewed every third of it);
    #: 0: no lease, every instance learns every recipe (compare-and-set decides the writes)
    lease_s: Annotated[float, msgspec.Meta(ge=0.0, le=3600.0)] = 10.0

    def __post_init__(self) -> None:
        if 0 < self.lease_s < 1:
            raise ValueError(f"lease_s must be 0 (no lease) or at least 1 s, got {self.lease_s}")


class ProbesConfig(Section, frozen=True):
    """The prober (see README, "Probes"): off unless enabled; it spends provider calls."""

    enabled: bool = False
    suites_dir: str | None = None
    #: load the suites shipped with the package too (false: only those of suites_dir)
    shipped_suites: bool = True
    interval_s: Annotated[float, msgspec.Meta(ge=1.0)] = 600.0
    first_run_s: Annotated[float, msgspec.Meta(ge=0.0)] = 5.0
    jitter: Unit = 0.2
    sample: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 8
    timeout_s: Annotated[float, msgspec.Meta(ge=0.1)] = 60.0
    calls_per_hour: Annotated[int, msgspec.Meta(ge=1)] = 200
    cost_per_day: Annotated[float, msgspec.Meta(ge=0.0)] = 1.0
    weight: Annotated[float, msgspec.Meta(ge=0.0, le=100.0)] = 3.0
    #: the share of probe asks, per provider, sent with another template than the recipe's
    template_explore: Unit = 0.25
    #: which requests get the recipe's templates (see :data:`ApplyTemplates`)
    apply_templates: ApplyTemplates = "hinted"


class MetricsConfig(Section, frozen=True):
    """The Prometheus endpoint (off by default; loopback by default)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Port = 9464


class HttpConfig(Section, frozen=True):
    """The HTTP front door (OpenAI dialect and status page): off by default, loopback by default.

    API keys come from one source: ``api_keys_env`` (a variable holding keys
    separated by commas or whitespace), ``api_keys_file`` (one key a line) or
    ``api_keys_credential`` (a systemd credential of that layout). With none, the
    door is open: allowed only on a loopback address unless ``allow_open``.
    """

    enabled: bool = False
    listen: str = "127.0.0.1:8080"
    api_keys_env: str | None = None
    api_keys_file: str | None = None
    api_keys_credential: str | None = None
    allow_open: bool = False
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=64 << 20)] = 1 << 20
    max_concurrency: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 256

    def __post_init__(self) -> None:
        host, _ = split_listen(self.listen)
        given = [k for k in ("api_keys_env", "api_keys_file", "api_keys_credential")
                 if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of {', '.join(given)}")
        for key in given:
            if not getattr(self, key):
                raise ValueError(f"{key} must not be empty (leave it out for no API keys)")
        if self.enabled and not given and not self.allow_open and not is_loopback(host):
            raise ValueError(f"listen = {self.listen!r} is not a loopback address and no API key "
                             "is configured: set api_keys_env, api_keys_file or "
                             "api_keys_credential, or allow_open = true to serve anyone")

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


def split_listen(listen: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:8080"`` for IPv6) as host and port; ValueError if malformed."""
    host, sep, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f'listen must be "host:port" like "127.0.0.1:8080" or "[::1]:8080" '
                         f"(port 0 to 65535), got {listen!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost`` or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
