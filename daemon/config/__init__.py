"""Configuration: ``alchemist.toml`` in, frozen typed objects out, refused early and clearly.

Every table is a msgspec Struct (:mod:`.sections`, :mod:`.recipes`, and the
provider options in :class:`alchemist.adapters.ProviderOptions`), converted by
``alchemist.schema``: an unknown key or a bad value stops start-up with the
key's path, like ``alchemist.toml: providers[1].timeout_s must be a number
between 0.01 and 3600, got '10'``. :mod:`.loader` reads the file and checks what
spans keys.
"""

from alchemist.daemon.config.loader import (
    Config,
    Document,
    default_document,
    default_state_dir,
    load_config,
    parse_config,
)
from alchemist.daemon.config.recipes import RecipeConfig, RecipeTable
from alchemist.daemon.config.sections import (
    BreakerPolicy,
    ConfigError,
    EvolverConfig,
    ExperienceConfig,
    HttpConfig,
    MetricsConfig,
    NatsConfig,
    ProbesConfig,
    ServiceConfig,
)

__all__ = [
    "BreakerPolicy",
    "Config",
    "ConfigError",
    "Document",
    "EvolverConfig",
    "ExperienceConfig",
    "HttpConfig",
    "MetricsConfig",
    "NatsConfig",
    "ProbesConfig",
    "RecipeConfig",
    "RecipeTable",
    "ServiceConfig",
    "default_document",
    "default_state_dir",
    "load_config",
    "parse_config",
]
