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

import hashlib
import json
import time

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

__all__ = ["SharedCap", "limits_bucket"]

_TRIES = 50


def limits_bucket(prefix: str) -> str:
    """The KV bucket of shared limits: ``alchemist_limits`` for ``alchemist``."""
    return f"{prefix.replace('.', '_')}_limits"


class CapContention(RuntimeError):
    """The user's count kept changing under us: the rating is retried later."""


class SharedCap:
    """At most ``cap`` accepted ratings per user in any ``window_s``, across instances."""

    def __init__(self, kv: KeyValue, cap: int, window_s: float) -> None:
        self.kv, self.cap, self.window_s = kv, cap, window_s

    @staticmethod
    def key(user: str) -> str:
        return "u." + hashlib.sha256(user.encode()).hexdigest()[:40]

    async def allow(self, user: str) -> bool:
        """Take one of ``user``'s slots now; False when the window's are all taken."""
        key = self.key(user)
        for _ in range(_TRIES):
            try:
                entry = await self.kv.get(key)
                times, revision = json.loads(entry.value or b"[]"), entry.revision or 0
            except KeyNotFoundError:
                times, revision = [], 0
            now = time.time()
            times = [t for t in times if now - t <= self.window_s]
            if len(times) >= self.cap:
                return False
            data = json.dumps([*times, round(now, 3)][-self.cap:]).encode()
            try:
                if revision:
                    await self.kv.update(key, data, last=revision)
                else:
                    await self.kv.create(key, data)
                return True
            except KeyWrongLastSequenceError:
                continue  # another instance took a slot of this user's meanwhile: read again
        raise CapContention(f"the rating count of one user changed {_TRIES} times in a row")
