"""The Ollama native dialect: the adapter contract and the dialect's own tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from alchemist.adapters import (
    ChatRequest,
    Message,
    OllamaAdapter,
    Provider,
    ProviderBadResponse,
    ProviderSpec,
    Secret,
    build_provider,
    make_session,
)
from alchemist.adapters.ollama import _parse
from tests.adapter_contract import ASK, KEY, PROMPT_TOKENS, QUESTION, AdapterContract, deadline_in
from tests.fakes import Behaviour, FakeProvider, FakeServer


class TestOllamaContract(AdapterContract):
    """The Ollama adapter against the fake Ollama server."""

    kind = "ollama"

    @pytest.fixture
    async def fake(self) -> AsyncIterator[FakeServer]:
        async with FakeProvider(dialect="ollama") as server:
            yield server


@pytest.fixture
async def ollama_fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider(dialect="ollama") as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with make_session() as s:
        yield s


def spec_for(fake: FakeProvider, model: str = "llama3.2", **fields: Any) -> ProviderSpec:
    return ProviderSpec(name="p", kind="ollama", base_url=fake.base_url, model=model, **fields)


async def test_wire_request(ollama_fake: FakeProvider, session: aiohttp.ClientSession) -> None:
    assert not ollama_fake.base_url.endswith("/v1")  # Ollama's native API lives at the root
    request = ChatRequest(messages=ASK.messages, max_tokens=7, temperature=0.5)
    await OllamaAdapter(spec_for(ollama_fake), session).complete(request, deadline=deadline_in(5))
    sent = ollama_fake.requests[-1]
    assert sent["model"] == "llama3.2" and sent["stream"] is False
    assert sent["options"] == {"num_predict": 7, "temperature": 0.5}
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": QUESTION}]
    assert "logprobs" not in sent and "max_tokens" not in sent
    assert "Authorization" not in sent["headers"]  # local Ollama needs no key


async def test_minimal_request_and_bearer_key(ollama_fake: FakeProvider,
                                              session: aiohttp.ClientSession) -> None:
    spec = spec_for(ollama_fake, api_key=Secret(KEY))
    adapter = OllamaAdapter(spec, session)
    await adapter.complete(ChatRequest(messages=(Message("user", "q"),)), deadline=deadline_in(5))
    sent = ollama_fake.requests[-1]
    assert "options" not in sent
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}"
    assert KEY not in repr(adapter)


async def test_usage_and_cost(ollama_fake: FakeProvider, session: aiohttp.ClientSession) -> None:
    ollama_fake.set("llama3.2", Behaviour(text="z" * 12))
    spec = spec_for(ollama_fake, price_input=0.5, price_output=0.5)
    result = await OllamaAdapter(spec, session).complete(ASK, deadline=deadline_in(5))
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (PROMPT_TOKENS, 3)
    assert result.usage.cost == pytest.approx((PROMPT_TOKENS + 3) * 0.5 / 1e6)


async def test_unknown_model_is_bad_response(ollama_fake: FakeProvider,
                                             session: aiohttp.ClientSession) -> None:
    ollama_fake.set("nope", Behaviour(kind="error", status=404, text="model 'nope' not found"))
    with pytest.raises(ProviderBadResponse) as info:
        await OllamaAdapter(spec_for(ollama_fake, "nope"), session).complete(
            ASK, deadline=deadline_in(5))
    assert info.value.status == 404 and "not found" in info.value.excerpt
    assert ollama_fake.calls["nope"] == 1


def test_parse_tolerates_a_cached_prompt() -> None:
    # Ollama leaves prompt_eval_count out when the whole prompt came from its cache
    parsed = _parse(json.dumps({"message": {"role": "assistant", "content": "hi"},
                                "done": True, "eval_count": 2}).encode())
    assert not isinstance(parsed, str)
    assert (parsed.text, parsed.prompt_tokens, parsed.completion_tokens) == ("hi", 0, 2)
    assert parsed.logprob is None


@pytest.mark.parametrize("body", [
    b"[]", b"{}", b'{"message": "hi"}', b'{"message": {"content": null}}',
    b'{"done": true, "done_reason": "load"}', b"\xff", b"null",
])
def test_body_without_content_is_refused(body: bytes) -> None:
    assert isinstance(_parse(body), str)


async def test_registry_builds_it(session: aiohttp.ClientSession) -> None:
    spec = ProviderSpec(name="p", kind="ollama", base_url="http://127.0.0.1:11434", model="m")
    provider = build_provider(spec, session)
    assert isinstance(provider, OllamaAdapter) and isinstance(provider, Provider)
