"""Where a provider's API key comes from: an environment variable, a file, or a
systemd credential (``LoadCredential=``), and never from the config file itself.

Every failure is a :class:`SecretError` whose message names the provider and
the *source* (variable name, path, credential name), never the value.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import ProviderOptions, ProviderSpec, Secret

__all__ = ["SecretError", "resolve_api_key", "resolve_spec"]


class SecretError(ValueError):
    """A provider's API key is configured but cannot be read."""


def resolve_api_key(name: str, *, env: str | None, file: str | None,
                    credential: str | None) -> Secret | None:
    """Read provider ``name``'s API key from the one source configured.

    ``env`` is an environment variable name, ``file`` a path whose content
    (whitespace stripped) is the key, ``credential`` a systemd credential name
    read from ``$CREDENTIALS_DIRECTORY``. At most one may be given; with none,
    the provider is keyless (a local server) and the result is ``None``.
    Raises :class:`SecretError` when the source is missing or empty.
    """
    given = [label for label, value in
             (("api_key_env", env), ("api_key_file", file), ("api_key_credential", credential))
             if value is not None]
    if len(given) > 1:
        raise SecretError(
            f"Provider {name!r} sets {' and '.join(given)}; give at most one key source.")
    if env is not None:
        return _from_env(name, env)
    if file is not None:
        return _from_file(name, Path(file), what="API key file")
    if credential is not None:
        return _from_credential(name, credential)
    return None


def resolve_spec(options: ProviderOptions) -> ProviderSpec:
    """``options`` ready for an adapter: the same options, with the API key read from
    the one source they name (see :func:`resolve_api_key`; :class:`SecretError` if
    it cannot be read)."""
    key = resolve_api_key(options.name, env=options.api_key_env, file=options.api_key_file,
                          credential=options.api_key_credential)
    # every option as it is: ProviderSpec is ProviderOptions plus what is resolved here
    given = {name: getattr(options, name) for name in ProviderOptions.__struct_fields__}
    return ProviderSpec(**given, api_key=key)


def _from_env(name: str, var: str) -> Secret:
    value = os.environ.get(var, "").strip()
    if not value:
        raise SecretError(
            f"Provider {name!r} reads its API key from the environment variable {var!r}, "
            "which is not set or is empty.")
    return Secret(value)


def _from_file(name: str, path: Path, *, what: str) -> Secret:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SecretError(
            f"Provider {name!r} cannot read its {what} {str(path)!r}: {reason}.") from None
    if not value:
        raise SecretError(f"Provider {name!r} has an empty {what} {str(path)!r}.")
    return Secret(value)


def _from_credential(name: str, credential: str) -> Secret:
    if not credential or "/" in credential or credential in {".", ".."}:
        raise SecretError(
            f"Provider {name!r} names the systemd credential {credential!r}, "
            "which is not a plain file name.")
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise SecretError(
            f"Provider {name!r} reads its API key from the systemd credential {credential!r}, "
            "but CREDENTIALS_DIRECTORY is not set: the unit needs "
            f"LoadCredential={credential}:<path> (or SetCredentialEncrypted=).")
    return _from_file(name, Path(directory) / credential, what="systemd credential")
