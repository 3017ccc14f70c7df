"""The recipe store: JetStream KV bucket ``alchemist_recipes`` plus recipe events.

Key = recipe name; value = the recipe's JSON. Writes use compare-and-set on
the key's revision, so two instances promoting at once can't overwrite each
other: the loser re-reads and carries on. An evolver's write is also fenced by its
lease (:mod:`alchemist.daemon.storage.lease`, whose keys share the bucket and
which the watch skips): it lands only while the writer holds the lease. Every write is also published on
``<prefix>.recipes.<name>``. A watcher swaps new versions in; a request
in flight keeps the recipe object it started with, so nothing is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import nats.errors
import structlog
from nats.aio.client import Client
from nats.js.api import Header
from nats.js.errors import (
    APIError,
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from alchemist.answers.recipes import Recipe, RecipeError
from alchemist.daemon.config import RecipeConfig
from alchemist.daemon.storage.lease import LEASE_PREFIX
from alchemist.daemon.tasks import cancel

log = structlog.get_logger("alchemist.recipes")
BUCKET = "alchemist_recipes"  # for the default prefix; see bucket_name()


def bucket_name(prefix: str) -> str:
    """The KV bucket of a subject prefix: ``alchemist_recipes`` for ``alchemist``."""
    return f"{prefix.replace('.', '_')}_recipes"
JSON_HEADERS = {"Content-Type": "application/json"}
Listener = Callable[[Recipe], None]
#: JetStream's "wrong last sequence" (of the stream or of the subject)
_WRONG_LAST_SEQUENCE = 10071
_FENCE_TRIES = 5


class Fence(Protocol):
    """What a fenced write needs: :meth:`alchemist.daemon.storage.lease.Leases.fenced`."""

    def fenced(self, name: str) -> AbstractAsyncContextManager[int | None]:
        """Yield the stream sequence a write must find last (None: the lease is not held)."""


def encode_recipe(recipe: Recipe) -> bytes:
    return json.dumps(recipe.to_dict(), separators=(",", ":")).encode()


def decode_recipe(data: bytes) -> Recipe:
    try:
        return Recipe.from_dict(json.loads(data))
    except (ValueError, TypeError, KeyError) as exc:
        raise RecipeError(f"stored recipe is unreadable: {exc}") from None


class RecipeStore:
    """Current recipes of this instance, kept in step with the KV bucket."""

    def __init__(self, nc: Client, prefix: str, replicas: int = 1) -> None:
        self.nc = nc
        self.prefix = prefix
        self.replicas = replicas
        self.bucket = bucket_name(prefix)
        self.current: dict[str, Recipe] = {}
        self._revision: dict[str, int] = {}
        self._kv: KeyValue | None = None
        self._task: asyncio.Task[None] | None = None
        self.listeners: list[Listener] = []

    async def open(self, *, create: bool = True) -> KeyValue:
        js = self.nc.jetstream(timeout=5.0)
        try:
            self._kv = await js.key_value(self.bucket)
        except BucketNotFoundError:
            if not create:
                raise RecipeError(f"no recipe bucket {self.bucket!r} yet: start the daemon once "
                                  "(alchemist run) so it creates its recipes") from None
            self._kv = await js.create_key_value(bucket=self.bucket, history=64,
                                                 replicas=self.replicas,
                                                 description="llm-alchemist recipes and leases")
        return self._kv

    @property
    def kv(self) -> KeyValue:
        assert self._kv is not None, "RecipeStore.open() first"
        return self._kv

    async def start(self, configs: Mapping[str, RecipeConfig], providers: Sequence[str]) -> None:
        """Load (or create) every configured recipe, then watch for new versions."""
        await self.open()
        await self.ensure(configs, providers)
        self._task = asyncio.create_task(self._watch(), name="recipe-watch")

    async def ensure(self, configs: Mapping[str, RecipeConfig], providers: Sequence[str]) -> None:
        """Load every configured recipe, creating version 1 of those the bucket lacks."""
        for name, cfg in configs.items():
            try:
                entry = await self.kv.get(name)
            except KeyNotFoundError:
                recipe = cfg.initial(providers)
                try:
                    rev = await self.kv.create(name, encode_recipe(recipe))
                except KeyWrongLastSequenceError:  # another instance created it first
                    entry = await self.kv.get(name)
                else:
                    self._set(recipe, rev)
                    await self._announce(recipe)
                    continue
            if entry.value:
                self._set(decode_recipe(entry.value), entry.revision or 0)

    def get(self, name: str) -> Recipe | None:
        return self.current.get(name)

    def revision(self, name: str) -> int:
        return self._revision.get(name, 0)

    def _set(self, recipe: Recipe, revision: int) -> bool:
        known = self.current.get(recipe.name)
        if revision <= self._revision.get(recipe.name, 0) and known is not None:
            return False
        self.current[recipe.name] = recipe
        self._revision[recipe.name] = revision
        if known is None or known.version != recipe.version:
            log.info("recipe_loaded", recipe=recipe.name, version=recipe.version,
                     reason=recipe.reason)
            for listener in list(self.listeners):
                listener(recipe)
        return True

    async def publish(self, recipe: Recipe, *, expected_revision: int,
                      fence: Fence | None = None) -> bool:
        """CAS-write a new version and announce it; False if someone else wrote first,
        or (with ``fence``) if the writer does not hold the recipe's lease."""
        if fence is not None:
            rev = await self._fenced_write(recipe, expected_revision, fence)
            if rev is None:
                return False
        else:
            try:
                rev = await self.kv.update(recipe.name, encode_recipe(recipe),
                                           last=expected_revision)
            except KeyWrongLastSequenceError:
                log.info("recipe_cas_lost", recipe=recipe.name, version=recipe.version)
                await self.refresh(recipe.name)
                return False
        self._set(recipe, rev)
        await self._announce(recipe)
        return True

    async def _fenced_write(self, recipe: Recipe, expected_revision: int,
                            fence: Fence) -> int | None:
        """The write, sent with the recipe's revision and the stream sequence of the
        writer's lease renewal as conditions (see :mod:`alchemist.daemon.storage.lease`).
        Another key's write in between (another recipe's lease, say) fails it too: then it
        renews and tries again, a few times."""
        js = self.nc.jetstream(timeout=5.0)
        subject = f"$KV.{self.bucket}.{recipe.name}"
        for _ in range(_FENCE_TRIES):
            async with fence.fenced(recipe.name) as sequence:
                if sequence is None:
                    log.warning("recipe_write_fenced", recipe=recipe.name,
                                version=recipe.version, reason="lease not held")
                    return None
                try:
                    ack = await js.publish(subject, encode_recipe(recipe), headers={
                        Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(expected_revision),
                        Header.EXPECTED_LAST_SEQUENCE: str(sequence)})
                    return int(ack.seq)
                except APIError as exc:
                    if exc.err_code != _WRONG_LAST_SEQUENCE:
                        raise
            await self.refresh(recipe.name)
            if self.revision(recipe.name) != expected_revision:
                log.info("recipe_cas_lost", recipe=recipe.name, version=recipe.version)
                return None
        log.warning("recipe_write_fenced", recipe=recipe.name, version=recipe.version,
                    reason="the bucket kept changing")
        return None

    async def _announce(self, recipe: Recipe) -> None:
        await self.nc.publish(f"{self.prefix}.recipes.{recipe.name}", encode_recipe(recipe),
                              headers=JSON_HEADERS)
        log.info("recipe_published", recipe=recipe.name, version=recipe.version,
                 reason=recipe.reason, fitness=recipe.fitness,
                 baseline_fitness=recipe.baseline_fitness, n_ratings=recipe.n_ratings)

    async def refresh(self, name: str) -> Recipe | None:
        try:
            entry = await self.kv.get(name)
        except KeyNotFoundError:
            return None
        if entry.value:
            self._set(decode_recipe(entry.value), entry.revision or 0)
        return self.current.get(name)

    async def history(self, name: str) -> list[Recipe]:
        """Every stored version still in the bucket's history (oldest first, up to 64)."""
        try:
            entries = await self.kv.history(name)
        except Exception as exc:  # nats-py raises NoKeysError or a KV error for no history
            raise RecipeError(f"no recipe named {name!r}") from exc
        return [decode_recipe(e.value) for e in entries if e.value]

    async def write_new_version(self, name: str, make: Callable[[Recipe], Recipe]) -> Recipe:
        """Read the latest version, derive the next with ``make``, CAS-write it (retrying)."""
        for _ in range(5):
            current = await self.refresh(name)
            if current is None:
                raise RecipeError(f"no recipe named {name!r}")
            new = make(current)
            if await self.publish(new, expected_revision=self.revision(name)):
                return new
        raise RecipeError(f"recipe {name!r} kept changing under us; try again")

    async def rollback(self, name: str, version: int | None = None) -> Recipe:
        """Publish a copy of an earlier version (default: the parent of the current one)."""
        history = {r.version: r for r in await self.history(name)}

        def make(current: Recipe) -> Recipe:
            target = version if version is not None else current.parent
            if target is None or target not in history:
                have = ", ".join(str(v) for v in sorted(history)) or "none"
                raise RecipeError(f"recipe {name!r} has no version {target} in its history "
                                  f"(versions kept: {have})")
            old = history[target]
            return current.successor(weights=old.weights, templates=old.templates,
                                     strategy=old.strategy, answer=old.answer,
                                     min_weight=old.min_weight, explore=old.explore,
                                     first_wave=old.first_wave, stop_margin=old.stop_margin,
                                     reason="rollback", fitness=None, baseline_fitness=None)

        return await self.write_new_version(name, make)

    async def _watch(self) -> None:
        """Apply new versions as they are written; re-read every 10 s in case a watch broke."""
        while True:
            watcher = None
            try:
                watcher = await self.kv.watchall()
                while True:
                    try:
                        entry = await watcher.updates(timeout=10.0)  # type: ignore[no-untyped-call]  # nats-py is untyped here
                    except nats.errors.TimeoutError:
                        for name in list(self.current):
                            await self.refresh(name)
                        continue
                    if (entry is None or not entry.value or entry.operation is not None
                            or entry.key.startswith(LEASE_PREFIX)):
                        continue
                    try:
                        self._set(decode_recipe(entry.value), entry.revision or 0)
                    except RecipeError as exc:
                        log.error("recipe_unreadable", key=entry.key, error=str(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - connection trouble: re-create the watcher
                log.warning("recipe_watch_restart", error=type(exc).__name__)
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):  # the connection may be gone
                        await watcher.stop()  # type: ignore[no-untyped-call]  # untyped in nats-py
            await asyncio.sleep(1.0)

    async def close(self) -> None:
        await cancel(self._task)
        self._task = None
