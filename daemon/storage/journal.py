"""Records into a JetStream stream in batches, with asynchronous publish acks.

The request path hands a record over (:meth:`Journal.add`) and goes on: it
never waits for the broker. Records are published in the order they were
added, every ``interval_s`` or as soon as ``max_batch`` are waiting, each with
its own reply subject, so JetStream acknowledges each one; acks are matched on
one subscription. At most ``max_buffered`` records wait to be published; past
that a record is dropped, counted and logged (a broker that cannot keep up must
not grow the daemon without bound). A record whose ack does not come within
``ack_timeout_s``, or comes back as an error, counts as dropped too.
:meth:`Journal.close` publishes what is buffered and waits (bounded) for the
acks: a graceful stop loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from alchemist.daemon.tasks import cancel

log = structlog.get_logger("alchemist.journal")

MAX_BATCH = 256
INTERVAL_S = 0.005
MAX_BUFFERED = 20_000
ACK_TIMEOUT_S = 5.0


class Journal:
    """One subject's publisher: batched publishes, one ack per record, counted losses."""

    def __init__(self, nc: Client, subject: str, *, max_batch: int = MAX_BATCH,
                 interval_s: float = INTERVAL_S, max_buffered: int = MAX_BUFFERED,
                 ack_timeout_s: float = ACK_TIMEOUT_S) -> None:
        self.nc = nc
        self.subject = subject
        self.max_batch = max_batch
        self.interval_s = interval_s
        self.max_buffered = max_buffered
        self.ack_timeout_s = ack_timeout_s
        self._buf: list[tuple[bytes, str]] = []
        #: reply token -> (message id, loop time sent), oldest first
        self._unacked: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._seq = 0
        self._prefix = ""
        self._sub: Any = None
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._settled = asyncio.Event()  # nothing buffered and nothing unacknowledged
        self._settled.set()
        self.published = 0
        self.acked = 0
        self.dropped = 0
        #: called with the number of records lost, each time some are
        self.on_drop: Callable[[int], None] | None = None

    async def start(self) -> None:
        """Subscribe to the acks and start publishing."""
        self._prefix = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(f"{self._prefix}.*", cb=self._on_ack)
        self._task = asyncio.create_task(self._run(), name="journal")

    def add(self, payload: bytes, msg_id: str) -> None:
        """Queue one record (``msg_id``: its ``Nats-Msg-Id``, JetStream's duplicate key)."""
        if len(self._buf) >= self.max_buffered:
            self._drop(1, "buffer_full")
            return
        self._buf.append((payload, msg_id))
        self._settled.clear()
        if len(self._buf) >= self.max_batch:
            self._wake.set()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval_s, self._wake.set)

    @property
    def started(self) -> bool:
        return self._task is not None

    @property
    def pending(self) -> int:
        """Records buffered or published but not yet acknowledged."""
        return len(self._buf) + len(self._unacked)

    async def _run(self) -> None:
        while not self._closing:
            await self._wake.wait()
            await self._publish()
            self._expire()

    async def _publish(self) -> None:
        """Publish every buffered record, in order."""
        self._wake.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._buf = self._buf, []
        now = asyncio.get_running_loop().time()
        for payload, msg_id in batch:
            self._seq += 1
            token = str(self._seq)
            self._unacked[token] = (msg_id, now)
            try:
                await self.nc.publish(self.subject, payload, reply=f"{self._prefix}.{token}",
                                      headers={"Nats-Msg-Id": msg_id})
            except Exception as exc:  # noqa: BLE001 - closed or over the pending limit: lost
                del self._unacked[token]
                self._drop(1, type(exc).__name__)
                continue
            self.published += 1
        self._check_settled()

    async def _on_ack(self, msg: Msg) -> None:
        entry = self._unacked.pop(msg.subject.rpartition(".")[2], None)
        if entry is None:
            return  # already given up on (timed out)
        status = msg.headers.get("Status") if msg.headers else None
        if status:  # 503: no stream listens on the subject
            self._drop(1, f"status {status}: {msg.headers.get('Description', '') if msg.headers else ''}"
                       .strip())
            self._check_settled()
            return
        if b'"error"' in msg.data:
            with contextlib.suppress(ValueError):
                error = json.loads(msg.data).get("error")
                if error:
                    self._drop(1, str(error.get("description", error))[:200])
                    self._check_settled()
                    return
        self.acked += 1
        self._check_settled()

    def _expire(self) -> None:
        """Count records whose ack is overdue as lost."""
        give_up = asyncio.get_running_loop().time() - self.ack_timeout_s
        expired = 0
        while self._unacked:
            token, (_, sent) = next(iter(self._unacked.items()))
            if sent > give_up:
                break
            del self._unacked[token]
            expired += 1
        if expired:
            self._drop(expired, "ack_timeout")
            self._check_settled()

    def _drop(self, n: int, reason: str) -> None:
        self.dropped += n
        if self.on_drop is not None:
            self.on_drop(n)
        log.warning("experience_not_recorded", records=n, reason=reason, subject=self.subject)

    def _check_settled(self) -> None:
        if not self._buf and not self._unacked:
            self._settled.set()

    async def flush(self, timeout: float = ACK_TIMEOUT_S) -> bool:
        """Publish what is buffered and wait up to ``timeout`` s for every ack;
        whether all came (those still missing then count as lost)."""
        if self._buf:
            await self._publish()
        try:
            await asyncio.wait_for(self._settled.wait(), timeout)
        except TimeoutError:
            self.ack_timeout_s = 0.0
            self._expire()
            return False
        return True

    async def close(self, timeout: float = ACK_TIMEOUT_S) -> None:
        """Stop publishing on a timer, flush (bounded by ``timeout``) and unsubscribe."""
        self._closing = True
        if self._task is not None:
            self._wake.set()  # the loop publishes what it holds, then ends
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                await cancel(self._task)
            self._task = None
        if self._sub is not None:
            await self.flush(timeout)
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
