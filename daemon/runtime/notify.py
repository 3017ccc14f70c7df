"""systemd service notifications (``sd_notify``) over ``$NOTIFY_SOCKET``, without libsystemd.

The protocol is one datagram of newline-separated ``KEY=value`` fields sent to
the AF_UNIX SOCK_DGRAM socket named by ``$NOTIFY_SOCKET`` (a path, or an
abstract socket name when it starts with ``@``). This module speaks the parts
a ``Type=notify`` / ``Type=notify-reload`` unit with ``WatchdogSec=`` needs:

* :meth:`Notifier.ready` (``READY=1``) once NATS is connected and recipes are loaded,
* :meth:`Notifier.reloading` (``RELOADING=1`` + ``MONOTONIC_USEC=``) on SIGHUP, then ``ready()`` again,
* :meth:`Notifier.stopping` (``STOPPING=1``) when draining starts,
* :meth:`Notifier.status` (``STATUS=...``) and :meth:`Notifier.watchdog` (``WATCHDOG=1``),
* :meth:`Notifier.watchdog_loop`, a task that pings the watchdog *from the event loop*
  at half of ``$WATCHDOG_USEC`` and refreshes ``STATUS=`` every few seconds: if the
  loop stalls, the pings stop and systemd restarts the daemon.

Without ``$NOTIFY_SOCKET`` (not under systemd) every call is a no-op. Sending
never raises into the caller: an ``OSError`` is logged at debug level and
dropped (a notification is advice to the service manager, never a reason to
fail a request). The socket is non-blocking, so a full receive queue cannot
stall the event loop either.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger("alchemist.notify")

#: how often :meth:`Notifier.watchdog_loop` refreshes ``STATUS=`` (seconds)
STATUS_EVERY_S = 5.0


def monotonic_usec() -> int:
    """``CLOCK_MONOTONIC`` in microseconds, the clock systemd compares ``MONOTONIC_USEC`` with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _address(notify_socket: str) -> str:
    """``$NOTIFY_SOCKET`` as a socket address: ``@name`` is the abstract name ``\\0name``."""
    if notify_socket.startswith("@"):
        return "\0" + notify_socket[1:]
    return notify_socket


class Notifier:
    """Sends sd_notify messages; a no-op when ``address`` is None.

    ``address`` is the value of ``$NOTIFY_SOCKET`` (a filesystem path or ``@abstract``).
    ``watchdog_usec`` / ``watchdog_pid`` are ``$WATCHDOG_USEC`` / ``$WATCHDOG_PID``
    (the pid as systemd wrote it; None when unset).
    """

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None,
                 watchdog_pid: int | None = None) -> None:
        self.address = address or None
        self._sockaddr = _address(address) if address else None
        self.watchdog_usec = watchdog_usec
        self.watchdog_pid = watchdog_pid

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd set up for this process (a no-op one when ``$NOTIFY_SOCKET`` is unset)."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET") or None,
                   watchdog_usec=_positive_int(env.get("WATCHDOG_USEC")),
                   watchdog_pid=_positive_int(env.get("WATCHDOG_PID")))

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify."""
        return self._sockaddr is not None

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (each ``KEY=value``) as one datagram; True if it was sent.

        Never raises: without a socket this returns False, and an ``OSError`` is
        logged at debug level and returns False.
        """
        if self._sockaddr is None or not fields:
            return False
        payload = "\n".join(fields).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(payload, self._sockaddr)
        except OSError as exc:
            log.debug("sd_notify_failed", socket=self.address, error=f"{type(exc).__name__}: {exc}",
                      message=fields[0])
            return False
        return True

    def ready(self) -> bool:
        """``READY=1``: start-up (or a reload) is complete and requests are served."""
        return self.notify("READY=1")

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC=`` (``Type=notify-reload``); follow with :meth:`ready`."""
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")

    def stopping(self) -> bool:
        """``STOPPING=1``: shutdown (draining) has begun."""
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        """``STATUS=text`` (one line: newlines become spaces), shown by ``systemctl status``."""
        return self.notify("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the keep-alive ping for ``WatchdogSec=``."""
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC=``: ask for ``seconds`` more before a start/stop timeout fires."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of ``$WATCHDOG_USEC``), or None when no watchdog is
        expected from this process (no socket, no/invalid ``$WATCHDOG_USEC``, or ``$WATCHDOG_PID``
        names another process)."""
        if self._sockaddr is None or not self.watchdog_usec:
            return None
        if self.watchdog_pid is not None and self.watchdog_pid != os.getpid():
            return None
        return self.watchdog_usec / 2 / 1_000_000

    async def watchdog_loop(self, stats: Callable[[], str], *,
                            status_every: float = STATUS_EVERY_S) -> None:
        """Ping ``WATCHDOG=1`` at :meth:`watchdog_interval` and send ``STATUS=stats()`` about every
        ``status_every`` seconds, until cancelled.

        Run it as a task on the daemon's event loop (a stalled loop then stops
        the pings). Both are sent once at once. Returns immediately when there is
        no socket. An exception from ``stats()`` is logged and skipped, never fatal.
        """
        if not self.enabled:
            return
        interval = self.watchdog_interval()
        period = min(interval, status_every) if interval is not None else status_every
        loop = asyncio.get_running_loop()
        next_status = loop.time()
        while True:
            if interval is not None:
                self.watchdog()
            now = loop.time()
            if now >= next_status:
                next_status = now + status_every
                try:
                    text = stats()
                except Exception as exc:  # noqa: BLE001 - a broken status line must not stop the pings
                    log.warning("sd_notify_status_failed", error=f"{type(exc).__name__}: {exc}")
                else:
                    self.status(text)
            await asyncio.sleep(period)


def _positive_int(value: str | None) -> int | None:
    try:
        number = int(value) if value else None
    except ValueError:
        return None
    return number if number is not None and number > 0 else None
