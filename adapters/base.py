"""The one interface every provider adapter implements, and the values it trades.

An adapter turns a :class:`ChatRequest` into one HTTP (or NATS) call in its
provider's dialect and returns a :class:`ChatResult`, or raises one of the
errors in :mod:`alchemist.adapters.errors`. Adapters hold no global state; they share
one ``aiohttp.ClientSession`` owned by the daemon.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Protocol, runtime_checkable

import msgspec


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


class ProviderOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One configured provider as a ``[[providers]]`` entry writes it.

    The one definition of every provider option, its range and its default:
    the daemon's config converts each entry to this (see ``alchemist.schema``),
    and :class:`ProviderSpec` adds what is resolved at start-up. The key is
    named by its source (``api_key_env``, ``api_key_file`` or
    ``api_key_credential``, at most one), never written here. Prices are USD
    per million tokens. Which ``kind`` and ``base_url`` are valid is checked by
    the config, which knows the registered adapters.
    """

    name: str
    kind: str
    base_url: str
    model: str
    api_key_env: str | None = None
    api_key_file: str | None = None
    api_key_credential: str | None = None
    timeout_s: Annotated[float, msgspec.Meta(ge=0.01, le=3600)] = 30.0
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    max_concurrency: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 16
    #: at most this many requests per second (evenly spaced); None = no limit
    rate_per_s: Annotated[float, msgspec.Meta(ge=0.001)] | None = None
    price_input: Annotated[float, msgspec.Meta(ge=0.0)] | None = None
    price_output: Annotated[float, msgspec.Meta(ge=0.0)] | None = None
    logprobs: bool = False

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """USD cost of a call, or None when this provider has no price."""
        if self.price_input is None and self.price_output is None:
            return None
        return (prompt_tokens * (self.price_input or 0.0)
                + completion_tokens * (self.price_output or 0.0)) / 1e6


class ProviderSpec(ProviderOptions, frozen=True):
    """Everything an adapter needs to know about one provider: its options, plus
    what the daemon resolves at start-up (``alchemist.adapters.secrets.resolve_spec``).

    Adapters never read config files. ``api_key`` is a :class:`Secret`, so it
    shows in no ``repr``; ``headers`` are sent with every call (tests and
    embedders set them; the config has no such key).
    """

    api_key: Secret | None = None
    headers: Mapping[str, str] = {}


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
