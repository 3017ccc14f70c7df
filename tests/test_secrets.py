"""Where API keys come from: env var, file, systemd credential; errors name the source only."""

from __future__ import annotations

from pathlib import Path

import pytest

from alchemist.adapters import Secret, SecretError, resolve_api_key

KEY = "sk-live-abcdef0123456789"


def test_none_given_means_keyless() -> None:
    assert resolve_api_key("local", env=None, file=None, credential=None) is None


def test_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALCH_KEY", f"  {KEY}\n")
    secret = resolve_api_key("p", env="ALCH_KEY", file=None, credential=None)
    assert secret == Secret(KEY)
    assert KEY not in repr(secret) and KEY not in str(secret)


@pytest.mark.parametrize("value", [None, "", "   "])
def test_env_missing_or_empty(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("ALCH_KEY", raising=False)
    else:
        monkeypatch.setenv("ALCH_KEY", value)
    with pytest.raises(SecretError, match=r"Provider 'p'.*'ALCH_KEY'.*not set or is empty\.$"):
        resolve_api_key("p", env="ALCH_KEY", file=None, credential=None)


def test_secret_error_is_a_value_error() -> None:
    assert issubclass(SecretError, ValueError)


def test_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(f"\n{KEY}\n\n")
    assert resolve_api_key("p", env=None, file=str(path), credential=None) == Secret(KEY)


def test_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    with pytest.raises(SecretError, match=r"Provider 'p' cannot read its API key file") as info:
        resolve_api_key("p", env=None, file=str(path), credential=None)
    assert str(path) in str(info.value)


def test_file_empty(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(" \n")
    with pytest.raises(SecretError, match="empty API key file") as info:
        resolve_api_key("p", env=None, file=str(path), credential=None)
    assert str(path) in str(info.value)


def test_file_not_utf8_never_shows_content(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(KEY.encode() + b"\xff\xfe")
    with pytest.raises(SecretError) as info:
        resolve_api_key("p", env=None, file=str(path), credential=None)
    assert KEY not in str(info.value) and info.value.__cause__ is None


def test_file_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="cannot read"):
        resolve_api_key("p", env=None, file=str(tmp_path), credential=None)


def test_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "openai-key").write_text(KEY + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    secret = resolve_api_key("p", env=None, file=None, credential="openai-key")
    assert secret == Secret(KEY)


def test_credential_without_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(SecretError, match=r"LoadCredential="):
        resolve_api_key("p", env=None, file=None, credential="openai-key")


def test_credential_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(SecretError, match="systemd credential") as info:
        resolve_api_key("p", env=None, file=None, credential="openai-key")
    assert str(tmp_path / "openai-key") in str(info.value)


@pytest.mark.parametrize("name", ["", "../etc/passwd", "a/b", ".."])
def test_credential_name_must_be_a_file_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             name: str) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(SecretError, match="plain file name"):
        resolve_api_key("p", env=None, file=None, credential=name)


@pytest.mark.parametrize(("env", "file", "credential"), [
    ("K", "/f", None), ("K", None, "c"), (None, "/f", "c"), ("K", "/f", "c"),
])
def test_at_most_one_source(env: str | None, file: str | None, credential: str | None) -> None:
    with pytest.raises(SecretError, match="at most one key source"):
        resolve_api_key("p", env=env, file=file, credential=credential)
