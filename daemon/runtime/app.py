"""The daemon's lifecycle: start in order, serve, stop in reverse, time-boxed.

Start: embedded broker (if configured) -> NATS -> HTTP session and providers
-> recipes (KV) -> streams and followers -> feedback consumer -> evolver ->
micro service (only now are requests taken). Stop: stop taking requests ->
wait for those in flight (bounded) -> stop feedback and evolver (state saved
under a shield) -> drain NATS -> close HTTP -> stop the embedded broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import nats.errors
import structlog
from aiohttp import web
from nats.aio.client import Client
from nats.micro.service import ServiceConfig

from alchemist import __version__
from alchemist.adapters import (
    Provider,
    ProviderSpec,
    build_provider,
    make_session,
)
from alchemist.daemon.config import Config, load_config
from alchemist.daemon.http import FrontDoor, open_front_door
from alchemist.daemon.learning.evolver import Evolver
from alchemist.daemon.learning.feedback import FeedbackConsumer
from alchemist.daemon.learning.prober import PROBER_LEASE, Prober
from alchemist.daemon.runtime.cluster import instance_id, leadership, service_identity
from alchemist.daemon.runtime.launch import loop_name
from alchemist.daemon.runtime.notify import Notifier
from alchemist.daemon.runtime.reload import (
    adapters,
    as_reloaded,
    check_templates,
    provider_spec,
    quietly,
    restart_keys,
)
from alchemist.daemon.runtime.scrape import collect
from alchemist.daemon.serving.micro import MeteredService, add_metered_service
from alchemist.daemon.serving.service import SELF_CHECK, InferenceService
from alchemist.daemon.storage.broker import EmbeddedNats, connect, redact_url
from alchemist.daemon.storage.experience import ExperienceIndex
from alchemist.daemon.storage.recipe_store import RecipeStore
from alchemist.daemon.storage.streams import Streams
from alchemist.daemon.tasks import cancel
from alchemist.daemon.telemetry.logs import register_secret
from alchemist.daemon.telemetry.metrics import Metrics, bound_port, serve_metrics
from alchemist.probes.router import SkillRouter
from alchemist.probes.suites import Suite, Template, load_suites, template_catalog

__all__ = ["Daemon", "check_templates", "provider_spec", "run"]

log = structlog.get_logger("alchemist")


class Daemon:
    """One llm-alchemist instance."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.instance = instance_id()  # names this process in leases and in $SRV replies
        self.embedded: EmbeddedNats | None = None
        self.url = cfg.nats.url
        self.nc: Client | None = None
        self.session: aiohttp.ClientSession | None = None
        self.providers: dict[str, Provider] = {}
        self._specs: dict[str, ProviderSpec] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self.index = ExperienceIndex(cfg.experience.max_records)
        self.recipes: RecipeStore | None = None
        self.streams: Streams | None = None
        self.feedback: FeedbackConsumer | None = None
        self.evolver: Evolver | None = None
        self.service: InferenceService | None = None
        self.prober: Prober | None = None
        #: every skill's probe-suite templates (what recipes name per provider)
        self.templates: dict[str, tuple[Template, ...]] = {}
        self._micro: MeteredService | None = None
        self._metrics_runner: web.AppRunner | None = None
        self.http: FrontDoor | None = None  # the [http] front door, when enabled
        self.metrics = Metrics()
        self.metrics.add_collector(lambda m: collect(self, m))
        self._stopped = False
        self.started_at = time.time()

    async def start(self) -> None:
        """Bring everything up; on failure, tear down what was started and re-raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        cfg = self.cfg
        specs = [provider_spec(p) for p in cfg.providers]  # key errors before anything runs
        for secret in (cfg.nats.password, cfg.nats.token):
            register_secret(secret)
        # suites first: a bad suite file stops start-up before anything connects
        suites = load_suites(Path(cfg.probes.suites_dir) if cfg.probes.suites_dir else None,
                             shipped=cfg.probes.shipped_suites)
        self.templates = template_catalog(suites)
        check_templates(cfg, self.templates)
        self.nc = await self._connect()
        self.session = make_session()
        self.providers = {s.name: build_provider(s, self.session) for s in specs}
        self._specs = {s.name: s for s in specs}
        self.recipes = RecipeStore(self.nc, cfg.service.subject_prefix, cfg.nats.replicas)
        await self.recipes.start(cfg.recipes, list(self.providers))
        self.streams = Streams(self.nc, cfg, self.index)
        await self.streams.ensure()
        await self.streams.follow()
        await self.streams.caught_up()
        self.feedback = FeedbackConsumer(self.nc, self.streams, self.index, cfg.evolver)
        await self.feedback.start()
        self.evolver = Evolver(cfg, self.recipes, self.index, list(self.providers),
                               {skill: [t.name for t in ts] for skill, ts in self.templates.items()},
                               await leadership(cfg, self.nc, self.recipes, self.instance,
                                                self.metrics))
        await self.evolver.start()
        self.service = InferenceService(
            cfg, self.providers, self.recipes, self.streams, metrics=self.metrics,
            router=SkillRouter.from_suites(suites),
            templates={skill: {t.name: t for t in ts} for skill, ts in self.templates.items()})
        self.prober = self._prober(suites, self.service, self.recipes, self.streams, self.nc)
        await self.prober.start()
        await self._serve(self.service, self.nc)
        self.http = await open_front_door(cfg.http, self)

    async def _connect(self) -> Client:
        """Start the embedded broker when configured, then connect."""
        cfg = self.cfg
        if cfg.nats.embedded:
            self.embedded = EmbeddedNats(cfg.state_dir / "nats", cfg.nats.port)
            self.url = await self.embedded.start()
            (cfg.state_dir / "nats.url").write_text(self.url + "\n")
            log.info("embedded_nats_started", url=self.url, store=str(cfg.state_dir / "nats"))
        return await connect(cfg.nats, self.url)

    def _prober(self, suites: Sequence[Suite], service: InferenceService, recipes: RecipeStore,
                streams: Streams, nc: Client) -> Prober:
        """The prober, asking through the service's fan-out as the ``default`` recipe says."""

        def use_templates() -> bool:
            """The prober follows the ``default`` recipe, whose templates apply unless it
            extracts ``text`` (the service never applies templates there)."""
            recipe = recipes.get("default")
            return recipe is not None and recipe.answer.kind != "text"

        def chosen(skill: str, provider: str) -> str | None:
            recipe = recipes.get("default")
            return recipe.template(skill, provider) if recipe and use_templates() else None

        leads = self.evolver.leadership.leads if self.evolver else (lambda _: True)
        return Prober(self.cfg.probes, suites, lambda: service.fanout, streams.rate, nc.publish,
                      self.cfg.service.subject_prefix, catalog=self.templates, chosen=chosen,
                      use_templates=use_templates, journal=self.index.rated.values,
                      leader=lambda: leads(PROBER_LEASE))

    async def _serve(self, service: InferenceService, nc: Client) -> None:
        """Take requests (the micro service), once the broker routes them; then metrics."""
        cfg = self.cfg
        subject = f"{cfg.service.subject_prefix}.infer"
        service.reply_limit = nc.max_payload
        if cfg.service.max_payload > nc.max_payload:
            log.warning("max_payload_clamped", configured=cfg.service.max_payload,
                        broker=nc.max_payload)
        self._micro = await add_metered_service(nc, ServiceConfig(
            name="alchemist", version=__version__, queue_group="alchemist",
            description="llm-alchemist: fused answers from several LLM providers",
            **service_identity(self.instance, lambda: self.recipes, lambda: service.inflight,
                               lambda: self.evolver.leadership if self.evolver else None)),
            {"infer": service.meter})
        await self._micro.add_endpoint(name="infer", subject=subject, handler=service.on_request)
        await self._until_reachable(subject)
        if cfg.metrics.enabled:
            self._metrics_runner = await serve_metrics(self.metrics, cfg.metrics.host,
                                                       cfg.metrics.port)
            log.info("metrics_serving", url=f"http://{cfg.metrics.host}:"
                     f"{bound_port(self._metrics_runner)}/metrics")
        log.info("ready", url=redact_url(self.url), subject=subject, event_loop=loop_name(),
                 providers=list(self.providers), recipes=sorted(self.recipes.current)
                 if self.recipes else [], state_dir=str(cfg.state_dir))

    async def _until_reachable(self, subject: str, timeout: float = 5.0) -> None:
        """Wait until the broker routes requests on ``subject`` to us.

        A flush is not enough: right after a subscription, the server can still
        answer "no responders" for a short while, and a client that starts
        together with the daemon would see that.
        """
        assert self.nc is not None
        give_up = time.monotonic() + timeout
        while True:
            try:
                await self.nc.request(subject, b"", timeout=1.0, headers={SELF_CHECK: "1"})
                return
            except nats.errors.NoRespondersError:
                if time.monotonic() > give_up:
                    raise
                await asyncio.sleep(0.01)

    def status_line(self) -> str:
        """One line for systemd's STATUS=: requests, errors, ratings, recipe versions."""
        counts = self.service.counts if self.service else {}
        errors = sum(v for k, v in counts.items() if k.startswith("error_"))
        rated = self.feedback.counts.get("accepted", 0) if self.feedback else 0
        versions = " ".join(f"{r.name} v{r.version}" for r in
                            (self.recipes.current.values() if self.recipes else ()))
        return (f"{counts.get('ok', 0)} answered, {errors} errors, {rated} ratings, "
                f"recipes: {versions}")

    async def reload(self, cfg: Config) -> None:
        """Apply a new config's providers, recipes and limits without dropping requests.

        In two phases. First everything that can fail: the keys a reload cannot
        apply are set back to their running values
        (:mod:`alchemist.daemon.runtime.reload`), keys resolved, templates
        checked, adapters built for new or changed providers, the new recipes
        loaded (or created in the bucket, as any instance on the new config
        would). If any of it fails, the adapters built for the attempt are
        closed and the running config stays whole. Then the swaps, which cannot
        fail: each component takes its part (``reload``). A provider whose
        settings did not change keeps its adapter (and its concurrency, rate
        limits and breaker); a replaced one is closed only after the longest
        possible request has finished with it.
        """
        assert self.session is not None and self.service is not None and self.recipes
        old = self.cfg
        restart = restart_keys(old, cfg)
        if restart:
            cfg = as_reloaded(old, cfg)
        specs = [provider_spec(p) for p in cfg.providers]  # key errors before any change
        check_templates(cfg, self.templates)
        providers, built = await adapters(specs, self.providers, self._specs, self.session)
        try:
            await self.recipes.ensure(cfg.recipes, list(providers))
        except BaseException:
            for provider in built:
                await quietly(provider.aclose)
            raise
        retired = self._swap(cfg, specs, providers)
        if retired:
            grace = max(old.service.max_deadline_ms, cfg.service.max_deadline_ms) / 1000
            task = asyncio.create_task(self._retire(retired, grace))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        if restart:
            log.warning("reload_needs_restart", keys=restart,
                        detail="these keys keep their running values until the next start")
        log.info("reloaded", providers=list(providers), recipes=sorted(cfg.recipes),
                 replaced=len(retired))

    def _swap(self, cfg: Config, specs: Sequence[ProviderSpec],
              providers: dict[str, Provider]) -> list[Provider]:
        """Hand every component its part of a checked config (nothing here can fail);
        returns the adapters no longer in use."""
        assert self.service is not None
        retired = [p for name, p in self.providers.items() if providers.get(name) is not p]
        self.providers, self._specs = providers, {s.name: s for s in specs}
        self.service.reload(cfg, providers)
        if self.evolver is not None:
            self.evolver.reload(cfg, list(providers))  # its next step reseeds to the new set
        if self.prober is not None:
            self.prober.reload(cfg.probes)
        self.cfg = cfg
        return retired

    async def _retire(self, providers: list[Provider], grace_s: float) -> None:
        """Close replaced adapters once no request can still be using them."""
        try:
            await asyncio.sleep(grace_s)
        finally:
            for provider in providers:
                await quietly(provider.aclose)

    async def stop(self) -> None:
        """Ordered, idempotent, time-boxed shutdown."""
        if self._stopped:
            return
        self._stopped = True
        t0 = time.monotonic()
        left = 0
        if self._micro is not None:
            await quietly(self._micro.stop)
        if self.http is not None:
            await quietly(self.http.stop)
        if self.service is not None:
            left = await self.service.drain(self.cfg.service.drain_timeout_s)
        for part in (self.prober, self.feedback, self.evolver, self.recipes, self.streams):
            if part is not None:
                await quietly(part.close)
        if self._metrics_runner is not None:
            await quietly(self._metrics_runner.cleanup)
        if self.nc is not None and not self.nc.is_closed:
            try:
                await asyncio.wait_for(self.nc.drain(), timeout=5.0)
            except Exception as exc:  # noqa: BLE001 - a dead broker can't be drained; close instead
                log.warning("nats_drain_failed", error=type(exc).__name__)
                await quietly(self.nc.close)
        for task in list(self._retiring):  # replaced adapters: close them now
            await cancel(task)
        for provider in self.providers.values():
            await quietly(provider.aclose)
        if self.session is not None:
            await quietly(self.session.close)
        if self.embedded is not None:
            await quietly(self.embedded.stop)
            (self.cfg.state_dir / "nats.url").unlink(missing_ok=True)
        counts = dict(self.service.counts) if self.service else {}
        log.info("stopped", seconds=round(time.monotonic() - t0, 3), abandoned_requests=left,
                 uptime_s=round(time.time() - self.started_at, 1), **counts)


