"""Replay sets (recorded answers of real or simulated LLMs) and a server that plays them.

A replay set is a JSON-lines file (optionally gzipped), one prompt per line::

    {"id": ..., "skill": ..., "messages": [{"role": ..., "content": ...}, ...],
     "gold": ..., "answers": {model: {"text": ..., "score": ...}, ...}}

:class:`ReplayServer` is an OpenAI-compatible HTTP server that answers
``POST /v1/chat/completions`` with the recorded text of the model named in the
request, for the item whose messages match (by :func:`prompt_key`), after a
simulated latency, or fails with a 500 at a configured rate. The daemon's real
adapters talk to it exactly as they would to a provider.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Literal, TypeVar

from aiohttp import web

from alchemist.adapters.base import Message

__all__ = ["Latency", "RecordedAnswer", "ReplayItem", "ReplayServer", "ReplaySet",
           "load_replay", "prompt_key"]

_T = TypeVar("_T")

#: z-score of the 99th percentile of the standard normal distribution
_Z99 = 2.3263478740408408


@dataclass(frozen=True, slots=True)
class RecordedAnswer:
    """What one model answered to one prompt, and how good that was (0..1)."""

    text: str
    score: float


@dataclass(frozen=True, slots=True)
class ReplayItem:
    """One prompt with its gold answer and every model's recorded answer."""

    id: str
    skill: str
    messages: tuple[Message, ...]
    gold: object
    answers: Mapping[str, RecordedAnswer]


@dataclass(frozen=True, slots=True)
class ReplaySet:
    """A set of replay items; ``models`` is the union of answering models, first-seen order.

    Leave ``models`` empty to have it derived from the items.
    """

    items: tuple[ReplayItem, ...]
    models: tuple[str, ...] = ()
    _by_id: Mapping[str, ReplayItem] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id: dict[str, ReplayItem] = {}
        seen: dict[str, None] = {}
        for item in self.items:
            if item.id in by_id:
                raise ValueError(f"replay item id {item.id!r} appears more than once")
            by_id[item.id] = item
            for model in item.answers:
                seen.setdefault(model, None)
        if not self.models:
            object.__setattr__(self, "models", tuple(seen))
        else:
            missing = [m for m in seen if m not in self.models]
            if missing:
                raise ValueError(f"models {missing} answer some items but are not in `models`")
        object.__setattr__(self, "_by_id", MappingProxyType(by_id))

    def __len__(self) -> int:
        return len(self.items)

    def item(self, item_id: str) -> ReplayItem:
        """The item with this id; KeyError if there is none."""
        try:
            return self._by_id[item_id]
        except KeyError:
            raise KeyError(f"no replay item with id {item_id!r}") from None

    def score(self, item_id: str, model: str) -> float:
        """Recorded score of ``model`` on the item; 0.0 if that model has no answer there.

        Raises KeyError for an unknown item id or a model that answers nothing in the set.
        """
        item = self.item(item_id)
        answer = item.answers.get(model)
        if answer is not None:
            return answer.score
        if model not in self.models:
            raise KeyError(f"model {model!r} is not in this replay set")
        return 0.0


