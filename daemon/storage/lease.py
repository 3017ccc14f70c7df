"""Leases: one holder at a time per name (a recipe's evolver, the prober), in a KV bucket.

A lease is the key ``_lease.<name>`` in the recipes bucket (``alchemist_recipes``;
recipe names never start with ``_``), its value JSON ``{holder, host, slot, since,
renewed, lease_s}``. It is taken with a compare-and-set create (or update, on the
revision seen) and renewed every third of ``lease_s`` with a compare-and-set
update on the revision it last wrote, so two instances never both hold it.

**Expiry is observed, not trusted to clocks.** Another instance takes a lease
once it has seen the same revision for ``lease_s`` on its own monotonic clock
(the way Kubernetes' leader election judges a lease): clock skew between hosts
never matters, and a paused or dead holder stops renewing, so its revision
stops changing. The holder itself counts the lease lost ``lease_s`` after it
*sent* its last successful renewal, which is never later than the moment
another instance may take it. A holder that stops cleanly releases its leases
(``holder = ""``), and those are taken at once; so is a lease whose holder ran
in the same slot (host and state dir) as a starting instance: its predecessor.

**Fencing.** The lease lives in the recipes bucket on purpose: JetStream checks
``Nats-Expected-Last-Sequence`` against the whole stream, so a recipe write sent
with the stream sequence of the holder's renewal, made just before under the
same lock (:meth:`Leases.fenced`), lands only if nothing was written to the
bucket since, in particular no other instance's take-over of the lease. A holder
paused past its lease and resumed can therefore never overwrite the new
holder's recipe, whatever its own clock believes (see ``RecipeStore.publish``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import asdict, dataclass

import structlog
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from alchemist.daemon.tasks import cancel

__all__ = ["LEASE_PREFIX", "LeaseValue", "Leases", "lease_key", "read_leases"]

log = structlog.get_logger("alchemist.lease")
LEASE_PREFIX = "_lease."


def lease_key(name: str) -> str:
    """The KV key of ``name``'s lease."""
    return f"{LEASE_PREFIX}{name}"


@dataclass(frozen=True, slots=True)
class LeaseValue:
    """What a lease key holds. ``holder`` "" is a released lease."""

    holder: str
    host: str = ""
    #: the holder's host and state dir: a restart in the same slot takes over at once
    slot: str = ""
    #: wall-clock seconds when the holder took it, and when it last renewed it (for display)
    since: float = 0.0
    renewed: float = 0.0
    lease_s: float = 0.0

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @staticmethod
    def decode(data: bytes | None) -> LeaseValue:
        try:
            raw = json.loads(data or b"{}")
            return LeaseValue(str(raw.get("holder", "")), str(raw.get("host", "")),
                              str(raw.get("slot", "")), float(raw.get("since", 0.0)),
                              float(raw.get("renewed", 0.0)), float(raw.get("lease_s", 0.0)))
        except (ValueError, TypeError, AttributeError):
            return LeaseValue("")  # unreadable: treated as released