async def run(cfg: Config, config_path: Path | None = None) -> None:
    """Run a daemon until SIGINT or SIGTERM; SIGHUP reloads ``config_path``.

    Tells systemd (``$NOTIFY_SOCKET``) READY once serving, STATUS lines and
    watchdog pings from the event loop, RELOADING/READY around a reload, and
    STOPPING at shutdown.
    """
    daemon = Daemon(cfg)
    notifier = Notifier.from_env()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reloading: set[asyncio.Task[None]] = set()
    one_at_a_time = asyncio.Lock()

    async def reload() -> None:
        async with one_at_a_time:
            notifier.reloading()
            try:
                new = load_config(config_path)
                await daemon.reload(new)
            except Exception as exc:  # noqa: BLE001 - a bad new config keeps the old one serving
                log.error("reload_failed", error=type(exc).__name__,
                          detail=str(exc)[:500])  # secrets are scrubbed by the log processor
            notifier.ready()

    def on_hup() -> None:
        task = asyncio.create_task(reload())
        reloading.add(task)
        task.add_done_callback(reloading.discard)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await daemon.start()
    loop.add_signal_handler(signal.SIGHUP, on_hup)  # only a started daemon can reload
    # what start-up built lives as long as the process: keep it out of every future
    # garbage collection (full collections over it took 25-50 ms under load)
    gc.collect()
    gc.freeze()
    notifier.ready()
    watchdog = asyncio.create_task(notifier.watchdog_loop(daemon.status_line))
    try:
        await stop.wait()
        log.info("stopping", reason="signal")
    finally:
        notifier.stopping()
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(signal.SIGHUP)
        for task in list(reloading):
            await cancel(task)
        await cancel(watchdog)
        await daemon.stop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
