"""Records into a JetStream stream in batches, with asynchronous publish acks.

The request path hands a record over (:meth:`Journal.add`) and goes on: it
never waits for the broker. Records are published in the order they were
added, every ``interval_s`` or as soon as ``max_batch`` are waiting, each with
its own reply subject, so JetStream acknowledges each one; acks are matched on
one subscription. At most ``max_buffered`` records wait to be published; past
that a record is dropped, counted and logged (a broker that cannot keep up must
not grow the daemon without bound). A record whose publish fails, whose ack
does not come within ``ack_timeout_s`` or comes back as an error (a stream
electing a new leader after a node's loss answers "no responders" for a moment)
is published again, with the same ``Nats-Msg-Id`` (JetStream stores it once),
after 0.25, 0.5, 1, 2 and 4 s (a stream's new leader takes seconds to be
elected); after :data:`ATTEMPTS` tries it counts as dropped. The feedback
consumer gives a rating of a request it does not know yet, but young enough for
its record to be still landing, more patience than the ack timeout and the
retries take together (:data:`RETRY_HORIZON_S`).
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
#: tries per record before it counts as dropped, and the wait before the first retry
ATTEMPTS = 6
RETRY_S = 0.25
#: the last retry of a record goes out this long after its first try failed
RETRY_HORIZON_S = RETRY_S * (2 ** (ATTEMPTS - 1) - 1)


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
        #: (payload, message id, tries so far) waiting to be published
        self._buf: list[tuple[bytes, str, int]] = []
        #: reply token -> (payload, message id, tries so far, loop time sent), oldest first
        self._unacked: OrderedDict[str, tuple[bytes, str, int, float]] = OrderedDict()
        self._retrying = 0  # records waiting out a retry delay
        self._giving_up = False  # a flush ran out of time: what is left is lost
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
        self.retried = 0
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
        self._buf.append((payload, msg_id, 0))
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
        return len(self._buf) + len(self._unacked) + self._retrying

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
        for payload, msg_id, tries in batch:
            self._seq += 1
            token = str(self._seq)
            self._unacked[token] = (payload, msg_id, tries + 1, now)
            try:
                await self.nc.publish(self.subject, payload, reply=f"{self._prefix}.{token}",
                                      headers={"Nats-Msg-Id": msg_id})
            except Exception as exc:  # noqa: BLE001 - closed, reconnecting, over the pending limit
                self._failed(token, type(exc).__name__)
                continue
            self.published += 1
        self._check_settled()

    async def _on_ack(self, msg: Msg) -> None:
        token = msg.subject.rpartition(".")[2]
        if token not in self._unacked:
            return  # already given up on (timed out, and published again)
        status = msg.headers.get("Status") if msg.headers else None
        if status:  # 503: no stream listens on the subject (or its leader is being elected)
            self._failed(token, f"status {status}: "
                         f"{msg.headers.get('Description', '') if msg.headers else ''}".strip())
            return
        if b'"error"' in msg.data:
            with contextlib.suppress(ValueError):
                error = json.loads(msg.data).get("error")
                if error:
                    self._failed(token, str(error.get("description", error))[:200])
                    return
        del self._unacked[token]
        self.acked += 1
        self._check_settled()

    def _expire(self) -> None:
        """Records whose ack is overdue: publish them again, or count them lost."""
        give_up = asyncio.get_running_loop().time() - self.ack_timeout_s
        while self._unacked:
            token, (_, _, _, sent) = next(iter(self._unacked.items()))
            if sent > give_up:
                break
            self._failed(token, "ack_timeout")

    def _failed(self, token: str, reason: str) -> None:
        """A try of the record under ``token`` failed: retry it later, or drop it."""
        payload, msg_id, tries, _ = self._unacked.pop(token)
        if tries >= ATTEMPTS or self._giving_up:
            self._drop(1, reason)
            self._check_settled()
            return
        self.retried += 1
        self._retrying += 1
        log.debug("experience_retry", reason=reason, tries=tries, subject=self.subject)

        def again() -> None:
            if self._giving_up:  # a flush gave up on it already (and counted it)
                return
            self._retrying -= 1
            self._buf.append((payload, msg_id, tries))
            self._wake.set()

        asyncio.get_running_loop().call_later(RETRY_S * 2 ** (tries - 1), again)

    def _drop(self, n: int, reason: str) -> None:
        self.dropped += n
        if self.on_drop is not None:
            self.on_drop(n)
        log.warning("experience_not_recorded", records=n, reason=reason, subject=self.subject)

    def _check_settled(self) -> None:
        if not self._buf and not self._unacked and not self._retrying:
            self._settled.set()

    async def flush(self, timeout: float = ACK_TIMEOUT_S) -> bool:
        """Publish what is buffered (retries included, as they come due) and wait up to
        ``timeout`` s for every ack; whether all came. What is still missing then is lost,
        and the journal retries nothing more: a flush that gives up is for shutdown."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._settled.is_set() and (left := deadline - loop.time()) > 0:
            if self._buf:
                await self._publish()
                continue
            waits = {asyncio.ensure_future(self._settled.wait()),
                     asyncio.ensure_future(self._wake.wait())}
            _, pending = await asyncio.wait(waits, timeout=left,
                                            return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
        if self._settled.is_set():
            return True
        self._giving_up = True
        lost = len(self._buf) + len(self._unacked) + self._retrying
        self._buf.clear()
        self._unacked.clear()
        if lost:
            self._drop(lost, "flush_timeout")
        self._retrying = 0  # their timers find _giving_up and leave them
        self._settled.set()
        return False

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
