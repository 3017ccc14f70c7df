"""JetStream wiring: the bounded streams and this instance's followers of them.

| stream                 | subject                 | holds                                  |
| ---------------------- | ----------------------- | -------------------------------------- |
| ALCHEMIST_FEEDBACK     | ``<prefix>.feedback``   | ratings as clients sent them           |
| ALCHEMIST_EXPERIENCE   | ``<prefix>.experience`` | one :class:`Experience` per answer     |
| ALCHEMIST_RATED        | ``<prefix>.rated``      | ratings joined to their experience     |

Experience records are published in batches with asynchronous acks
(:mod:`.journal`). Each stream is bounded by count, bytes and age. Followers are ordered push
consumers from the start of the (bounded) stream, so a restarted instance
rebuilds its in-memory index, and survive broker restarts on their own.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, StorageType
from nats.js.errors import BadRequestError

from alchemist.daemon.config import Config
from alchemist.daemon.storage.experience import Experience, ExperienceIndex, Rated, pack, unpack
from alchemist.daemon.storage.journal import Journal

log = structlog.get_logger("alchemist.streams")


def stream_name(prefix: str, what: str) -> str:
    """``ALCHEMIST_FEEDBACK`` for the default prefix; ``TEAM_AI_FEEDBACK`` for ``team.ai``.

    Deployments with different subject prefixes can share one NATS account.
    """
    return f"{prefix.replace('.', '_').replace('-', '_').upper()}_{what}"
_DAY = 86_400.0


class Streams:
    """The three streams of one deployment, seen from one instance."""

    def __init__(self, nc: Client, cfg: Config, index: ExperienceIndex) -> None:
        self.js: JetStreamContext = nc.jetstream(timeout=5.0)
        self.prefix = cfg.service.subject_prefix
        self.feedback_stream = stream_name(self.prefix, "FEEDBACK")
        self.experience_stream = stream_name(self.prefix, "EXPERIENCE")
        self.rated_stream = stream_name(self.prefix, "RATED")
        self.cfg = cfg
        self.index = index
        self._subs: list[Any] = []
        self._seen: dict[str, int] = {}  # last stream sequence each follower applied
        #: the experience records' publisher (started by :meth:`ensure`)
        self.journal = Journal(nc, f"{self.prefix}.experience")

    @property
    def feedback_subject(self) -> str:
        return f"{self.prefix}.feedback"

    async def ensure(self) -> None:
        """Create the streams, or update their limits to the configured ones."""
        exp = self.cfg.experience
        age = exp.max_age_days * _DAY
        await self._ensure(name=self.feedback_stream, subjects=[self.feedback_subject],
                           max_msgs=1_000_000, max_bytes=256 << 20, max_age=age)
        await self._ensure(name=self.experience_stream, subjects=[f"{self.prefix}.experience"],
                           max_msgs=exp.max_records, max_bytes=exp.stream_max_bytes, max_age=age)
        await self._ensure(name=self.rated_stream, subjects=[f"{self.prefix}.rated"],
                           max_msgs=exp.max_records, max_bytes=exp.stream_max_bytes, max_age=age,
                           duplicate_window=3600.0)
        if not self.journal.started:
            await self.journal.start()

    async def _ensure(self, **config: Any) -> None:
        config.update(storage=StorageType.FILE, num_replicas=self.cfg.nats.replicas)
        try:
            await self.js.add_stream(**config)
        except BadRequestError:  # exists with other limits (or replicas): bring it to ours
            await self.js.update_stream(**config)

    async def follow(self) -> None:
        """Follow the experience and rated streams into the in-memory index."""

        async def on_experience(msg: Msg) -> None:
            self._seen[self.experience_stream] = msg.metadata.sequence.stream
            if msg.headers and msg.headers.get("Nats-Msg-Id") in self.index.experiences:
                return  # our own record (or one we already have): no need to decode it
            try:
                self.index.add_experience(Experience.from_wire(unpack(msg.data)))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("experience_unreadable", error=type(exc).__name__)

        async def on_rated(msg: Msg) -> None:
            self._seen[self.rated_stream] = msg.metadata.sequence.stream
            try:
                self.index.add_streamed(Rated.from_wire(unpack(msg.data)))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("rated_unreadable", error=type(exc).__name__)

        for subject, cb in ((f"{self.prefix}.experience", on_experience),
                            (f"{self.prefix}.rated", on_rated)):
            sub = await self.js.subscribe(subject, cb=cb, ordered_consumer=True,
                                          deliver_policy=DeliverPolicy.ALL,
                                          pending_msgs_limit=1_000_000)
            self._subs.append(sub)

    async def caught_up(self, timeout: float = 60.0) -> None:
        """Wait until both followers have replayed what the streams held when we started.

        Feedback processing waits for this: a rating for a request answered
        before a restart must find its experience, not be rejected as unknown.
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        for stream in (self.experience_stream, self.rated_stream):
            state = (await self.js.stream_info(stream)).state
            target = state.last_seq if state.messages else 0  # all aged out: nothing to replay
            while self._seen.get(stream, 0) < target:
                if loop.time() > give_up:
                    log.warning("replay_incomplete", stream=stream, seen=self._seen.get(stream, 0),
                                last=target)
                    return
                await asyncio.sleep(0.01)
        log.info("replay_done", experiences=len(self.index.experiences),
                 rated=len(self.index.rated))

    async def experience_behind(self) -> bool:
        """Whether our follower of the experience stream has not applied all it holds (a
        follower re-created after a broker node's loss is, for a few seconds)."""
        state = (await self.js.stream_info(self.experience_stream)).state
        return self._seen.get(self.experience_stream, 0) < state.last_seq

    def record(self, exp: Experience) -> None:
        """Journal an experience: this instance indexes it at once, and the journal
        publishes it with the next batch (see :mod:`.journal`)."""
        self.index.add_experience(exp)
        self.journal.add(pack(exp.to_wire()), exp.request_id)

    async def rate(self, rec: Rated) -> None:
        """Journal a rated record (durable first, then indexed: a failed publish leaves
        no trace, so the redelivered rating is not mistaken for a duplicate);
        JetStream drops a duplicate key inside its window."""
        await self.js.publish(f"{self.prefix}.rated", pack(rec.to_wire()),
                              headers={"Nats-Msg-Id": rec.key})
        self.index.add_rated(rec)

    async def close(self) -> None:
        """Publish the records still buffered (their acks awaited, bounded), then stop following."""
        await self.journal.close()
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # noqa: BLE001 - gone with the connection; nothing to undo
                log.debug("unsubscribe_failed", error=type(exc).__name__)
        self._subs.clear()
