"""Starting a CLI verb on an event loop: ``alchemist run`` on the configured one.

``service.event_loop`` picks the daemon's loop: ``"uvloop"`` (the default; the package
depends on uvloop on Linux) or ``"asyncio"`` (the standard library's). When uvloop is
asked for but cannot be imported (another platform, a minimal install), the daemon runs
on asyncio and says so in one ``event_loop_fallback`` warning once logging is set up.
Every other verb runs on asyncio: they are short and do little I/O.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import structlog

from alchemist.daemon.config import load_config

log = structlog.get_logger("alchemist")
T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(name: str) -> LoopFactory | None:
    """The loop factory for ``service.event_loop = name``; None is asyncio's default
    (also for ``"uvloop"`` when uvloop cannot be imported)."""
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            return None
        factory: LoopFactory = uvloop.new_event_loop
        return factory
    if name == "asyncio":
        return None
    raise ValueError(f'event_loop must be "uvloop" or "asyncio", got {name!r}')


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """``"uvloop"`` or ``"asyncio"``: what ``loop`` (default: the running one) is."""
    loop = loop or asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run_on(coro: Coroutine[Any, Any, T], factory: LoopFactory | None) -> T:
    """``asyncio.run(coro)`` on a loop made by ``factory`` (None: asyncio's)."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def run_verb(args: argparse.Namespace) -> int:
    """Run the verb ``args.fn`` chose; ``alchemist run`` on its config's ``event_loop``.

    The config is read once here, before the loop exists, and handed to the verb.
    """
    factory = None
    if args.fn is cmd_run:
        args.cfg = load_config(Path(args.config) if args.config else None)
        factory = loop_factory(args.cfg.service.event_loop)
    code: int = run_on(args.fn(args), factory)
    return code


async def cmd_run(args: argparse.Namespace) -> int:
    """``alchemist run``: the daemon until SIGINT or SIGTERM."""
    from alchemist.daemon.runtime.app import run
    from alchemist.daemon.telemetry import logs

    cfg = args.cfg if getattr(args, "cfg", None) is not None else load_config(
        Path(args.config) if args.config else None)
    logs.configure(args.log_level or cfg.service.log_level)
    running = loop_name()
    if running != cfg.service.event_loop:
        log.warning("event_loop_fallback", configured=cfg.service.event_loop, running=running,
                    detail="uvloop cannot be imported here (pip install uvloop); "
                    "serving on asyncio's loop")
    await run(cfg, Path(args.config) if args.config else None)
    return 0
