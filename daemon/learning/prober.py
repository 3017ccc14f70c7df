"""The prober: crafted prompts with known answers, run against every provider.

On a schedule (``alchemist.probes.interval_s`` with jitter) and within a budget (calls
per hour, USD per day), it samples probes across skills, asks every provider
through the normal adapters, checks each answer, and

* publishes one ``<prefix>.probes.results`` event per provider and suite
  (``provider, suite, skill, passed, total, latency_ms, cost``);
* journals each probe as a record with ground truth per provider (in the
  rated stream, user ``"probe"``), so fitness uses it next to user ratings,
  counting ``alchemist.probes.weight`` ratings each. Before any user has rated
  anything, probes alone seed the population and can earn the first promotion.

Templates: every provider is asked a probe with the template the ``default``
recipe gives it on the probe's skill. With probability
``alchemist.probes.template_explore`` per provider, it is also asked the same probe
with another of the skill's options (no template, or another template), an
extra call journaled as a *template trial* (user ``"probe-trial"``), so every
option keeps being measured while the main probe records stay whole for the
weights. Each record says which template each provider was asked with.

Golden suites (``golden = true``, e.g. from ``alchemist probe import``) are not
sampled: each round first asks the golden probes still due, each of only the
providers that have no answer on record for it under the template the recipe
gives them now (:mod:`alchemist.daemon.learning.golden` reads that back from the
journaled records), without template trials. So each provider answers each golden
probe once, and again when its template changes. They are probe records like any.

``alchemist probe run`` uses :func:`probe_providers` directly, without NATS.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import msgspec
import structlog

from alchemist.adapters import ChatRequest
from alchemist.answers.fusion import Candidate, similarity_matrix
from alchemist.daemon.config import ProbesConfig
from alchemist.daemon.learning import golden
from alchemist.daemon.learning.budget import Budget
from alchemist.daemon.learning.golden import record_id
from alchemist.daemon.serving.fanout import FanOut, Outcome
from alchemist.daemon.storage.experience import PROBE_USER, PROBES_KEY, TRIAL_USER, Experience, Rated
from alchemist.daemon.tasks import cancel
from alchemist.probes.suites import Probe, Suite, Template, render

log = structlog.get_logger("alchemist.prober")
#: the lease whose holder probes (one prober per deployment; never a recipe name)
PROBER_LEASE = "_prober"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe asked of every provider, checked."""

    probe: Probe
    outcomes: tuple[Outcome, ...]
    passed: tuple[bool | None, ...]  # None: the provider gave no answer
    extracted: tuple[str | None, ...]
    #: the template each provider was asked with (None: the probe as written)
    templates: tuple[str | None, ...] = field(default=())
    #: an extra ask with other templates than the recipe's (see the module docstring)
    trial: bool = False

    @property
    def asked_with(self) -> tuple[str | None, ...]:
        """The template of each outcome's provider (None for every one when not recorded)."""
        return self.templates or (None,) * len(self.outcomes)


def sample(suites: Sequence[Suite], n: int, rng: random.Random) -> list[Probe]:
    """Up to ``n`` probes, spread over the suites (round robin over shuffled suites)."""
    pools = [rng.sample(list(s.probes), len(s.probes)) for s in suites if s.probes]
    rng.shuffle(pools)
    out: list[Probe] = []
    while len(out) < n and any(pools):
        for pool in pools:
            if pool and len(out) < n:
                out.append(pool.pop())
    return out


async def probe_providers(fanout: FanOut, names: Sequence[str], probe: Probe,
                          timeout_s: float,
                          templates: Mapping[str, Template | None] | None = None) -> ProbeResult:
    """Ask every named provider one probe (concurrently, each with its template) and check."""
    chosen = {n: (templates or {}).get(n) for n in names}
    chats = {n: ChatRequest(messages=tuple(render(probe, t))) for n, t in chosen.items()}
    deadline = asyncio.get_running_loop().time() + timeout_s
    outcomes = await fanout.run(list(names), chats, deadline)
    passed: list[bool | None] = []
    extracted: list[str | None] = []
    for o in outcomes:
        if o.result is None:
            passed.append(None)
            extracted.append(None)
            continue
        check = probe.checker.check(o.result.text)
        passed.append(check.passed)
        extracted.append(check.extracted)
    used = tuple(t.name if (t := chosen[o.name]) is not None else None for o in outcomes)
    return ProbeResult(probe, tuple(outcomes), tuple(passed), tuple(extracted), used)


