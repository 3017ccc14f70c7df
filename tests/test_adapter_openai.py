"""The OpenAI dialect: the adapter contract, its own tests, and the shared retry loop.

The contract suite itself lives in :mod:`tests.adapter_contract`.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest

from alchemist.adapters import (
    ChatRequest,
    OpenAIAdapter,
    Provider,
    ProviderBadResponse,
    ProviderError,
    ProviderSpec,
    ProviderTimeout,
    ProviderUnavailable,
    Secret,
    build_provider,
    call_with_retries,
    make_session,
)
from alchemist.adapters.openai import MAX_BODY_BYTES, _parse, parse_retry_after
from tests.adapter_contract import ASK, KEY, QUESTION, AdapterContract, deadline_in
from tests.fakes import Behaviour, FakeOpenAI, FakeServer


class TestOpenAIContract(AdapterContract):
    """The OpenAI adapter against the fake OpenAI-compatible server."""

    kind = "openai"

    @pytest.fixture
    async def fake(self) -> AsyncIterator[FakeServer]:
        async with FakeOpenAI() as server:
            yield server


# --- OpenAI dialect specifics -------------------------------------------------------------

@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with make_session() as s:
        yield s


async def test_wire_request_and_headers(openai_fake: FakeOpenAI,
                                        session: aiohttp.ClientSession) -> None:
    spec = ProviderSpec(name="p", kind="openai", base_url=openai_fake.base_url + "/",
                        model="gpt-x", api_key=Secret(KEY), headers={"X-Team": "alchemy"})
    request = ChatRequest(messages=ASK.messages, max_tokens=7, temperature=0.5)
    await OpenAIAdapter(spec, session).complete(request, deadline=deadline_in(5))
    sent = openai_fake.requests[-1]
    assert sent["model"] == "gpt-x" and sent["max_tokens"] == 7 and sent["temperature"] == 0.5
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": QUESTION}]
    assert "logprobs" not in sent
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}"
    assert sent["headers"]["X-Team"] == "alchemy"
    assert KEY not in repr(spec) and KEY not in repr(OpenAIAdapter(spec, session))


async def test_keyless_sends_no_authorization(openai_fake: FakeOpenAI,
                                              session: aiohttp.ClientSession) -> None:
    spec = ProviderSpec(name="p", kind="openai", base_url=openai_fake.base_url, model="m")
    await OpenAIAdapter(spec, session).complete(ASK, deadline=deadline_in(5))
    sent = openai_fake.requests[-1]
    assert "Authorization" not in sent["headers"]
    assert "max_tokens" not in sent and "temperature" not in sent


async def test_oversized_body_refused(openai_fake: FakeOpenAI,
                                      session: aiohttp.ClientSession) -> None:
    openai_fake.set("big", Behaviour(text="x" * (MAX_BODY_BYTES + 1)))
    spec = ProviderSpec(name="p", kind="openai", base_url=openai_fake.base_url, model="big")
    with pytest.raises(ProviderBadResponse, match="larger than"):
        await OpenAIAdapter(spec, session).complete(ASK, deadline=deadline_in(5))


@pytest.mark.parametrize("body", [
    b"[]", b"{}", b'{"choices": []}', b'{"choices": [{"message": {"content": null}}]}',
    b'{"choices": [{"message": "hi"}]}', b"\xff\xfe", b"null",
])
def test_body_without_content_is_refused(body: bytes) -> None:
    assert isinstance(_parse(body), str)


def test_parse_tolerates_missing_usage_and_logprobs() -> None:
    parsed = _parse(json.dumps({"choices": [{"message": {"content": "hi"}}],
                                "usage": "n/a"}).encode())
    assert not isinstance(parsed, str)
    assert (parsed.text, parsed.prompt_tokens, parsed.logprob) == ("hi", 0, None)


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    for garbage in (None, "", "soon", "-1", "nan", "inf", "Mon, 99 Foo 2024"):
        assert parse_retry_after(garbage) is None, garbage
    future = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 28 <= (parse_retry_after(future) or 0) <= 30
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(past) == 0.0


def test_registry_unknown_kind() -> None:
    spec = ProviderSpec(name="p", kind="claude", base_url="http://x", model="m")
    with pytest.raises(ValueError, match=r"provider 'p': unknown kind 'claude'; "
                                         r"valid kinds: alchemist, anthropic, gemini, ollama, openai"):
        build_provider(spec, None)  # type: ignore[arg-type]  # fails before using it


async def test_registry_builds_a_provider(session: aiohttp.ClientSession) -> None:
    spec = ProviderSpec(name="p", kind="openai", base_url="http://x", model="m")
    provider = build_provider(spec, session)
    assert isinstance(provider, OpenAIAdapter) and isinstance(provider, Provider)
    assert provider.name == "p"


# --- the retry loop, with scripted attempts -----------------------------------------------

def scripted(*outcomes: ProviderError | str) -> tuple[Callable[[float], Any], list[float]]:
    """An attempt that raises or returns ``outcomes`` in turn; records its timeouts."""
    timeouts: list[float] = []
    queue = list(outcomes)

    async def attempt(timeout_s: float) -> str:
        timeouts.append(timeout_s)
        outcome = queue.pop(0)
        if isinstance(outcome, ProviderError):
            raise outcome
        return outcome
    return attempt, timeouts


async def test_retries_only_retryable_errors() -> None:
    spec = ProviderSpec(name="p", kind="openai", base_url="", model="m", max_retries=5)
    attempt, timeouts = scripted(ProviderBadResponse("p", "bad", status=400), "never")
    with pytest.raises(ProviderBadResponse):
        await call_with_retries(spec, attempt, deadline=deadline_in(5))
    assert len(timeouts) == 1


async def test_retry_count_and_attempt_timeouts_clipped() -> None:
    spec = ProviderSpec(name="p", kind="openai", base_url="", model="m",
                        max_retries=2, timeout_s=10.0)
    attempt, timeouts = scripted(ProviderTimeout("p", "t"), ProviderUnavailable("p", "u"), "ok")
    result = await call_with_retries(spec, attempt, deadline=deadline_in(3),
                                     rng=random.Random(1))
    assert result == ("ok", 3)
    assert all(t <= 3.0 for t in timeouts) and timeouts == sorted(timeouts, reverse=True)


async def test_retries_exhausted_raise_last_error() -> None:
    spec = ProviderSpec(name="p", kind="openai", base_url="", model="m", max_retries=1)
    attempt, _ = scripted(ProviderTimeout("p", "first"), ProviderUnavailable("p", "second"))
    with pytest.raises(ProviderUnavailable, match="second"):
        await call_with_retries(spec, attempt, deadline=deadline_in(5), rng=random.Random(0))


async def test_rate_limit_spaces_requests(openai_fake: FakeOpenAI,
                                          session: aiohttp.ClientSession) -> None:
    spec = ProviderSpec(name="p", kind="openai", base_url=openai_fake.base_url, model="m",
                        rate_per_s=20.0)
    adapter = OpenAIAdapter(spec, session)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.gather(*(adapter.complete(ASK, deadline=deadline_in(5)) for _ in range(6)))
    assert loop.time() - t0 >= 5 / 20.0 - 0.01  # six starts, 50 ms apart: at least 250 ms
    assert openai_fake.calls["m"] == 6


async def test_rate_limit_that_misses_the_deadline_is_a_timeout(
        openai_fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    spec = ProviderSpec(name="p", kind="openai", base_url=openai_fake.base_url, model="m",
                        rate_per_s=1.0, max_retries=0)
    adapter = OpenAIAdapter(spec, session)
    results = await asyncio.gather(*(adapter.complete(ASK, deadline=deadline_in(0.5))
                                     for _ in range(3)), return_exceptions=True)
    assert sum(isinstance(r, ProviderTimeout) for r in results) == 2


async def test_refused_rate_limit_slots_are_not_kept(openai_fake: FakeOpenAI,
                                                     session: aiohttp.ClientSession) -> None:
    spec = ProviderSpec(name="p", kind="openai", base_url=openai_fake.base_url, model="m",
                        rate_per_s=2.0, max_retries=0)
    adapter = OpenAIAdapter(spec, session)
    burst = await asyncio.gather(*(adapter.complete(ASK, deadline=deadline_in(0.3))
                                   for _ in range(20)), return_exceptions=True)
    assert sum(isinstance(r, ProviderTimeout) for r in burst) == 19
    await asyncio.sleep(0.5)  # one interval later the limiter has a free slot again
    result = await adapter.complete(ASK, deadline=deadline_in(0.3))
    assert result.text