def prompt_key(messages: Sequence[Message] | Sequence[Mapping[str, str]]) -> str:
    """A stable hash (hex SHA-256) of the messages' roles and contents, in order.

    Other keys of a message mapping (``name``, ...) do not count.
    """
    pairs = [[m.role, m.content] if isinstance(m, Message) else [m["role"], m["content"]]
             for m in messages]
    blob = json.dumps(pairs, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- loading


def _parse_item(obj: object) -> ReplayItem:
    """Build one item from a decoded line; ValueError says what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    for key in ("id", "skill", "messages", "answers"):
        if key not in obj:
            raise ValueError(f"missing field {key!r}")
    item_id, skill = obj["id"], obj["skill"]
    if not isinstance(item_id, str) or not item_id:
        raise ValueError("`id` must be a non-empty string")
    if not isinstance(skill, str) or not skill:
        raise ValueError("`skill` must be a non-empty string")
    raw_messages = obj["messages"]
    if not isinstance(raw_messages, list) or not raw_messages:
        raise ValueError("`messages` must be a non-empty list of {role, content} objects")
    messages: list[Message] = []
    for i, m in enumerate(raw_messages):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)):
            raise ValueError(f"`messages[{i}]` must be an object with string `role` and `content`")
        messages.append(Message(m["role"], m["content"]))
    raw_answers = obj["answers"]
    if not isinstance(raw_answers, dict):
        raise ValueError("`answers` must be an object {model: {text, score}}")
    answers: dict[str, RecordedAnswer] = {}
    for model, a in raw_answers.items():
        if not (isinstance(a, dict) and isinstance(a.get("text"), str)):
            raise ValueError(f"`answers[{model!r}]` must be an object with a string `text`")
        score = a.get("score")
        if isinstance(score, bool) or not isinstance(score, int | float) \
                or not 0.0 <= float(score) <= 1.0:
            raise ValueError(f"`answers[{model!r}].score` must be a number in [0, 1], "
                             f"got {score!r}")
        answers[model] = RecordedAnswer(a["text"], float(score))
    return ReplayItem(item_id, skill, tuple(messages), obj.get("gold"),
                      MappingProxyType(answers))


def load_replay(path: Path) -> ReplaySet:
    """Load a ``.jsonl`` or ``.jsonl.gz`` replay set. Blank lines are skipped.

    A malformed line raises ValueError naming the file, the line number and the fault.
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    items: list[ReplayItem] = []
    seen_ids: dict[str, int] = {}
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                item = _parse_item(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column "
                                 f"{exc.colno})") from None
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: {exc}") from None
            if item.id in seen_ids:
                raise ValueError(f"{path}:{lineno}: id {item.id!r} already used on line "
                                 f"{seen_ids[item.id]}")
            seen_ids[item.id] = lineno
            items.append(item)
    return ReplaySet(tuple(items))


# ---------------------------------------------------------------- latency


@dataclass(frozen=True, slots=True)
class Latency:
    """A simulated response-time distribution.

    ``fixed`` always takes ``median_ms``; ``lognormal`` has median ``median_ms``
    and sigma chosen so that p99 / median = ``p99_ratio``.
    """

    median_ms: float = 20.0
    tail: Literal["fixed", "lognormal"] = "fixed"
    p99_ratio: float = 3.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.median_ms) and self.median_ms >= 0):
            raise ValueError(f"Latency.median_ms must be a finite number >= 0, "
                             f"got {self.median_ms!r}")
        if self.tail not in ("fixed", "lognormal"):
            raise ValueError(f"Latency.tail must be 'fixed' or 'lognormal', got {self.tail!r}")
        if not (math.isfinite(self.p99_ratio) and self.p99_ratio >= 1.0):
            raise ValueError(f"Latency.p99_ratio must be a finite number >= 1, "
                             f"got {self.p99_ratio!r}")

    @property
    def sigma(self) -> float:
        """The lognormal shape parameter (0 for ``fixed``)."""
        return 0.0 if self.tail == "fixed" else math.log(self.p99_ratio) / _Z99

    def sample(self, rng: random.Random) -> float:
        """One draw, in seconds."""
        if self.tail == "fixed" or self.median_ms == 0:
            return self.median_ms / 1000.0
        return self.median_ms * math.exp(self.sigma * rng.gauss(0.0, 1.0)) / 1000.0


# ---------------------------------------------------------------- server


def _per_model(value: _T | Mapping[str, _T], models: Sequence[str], default: _T,
               what: str) -> dict[str, _T]:
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(models))
        if unknown:
            raise ValueError(f"{what} names models not in the replay set: {unknown}; "
                             f"known: {list(models)}")
        return {m: value.get(m, default) for m in models}
    return dict.fromkeys(models, value)


