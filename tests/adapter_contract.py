"""The provider adapter contract: the suite every adapter passes against its own fake server.

:class:`AdapterContract` talks to a real fake server in the adapter's dialect
(one that honours :class:`tests.fakes.Behaviour`, see the
:class:`tests.fakes.FakeServer` protocol). A dialect's test module subclasses
it with its ``kind`` and a ``fake`` fixture::

    class TestAnthropicContract(AdapterContract):
        kind = "anthropic"
        supports_logprobs = False

        @pytest.fixture
        async def fake(self) -> AsyncIterator[FakeServer]:
            async with FakeProvider(dialect="anthropic") as server:
                yield server
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import aiohttp
import pytest

from alchemist.adapters import (
    ChatRequest,
    Message,
    Provider,
    ProviderAuthError,
    ProviderBadResponse,
    ProviderRateLimited,
    ProviderSpec,
    ProviderTimeout,
    ProviderUnavailable,
    Secret,
    build_provider,
    make_session,
)
from tests.fakes import Behaviour, FakeServer

__all__ = ["ASK", "KEY", "PROMPT_TOKENS", "QUESTION", "SLACK_S", "AdapterContract", "MakeProvider",
           "deadline_in", "now"]

KEY = "sk-test-0123456789abcdef"
QUESTION = "What is two plus two?"
ASK = ChatRequest(messages=(Message("system", "Be brief."), Message("user", QUESTION)))
PROMPT_TOKENS = (len("Be brief.") + len(QUESTION)) // 4
#: slack on time bounds, generous for a loaded machine: each bound it widens
#: still sits well below what ignoring the timeout or deadline would take
SLACK_S = 1.0

MakeProvider = Callable[..., Provider]


def deadline_in(seconds: float) -> float:
    """An absolute deadline ``seconds`` from now, in loop time."""
    return asyncio.get_running_loop().time() + seconds


def now() -> float:
    """The loop's clock."""
    return asyncio.get_running_loop().time()


class AdapterContract:
    """Behaviour every :class:`alchemist.adapters.base.Provider` shows against its fake server."""

    kind: ClassVar[str]
    #: whether the dialect can return token log-probabilities; when not, ``logprob`` stays None
    supports_logprobs: ClassVar[bool] = True

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
        if not self.supports_logprobs:
            expected = None
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
            await provider().complete(ASK, deadline=deadline_in(3))
        assert info.value.retry_after == pytest.approx(5)
        assert now() - started < SLACK_S  # gave up at once, not sleeping toward the deadline
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
        assert 0.3 <= now() - started < 0.3 + SLACK_S  # the 0.3 s timeout, not the 5 s deadline

    async def test_deadline_bounds_all_retries(self, fake: FakeServer,
                                               provider: MakeProvider) -> None:
        fake.set("m", Behaviour(kind="hang"))
        started = now()
        with pytest.raises(ProviderTimeout):
            await provider(timeout_s=0.2, max_retries=10).complete(ASK, deadline=deadline_in(0.6))
        assert now() - started < 0.6 + SLACK_S  # eleven 0.2 s attempts would take 2.2 s
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