def to_record(result: ProbeResult, probe_id: str, user: str = PROBE_USER) -> Rated:
    """A probe result as a rated-experience record with ground truth per provider."""
    names = tuple(o.name for o in result.outcomes)
    answered = [o.result is not None for o in result.outcomes]
    cands = [Candidate(n, "", e, 1.0) for n, e, ok in zip(names, result.extracted, answered,
                                                           strict=True)]
    sim = similarity_matrix(cands, "vote")
    for i, ok in enumerate(answered):
        if not ok:
            sim[i, :] = sim[:, i] = 0.0
    exp = Experience(
        request_id=probe_id, recipe=PROBES_KEY, version=0, skill=result.probe.skill,
        strategy="vote", providers=names, answered=tuple(answered),
        answers=result.extracted, sim=tuple(round(float(v), 3) for v in sim.ravel()),
        served=0, propensity=1.0,
        cost=tuple(float(o.result.usage.cost or 0.0) if o.result else 0.0
                   for o in result.outcomes),
        templates=result.templates)
    truth = tuple(None if p is None else (1.0 if p else 0.0) for p in result.passed)
    return Rated(exp, 0, user, time.time(), truth)


def _name(template: Template | None) -> str | None:
    return None if template is None else template.name


NO_TEMPLATE = "none"  # how "asked without a template" is named in events and tables


def summarize(results: Sequence[ProbeResult]) -> list[dict[str, object]]:
    """One event per provider and suite: ``passed`` / ``total`` and mean ``latency_ms`` of
    the probes asked as the recipe says, ``cost`` of every call (template trials too), and
    ``templates``: ``{template: [passed, total]}`` over probes and trials alike (``"none"``:
    asked as written)."""
    acc: dict[tuple[str, str], dict[str, float]] = {}
    by_template: dict[tuple[str, str], dict[str, list[int]]] = {}
    skills: dict[str, str] = {}
    for r in results:
        skills[r.probe.suite] = r.probe.skill
        for o, p, t in zip(r.outcomes, r.passed, r.asked_with, strict=True):
            row = acc.setdefault((o.name, r.probe.suite),
                                 {"passed": 0, "total": 0, "latency": 0.0, "cost": 0.0})
            row["cost"] += (o.result.usage.cost or 0.0) if o.result else 0.0
            if not r.trial:
                row["total"] += 1
                row["passed"] += 1 if p else 0
                row["latency"] += o.latency_ms
            cell = by_template.setdefault((o.name, r.probe.suite), {}).setdefault(
                t or NO_TEMPLATE, [0, 0])
            cell[0] += 1 if p else 0
            cell[1] += 1
    return [{"provider": prov, "suite": suite, "skill": skills[suite],
             "passed": int(v["passed"]), "total": int(v["total"]),
             "latency_ms": round(v["latency"] / max(1, v["total"]), 1), "cost": round(v["cost"], 6),
             "templates": by_template[(prov, suite)]}
            for (prov, suite), v in sorted(acc.items())]


