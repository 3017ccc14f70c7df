"""The README's curl examples of the HTTP front door, run as written against a daemon.

The block after the marker ``<!-- curl examples: run by tests/test_http_curl.py -->``
runs in bash (``set -euo pipefail``) with ``ALCHEMIST_URL`` and ``ALCHEMIST_KEY``
set; every curl has ``--fail-with-body``, so an HTTP error fails it. Skips,
saying why, where curl or bash is absent.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import DaemonFactory
from tests.fakes import Behaviour, FakeOpenAI

README = Path(__file__).resolve().parent.parent / "README.md"
MARKER = "<!-- curl examples: run by tests/test_http_curl.py -->"
KEY = "sk-readme-example-key-42"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None,
                                reason="curl (or bash) is not installed: the README's curl "
                                "examples cannot run")


def examples() -> str:
    text = README.read_text()
    assert MARKER in text, "the README lost its curl examples"
    found = re.search(r"```sh\n(.*?)```", text[text.index(MARKER):], re.S)
    assert found is not None
    return found.group(1)


async def test_the_readme_curl_examples_run(daemon_factory: DaemonFactory, fake: FakeOpenAI,
                                            tmp_path: Path) -> None:
    for model in ("a", "b"):
        fake.set(model, Behaviour(text="42"))
    (tmp_path / "keys").write_text(KEY + "\n")
    d = await daemon_factory(models=["a", "b"], http={
        "enabled": True, "listen": "127.0.0.1:0", "api_keys_file": str(tmp_path / "keys")})
    assert d.http is not None
    env = {**os.environ, "ALCHEMIST_URL": d.http.url, "ALCHEMIST_KEY": KEY}
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", "set -euo pipefail\n" + examples(), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, f"{out.decode()}\n{err.decode()}"
    first, end = json.JSONDecoder().raw_decode(out.decode())  # curl adds no newline
    rest = out.decode()[end:]
    assert first["choices"][0]["message"]["content"] == "42"
    assert "chat.completion.chunk" in rest and "data: [DONE]" in rest
    assert '"alchemist/default"' in rest and '"stored":true' in rest
    assert d.feedback is not None