def _content_text(content: object) -> str | None:
    """OpenAI content is a string or a list of parts; keep the text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        if all(isinstance(t, str) for t in texts):
            return "".join(t for t in texts if isinstance(t, str))
    return None


class ReplayServer:
    """An OpenAI-compatible chat server on 127.0.0.1 that answers from a replay set.

    ``latency`` and ``failure_rate`` are one value for every model or a mapping
    by model (models left out get ``Latency()`` and 0.0). A simulated failure
    is an HTTP 500 with a JSON error body, after the sampled latency.
    Per-request work is a hash of the messages and two dict look-ups.
    """

    def __init__(
        self,
        replay: ReplaySet,
        *,
        latency: Latency | Mapping[str, Latency] = Latency(),
        failure_rate: float | Mapping[str, float] = 0.0,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.replay = replay
        self._latency = _per_model(latency, replay.models, Latency(), "latency")
        self._failure = _per_model(failure_rate, replay.models, 0.0, "failure_rate")
        for model, rate in self._failure.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"failure_rate for {model!r} must be in [0, 1], got {rate!r}")
        by_key: dict[str, ReplayItem] = {}
        for item in replay.items:
            key = prompt_key(item.messages)
            if key in by_key:
                raise ValueError(f"replay items {by_key[key].id!r} and {item.id!r} have the "
                                 "same messages; the server could not tell them apart")
            by_key[key] = item
        self._by_key = by_key
        self._rng = random.Random(seed)
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        #: request counts by outcome: ok, failed (simulated), not_found, bad_request
        self.stats: dict[str, int] = {"ok": 0, "failed": 0, "not_found": 0, "bad_request": 0}

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` once started."""
        if self._base_url is None:
            raise RuntimeError("ReplayServer is not started")
        return self._base_url

    async def start(self) -> str:
        """Bind a free port and start serving; returns the base URL (ends in ``/v1``)."""
        if self._base_url is not None:
            return self._base_url
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._base_url = f"http://{host}:{port}/v1"
        return self._base_url

    async def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        runner, self._runner, self._base_url = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> ReplayServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "owned_by": "replay"} for m in self.replay.models]
        return web.json_response({"object": "list", "data": data})

    def _fail(self, outcome: str, status: int, message: str, code: str) -> web.Response:
        self.stats[outcome] += 1
        kind = "server_error" if status >= 500 else "invalid_request_error"
        return web.json_response({"error": {"message": message, "type": kind, "code": code}},
                                 status=status)

    async def _chat(self, request: web.Request) -> web.Response:
        try:
            body: Any = await request.json()
        except ValueError:
            return self._fail("bad_request", 400, "request body is not valid JSON",
                              "invalid_json")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str) \
                or not isinstance(body.get("messages"), list):
            return self._fail("bad_request", 400, "expected a JSON object with string `model` "
                              "and list `messages`", "invalid_request")
        model: str = body["model"]
        pairs: list[dict[str, str]] = []
        for m in body["messages"]:
            text = _content_text(m.get("content")) if isinstance(m, dict) else None
            if text is None or not isinstance(m.get("role"), str):
                return self._fail("bad_request", 400, "every message needs a string `role` "
                                  "and text `content`", "invalid_request")
            pairs.append({"role": m["role"], "content": text})
        latency = self._latency.get(model)
        if latency is None:
            return self._fail("not_found", 404, f"unknown model {model!r}; this replay server "
                              f"plays {list(self.replay.models)}", "model_not_found")
        item = self._by_key.get(prompt_key(pairs))
        if item is None:
            return self._fail("not_found", 404, "no recorded prompt matches these messages "
                              f"(model {model!r}, {len(pairs)} message(s))", "prompt_not_found")
        answer = item.answers.get(model)
        if answer is None:
            return self._fail("not_found", 404, f"model {model!r} has no recorded answer for "
                              f"item {item.id!r}", "answer_not_found")
        fail = self._rng.random() < self._failure[model]
        delay = latency.sample(self._rng)
        if delay > 0:
            await asyncio.sleep(delay)
        if fail:
            return self._fail("failed", 500, f"simulated failure of {model!r}",
                              "simulated_failure")
        self.stats["ok"] += 1
        prompt_tokens = math.ceil(sum(len(p["content"]) for p in pairs) / 4)
        completion_tokens = math.ceil(len(answer.text) / 4)
        return web.json_response({
            "id": f"chatcmpl-replay-{self.stats['ok']}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0,
                         "message": {"role": "assistant", "content": answer.text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })
