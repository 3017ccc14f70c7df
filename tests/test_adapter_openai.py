"""The provider adapter contract, and the OpenAI dialect's own tests.

:class:`AdapterContract` is the suite every adapter passes against its own
fake server (one that honours :class:`tests.fakes.Behaviour`). A new dialect
subclasses it with its ``kind`` and a ``fake`` fixture::

    class TestAnthropicContract(AdapterContract):
        kind = "anthropic"

        @pytest.fixture
        async def fake(self) -> AsyncIterator[FakeServer]:
            async with FakeAnthropic() as server:
                yield server
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, ClassVar

import aiohttp
import pytest

from adapters import (
    ChatRequest,
    Message,
    OpenAIAdapter,
    Provider,
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderSpec,
    ProviderTimeout,
    ProviderUnavailable,
    Secret,
    build_provider,
    call_with_retries,
    make_session,
)
from adapters.openai import MAX_BODY_BYTES, _parse, parse_retry_after
from tests.fakes import Behaviour, FakeOpenAI, FakeServer

KEY = "sk-test-0123456789abcdef"
QUESTION = "What is two plus two?"
ASK = ChatRequest(messages=(Message("system", "Be brief."), Message("user", QUESTION)))
PROMPT_TOKENS = (len("Be brief.") + len(QUESTION)) // 4
SLACK_S = 0.15  # scheduling slack on time bounds

MakeProvider = Callable[..., Provider]


def deadline_in(seconds: float) -> float:
    """An absolute deadline ``seconds`` from now, in loop time."""
    return asyncio.get_running_loop().time() + seconds


def now() -> float:
    """The loop's clock."""
    return asyncio.get_running_loop().time()


class AdapterContract:
    """Behaviour every :class:`adapters.base.Provider` shows against its fake server."""

    kind: ClassVar[str]

    @pytest.fixture
    async def fake(self) -> AsyncIterator[FakeServer]:
        """A started fake server speaking this adapter's dialect (subclasses provide it)."""
        raise NotImplementedError
        yield  # pragma: no cover

    @pytest.fixture
    async def session(self) -> AsyncIterator[aiohttp.ClientSession]:
        """The shared HTTP session, as the daemon makes it."""
        async with make_session() as session:
            yield session

    @pytest.fixture
    def provider(self, fake: FakeServer, session: aiohttp.ClientSession) -> MakeProvider:
        """Build a provider for model ``model`` of the fake, with spec overrides."""
        def make(model: str = "m", **overrides: Any) -> Provider:
            fields: dict[str, Any] = {"timeout_s": 2.0, "max_retries": 2, **overrides}
            spec = ProviderSpec(name="p", kind=self.kind, base_url=fake.base_url,
                                model=model, **fields)
            return build_provider(spec, session)
        return make

    async def test_ok_text_usage_cost(self, fake: FakeServer, provider: MakeProvider) -> None:
        fake.set("m", Behaviour(text="four, of course"))
        p = provider(price_input=1.0, price_output=2.0)
        result = await p.complete(ASK, deadline=deadline_in(5))
        assert result.text == "four, of course"
        assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (PROMPT_TOKENS, 3)
        assert result.usage.cost == pytest.approx((PROMPT_TOKENS * 1.0 + 3 * 2.0) / 1e6)
        assert result.attempts == 1 and result.latency_ms > 0 and result.logprob is None
        assert fake.calls["m"] == 1
        await p.aclose()

    async def test_text_sees_the_messages(self, fake: FakeServer,
                                          provider: MakeProvider) -> None:
        fake.set("m", Behaviour(text=lambda msgs: str(msgs[-1]["content"]).upper()))
        result = await provider().complete(ASK, deadline=deadline_in(5))
        assert result.text == QUESTION.upper()

    async def test_no_price_no_cost(self, fake: FakeServer, provider: MakeProvider) -> None:
        result = await provider().complete(ASK, deadline=deadline_in(5))
        assert result.usage.cost is None

    @pytest.mark.parametrize(("asked", "spec_flag", "expected"),
                             [(True, False, -0.25), (False, True, -0.25), (False, False, None)])
    async def test_logprobs(self, fake: FakeServer, provider: MakeProvider, asked: bool,
                            spec_flag: bool, expected: float | None) -> None:
        fake.set("m", Behaviour(text="a b c", logprob=-0.25))
        request = ChatRequest(messages=ASK.messages, logprobs=asked)
        result = await provider(logprobs=spec_flag).complete(request, deadline=deadline_in(5))
        assert result.logprob == (pytest.approx(expected) if expected is not None else None)

    @pytest.mark.parametrize("status", [401, 403])
    async def test_auth_error_not_retried_key_never_shown(
            self, fake: FakeServer, provider: MakeProvider, status: int) -> None:
        # the server echoes the key back, as some do
        fake.set("m", Behaviour(kind="error", status=status, text=f"bad key {KEY}"))
        with pytest.raises(ProviderAuthError) as info:
            await provider(api_key=Secret(KEY)).complete(ASK, deadline=deadline_in(5))
        assert KEY not in str(info.value) and KEY not in repr(info.value.__dict__)
        assert fake.calls["m"] == 1

    async def test_rate_limit_retry_after_honoured(self, fake: FakeServer,
                                                   provider: MakeProvider) -> None:
        fake.set("m", Behaviour(kind="rate_limit", retry_after=0.3, times=1))

        async def arrival(n: int) -> float:
            await fake.wait_for_calls("m", n)
            return now()
        first, second = asyncio.create_task(arrival(1)), asyncio.create_task(arrival(2))
        result = await provider().complete(ASK, deadline=deadline_in(5))
        assert await second - await first >= 0.3  # measured at the server
        assert result.attempts == 2 and fake.calls["m"] == 2

    async def test_rate_limit_past_deadline_raises(self, fake: FakeServer,
                                                   provider: MakeProvider) -> None:
        fake.set("m", Behaviour(kind="rate_limit", retry_after=5))
        started = now()
        with pytest.raises(ProviderRateLimited) as info:
            await provider().complete(ASK, deadline=deadline_in(1))
        assert info.value.retry_after == pytest.approx(5)
        assert now() - started < 0.5  # gave up at once instead of sleeping
        assert fake.calls["m"] == 1

    async def test_5xx_retried_then_ok(self, fake: FakeServer, provider: MakeProvider) -> None:
        fake.set("m", Behaviour(kind="error", status=503, times=2))
        result = await provider(max_retries=2).complete(ASK, deadline=deadline_in(5))
        assert result.text == "ok" and result.attempts == 3 and fake.calls["m"] == 3

    async def test_5xx_retries_are_bounded(self, fake: FakeServer,
                                           provider: MakeProvider) -> None:
        fake.set("m", Behaviour(kind="error", status=500))
        with pytest.raises(ProviderUnavailable):
            await provider(max_retries=1).complete(ASK, deadline=deadline_in(5))
        assert fake.calls["m"] == 2

    @pytest.mark.parametrize("status", [400, 404, 422])
    async def test_other_4xx_never_retried(self, fake: FakeServer, provider: MakeProvider,
                                           status: int) -> None:
        fake.set("m", Behaviour(kind="error", status=status, text="no such thing " * 40))
        with pytest.raises(ProviderBadResponse) as info:
            await provider().complete(ASK, deadline=deadline_in(5))
        assert info.value.status == status
        assert "no such thing" in info.value.excerpt and len(info.value.excerpt) <= 200
        assert fake.calls["m"] == 1

    async def test_malformed_body(self, fake: FakeServer, provider: MakeProvider) -> None:
        fake.set("m", Behaviour(kind="malformed"))
        with pytest.raises(ProviderBadResponse):
            await provider().complete(ASK, deadline=deadline_in(5))
        assert fake.calls["m"] == 1

    async def test_reset_is_unavailable(self, fake: FakeServer, provider: MakeProvider) -> None:
        fake.set("m", Behaviour(kind="reset"))
        with pytest.raises(ProviderUnavailable):
            await provider(max_retries=0).complete(ASK, deadline=deadline_in(5))

    async def test_reset_then_ok(self, fake: FakeServer, provider: MakeProvider) -> None:
        fake.set("m", Behaviour(kind="reset", times=1))
        result = await provider().complete(ASK, deadline=deadline_in(5))
        assert result.attempts == 2

    async def test_connection_refused_is_unavailable(self, fake: FakeServer,
                                                     provider: MakeProvider) -> None:
        p = provider(max_retries=0)
        await fake.stop()
        with pytest.raises(ProviderUnavailable):
            await p.complete(ASK, deadline=deadline_in(5))

    async def test_hang_times_out(self, fake: FakeServer, provider: MakeProvider) -> None:
        fake.set("m", Behaviour(kind="hang"))
        started = now()
        with pytest.raises(ProviderTimeout):
            await provider(timeout_s=0.3, max_retries=0).complete(ASK, deadline=deadline_in(5))
        assert 0.3 <= now() - started < 0.3 + SLACK_S

    async def test_deadline_bounds_all_retries(self, fake: FakeServer,
                                               provider: MakeProvider) -> None:
        fake.set("m", Behaviour(kind="hang"))
        started = now()
        with pytest.raises(ProviderTimeout):
            await provider(timeout_s=0.2, max_retries=10).complete(ASK, deadline=deadline_in(0.6))
        assert now() - started < 0.6 + SLACK_S
        assert 2 <= fake.calls["m"] <= 4

    async def test_deadline_already_passed(self, fake: FakeServer,
                                           provider: MakeProvider) -> None:
        with pytest.raises(ProviderTimeout):
            await provider().complete(ASK, deadline=deadline_in(-1))
        assert fake.calls["m"] == 0

    async def test_concurrency_limit(self, fake: FakeServer, provider: MakeProvider) -> None:
        fake.set("m", Behaviour(kind="slow", delay_s=0.05))
        p = provider(max_concurrency=2)
        results = await asyncio.gather(*(p.complete(ASK, deadline=deadline_in(5))
                                         for _ in range(6)))
        assert [r.text for r in results] == ["ok"] * 6
        assert fake.peak_in_flight["m"] == 2

    async def test_cancellation_propagates(self, fake: FakeServer,
                                           provider: MakeProvider) -> None:
        fake.set("m", Behaviour(kind="hang"))
        task = asyncio.create_task(provider().complete(ASK, deadline=deadline_in(5)))
        async with asyncio.timeout(2):
            await fake.wait_for_calls("m")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


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
                                         r"valid kinds: openai"):
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