class Prober:
    """Background probing within a budget; results go to NATS and to the learning data."""

    def __init__(self, cfg: ProbesConfig, suites: Sequence[Suite],
                 fanout: Callable[[], FanOut], record: Callable[[Rated], object],
                 publish: Callable[[str, bytes], object], prefix: str,
                 rng: random.Random | None = None, *,
                 catalog: Mapping[str, Sequence[Template]] | None = None,
                 chosen: Callable[[str, str], str | None] | None = None,
                 use_templates: Callable[[], bool] | None = None,
                 journal: Callable[[], Iterable[Rated]] | None = None,
                 leader: Callable[[], bool] | None = None) -> None:
        """``catalog``: each skill's templates; ``chosen(skill, provider)``: the template
        the ``default`` recipe sends that provider (None: none); ``use_templates()``:
        whether that recipe can use templates at all (if not, no trials are spent);
        ``journal()``: the journaled records (the experience index's rated records), where
        the golden probes already asked are read back (:mod:`.golden`), and the budget
        spent (:meth:`Budget.from_journal`); ``leader()``: whether this instance holds the
        prober lease (:data:`PROBER_LEASE`): only the holder probes on schedule."""
        self.cfg = cfg
        self.suites = list(suites)
        self.catalog = {s: tuple(ts) for s, ts in (catalog or {}).items()}
        self._chosen = chosen or (lambda skill, provider: None)
        self._use_templates = use_templates or (lambda: bool(self.catalog))
        self._fanout = fanout
        self._record = record
        self._publish = publish
        self.subject = f"{prefix}.probes.results"
        self.budget = Budget(cfg.calls_per_hour, cfg.cost_per_day)
        self.rng = rng or random.Random()
        self._journal = journal or (lambda: ())
        self._leader = leader or (lambda: True)
        self._leading = False
        #: each golden probe's tag (:func:`.golden.golden_tag`), by key; and the probe it is of
        self._golden_tags: dict[str, str] = {}
        self._tagged: dict[str, Probe] = {}
        #: ``golden``: golden probes asked; ``golden_calls``: the provider calls they made
        self.counts = {"runs": 0, "probes": 0, "template_trials": 0, "skipped_budget": 0,
                       "golden": 0, "golden_calls": 0}
        self._task: asyncio.Task[None] | None = None

    def reload(self, cfg: ProbesConfig) -> None:
        """Take a reloaded config's probe settings from the next round on; the budget keeps
        what it spent. ``enabled``, ``suites_dir`` and ``shipped_suites`` keep their running
        values until the next start (the suites are loaded then; the daemon's
        ``reload_needs_restart`` warning names them). Never raises: the daemon applies it
        after every check."""
        running = (self.cfg.enabled, self.cfg.suites_dir, self.cfg.shipped_suites)
        if (cfg.enabled, cfg.suites_dir, cfg.shipped_suites) != running:
            cfg = msgspec.structs.replace(cfg, enabled=self.cfg.enabled, suites_dir=self.cfg.suites_dir,
                                          shipped_suites=self.cfg.shipped_suites)
        self.cfg = cfg
        self.budget.resize(cfg.calls_per_hour, cfg.cost_per_day)

    async def start(self) -> None:
        """Start probing on schedule (when enabled and there are suites)."""
        if self.cfg.enabled and self.suites:
            self._task = asyncio.create_task(self._loop(), name="prober")

    async def _loop(self) -> None:
        delay = self.cfg.first_run_s
        while True:
            await asyncio.sleep(delay)
            if not self._leader():
                self._leading = False
                delay = min(1.0, self.cfg.interval_s)  # another instance probes: check again soon
                continue
            if not self._leading:  # a new term: what any instance spent still counts
                self._leading = True
                self.budget = Budget.from_journal(self.cfg.calls_per_hour, self.cfg.cost_per_day,
                                                  self._journal())
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("probe_run_failed")
            delay = self.cfg.interval_s * (1 + self.cfg.jitter * (2 * self.rng.random() - 1))

    async def run_once(self) -> list[ProbeResult]:
        """One probing round: the golden probes still due first, then sampled ones, up to
        ``sample`` probes in all; ask, check, publish, record."""
        fanout = self._fanout()
        names = list(fanout.providers)
        results: list[ProbeResult] = []
        due = self.golden_due(names)[: self.cfg.sample]
        plan = [*due, *((p, names) for p in sample([s for s in self.suites if not s.golden],
                                                   self.cfg.sample - len(due), self.rng))]
        for probe, who in plan:
            now = time.monotonic()
            if not self.budget.allows(len(who), now):
                self.counts["skipped_budget"] += 1
                log.info("probe_skipped", reason="budget", calls_last_hour=self.budget.calls_last_hour)
                break
            tag = self._golden_tags.get(probe.key)
            trials = {} if tag is not None else self.trials(probe.skill, names)
            if not self.budget.allows(len(who) + len(trials), now):
                trials = {}  # the probe itself comes first
            templates = {n: self.current(probe.skill, n) for n in who}
            rid = record_id(tag) if tag is not None else f"probe-{os.urandom(8).hex()}"
            results.append(await self._ask(fanout, probe, templates, PROBE_USER, rid, now))
            if trials:
                results.append(await self._ask(fanout, probe, trials, TRIAL_USER,
                                               f"probe-{os.urandom(8).hex()}", now))
            self.counts["probes"] += 1
            self.counts["template_trials"] += len(trials)
            if tag is not None:
                self.counts["golden"] += 1
                self.counts["golden_calls"] += len(who)
        for event in summarize(results):
            pending = self._publish(self.subject, json.dumps(event).encode())
            if asyncio.iscoroutine(pending):
                await pending
        self.counts["runs"] += 1
        log.info("probe_run", probes=sum(not r.trial for r in results),
                 template_trials=sum(len(r.outcomes) for r in results if r.trial),
                 golden=len(due), providers=len(names))
        return results

    async def _ask(self, fanout: FanOut, probe: Probe, templates: Mapping[str, Template | None],
                   user: str, request_id: str, now: float) -> ProbeResult:
        """Ask the providers of ``templates`` one probe, spend the budget, journal the record."""
        result = await probe_providers(fanout, list(templates), probe, self.cfg.timeout_s, templates)
        result = replace(result, trial=user == TRIAL_USER)
        cost = sum((o.result.usage.cost or 0.0) for o in result.outcomes if o.result)
        self.budget.spend(len(templates), cost, now)
        pending = self._record(to_record(result, request_id, user))
        if asyncio.iscoroutine(pending):
            await pending
        return result

    def golden_due(self, names: Sequence[str]) -> list[tuple[Probe, list[str]]]:
        """Each golden probe some provider of ``names`` has not answered yet under the
        template the recipe gives it now, with those providers (suite and file order)."""
        done = golden.asked(self._journal())
        probes = [p for s in self.suites if s.golden for p in s.probes]
        self._golden_tags = {p.key: self._golden_tags[p.key] if self._tagged.get(p.key) is p
                             else golden.golden_tag(p) for p in probes}  # hashed once per probe
        self._tagged = {p.key: p for p in probes}
        due = []
        for probe in probes:
            tag = self._golden_tags[probe.key]
            who = [n for n in names if (tag, n, _name(self.current(probe.skill, n))) not in done]
            if who:
                due.append((probe, who))
        return due

    def current(self, skill: str, provider: str) -> Template | None:
        """The template the recipe sends a provider on a skill (None: none, or unknown)."""
        name = self._chosen(skill, provider)
        return next((t for t in self.catalog.get(skill, ()) if t.name == name), None)

    def trials(self, skill: str, names: Sequence[str]) -> dict[str, Template | None]:
        """The providers that also try another option of the skill this time, and which."""
        options: list[Template | None] = [None, *self.catalog.get(skill, ())]
        out: dict[str, Template | None] = {}
        if len(options) < 2 or not self._use_templates():
            return out
        for name in names:
            if self.rng.random() < self.cfg.template_explore:
                current = self.current(skill, name)
                out[name] = self.rng.choice([t for t in options if t is not current])
        return out

    async def close(self) -> None:
        await cancel(self._task)
        self._task = None


def accuracy_table(results: Sequence[ProbeResult], *, by_template: bool = False
                   ) -> dict[str, dict[str, tuple[int, int]]]:
    """``{provider: {skill: (passed, total)}}`` for the CLI's table; with ``by_template``
    the columns are ``skill/template`` (``skill/none``: asked as written)."""
    table: dict[str, dict[str, tuple[int, int]]] = {}
    for r in results:
        for o, p, t in zip(r.outcomes, r.passed, r.asked_with, strict=True):
            column = f"{r.probe.skill}/{t or NO_TEMPLATE}" if by_template else r.probe.skill
            passed, total = table.setdefault(o.name, {}).get(column, (0, 0))
            table[o.name][column] = (passed + (1 if p else 0), total + 1)
    return table
