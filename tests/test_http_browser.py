"""The status page in a real headless browser (Debian's chromium), against a running daemon.

The page's JavaScript fetches ``/status/recipes`` and draws the weights as a
skill x provider heat map; the test reads the rendered DOM (``--dump-dom``) and
checks every cell against the recipe in the KV bucket, then saves a screenshot
(``$ALCHEMIST_SCREENSHOT_DIR`` or the test's tmp dir). Skips, saying why, when
chromium is not installed (CI installs it: see ``.ci/run``).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

import pytest
from nats.aio.client import Client

from alchemist.daemon.storage.recipe_store import RecipeStore, decode_recipe
from tests.conftest import DaemonFactory, infer
from tests.fakes import Behaviour, FakeOpenAI

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: "
                                "apt-get install chromium); the status page is not rendered")
CELL = re.compile(r'<td class="w" data-recipe="([^"]+)" data-skill="([^"]+)" '
                  r'data-provider="([^"]+)" data-weight="([0-9.]+)"')


async def chromium(tmp_path: Path, *args: str) -> bytes:
    assert CHROMIUM is not None
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900",
        "--virtual-time-budget=3000", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


async def test_the_heat_map_shows_the_weights_in_kv(daemon_factory: DaemonFactory,
                                                    fake: FakeOpenAI, nc: Client,
                                                    tmp_path: Path) -> None:
    fake.set("a", Behaviour(text="42"))
    weights = {"*": {"a": 0.8, "b": 0.3, "c": 0.55}, "math": {"a": 0.95, "b": 0.1, "c": 0.4}}
    d = await daemon_factory(recipes={"default": {"weights": weights}},
                             http={"enabled": True, "listen": "127.0.0.1:0"})
    assert d.http is not None
    await infer(nc, {"prompt": "6*7?"})
    kv = await RecipeStore(nc, "alchemist").open(create=False)
    stored = decode_recipe((await kv.get("default")).value or b"")
    dom = (await chromium(tmp_path, "--dump-dom", d.http.url + "/")).decode()
    cells = {(skill, provider): float(w) for recipe, skill, provider, w in CELL.findall(dom)
             if recipe == "default"}
    expected = {(skill, p): round(stored.row(skill, ["a", "b", "c"])[p], 3)
                for skill in ("*", "math") for p in ("a", "b", "c")}
    assert cells == expected, dom[:3000]
    assert "default v1" in dom and "closed" in dom  # the recipe's header, the breakers
    assert re.search(r'<svg id="confidence"[^>]*data-points="\d+"', dom), "no timeline drawn"
    shots = Path(os.environ.get("ALCHEMIST_SCREENSHOT_DIR") or tmp_path)
    await asyncio.to_thread(shots.mkdir, parents=True, exist_ok=True)
    await chromium(tmp_path, f"--screenshot={shots / 'status-page.png'}", d.http.url + "/")
    assert await asyncio.to_thread(os.path.getsize, shots / "status-page.png") > 10_000
