"""Provider adapters: one module per dialect behind :class:`Provider`, and the registry.

The daemon builds every configured provider with :func:`build_provider`; an
unknown ``kind`` fails at start-up with the list of valid kinds.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from .alchemist import AlchemistAdapter
from .anthropic import AnthropicAdapter
from .base import ChatRequest, ChatResult, Message, Provider, ProviderOptions, ProviderSpec, Secret, Usage
from .errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from .gemini import GeminiAdapter
from .http import call_with_retries, make_session
from .ollama import OllamaAdapter
from .openai import OpenAIAdapter
from .secrets import SecretError, resolve_api_key, resolve_spec

__all__ = [
    "ADAPTERS",
    "AlchemistAdapter",
    "AnthropicAdapter",
    "ChatRequest",
    "ChatResult",
    "GeminiAdapter",
    "Message",
    "OllamaAdapter",
    "OpenAIAdapter",
    "Provider",
    "ProviderAuthError",
    "ProviderBadResponse",
    "ProviderError",
    "ProviderOptions",
    "ProviderRateLimited",
    "ProviderSpec",
    "ProviderTimeout",
    "ProviderUnavailable",
    "Secret",
    "SecretError",
    "Usage",
    "build_provider",
    "call_with_retries",
    "make_session",
    "resolve_api_key",
    "resolve_spec",
]

#: provider ``kind`` -> adapter factory; the one place a new dialect is registered
ADAPTERS: dict[str, Callable[[ProviderSpec, aiohttp.ClientSession], Provider]] = {
    "alchemist": AlchemistAdapter,
    "anthropic": AnthropicAdapter,
    "gemini": GeminiAdapter,
    "ollama": OllamaAdapter,
    "openai": OpenAIAdapter,
}


def build_provider(spec: ProviderSpec, session: aiohttp.ClientSession) -> Provider:
    """The adapter for ``spec.kind``, sharing ``session``; ValueError for an unknown kind."""
    try:
        factory = ADAPTERS[spec.kind]
    except KeyError:
        valid = ", ".join(sorted(ADAPTERS))
        raise ValueError(f"provider {spec.name!r}: unknown kind {spec.kind!r}; "
                         f"valid kinds: {valid}") from None
    return factory(spec, session)
