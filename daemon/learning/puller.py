"""Batches from a durable JetStream pull consumer, in a few turns of a busy event loop.

nats-py's ``PullSubscription.fetch`` takes each message of a batch with
``next_msg``, which starts two tasks per message: on a daemon busy serving
requests, every message then waits for two turns of a loop shared with
hundreds of request tasks (the soak measured about 20 ratings/s at 600
requests/s, and the feedback consumer fell ever further behind). Here the pull
requests are answered into a subscription with a callback, which nats-py
feeds from its read loop without a task per message, and a batch is taken
from a local buffer at once.

A pull is first a no-wait request (what is there now, ended by a 404 or 408
status) and, when that brought nothing, a waiting one that returns at the
first message (the rest of its batch arrives in the buffer for the next pull).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import deque

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, ConsumerInfo
from nats.js.errors import NotFoundError

__all__ = ["BatchPuller"]

_IDLE_HEARTBEAT = 100  # the status code of an idle heartbeat: not the end of a request


class BatchPuller:
    """Pulls batches of messages of one durable consumer (created with ``config`` if absent)."""

    def __init__(self, nc: Client, stream: str, durable: str, subject: str,
                 config: ConsumerConfig) -> None:
        self.nc, self.stream, self.durable = nc, stream, durable
        self.subject, self.config = subject, config
        self.js = nc.jetstream(timeout=5.0)
        self._inbox = ""
        self._sub: Subscription | None = None
        self._buffer: deque[Msg] = deque()
        self._arrived = asyncio.Event()  # a message, or the status ending a request
        self._ended = asyncio.Event()  # the status ending a request

    async def open(self) -> None:
        """Bind the durable consumer (creating it if absent) and subscribe to our inbox."""
        try:
            await self.js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            await self.js.add_consumer(self.stream, config=dataclasses.replace(
                self.config, durable_name=self.durable, filter_subject=self.subject))
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(self._inbox, cb=self._on_msg)

    async def _on_msg(self, msg: Msg) -> None:
        status = JetStreamContext.is_status_msg(msg)
        if status is None:
            self._buffer.append(msg)
            self._arrived.set()
        elif int(status) != _IDLE_HEARTBEAT:  # 404 no messages, 408 expired, 409 ...
            self._ended.set()
            self._arrived.set()

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        """Up to ``batch`` messages; ``nats.errors.TimeoutError`` when none came in ``timeout``."""
        if not self._buffer:
            await self._pull(batch, timeout, no_wait=True)
        if not self._buffer:
            await self._pull(batch, timeout, no_wait=False)
        if not self._buffer:
            raise nats.errors.TimeoutError
        return [self._buffer.popleft() for _ in range(min(batch, len(self._buffer)))]

    async def _pull(self, batch: int, timeout: float, *, no_wait: bool) -> None:
        """Ask for ``batch`` messages; wait until the request ends (``no_wait``) or until the
        first message (a waiting request), at most ``timeout``."""
        self._arrived.clear()
        self._ended.clear()
        request: dict[str, object] = {"batch": batch}
        if no_wait:
            request["no_wait"] = True
        else:  # the server ends the request a little before we stop waiting for it
            request["expires"] = max(1, int((timeout - 0.05) * 1e9))
        await self.nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.durable}",
                              json.dumps(request).encode(), reply=self._inbox)
        until = self._ended if no_wait else self._arrived
        try:
            await asyncio.wait_for(until.wait(), timeout)
        except TimeoutError:
            return

    async def consumer_info(self) -> ConsumerInfo:
        info: ConsumerInfo = await self.js.consumer_info(self.stream, self.durable)
        return info

    async def unsubscribe(self) -> None:
        """Stop receiving; messages still buffered are not acked and will be redelivered."""
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()
        self._buffer.clear()