class Leases:
    """The leases of ``names()`` as seen, taken and renewed by one instance."""

    def __init__(self, kv: KeyValue, instance: str, *, host: str, slot: str, lease_s: float,
                 names: Callable[[], Iterable[str]]) -> None:
        self.kv = kv
        self.instance, self.host, self.slot = instance, host, slot
        self.lease_s = lease_s
        self._names = names
        #: name -> the revision of our last write of it, and the monotonic time it was sent
        self._held: dict[str, tuple[int, float]] = {}
        self._since: dict[str, float] = {}
        #: name -> the revision we saw, and the monotonic time we first saw it
        self._seen: dict[str, tuple[int, float]] = {}
        #: name -> the revision at which we took it (a new value: a new term)
        self.terms: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._started = False
        self._task: asyncio.Task[None] | None = None

    @property
    def tick_s(self) -> float:
        """How often leases are checked: a tenth of the lease, at most half a second."""
        return min(0.5, self.lease_s / 10)

    def holds(self, name: str) -> bool:
        """Whether this instance holds ``name``'s lease now (by its own clock)."""
        held = self._held.get(name)
        return held is not None and time.monotonic() - held[1] < self.lease_s

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def start(self) -> None:
        """Take what can be taken now, then keep checking in the background."""
        await self.tick()
        self._started = True
        self._task = asyncio.create_task(self._loop(), name="leases")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - broker trouble: the next tick retries
                log.warning("lease_check_failed", error=type(exc).__name__)

    async def tick(self) -> None:
        """Renew what we hold when due; take what has expired or was released."""
        for name in list(self._names()):
            async with self._lock(name):
                if name in self._held:
                    await self._renew_if_due(name)
                else:
                    await self._maybe_take(name)

    async def _renew_if_due(self, name: str) -> None:
        sent = self._held[name][1]
        if time.monotonic() - sent >= self.lease_s:
            self._lost(name, "expired")
        elif time.monotonic() - sent >= self.lease_s / 3:
            await self._renew(name)

    async def _renew(self, name: str) -> bool:
        revision, _ = self._held[name]
        sent = time.monotonic()
        try:
            new = await self.kv.update(lease_key(name), self._value(name).encode(), last=revision)
        except KeyWrongLastSequenceError:
            self._lost(name, "taken")
            return False
        except Exception as exc:  # noqa: BLE001 - broker trouble: retried until the lease runs out
            log.warning("lease_renew_failed", lease=name, error=type(exc).__name__,
                        left_s=round(self.lease_s - (time.monotonic() - self._held[name][1]), 2))
            if time.monotonic() - self._held[name][1] >= self.lease_s:
                self._lost(name, "expired")
            return False
        self._held[name] = (new, sent)
        return True

    def _lost(self, name: str, why: str) -> None:
        self._held.pop(name, None)
        self._seen.pop(name, None)
        log.warning("lease_lost", lease=name, instance=self.instance, reason=why)

    async def _maybe_take(self, name: str) -> None:
        key = lease_key(name)
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            await self._take(name, None, "free")
            return
        revision = entry.revision or 0
        value = LeaseValue.decode(entry.value)
        now = time.monotonic()
        seen = self._seen.get(name)
        if seen is None or seen[0] != revision:
            self._seen[name] = seen = (revision, now)
        if not value.holder:
            await self._take(name, revision, "released")
        elif not self._started and value.slot == self.slot and value.holder != self.instance:
            await self._take(name, revision, "restarted")  # our predecessor in this slot
        elif now - seen[1] >= self.lease_s:
            await self._take(name, revision, f"expired (held by {value.holder})")

    async def _take(self, name: str, revision: int | None, why: str) -> None:
        sent = time.monotonic()
        self._since[name] = time.time()
        data = self._value(name).encode()
        try:
            if revision is None:
                new = await self.kv.create(lease_key(name), data)
            else:
                new = await self.kv.update(lease_key(name), data, last=revision)
        except KeyWrongLastSequenceError:
            return  # someone else was faster: we see their lease at the next tick
        self._held[name] = (new, sent)
        self.terms[name] = new
        log.info("lease_acquired", lease=name, instance=self.instance, revision=new, reason=why)

    def _value(self, name: str) -> LeaseValue:
        return LeaseValue(self.instance, self.host, self.slot, self._since.get(name, time.time()),
                          time.time(), self.lease_s)

    @contextlib.asynccontextmanager
    async def fenced(self, name: str) -> AsyncIterator[int | None]:
        """Renew ``name``'s lease now and yield the stream sequence of that renewal (None:
        not held). Until the block ends no renewal of ours moves the sequence, so a write
        sent with ``Nats-Expected-Last-Sequence`` set to it lands only if nobody touched
        the bucket since: above all, nobody took the lease."""
        async with self._lock(name):
            if not self.holds(name) or not await self._renew(name):
                yield None
                return
            yield self._held[name][0]

    async def release(self) -> None:
        """Give up every lease we hold, so another instance takes it at once."""
        for name in list(self._held):
            async with self._lock(name):
                revision, _ = self._held.pop(name)
                gone = LeaseValue("", self.host, "", 0.0, time.time(), self.lease_s)
                with contextlib.suppress(Exception):  # best effort: it expires anyway
                    await self.kv.update(lease_key(name), gone.encode(), last=revision)
                    log.info("lease_released", lease=name, instance=self.instance)

    async def close(self) -> None:
        await cancel(self._task)
        self._task = None
        await self.release()


async def read_leases(kv: KeyValue, names: Iterable[str]) -> dict[str, LeaseValue]:
    """The current lease of each of ``names`` that has a holder (for ``alchemist status``)."""
    out = {}
    for name in names:
        with contextlib.suppress(KeyNotFoundError):
            value = LeaseValue.decode((await kv.get(lease_key(name))).value)
            if value.holder:
                out[name] = value
    return out
