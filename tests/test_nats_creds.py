"""``nats.creds`` (decentralized JWT auth) against a real nats-server in operator mode.

There is no ``nsc`` here, so the test makes the operator, account and user
nkeys itself and signs NATS JWT v2 tokens by hand (what nats-io/jwt does):
header ``{"typ":"JWT","alg":"ed25519-nkey"}``, base64url without padding,
``jti`` = base32 (no padding) of the SHA-512/256 of the claims without it, and
an ed25519 signature of ``header.payload`` by the issuer's nkey.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import nkeys
import pytest

from alchemist.daemon.config import ConfigError, parse_config
from alchemist.daemon.storage.broker import BrokerError, EmbeddedNats, connect

UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
             "wildcards": True, "conn": -1, "leaf": -1}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def new_key(prefix: int) -> tuple[bytes, str]:
    """A fresh nkey: its seed and its public key."""
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return seed, nkeys.from_seed(seed).public_key.decode()


def sign_jwt(issuer_seed: bytes, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS JWT v2 for ``subject``, issued and signed by ``issuer_seed``."""
    issuer = nkeys.from_seed(issuer_seed)
    claims: dict[str, Any] = {"iat": int(time.time()), "iss": issuer.public_key.decode(),
                              "name": name, "sub": subject, "nats": nats}
    digest = hashlib.new("sha512_256", json.dumps(claims, separators=(",", ":")).encode())
    claims["jti"] = base64.b32encode(digest.digest()).decode().rstrip("=")
    header = b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = f"{header}.{b64(json.dumps(claims, separators=(',', ':')).encode())}"
    return f"{body}.{b64(issuer.sign(body.encode()))}"


def account_jwt(operator_seed: bytes, account: str, name: str) -> str:
    return sign_jwt(operator_seed, account, name,
                    {"type": "account", "version": 2, "limits": UNLIMITED})


def creds_file(path: Path, account_seed: bytes, name: str) -> bytes:
    """Write a standard ``.creds`` file for a new user of that account; returns its seed."""
    seed, user = new_key(nkeys.PREFIX_BYTE_USER)
    jwt = sign_jwt(account_seed, user, name,
                   {"type": "user", "version": 2, "pub": {}, "sub": {},
                    "subs": -1, "data": -1, "payload": -1})
    path.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed.decode()}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n")
    return seed


async def test_creds_file_against_an_operator_mode_server(tmp_path: Path) -> None:
    operator_seed, operator = new_key(nkeys.PREFIX_BYTE_OPERATOR)
    _, sys_account = new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    app_seed, app_account = new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    stranger_seed, _ = new_key(nkeys.PREFIX_BYTE_ACCOUNT)  # never told to the server
    operator_jwt = sign_jwt(operator_seed, operator, "alchemist-test-operator",
                            {"type": "operator", "version": 2, "system_account": sys_account})
    conf = tmp_path / "server.conf"
    conf.write_text(
        f"operator: {operator_jwt}\n"
        f"system_account: {sys_account}\n"
        "resolver: MEMORY\n"
        "resolver_preload: {\n"
        f"  {sys_account}: {account_jwt(operator_seed, sys_account, 'SYS')}\n"
        f"  {app_account}: {account_jwt(operator_seed, app_account, 'APP')}\n"
        "}\n")
    good, bad = tmp_path / "good.creds", tmp_path / "bad.creds"
    creds_file(good, app_seed, "svc")
    bad_seed = creds_file(bad, stranger_seed, "intruder")

    server = EmbeddedNats(tmp_path / "nats", config_file=conf)
    await server.start()
    try:
        url = f"nats://127.0.0.1:{server.port}"
        cfg = parse_config({"nats": {"url": url, "creds": str(good)}})
        nc = await connect(cfg.nats, url, connect_timeout=2, reconnect=False)
        try:
            await nc.publish("alchemist.ping", b"x")
            await nc.flush(timeout=2)
        finally:
            await nc.close()

        wrong = parse_config({"nats": {"url": url, "creds": str(bad)}})
        with pytest.raises(BrokerError) as info:
            await connect(wrong.nats, url, connect_timeout=2, reconnect=False)
        message = str(info.value)
        assert message.startswith(f"could not connect to NATS at {url}")
        assert "Authorization Violation" in message
        assert bad_seed.decode() not in message
        assert "SEED" not in message
    finally:
        await server.stop()


async def test_a_missing_creds_file_is_a_config_error(tmp_path: Path) -> None:
    url = "nats://127.0.0.1:4222"
    cfg = parse_config({"nats": {"url": url, "creds": str(tmp_path / "absent.creds")}})
    with pytest.raises(ConfigError) as info:
        await connect(cfg.nats, url, connect_timeout=1, reconnect=False)
    assert "nats.creds" in str(info.value)
