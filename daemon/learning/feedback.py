"""Feedback ingestion: ratings from ``<prefix>.feedback`` joined to their experience.

The stream ``ALCHEMIST_FEEDBACK`` captures every published rating; this
instance reads it through the durable pull consumer ``alchemist-feedback``
(``<prefix>-feedback``, shared by all instances) and acks each message only after its outcome is
durable, so nothing is lost across daemon or broker restarts:

* accepted   -> the joined record is stored in ``ALCHEMIST_RATED``, then acked
* duplicate  -> same request id and user already counted: acked, counted once
* unknown    -> no such request (or expired): retried briefly (the experience
                may still be on its way from another instance; longer while our
                follower of the experience stream is behind it, or while the
                request is young enough for its record to be still landing),
                then acked
                and counted as rejected, with a log line
* capped     -> the user passed ``evolver.user_cap`` ratings per window: acked, rejected
                (counted in a KV bucket that every instance shares and that
                outlives restarts: :mod:`alchemist.daemon.storage.limits`)
* malformed  -> terminated with the reason logged, never redelivered
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec
import structlog
from msgspec import Meta
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from alchemist.daemon.config import EvolverConfig
from alchemist.daemon.learning.puller import BatchPuller
from alchemist.daemon.serving.service import issued_at
from alchemist.daemon.storage.buckets import open_kv
from alchemist.daemon.storage.experience import ExperienceIndex, Rated
from alchemist.daemon.storage.journal import ACK_TIMEOUT_S, RETRY_HORIZON_S
from alchemist.daemon.storage.limits import SharedCap, limits_bucket
from alchemist.daemon.storage.streams import Streams
from alchemist.daemon.tasks import cancel
from alchemist.schema import SchemaError, decode_json, decode_msgpack

log = structlog.get_logger("alchemist.feedback")
#: deliveries, 1 s apart, of a rating whose request is unknown here
UNKNOWN_RETRIES = 3
#: ... and up to this many while our follower of the experience stream is behind it, or while
#: the request is younger than :data:`LANDS_WITHIN_S`: its record may still be on its way
#: (another instance's journal retries a record the broker refused while it elected a stream
#: leader, up to ``journal.RETRY_HORIZON_S`` after an ack that took up to its timeout)
BEHIND_RETRIES = 15
LANDS_WITHIN_S = ACK_TIMEOUT_S + RETRY_HORIZON_S + 1.0
#: a delivery not acked this long is redelivered; handling one rating takes milliseconds,
#: and a delivery orphaned by a broker restart is retried this soon
ACK_WAIT_S = 10.0
IDLE_CHECK = 10  # empty one-second fetches in a row before checking the consumer
_FETCH_S = 1.0
_CLOSE_WAIT_S = 2 * _FETCH_S + 1.0  # a fetch, the messages it brought, and slack
_RATINGS = {1: 1, -1: -1, "up": 1, "down": -1, "+1": 1, "-1": -1}


class FeedbackError(ValueError):
    """A feedback message that can never be accepted."""


class FeedbackBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A rating as published on ``<prefix>.feedback`` (msgpack or JSON)."""

    request_id: Annotated[str, Meta(min_length=1, max_length=128, description=(
        "the request_id string from the infer reply (1 to 128 characters)"))]
    rating: Literal[1, -1, "up", "down", "+1", "-1"]
    user: Annotated[str, Meta(min_length=1, max_length=256)] = "anonymous"
    #: 0 (or left out): the time the daemon reads it
    ts: Annotated[float, Meta(ge=0.0, lt=1e11, description=(
        "a number of seconds since the epoch (0 to 1e11)"))] = 0.0
    comment: Annotated[str, Meta(max_length=4000)] | None = None


@dataclass(frozen=True, slots=True)
class Feedback:
    """A validated rating event."""

    request_id: str
    rating: int
    user: str = "anonymous"
    ts: float = 0.0
    comment: str | None = None


def parse_feedback(data: bytes) -> Feedback:
    """Decode (a JSON or msgpack map: its first byte tells which) and validate a rating."""
    as_json = data.lstrip()[:1] == b"{"
    if not as_json and not (data[:1] and (0x80 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF))):
        raise FeedbackError("payload is neither a msgpack nor a JSON map")
    try:
        if as_json:
            body = decode_json(data, FeedbackBody, document="the feedback")
        else:
            body = decode_msgpack(data, FeedbackBody, document="the feedback")
    except SchemaError as exc:
        raise FeedbackError(str(exc)) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise FeedbackError(f"payload is neither a msgpack nor a JSON map ({detail})") from None
    return Feedback(body.request_id, _RATINGS[body.rating], body.user, body.ts or time.time(),
                    body.comment)


