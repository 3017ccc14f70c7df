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
import signal
import time
from collections.abc import Awaitable, Callable

import aiohttp
import nats.errors
import structlog
from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.service import Service

from adapters import Provider, ProviderSpec, build_provider, make_session, resolve_api_key
from daemon import __version__
from daemon.broker import EmbeddedNats, connect, redact_url
from daemon.config import Config, ProviderConfig
from daemon.evolver import Evolver
from daemon.experience import ExperienceIndex
from daemon.feedback import FeedbackConsumer
from daemon.logs import register_secret
from daemon.recipe_store import RecipeStore
from daemon.service import SELF_CHECK, InferenceService
from daemon.streams import Streams

log = structlog.get_logger("alchemist")


def provider_spec(p: ProviderConfig) -> ProviderSpec:
    """Resolve a provider's config (and its key) into what adapters take."""
    key = resolve_api_key(p.name, env=p.api_key_env, file=p.api_key_file,
                          credential=p.api_key_credential)
    if key is not None:
        register_secret(key.reveal())
    return ProviderSpec(
        name=p.name, kind=p.kind, base_url=p.base_url, model=p.model, api_key=key,
        timeout_s=p.timeout_s, max_retries=p.max_retries, max_concurrency=p.max_concurrency,
        price_input=p.price_input, price_output=p.price_output, logprobs=p.logprobs)


class Daemon:
    """One llm-alchemist instance."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.embedded: EmbeddedNats | None = None
        self.url = cfg.nats.url
        self.nc: Client | None = None
        self.session: aiohttp.ClientSession | None = None
        self.providers: dict[str, Provider] = {}
        self.index = ExperienceIndex(cfg.experience.max_records)
        self.recipes: RecipeStore | None = None
        self.streams: Streams | None = None
        self.feedback: FeedbackConsumer | None = None
        self.evolver: Evolver | None = None
        self.service: InferenceService | None = None
        self._micro: Service | None = None
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
        if cfg.nats.embedded:
            self.embedded = EmbeddedNats(cfg.state_dir / "nats", cfg.nats.port)
            self.url = await self.embedded.start()
            (cfg.state_dir / "nats.url").write_text(self.url + "\n")
            log.info("embedded_nats_started", url=self.url, store=str(cfg.state_dir / "nats"))
        self.nc = await connect(cfg.nats, self.url)
        self.session = make_session()
        self.providers = {s.name: build_provider(s, self.session) for s in specs}
        prefix = cfg.service.subject_prefix
        self.recipes = RecipeStore(self.nc, prefix)
        await self.recipes.start(cfg.recipes, list(self.providers))
        self.streams = Streams(self.nc, cfg, self.index)
        await self.streams.ensure()
        await self.streams.follow()
        await self.streams.caught_up()
        self.feedback = FeedbackConsumer(self.nc, self.streams, self.index, cfg.evolver)
        await self.feedback.start()
        self.evolver = Evolver(cfg, self.recipes, self.index, list(self.providers))
        await self.evolver.start()
        self.service = InferenceService(cfg, self.providers, self.recipes, self.streams)
        self.service.reply_limit = self.nc.max_payload
        if cfg.service.max_payload > self.nc.max_payload:
            log.warning("max_payload_clamped", configured=cfg.service.max_payload,
                        broker=self.nc.max_payload)
        self._micro = await add_service(
            self.nc, name="alchemist", version=__version__, queue_group="alchemist",
            description="llm-alchemist: fused answers from several LLM providers")
        await self._micro.add_endpoint(name="infer", subject=f"{prefix}.infer",
                                       handler=self.service.on_request)
        await self._until_reachable(f"{prefix}.infer")
        log.info("ready", url=redact_url(self.url), subject=f"{prefix}.infer",
                 providers=list(self.providers), recipes=sorted(self.recipes.current),
                 state_dir=str(cfg.state_dir))

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

    async def stop(self) -> None:
        """Ordered, idempotent, time-boxed shutdown."""
        if self._stopped:
            return
        self._stopped = True
        t0 = time.monotonic()
        left = 0
        if self._micro is not None:
            await _quietly(self._micro.stop)
        if self.service is not None:
            left = await self.service.drain(self.cfg.service.drain_timeout_s)
        for part in (self.feedback, self.evolver, self.recipes, self.streams):
            if part is not None:
                await _quietly(part.close)
        if self.nc is not None and not self.nc.is_closed:
            try:
                await asyncio.wait_for(self.nc.drain(), timeout=5.0)
            except Exception as exc:  # noqa: BLE001 - a dead broker can't be drained; close instead
                log.warning("nats_drain_failed", error=type(exc).__name__)
                await _quietly(self.nc.close)
        for provider in self.providers.values():
            await _quietly(provider.aclose)
        if self.session is not None:
            await _quietly(self.session.close)
        if self.embedded is not None:
            await _quietly(self.embedded.stop)
            (self.cfg.state_dir / "nats.url").unlink(missing_ok=True)
        counts = dict(self.service.counts) if self.service else {}
        log.info("stopped", seconds=round(time.monotonic() - t0, 3), abandoned_requests=left,
                 uptime_s=round(time.time() - self.started_at, 1), **counts)


async def _quietly(close: Callable[[], Awaitable[object]]) -> None:
    """Run one shutdown step under a shield, with its own timeout; log, don't raise."""
    try:
        await asyncio.shield(asyncio.wait_for(close(), timeout=10.0))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - shutdown goes on whatever one step did
        log.warning("shutdown_step_failed", step=getattr(close, "__qualname__", "?"),
                    error=type(exc).__name__)


async def run(cfg: Config) -> None:
    """Run a daemon until SIGINT or SIGTERM."""
    daemon = Daemon(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await daemon.start()
    try:
        await stop.wait()
        log.info("stopping", reason="signal")
    finally:
        await daemon.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
