"""The optional HTTP front door: OpenAI's chat-completions dialect and a status page.

:func:`open_front_door` starts it when ``[http] enabled``; see :mod:`.server`.
"""

from __future__ import annotations

from alchemist.daemon.config import HttpConfig
from alchemist.daemon.http.keys import load_keys
from alchemist.daemon.http.server import FrontDoor
from alchemist.daemon.http.status import Parts

__all__ = ["FrontDoor", "open_front_door"]


async def open_front_door(cfg: HttpConfig, parts: Parts) -> FrontDoor | None:
    """The started front door, or None when ``http.enabled`` is false."""
    if not cfg.enabled:
        return None
    door = FrontDoor(cfg, parts, load_keys(cfg))
    await door.start()
    return door