class FeedbackConsumer:
    """Reads the feedback stream and turns ratings into rated experience."""

    def __init__(self, nc: Client, streams: Streams, index: ExperienceIndex,
                 cfg: EvolverConfig) -> None:
        self.nc = nc
        self.streams = streams
        self.index = index
        self.cfg = cfg
        self.cap: SharedCap | None = None
        self.counts: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None
        self._sub: BatchPuller | None = None
        self._closing = asyncio.Event()

    async def start(self) -> None:
        streams = self.streams
        kv = await open_kv(self.nc.jetstream(timeout=5.0), limits_bucket(streams.prefix),
                           replicas=streams.cfg.nats.replicas, ttl=self.cfg.user_window_s,
                           description="llm-alchemist: each user's accepted ratings per window")
        self.cap = SharedCap(kv, self.cfg.user_cap, self.cfg.user_window_s)
        self._closing.clear()
        await self._subscribe()
        self._task = asyncio.create_task(self._loop(), name="feedback")

    async def _subscribe(self) -> None:
        self._sub = BatchPuller(
            self.nc, self.streams.feedback_stream,
            f"{self.streams.prefix}-feedback".replace(".", "-"), self.streams.feedback_subject,
            ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT_S, max_deliver=20,
                           max_ack_pending=1000))
        await self._sub.open()

    async def _resubscribe(self) -> None:
        """After broker trouble, bind the durable consumer again (it kept our place)."""
        if self._sub is not None:
            with contextlib.suppress(Exception):  # the old subscription may be half gone
                await self._sub.unsubscribe()
        await self._subscribe()
        log.info("feedback_resubscribed")

    async def _loop(self) -> None:
        broken = False
        idle = 0
        while not self._closing.is_set():
            try:
                if broken:
                    await self._resubscribe()
                    broken = False
                assert self._sub is not None
                msgs = await self._sub.fetch(64, timeout=_FETCH_S)
                idle = 0
            except TimeoutError:  # nats' own, and asyncio's that nats-py's fetch raises when
                # its first, no-wait request alone outlasted the timeout (a busy loop): idle,
                # not broker trouble (which cost a second's pause and a resubscription)
                idle += 1
                if idle % IDLE_CHECK == 0:  # nothing for a while: is the stream really empty?
                    broken = await self._stuck()
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - broker away: the durable consumer keeps our place
                log.warning("feedback_fetch_failed", error=type(exc).__name__)
                broken = True
                await asyncio.sleep(1.0)
                continue
            await self.handle_batch(msgs)

    async def _stuck(self) -> bool:
        """True when the consumer has messages waiting that our fetches do not get
        (a pull subscription that did not survive a broker restart)."""
        if self._sub is None:
            return True
        try:
            info = await self._sub.consumer_info()
        except Exception as exc:  # noqa: BLE001 - the broker may still be away; retry later
            log.debug("feedback_consumer_info_failed", error=type(exc).__name__)
            return False
        if info.num_pending or info.num_ack_pending:
            log.warning("feedback_consumer_stuck", pending=info.num_pending,
                        ack_pending=info.num_ack_pending)
            return True
        return False

    async def handle(self, msg: Msg) -> str:
        """Process one message; returns its outcome (also counted in ``counts``)."""
        return (await self.handle_batch([msg]))[0]

    async def handle_batch(self, msgs: Sequence[Msg]) -> list[str]:
        """Process fetched messages; returns each one's outcome (also counted in ``counts``).

        Each is decided in order (parse, duplicate, unknown), then the user caps of
        those left are checked together (:meth:`SharedCap.allow_many`); the
        accepted ones are then journalled in ``ALCHEMIST_RATED`` all at once, and
        each is acked once its record is durable. One awaited publish per rating
        in turn kept the consumer at about 20 ratings/s on a daemon busy serving
        (every await waits for a turn of a loop shared with hundreds of request
        tasks): it fell behind, and ratings for requests older than
        ``experience.max_records`` were rejected as unknown.
        """
        outcomes: list[str] = []
        accepted: list[tuple[int, Msg, Rated]] = []
        keys: set[str] = set()  # ratings of this batch: a second one waits for the first
        for msg in msgs:
            try:
                outcome, rec = await self._decide(msg, keys)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - not acked: JetStream redelivers it
                outcome, rec = await self._not_processed(msg, exc), None
            if rec is not None:
                keys.add(rec.key)
                accepted.append((len(outcomes), msg, rec))
            outcomes.append(outcome)
        accepted = await self._capped(accepted, outcomes)
        results = await asyncio.gather(*(self.streams.rate(rec) for _, _, rec in accepted),
                                       return_exceptions=True)
        for (i, msg, rec), result in zip(accepted, results, strict=True):
            if isinstance(result, BaseException):
                outcomes[i] = await self._not_processed(msg, result)
                continue
            await msg.ack()
            log.info("feedback_accepted", request_id=rec.experience.request_id,
                     rating=rec.rating, recipe=rec.experience.recipe,
                     version=rec.experience.version)
            outcomes[i] = self._count("accepted")
        return outcomes

    async def _capped(self, accepted: list[tuple[int, Msg, Rated]],
                      outcomes: list[str]) -> list[tuple[int, Msg, Rated]]:
        """The ratings within their users' caps (one compare-and-set per user of the batch,
        all at once); the others are acked as rejected, or left for redelivery."""
        assert self.cap is not None, "start() first"
        allowed = await self.cap.allow_many([rec.user for _, _, rec in accepted])
        kept = []
        for (i, msg, rec), ok in zip(accepted, allowed, strict=True):
            if isinstance(ok, BaseException):
                outcomes[i] = await self._not_processed(msg, ok)
            elif ok:
                kept.append((i, msg, rec))
            else:
                log.warning("feedback_rejected", reason="user_cap",
                            request_id=rec.experience.request_id)
                await msg.ack()
                outcomes[i] = self._count("rejected_user_cap")
        return kept

    async def _not_processed(self, msg: Msg, exc: BaseException) -> str:
        log.warning("feedback_not_processed", error=type(exc).__name__)
        with contextlib.suppress(Exception):  # soon, rather than after ack_wait
            await msg.nak(delay=1.0)
        return "retry"

    async def _decide(self, msg: Msg, batch: set[str]) -> tuple[str, Rated | None]:
        """One message's outcome, or ``("accept", record)`` for one to journal."""
        try:
            fb = parse_feedback(msg.data)
        except FeedbackError as exc:
            log.warning("feedback_rejected", reason="malformed", detail=str(exc))
            await msg.term()
            return self._count("rejected_malformed"), None
        key = f"{fb.request_id}:{fb.user}"
        if key in batch:  # the same rating twice in one batch: decide it after the first
            await msg.nak(delay=0.1)
            return "retry", None
        if self.index.has_rating(key):
            await msg.ack()
            return self._count("duplicate"), None
        exp = self.index.get(fb.request_id)
        if exp is None:
            delivered = msg.metadata.num_delivered
            issued = issued_at(fb.request_id)
            young = issued is not None and time.time() - issued < LANDS_WITHIN_S
            if delivered < UNKNOWN_RETRIES or (delivered < BEHIND_RETRIES and (
                    young or await self.streams.experience_behind())):
                await msg.nak(delay=1.0)
                return "retry", None
            log.warning("feedback_rejected", reason="unknown_request", request_id=fb.request_id)
            await msg.ack()
            return self._count("rejected_unknown"), None
        return "accept", Rated(exp, fb.rating, fb.user, fb.ts)  # if within the user's cap

    def _count(self, outcome: str) -> str:
        self.counts[outcome] += 1
        return outcome

    async def close(self) -> None:
        """Stop fetching: the loop ends after its current fetch (at most its 1 s timeout).

        Not by cancelling the fetch: nats-py's pull ``fetch`` can miss a cancellation
        that lands inside it and then wait on its queue with no timeout, so a shutdown
        would hang until its own time box. Cancellation is only the fallback.
        """
        self._closing.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=_CLOSE_WAIT_S)
            except TimeoutError:
                await cancel(self._task)
            except Exception as exc:  # noqa: BLE001 - it is closing: a last error is only logged
                log.warning("feedback_loop_failed", error=type(exc).__name__)
        self._task = None
        if self._sub is not None:
            with contextlib.suppress(Exception):  # connection may already be gone
                await self._sub.unsubscribe()
            self._sub = None
