"""Limits that hold for the whole deployment: one user's accepted ratings per window.

Every instance's feedback consumer takes ratings from the same durable consumer,
and any of them may be restarted at any time, so the count cannot live in one
process's memory. It lives in the KV bucket ``alchemist_limits``: per user (key
``u.<sha256 of the user>``), the times of its accepted ratings in the last
window, at most ``cap`` of them. Accepting a rating is a compare-and-set of that
list: two instances accepting for one user at once cannot both take the last
slot; the loser reads again. The bucket's TTL is the window, so the key of a
user who stopped rating goes away with its last timestamp. A slot is taken
before the rating is stored: a crash between the two can only count a rating
that was not stored (stricter, never looser).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from collections.abc import Sequence

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from alchemist.daemon.storage.experience import BoundedMap

__all__ = ["SharedCap", "limits_bucket"]

_TRIES = 50


def limits_bucket(prefix: str) -> str:
    """The KV bucket of shared limits: ``alchemist_limits`` for ``alchemist``."""
    return f"{prefix.replace('.', '_')}_limits"


class CapContention(RuntimeError):
    """The user's count kept changing under us: the rating is retried later."""


class SharedCap:
    """At most ``cap`` accepted ratings per user in any ``window_s``, across instances."""

    def __init__(self, kv: KeyValue, cap: int, window_s: float, max_users: int = 100_000) -> None:
        self.kv, self.cap, self.window_s = kv, cap, window_s
        #: per user key, the revision and times this instance last wrote or read (bounded)
        self._known = BoundedMap(max_users)

    @staticmethod
    def key(user: str) -> str:
        return "u." + hashlib.sha256(user.encode()).hexdigest()[:40]

    async def allow(self, user: str) -> bool:
        """Take one of ``user``'s slots now; False when the window's are all taken."""
        return await self._take(user, 1) == 1

    async def allow_many(self, users: Sequence[str]) -> list[bool | BaseException]:
        """:meth:`allow` for each of ``users`` in order (a user's first ones get its free
        slots), one compare-and-set per distinct user, all at once; a user whose count
        could not be written gets the exception for each of its entries."""
        wanted = Counter(users)
        results = await asyncio.gather(*(self._take(u, n) for u, n in wanted.items()),
                                       return_exceptions=True)
        left: dict[str, int | BaseException] = dict(zip(wanted, results, strict=True))
        out: list[bool | BaseException] = []
        for user in users:
            granted = left[user]
            if isinstance(granted, BaseException):
                out.append(granted)
                continue
            out.append(granted > 0)
            left[user] = max(0, granted - 1)
        return out

    async def _take(self, user: str, n: int) -> int:
        """Take up to ``n`` of ``user``'s free slots now; how many were taken.

        One round trip when this instance wrote the user's count last (or the user has
        none): the write goes out with the revision it remembers, and only a failed
        compare-and-set reads the bucket. A remembered count can only be short of the
        real one (every instance only adds), so a refusal from it is sound.
        """
        key = self.key(user)
        known: tuple[int, list[float]] | None = self._known.get(key)
        for _ in range(_TRIES):
            revision, times = known if known is not None else (0, [])
            now = time.time()
            times = [t for t in times if now - t <= self.window_s]
            taken = min(n, self.cap - len(times))
            if taken <= 0:
                return 0
            times = [*times, *[round(now, 3)] * taken][-self.cap:]
            try:
                if revision:
                    revision = await self.kv.update(key, json.dumps(times).encode(), last=revision)
                else:
                    revision = await self.kv.create(key, json.dumps(times).encode())
            except KeyWrongLastSequenceError:  # another instance wrote it since: read it
                known = await self._read(key)
                continue
            self._known.pop(key, None)  # put() keeps an existing entry: replace it
            self._known.put(key, (revision, times))
            return taken
        raise CapContention(f"the rating count of one user changed {_TRIES} times in a row")

    async def _read(self, key: str) -> tuple[int, list[float]]:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return 0, []
        return entry.revision or 0, json.loads(entry.value or b"[]")
