"""What a reload (SIGHUP) may change, and the checks a new config passes first.

A reload applies providers, recipes, service limits, the breaker policy,
evolver settings and probe settings. The keys in :data:`RESTART_ONLY` are
read once, at start: the NATS connection, the state dir (the embedded
server's store, the ``nats.url`` file, the evolver's populations), the
subject prefix (subscriptions, streams and buckets are named by it), the log
level (the CLI's ``--log-level`` may override it, and the daemon cannot tell), the event loop,
the metrics endpoint, the experience bounds (the streams and the index are
built with them), whether the prober runs and where its suites are, and the
per-user rating cap (rebuilding it would forget who has rated what). A reload
that changes any of them keeps their running values and names them in one
``reload_needs_restart`` warning.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp
import msgspec
import structlog

from alchemist.adapters import Provider, ProviderOptions, ProviderSpec, build_provider, resolve_spec
from alchemist.daemon.config import Config, ConfigError
from alchemist.daemon.telemetry.logs import register_secret
from alchemist.probes.suites import Template

log = structlog.get_logger("alchemist")

#: section -> its keys a reload cannot apply (None: every key of the section); and ``state.dir``
RESTART_ONLY: Mapping[str, tuple[str, ...] | None] = {
    "nats": None,
    "service": ("subject_prefix", "log_level", "event_loop"),
    "metrics": None,
    "http": None,
    "experience": None,
    "probes": ("enabled", "suites_dir", "shipped_suites"),
    "evolver": ("user_cap", "user_window_s", "lease_s"),
}


def restart_keys(running: Config, new: Config) -> list[str]:
    """The keys (``section.key``) that ``new`` changes but only a restart applies."""
    keys = ["state.dir"] if running.state_dir != new.state_dir else []
    for section, names in RESTART_ONLY.items():
        was, now = getattr(running, section), getattr(new, section)
        for name in names or was.__struct_fields__:
            if getattr(was, name) != getattr(now, name):
                keys.append(f"{section}.{name}")
    return keys


def as_reloaded(running: Config, new: Config) -> Config:
    """``new`` with every restart-only key at its running value: what a reload applies."""
    changes: dict[str, Any] = {"state_dir": running.state_dir}
    for section, names in RESTART_ONLY.items():
        was = getattr(running, section)
        changes[section] = was if names is None else msgspec.structs.replace(
            getattr(new, section), **{name: getattr(was, name) for name in names})
    return msgspec.structs.replace(new, **changes)


def check_templates(cfg: Config, catalog: Mapping[str, Sequence[Template]]) -> None:
    """Every template a configured recipe names must be one of its skill's suites'."""
    for name, recipe in cfg.recipes.items():
        for skill, row in recipe.templates.items():
            known = [t.name for t in catalog.get(skill, ())]
            for provider, template in row.items():
                if template not in known:
                    raise ConfigError(
                        f"recipes.{name}.templates.{skill}.{provider}: no probe suite of skill "
                        f"{skill!r} defines a template {template!r} (it has: "
                        f"{', '.join(known) or 'none'}; a template with neither 'system' nor "
                        "'suffix' is the same as none and is left out)")


def provider_spec(p: ProviderOptions) -> ProviderSpec:
    """Resolve a provider's options (and its key) into what adapters take."""
    spec = resolve_spec(p)
    if spec.api_key is not None:
        register_secret(spec.api_key.reveal())
    return spec


async def adapters(specs: Sequence[ProviderSpec], running: Mapping[str, Provider],
                   running_specs: Mapping[str, ProviderSpec], session: aiohttp.ClientSession
                   ) -> tuple[dict[str, Provider], list[Provider]]:
    """The adapters for ``specs``, and which of them were built new.

    A provider whose spec is unchanged keeps its running adapter. If one cannot
    be built, those built before it are closed and the error goes on.
    """
    providers: dict[str, Provider] = {}
    built: list[Provider] = []
    try:
        for spec in specs:
            adapter = running.get(spec.name)
            if adapter is None or running_specs.get(spec.name) != spec:
                adapter = build_provider(spec, session)
                built.append(adapter)
            providers[spec.name] = adapter
    except BaseException:
        for provider in built:
            await quietly(provider.aclose)
        raise
    return providers, built


async def quietly(close: Callable[[], Awaitable[object]]) -> None:
    """Run one clean-up step under a shield, with its own timeout; log, don't raise."""
    try:
        await asyncio.shield(asyncio.wait_for(close(), timeout=10.0))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - shutdown goes on whatever one step did
        log.warning("shutdown_step_failed", step=getattr(close, "__qualname__", "?"),
                    error=type(exc).__name__)
