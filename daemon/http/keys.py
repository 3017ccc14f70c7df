"""The front door's API keys: from an environment variable, a file or a systemd credential.

Keys are read once, at start, registered as secrets (never logged) and
compared in constant time. A configured source that is missing or holds no
key stops start-up with a message naming the source, never a key.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from alchemist.daemon.config import ConfigError, HttpConfig
from alchemist.daemon.telemetry.logs import register_secret

__all__ = ["Keys", "load_keys"]


class Keys:
    """The accepted bearer keys (none: the door is open)."""

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        self._keys = keys

    @property
    def open(self) -> bool:
        return not self._keys

    def allows(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header carries an accepted ``Bearer`` key."""
        if not self._keys:
            return True
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return False
        token = given.strip().encode()
        # every key compared, in constant time each: no early exit tells which matched
        return sum(hmac.compare_digest(token, key) for key in self._keys) > 0


def load_keys(cfg: HttpConfig) -> Keys:
    """The keys of the one configured source; :class:`ConfigError` if it cannot be read."""
    if cfg.api_keys_env is not None:
        text, where = os.environ.get(cfg.api_keys_env, ""), \
            f"the environment variable {cfg.api_keys_env!r}"
        found = text.replace(",", " ").split()
    elif cfg.api_keys_file is not None or cfg.api_keys_credential is not None:
        path, where = _path(cfg)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ConfigError(f"http: cannot read the API keys of {where}: {reason}") from None
        found = [line.strip() for line in text.splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]
    else:
        return Keys(())
    if not found:
        raise ConfigError(f"http: {where} holds no API key (one key a line)")
    for key in found:
        register_secret(key)
    return Keys(tuple(k.encode() for k in found))


def _path(cfg: HttpConfig) -> tuple[Path, str]:
    if cfg.api_keys_file is not None:
        return Path(cfg.api_keys_file).expanduser(), f"the file {cfg.api_keys_file!r}"
    name = cfg.api_keys_credential or ""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if "/" in name or name in (".", ".."):
        raise ConfigError(f"http.api_keys_credential must be a plain file name, got {name!r}")
    if not directory:
        raise ConfigError(f"http.api_keys_credential = {name!r}, but CREDENTIALS_DIRECTORY is not "
                          f"set: the unit needs LoadCredential={name}:<path>")
    return Path(directory) / name, f"the systemd credential {name!r}"
