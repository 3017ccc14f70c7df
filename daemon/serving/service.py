"""The ``alchemist.infer`` handler: validate, fan out, fuse, reply, record.

The NATS micro endpoint calls :meth:`InferenceService.on_request` for each
message, one at a time, so that method only checks size and load and hands
the request to its own task: a slow fusion never blocks the next request.
Past ``service.max_concurrency`` requests in flight, the reply is
``overloaded`` at once. Each request's work is metered when it ends, for the
micro service's ``$SRV.STATS`` (:mod:`alchemist.daemon.serving.micro`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER, Request

from alchemist.adapters import ChatRequest, Provider
from alchemist.answers.extract import AnswerSpec
from alchemist.answers.fusion import Candidate, Cascade, Fused, fuse
from alchemist.answers.recipes import Recipe, Strategy
from alchemist.daemon.config import Config
from alchemist.daemon.serving.fanout import FanOut, Outcome
from alchemist.daemon.serving.micro import EndpointMeter
from alchemist.daemon.serving.reply import Votes, build_reply, experience_of, no_answer
from alchemist.daemon.serving.wire import (
    ERROR_STATUS,
    InferError,
    InferRequest,
    decode,
    encode,
    error_body,
    is_json,
    parse_hops,
    parse_request,
)
from alchemist.daemon.storage.experience import Experience
from alchemist.daemon.storage.recipe_store import RecipeStore
from alchemist.daemon.storage.streams import Streams
from alchemist.daemon.telemetry.logs import debug_enabled
from alchemist.daemon.telemetry.metrics import Metrics
from alchemist.probes.router import SkillRouter
from alchemist.probes.suites import Template, apply_template

log = structlog.get_logger("alchemist.infer")
JSON_HEADERS = {"Content-Type": "application/json"}
EXPLORE_BELOW = 0.6  # only requests whose winner holds less weight than this may explore
MAX_WARNED = 1024  # (recipe, version, skill, template) keys already warned about, at most
#: header of the daemon's own start-up probe (see ``Daemon._until_reachable``)
SELF_CHECK = "Alchemist-Self-Check"


def new_request_id() -> str:
    """A unique, time-ordered id: 12 hex digits of milliseconds + 10 random hex digits."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(5).hex()}"


def issued_at(request_id: str) -> float | None:
    """When a request id of :func:`new_request_id` was made (unix seconds); None for another
    shape (a client may rate any string)."""
    if len(request_id) != 22:
        return None
    try:
        return int(request_id[:12], 16) / 1000.0
    except ValueError:
        return None


