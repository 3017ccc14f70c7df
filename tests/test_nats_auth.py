"""Each NATS auth mode against a real nats-server configured for it; wrong credentials fail clearly."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import nkeys
import pytest

from alchemist.daemon.config import parse_config
from alchemist.daemon.storage.broker import BrokerError, EmbeddedNats, connect


async def start_server(tmp_path: Path, conf: str) -> EmbeddedNats:
    path = tmp_path / "server.conf"
    path.write_text(conf)
    server = EmbeddedNats(tmp_path / "nats", config_file=path)
    await server.start()
    return server


async def check(server: EmbeddedNats, good: dict[str, Any], bad: dict[str, Any],
                scheme: str = "nats", expect: str = "Authorization Violation") -> None:
    url = f"{scheme}://127.0.0.1:{server.port}"
    cfg = parse_config({"nats": {"url": url, **good}})
    nc = await connect(cfg.nats, url, connect_timeout=2, reconnect=False)
    try:
        await nc.publish("alchemist.ping", b"x")
        await nc.flush(timeout=2)
    finally:
        await nc.close()
    wrong = parse_config({"nats": {"url": url, **bad}})
    with pytest.raises(BrokerError) as info:
        await connect(wrong.nats, url, connect_timeout=2, reconnect=False)
    message = str(info.value)
    assert message.startswith(f"could not connect to NATS at {url}")
    assert expect in message
    for key in ("password", "token"):
        if key in bad:
            assert bad[key] not in message  # a wrong secret is not echoed either


async def test_user_and_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = await start_server(tmp_path, 'authorization { user: "svc", password: "pw-good-123" }')
    try:
        await check(server, {"user": "svc", "password": "pw-good-123"},
                    {"user": "svc", "password": "pw-wrong-456"})
        monkeypatch.setenv("TEST_NATS_PW", "pw-good-123")
        await check(server, {"user": "svc", "password_env": "TEST_NATS_PW"},
                    {"user": "svc", "password": "nope-nope"})
    finally:
        await server.stop()


async def test_token(tmp_path: Path) -> None:
    server = await start_server(tmp_path, 'authorization { token: "tok-good-123" }')
    try:
        await check(server, {"token": "tok-good-123"}, {"token": "tok-wrong-456"})
    finally:
        await server.stop()


async def test_nkey_seed(tmp_path: Path) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(seed).public_key.decode()
    other = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    good, bad = tmp_path / "good.nk", tmp_path / "bad.nk"
    good.write_bytes(seed)
    bad.write_bytes(other)
    server = await start_server(tmp_path, f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}')
    try:
        await check(server, {"nkey_seed": str(good)}, {"nkey_seed": str(bad)})
    finally:
        await server.stop()


def make_ca_and_cert(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 signed by it (openssl CLI)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=alchemist-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (tmp_path / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"


async def test_tls_with_a_custom_ca(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed; it makes the test CA")
    ca, cert, key = make_ca_and_cert(tmp_path)
    (tmp_path / "other").mkdir()
    other_ca, _, _ = make_ca_and_cert(tmp_path / "other")
    server = await start_server(tmp_path, f'tls {{ cert_file: "{cert}", key_file: "{key}" }}')
    try:
        await check(server, {"tls_ca": str(ca)}, {"tls_ca": str(other_ca)}, scheme="tls",
                    expect="CERTIFICATE_VERIFY_FAILED")
    finally:
        await server.stop()


async def test_the_daemon_reports_wrong_credentials_in_one_line(tmp_path: Path) -> None:
    """At start-up (reconnecting mode) a refused login ends with the server's reason."""
    server = await start_server(tmp_path, 'authorization { token: "tok-good-123" }')
    try:
        url = f"nats://127.0.0.1:{server.port}"
        cfg = parse_config({"nats": {"url": url, "token": "tok-wrong-456"}})
        with pytest.raises(BrokerError) as info:
            await connect(cfg.nats, url, connect_timeout=1, reconnect=True)
        assert "Authorization Violation" in str(info.value)
        assert "tok-wrong-456" not in str(info.value)
    finally:
        await server.stop()
