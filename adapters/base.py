"""The one interface every provider adapter implements, and the values it trades.

An adapter turns a :class:`ChatRequest` into one HTTP (or NATS) call in its
provider's dialect and returns a :class:`ChatResult`, or raises one of the
errors in :mod:`alchemist.adapters.errors`. Adapters hold no global state; they share
one ``aiohttp.ClientSession`` owned by the daemon.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class Secret:
    """A credential whose value never shows up in ``repr``, ``str`` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The raw value, for the one place that sends it (an auth header)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Message:
    """One chat turn."""

    role: str
    content: str


#: header carrying how many alchemists a request has crossed; a daemon refuses it past MAX_HOPS
HOPS_HEADER = "Alchemist-Hops"
MAX_HOPS = 4


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What the daemon asks of every provider for one user request."""

    messages: tuple[Message, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    logprobs: bool = False
    #: how many llm-alchemist daemons this request has already crossed (recursive fusion)
    hops: int = 0


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts and, when the price table knows the model, the cost in USD."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A provider's answer."""

    text: str
    usage: Usage = Usage()
    latency_ms: float = 0.0
    attempts: int = 1
    #: mean token log-probability of the answer, when logprobs were asked and given
    logprob: float | None = None


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """Everything an adapter needs to know about one configured provider.

    Built by the daemon from its config; adapters never read config files.
    Prices are USD per million tokens.
    """

    name: str
    kind: str
    base_url: str
    model: str
    api_key: Secret | None = None
    timeout_s: float = 30.0
    max_retries: int = 2
    max_concurrency: int = 16
    #: at most this many requests per second (evenly spaced); None = no limit
    rate_per_s: float | None = None
    price_input: float | None = None
    price_output: float | None = None
    logprobs: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """USD cost of a call, or None when this provider has no price."""
        if self.price_input is None and self.price_output is None:
            return None
        return (prompt_tokens * (self.price_input or 0.0)
                + completion_tokens * (self.price_output or 0.0)) / 1e6


@runtime_checkable
class Provider(Protocol):
    """A provider adapter: a name, one async call, and ``aclose()``.

    ``complete`` must return before ``deadline`` (an absolute
    ``asyncio`` loop time): retries stop early enough, and the last attempt's
    timeout is clipped to what is left. It raises only
    :class:`alchemist.adapters.errors.ProviderError` subclasses (and lets
    ``CancelledError`` through untouched).
    """

    name: str

    async def complete(self, request: ChatRequest, *, deadline: float) -> ChatResult:
        """Ask the provider once (with retries inside the deadline)."""
        ...

    async def aclose(self) -> None:
        """Release what the adapter holds (not the shared session)."""
        ...