class InferenceService:
    """Serves inference requests with the current recipes."""

    def __init__(self, cfg: Config, providers: Mapping[str, Provider], recipes: RecipeStore,
                 streams: Streams | None, *, rng: random.Random | None = None,
                 metrics: Metrics | None = None, router: SkillRouter | None = None,
                 templates: Mapping[str, Mapping[str, Template]] | None = None) -> None:
        self.cfg = cfg
        self.providers = dict(providers)
        self.recipes = recipes
        self.streams = streams
        self.rng = rng or random.Random()
        self.inflight = 0
        self.counts: Counter[str] = Counter()
        #: the confidences of the answers served, summed (the status page's timeline)
        self.confidence_sum = 0.0
        self.metrics = metrics
        self.router = router
        #: the probe suites' templates: skill -> template name -> template
        self.templates: Mapping[str, Mapping[str, Template]] = templates or {}
        self._warned: OrderedDict[tuple[str, int, str, str], None] = OrderedDict()
        self.fanout = FanOut(self.providers, cfg.breaker, metrics)
        self._tasks: set[asyncio.Task[None]] = set()
        #: the broker's max_payload (set by the daemon once connected)
        self.reply_limit = 1 << 20
        #: what ``$SRV.STATS`` reports for the endpoint: requests, errors, processing time
        self.meter = EndpointMeter()
        if streams is not None:  # records the journal could not get acknowledged
            streams.journal.on_drop = self._dropped

    def _dropped(self, n: int) -> None:
        self.counts["experience_dropped"] += n

    # -- NATS edge -----------------------------------------------------------------------

    def reload(self, cfg: Config, providers: Mapping[str, Provider]) -> None:
        """Serve with a reloaded config's providers and limits from the next request on.

        Requests in flight finish with the adapters they started with (the
        fan-out gives each call the provider set it started with). The breakers
        follow the new ``breaker`` policy (see :meth:`FanOut.replace`).
        """
        self.cfg = cfg
        self.providers = dict(providers)
        self.fanout.replace(self.providers, cfg.breaker)

    async def on_request(self, req: Request) -> None:
        """Micro endpoint handler: admit or refuse at once, then serve in a task.

        The request's work is metered in :attr:`meter` when it ends (see
        :mod:`alchemist.daemon.serving.micro`).
        """
        if req.headers and SELF_CHECK in req.headers:
            await req.respond(b"")
            return
        started = time.perf_counter_ns()
        # nobody to answer (nats.micro.Request has no public accessor for the reply subject):
        # don't pay providers for it
        if not req._msg.reply:
            self.counts["no_reply_subject"] += 1
            log.info("infer_dropped", reason="published without a reply subject")
            self.meter.record(started)
            return
        as_json = is_json(req.headers)
        self.counts["requests"] += 1
        refusal = self.refusal(len(req.data))
        if refusal is not None:
            await self._reply_error(req, as_json, refusal)
            self.meter.record(started, _described(refusal))
            return
        self.inflight += 1
        task = asyncio.create_task(self._serve(req, as_json, started))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def refusal(self, size: int) -> InferError | None:
        """Why a request of ``size`` bytes is refused at once (None: it is admitted)."""
        limit = self.cfg.service.max_payload
        if size > limit:
            return InferError("payload_too_large", f"the request is {size} bytes; the limit is "
                              f"{limit} bytes (service.max_payload)")
        if self.inflight >= self.cfg.service.max_concurrency:
            return InferError("overloaded", f"{self.inflight} requests are in flight, the limit "
                              f"is {self.cfg.service.max_concurrency}; retry shortly")
        return None

    def served(self, reply: Mapping[str, Any], exp: Experience | None) -> None:
        """Count an answer that reached its requester (by either door), time it, journal it."""
        self.counts["ok"] += 1
        self.confidence_sum += reply["confidence"]
        if self.metrics is not None:
            self.metrics.observe("alchemist_request_latency_seconds", reply["latency_ms"] / 1000)
        if exp is not None and self.streams is not None:
            self.streams.record(exp)  # published in the journal's next batch

    async def _serve(self, req: Request, as_json: bool, started: int) -> None:
        request_id = new_request_id()
        failed: str | None = None
        replied = False  # once the answer is out, the request counts by it, whatever follows
        # this task's own context (a copy made by create_task): no need to unbind after
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            hops = parse_hops(req.headers)
            request = parse_request(decode(req.data, as_json), self.cfg.service.max_deadline_ms)
            reply, exp = await self.infer(request, request_id, hops=hops)
            body = encode(reply, as_json)
            if len(body) > self.reply_limit:
                raise InferError("payload_too_large", f"the fused reply is {len(body)} bytes, "
                                 f"over the broker's limit of {self.reply_limit}; ask for "
                                 "fewer max_tokens or leave out include_candidates")
            await req.respond(body, headers=JSON_HEADERS if as_json else None)
            replied = True
            self.served(reply, exp)
        except InferError as exc:
            failed = _described(exc)
            await self._reply_error(req, as_json, exc)
        except asyncio.CancelledError:
            if not replied:  # cancelled while recording: the requester has its answer
                failed = "cancelled: the daemon stopped before it answered"
            raise
        except Exception:
            log.exception("infer_internal_error")
            error = InferError("internal", f"internal error while serving request "
                               f"{request_id}; it is logged under that id")
            failed = _described(error)
            await self._reply_error(req, as_json, error)
        finally:
            self.inflight -= 1
            self.meter.record(started, failed)

    async def _reply_error(self, req: Request, as_json: bool, exc: InferError) -> None:
        self.counts[f"error_{exc.code}"] += 1
        log.info("infer_error", code=exc.code, message=exc.message)
        headers = {ERROR_CODE_HEADER: ERROR_STATUS[exc.code], ERROR_HEADER: exc.message[:256]}
        if as_json:
            headers.update(JSON_HEADERS)
        with contextlib.suppress(Exception):  # the requester may be gone; nothing to tell
            await req.respond(encode(error_body(exc.code, exc.message), as_json), headers=headers)

    async def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for requests in flight, then cancel the rest.

        Returns how many had to be cancelled.
        """
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        left = set(self._tasks)
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left, timeout=5.0)
        return len(left)

    # -- one request -------------------------------------------------------------------------

    def _plan(self, recipe: Recipe, skill: str) -> tuple[list[str], dict[str, float], bool]:
        """Which providers may be called, their weights, and whether this request explores
        (``explore`` sometimes calls all, at once)."""
        row = recipe.row(skill, list(self.providers))
        chosen = [p for p, w in row.items() if w >= recipe.min_weight]
        explores = recipe.explore > 0 and self.rng.random() < recipe.explore
        if explores:
            chosen = list(row)
        if not chosen and row:
            chosen = [max(row, key=row.__getitem__)]
        return self.fanout.admit(chosen), row, explores

    async def _ask(self, recipe: Recipe, called: list[str], votes: Votes, explores: bool,
                   chats: Mapping[str, ChatRequest], deadline: float
                   ) -> tuple[list[Outcome], Cascade | None, str]:
        """Call the providers: all at once, or in the waves of the recipe's cascade.

        Returns the outcomes of those asked, the cascade (None: all at once)
        and why the calls ended (see :meth:`FanOut.run_waves`; ``all`` at once).
        An exploring request asks everyone at once, so the estimator keeps
        seeing every provider's answers.
        """
        strategy: Strategy = "select" if recipe.strategy == "select" else "vote"
        cascade = None if explores else Cascade.plan(
            {p: votes.row[p] for p in called}, recipe.first_wave, recipe.stop_margin, strategy)
        if cascade is None:
            outcomes = await self.fanout.run(called, chats, deadline, settled=votes.settled)
            return outcomes, None, "all"
        plan = cascade

        def stop(asked: Sequence[Outcome]) -> str | None:
            return plan.stop(votes.candidates(asked), {o.name for o in asked})

        outcomes, ended = await self.fanout.run_waves(plan.waves(), chats, deadline, stop=stop,
                                                      settled=votes.settled)
        return outcomes, cascade, ended

    def _templates(self, recipe: Recipe, skill: str, hinted: bool, spec: AnswerSpec,
                   called: Sequence[str]) -> dict[str, Template]:
        """The template of each called provider the recipe names one for, when
        ``alchemist.probes.apply_templates`` allows it for a hinted or routed skill.

        Never under ``text`` extraction: a template may change the reply's format
        (``Answer: 14`` for ``14``), and whole texts in another format never agree.
        """
        mode = self.cfg.probes.apply_templates
        if mode == "never" or (mode == "hinted" and not hinted) or spec.kind == "text":
            return {}
        catalog = self.templates.get(skill, {})
        out: dict[str, Template] = {}
        for provider in called:
            name = recipe.template(skill, provider)
            if name is None:
                continue
            template = catalog.get(name)
            if template is None:
                self._unknown_template(recipe, skill, name)
                continue
            out[provider] = template
        return out

    def _unknown_template(self, recipe: Recipe, skill: str, name: str) -> None:
        """Warn once per recipe version, skill and name (in bounded memory)."""
        self.counts["template_unknown"] += 1
        key = (recipe.name, recipe.version, skill, name)
        if key in self._warned:
            return
        self._warned[key] = None
        while len(self._warned) > MAX_WARNED:
            self._warned.popitem(last=False)
        known = ", ".join(self.templates.get(skill, {})) or "none"
        log.warning("template_unknown", recipe=recipe.name, version=recipe.version, skill=skill,
                    template=name, known=known, detail="no probe suite of this skill defines "
                    "that template; requests are sent without it")

    def _route(self, request: InferRequest) -> str:
        """A skill for a request without a hint: the probe suites' classifier, else "*"."""
        if self.router is None:
            return "*"
        text = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        skill, _ = self.router.classify(text[:4000])
        return skill

    async def infer(self, request: InferRequest, request_id: str,
                    hops: int = 0) -> tuple[dict[str, Any], Experience | None]:
        """Answer one validated request; returns the reply and its experience record."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        recipe = self._recipe(request.recipe)
        skill = request.skill or self._route(request)
        if debug_enabled():  # prompts only at debug; nothing is built at info
            log.debug("infer_request", recipe=recipe.name, skill=skill,
                      messages=[{"role": m.role, "content": m.content} for m in request.messages])
        spec = request.answer or recipe.answer
        called, row, explores = self._plan(recipe, skill)
        # the explore draw, taken now (in arrival order, like _plan's): with a seeded ``rng``
        # it does not depend on which request finishes first
        draw = self.rng.random()
        if not called:
            raise InferError("no_providers", "no providers are configured")
        deadline_ms = request.deadline_ms or self.cfg.service.default_deadline_ms
        chat = ChatRequest(messages=request.messages, max_tokens=request.max_tokens,
                           temperature=request.temperature, hops=hops)
        templates = self._templates(recipe, skill, request.skill is not None, spec, called)
        chats = {p: dataclasses.replace(chat, messages=apply_template(request.messages, templates[p]))
                 if p in templates else chat for p in called}
        votes = Votes(recipe.strategy, row, spec)
        outcomes, cascade, ended = await self._ask(recipe, called, votes, explores, chats,
                                                   started + deadline_ms / 1000.0)
        candidates = votes.candidates(outcomes)
        if not candidates:
            raise no_answer(outcomes, deadline_ms)
        fused = fuse(candidates, "select" if recipe.strategy == "select" else "vote")
        served, propensity = self._maybe_explore(candidates, fused, recipe.explore, draw)
        reply = build_reply(request_id, recipe, fused, candidates, served, outcomes, templates,
                             (loop.time() - started) * 1000.0)
        if request.include_candidates:
            reply["candidates"] = [{"provider": c.provider, "text": c.text, "answer": c.answer,
                                    "weight": c.weight} for c in candidates]
        if debug_enabled():  # one line per answer, at debug only
            log.debug("infer_ok", recipe=recipe.name, version=recipe.version, skill=skill,
                      provider=reply["provider"], confidence=reply["confidence"],
                      latency_ms=reply["latency_ms"], called=len(outcomes),
                      answered=len(candidates), waves=outcomes[-1].wave, ended=ended)
        exp = experience_of(request_id, recipe, skill, fused.strategy, outcomes, candidates,
                            fused.sim, reply["provider"], propensity, templates,
                            cascaded=cascade is not None)
        return reply, exp

    def _recipe(self, name: str) -> Recipe:
        """The current recipe called ``name``."""
        recipe = self.recipes.get(name)
        if recipe is None:
            known = ", ".join(sorted(self.recipes.current)) or "none"
            raise InferError("unknown_recipe", f"no recipe named {name!r}; "
                             f"known recipes: {known}")
        return recipe

    def _maybe_explore(self, candidates: list[Candidate], fused: Fused, explore: float,
                       draw: float) -> tuple[int, float]:
        """Sometimes serve another answer, so ratings reach answers the recipe would not pick:
        under ``vote`` the runner-up group, under ``select`` a rival text drawn uniformly.

        Only uncertain requests explore (the winner holds less than
        ``EXPLORE_BELOW`` of the weight): a near-unanimous answer is not worth
        risking. ``draw`` is a uniform draw in [0, 1). Returns the served index and the
        probability it was served with.
        """
        pick, sim = fused.index, fused.sim
        if explore <= 0 or fused.confidence >= EXPLORE_BELOW:
            return pick, 1.0
        rivals = [i for i in range(len(candidates))
                  if sim[pick][i] < 0.5 and candidates[i].answer is not None]
        if not rivals:
            return pick, 1.0
        if draw >= explore:
            return pick, 1.0 - explore
        if fused.strategy == "select":
            # texts: any rival, uniformly; the runner-up by consensus is consensus again, and
            # a text unlike all the others would never be served, rated or learned about
            return rivals[min(int(draw / explore * len(rivals)), len(rivals) - 1)], \
                explore / len(rivals)
        return max(rivals, key=lambda i: fused.scores[i]), explore


def _described(exc: InferError) -> str:
    """An error reply as the endpoint stats' ``last_error``."""
    return f"{exc.code}: {exc.message}"
