"""The Anthropic Messages dialect: the adapter contract and the dialect's own tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from alchemist.adapters import (
    AnthropicAdapter,
    ChatRequest,
    Message,
    Provider,
    ProviderBadResponse,
    ProviderSpec,
    ProviderUnavailable,
    Secret,
    build_provider,
    make_session,
)
from alchemist.adapters.anthropic import ANTHROPIC_VERSION, DEFAULT_MAX_TOKENS, _parse
from tests.adapter_contract import ASK, KEY, PROMPT_TOKENS, QUESTION, AdapterContract, deadline_in
from tests.fakes import Behaviour, FakeProvider, FakeServer


class TestAnthropicContract(AdapterContract):
    """The Anthropic adapter against the fake Anthropic server."""

    kind = "anthropic"
    supports_logprobs = False

    @pytest.fixture
    async def fake(self) -> AsyncIterator[FakeServer]:
        async with FakeProvider(dialect="anthropic") as server:
            yield server


@pytest.fixture
async def anthropic_fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider(dialect="anthropic") as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with make_session() as s:
        yield s


def spec_for(fake: FakeProvider, model: str = "claude-x", **fields: Any) -> ProviderSpec:
    return ProviderSpec(name="p", kind="anthropic", base_url=fake.base_url, model=model, **fields)


async def test_wire_request_and_headers(anthropic_fake: FakeProvider,
                                        session: aiohttp.ClientSession) -> None:
    spec = ProviderSpec(name="p", kind="anthropic", base_url=anthropic_fake.base_url + "/",
                        model="claude-x", api_key=Secret(KEY), headers={"X-Team": "alchemy"})
    request = ChatRequest(messages=(*ASK.messages, Message("assistant", "4"),
                                    Message("user", "sure?")), max_tokens=7, temperature=0.5)
    await AnthropicAdapter(spec, session).complete(request, deadline=deadline_in(5))
    sent = anthropic_fake.requests[-1]
    assert sent["model"] == "claude-x" and sent["max_tokens"] == 7 and sent["temperature"] == 0.5
    assert sent["system"] == "Be brief."  # top-level, not a message
    assert sent["messages"] == [{"role": "user", "content": QUESTION},
                                {"role": "assistant", "content": "4"},
                                {"role": "user", "content": "sure?"}]
    headers = sent["headers"]
    assert headers["x-api-key"] == KEY and headers["anthropic-version"] == ANTHROPIC_VERSION
    assert "Authorization" not in headers and headers["X-Team"] == "alchemy"
    assert KEY not in repr(AnthropicAdapter(spec, session))


async def test_defaults_max_tokens_and_clips_temperature(anthropic_fake: FakeProvider,
                                                         session: aiohttp.ClientSession) -> None:
    request = ChatRequest(messages=(Message("system", "a"), Message("system", "b"),
                                    Message("user", "q")), temperature=1.7)
    await AnthropicAdapter(spec_for(anthropic_fake), session).complete(
        request, deadline=deadline_in(5))
    sent = anthropic_fake.requests[-1]
    assert sent["max_tokens"] == DEFAULT_MAX_TOKENS  # the API refuses a request without it
    assert sent["temperature"] == 1.0  # Anthropic's range is [0, 1]
    assert sent["system"] == "a\n\nb"
    assert "x-api-key" not in sent["headers"]


async def test_usage_and_cost(anthropic_fake: FakeProvider,
                              session: aiohttp.ClientSession) -> None:
    anthropic_fake.set("claude-x", Behaviour(text="x" * 40))
    spec = spec_for(anthropic_fake, price_input=3.0, price_output=15.0)
    result = await AnthropicAdapter(spec, session).complete(ASK, deadline=deadline_in(5))
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (PROMPT_TOKENS, 10)
    assert result.usage.cost == pytest.approx((PROMPT_TOKENS * 3.0 + 10 * 15.0) / 1e6)


async def test_overloaded_529_is_unavailable_and_retried(anthropic_fake: FakeProvider,
                                                         session: aiohttp.ClientSession) -> None:
    anthropic_fake.set("flaky", Behaviour(kind="error", status=529, times=1))
    result = await AnthropicAdapter(spec_for(anthropic_fake, "flaky"), session).complete(
        ASK, deadline=deadline_in(5))
    assert result.attempts == 2
    anthropic_fake.set("down", Behaviour(kind="error", status=529, text="Overloaded"))
    with pytest.raises(ProviderUnavailable, match="529"):
        await AnthropicAdapter(spec_for(anthropic_fake, "down", max_retries=1), session).complete(
            ASK, deadline=deadline_in(5))
    assert anthropic_fake.calls["down"] == 2


async def test_refusal_without_text_is_bad_response(anthropic_fake: FakeProvider,
                                                    session: aiohttp.ClientSession) -> None:
    anthropic_fake.set("claude-x", Behaviour(kind="blocked"))
    with pytest.raises(ProviderBadResponse, match="refusal") as info:
        await AnthropicAdapter(spec_for(anthropic_fake), session).complete(
            ASK, deadline=deadline_in(5))
    assert info.value.status == 200 and anthropic_fake.calls["claude-x"] == 1


def test_parse_joins_text_blocks_only() -> None:
    body = {"content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "4"},
                        {"type": "tool_use", "id": "t", "name": "f", "input": {}},
                        {"type": "text", "text": ", of course"}],
            "usage": {"input_tokens": 12, "output_tokens": True}}
    parsed = _parse(json.dumps(body).encode())
    assert not isinstance(parsed, str)
    assert (parsed.text, parsed.prompt_tokens, parsed.completion_tokens) == ("4, of course", 12, 0)
    assert parsed.logprob is None


@pytest.mark.parametrize("body", [
    b"[]", b"{}", b'{"content": "hi"}', b'{"content": []}',
    b'{"content": [{"type": "text", "text": null}]}', b"\xff", b"null",
])
def test_body_without_text_is_refused(body: bytes) -> None:
    assert isinstance(_parse(body), str)


async def test_registry_builds_it(session: aiohttp.ClientSession) -> None:
    spec = ProviderSpec(name="p", kind="anthropic", base_url="http://x/v1", model="m")
    provider = build_provider(spec, session)
    assert isinstance(provider, AnthropicAdapter) and isinstance(provider, Provider)
