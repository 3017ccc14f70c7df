"""The Google Gemini dialect: the adapter contract and the dialect's own tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from alchemist.adapters import (
    ChatRequest,
    GeminiAdapter,
    Message,
    Provider,
    ProviderAuthError,
    ProviderBadResponse,
    ProviderRateLimited,
    ProviderSpec,
    Secret,
    build_provider,
    make_session,
)
from alchemist.adapters.gemini import _duration_s, _error_hint, _parse
from alchemist.adapters.http import HttpReply, edge_error
from tests.adapter_contract import ASK, KEY, PROMPT_TOKENS, QUESTION, AdapterContract, deadline_in
from tests.fakes import Behaviour, FakeProvider, FakeServer


class TestGeminiContract(AdapterContract):
    """The Gemini adapter against the fake Gemini server."""

    kind = "gemini"

    @pytest.fixture
    async def fake(self) -> AsyncIterator[FakeServer]:
        async with FakeProvider(dialect="gemini") as server:
            yield server


@pytest.fixture
async def gemini_fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider(dialect="gemini") as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with make_session() as s:
        yield s


def spec_for(fake: FakeProvider, model: str = "gemini-x", **fields: Any) -> ProviderSpec:
    return ProviderSpec(name="p", kind="gemini", base_url=fake.base_url, model=model, **fields)


async def test_wire_request_url_and_key_header(gemini_fake: FakeProvider,
                                               session: aiohttp.ClientSession) -> None:
    spec = spec_for(gemini_fake, "gemini-2.0-flash", api_key=Secret(KEY))
    request = ChatRequest(messages=(*ASK.messages, Message("assistant", "4"),
                                    Message("user", "sure?")), max_tokens=7, temperature=0.5)
    adapter = GeminiAdapter(spec, session)
    await adapter.complete(request, deadline=deadline_in(5))
    assert gemini_fake.calls["gemini-2.0-flash"] == 1  # the model is named in the path
    sent = gemini_fake.requests[-1]
    assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent["contents"] == [{"role": "user", "parts": [{"text": QUESTION}]},
                                {"role": "model", "parts": [{"text": "4"}]},
                                {"role": "user", "parts": [{"text": "sure?"}]}]
    assert sent["generationConfig"] == {"maxOutputTokens": 7, "temperature": 0.5}
    assert "model" not in sent
    assert sent["headers"]["x-goog-api-key"] == KEY and "Authorization" not in sent["headers"]
    assert KEY not in repr(adapter)  # the key travels in a header, never in the URL


async def test_minimal_request(gemini_fake: FakeProvider, session: aiohttp.ClientSession) -> None:
    request = ChatRequest(messages=(Message("user", "q"),))
    await GeminiAdapter(spec_for(gemini_fake), session).complete(request, deadline=deadline_in(5))
    sent = gemini_fake.requests[-1]
    assert sent["contents"] == [{"role": "user", "parts": [{"text": "q"}]}]
    assert "systemInstruction" not in sent and "generationConfig" not in sent
    assert "x-goog-api-key" not in sent["headers"]


async def test_usage_and_cost(gemini_fake: FakeProvider, session: aiohttp.ClientSession) -> None:
    gemini_fake.set("gemini-x", Behaviour(text="y" * 20))
    spec = spec_for(gemini_fake, price_input=0.1, price_output=0.4)
    result = await GeminiAdapter(spec, session).complete(ASK, deadline=deadline_in(5))
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (PROMPT_TOKENS, 5)
    assert result.usage.cost == pytest.approx((PROMPT_TOKENS * 0.1 + 5 * 0.4) / 1e6)


async def test_blocked_prompt_is_bad_response_with_reason(gemini_fake: FakeProvider,
                                                          session: aiohttp.ClientSession) -> None:
    gemini_fake.set("gemini-x", Behaviour(kind="blocked", text="PROHIBITED_CONTENT"))
    with pytest.raises(ProviderBadResponse, match="PROHIBITED_CONTENT") as info:
        await GeminiAdapter(spec_for(gemini_fake), session).complete(ASK, deadline=deadline_in(5))
    assert info.value.status == 200 and gemini_fake.calls["gemini-x"] == 1  # never retried


async def test_retry_delay_comes_from_the_body(gemini_fake: FakeProvider,
                                               session: aiohttp.ClientSession) -> None:
    gemini_fake.set("gemini-x", Behaviour(kind="rate_limit", retry_after=7.5))
    with pytest.raises(ProviderRateLimited) as info:
        await GeminiAdapter(spec_for(gemini_fake), session).complete(ASK, deadline=deadline_in(1))
    assert info.value.retry_after == pytest.approx(7.5)


def test_invalid_key_400_is_an_auth_error() -> None:
    # Google answers a bad key with 400 INVALID_ARGUMENT; the reason says what it is
    body = json.dumps({"error": {"code": 400, "message": f"API key not valid: {KEY}",
                                 "status": "INVALID_ARGUMENT",
                                 "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                              "reason": "API_KEY_INVALID"}]}}).encode()
    reply = HttpReply(400, CIMultiDict(), body)
    error = edge_error("p", reply=reply, secret=KEY, hint=_error_hint(body))
    assert isinstance(error, ProviderAuthError) and KEY not in str(error)
    plain = edge_error("p", reply=HttpReply(400, CIMultiDict(), b"{}"), hint=_error_hint(b"{}"))
    assert isinstance(plain, ProviderBadResponse)


@pytest.mark.parametrize(("value", "seconds"), [
    ("37s", 37.0), ("0.300s", 0.3), ("1", None), ("-1s", None), ("nans", None), (5, None),
    ("infs", None),
])
def test_duration(value: object, seconds: float | None) -> None:
    assert _duration_s(value) == seconds


def test_parse_skips_thoughts_and_bills_thinking_as_output() -> None:
    body = {"candidates": [{"content": {"role": "model", "parts": [
                {"text": "let me think", "thought": True}, {"text": "4"}, {"text": "!"}]},
                "avgLogprobs": -9.0}],  # unasked avgLogprobs is ignored
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 2,
                              "thoughtsTokenCount": 30}}
    parsed = _parse(json.dumps(body).encode())
    assert not isinstance(parsed, str)
    assert (parsed.text, parsed.prompt_tokens, parsed.completion_tokens) == ("4!", 10, 32)
    assert parsed.logprob is None


@pytest.mark.parametrize("body", [
    b"[]", b"{}", b'{"candidates": []}', b'{"candidates": [{"finishReason": "SAFETY"}]}',
    b'{"candidates": [{"content": {"parts": []}}]}', b'{"candidates": ["x"]}', b"\xff",
])
def test_body_without_text_is_refused(body: bytes) -> None:
    assert isinstance(_parse(body), str)


def test_safety_stop_names_the_reason() -> None:
    problem = _parse(b'{"candidates": [{"finishReason": "SAFETY", "index": 0}]}')
    assert isinstance(problem, str) and "SAFETY" in problem


async def test_registry_builds_it(session: aiohttp.ClientSession) -> None:
    spec = ProviderSpec(name="p", kind="gemini", base_url="http://x/v1beta", model="m")
    provider = build_provider(spec, session)
    assert isinstance(provider, GeminiAdapter) and isinstance(provider, Provider)
