"""The provider error taxonomy, shared by every adapter.

Every failure of a provider call is one of these, translated at the edge (in
the adapter that saw the HTTP status or the aiohttp exception), never later
and never by searching an error message::

    ProviderError
    ├── ProviderTimeout          no answer within the attempt's time budget
    ├── ProviderRateLimited      HTTP 429; carries ``retry_after`` seconds when given
    ├── ProviderUnavailable      HTTP 5xx, connection refused or reset
    ├── ProviderAuthError        HTTP 401 / 403 (never retried)
    └── ProviderBadResponse      any other 4xx, or a body we cannot read

``retryable`` says whether a retry may help; ``code`` is the short name that
goes into replies, logs and metrics.
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base class: a provider call failed."""

    code = "error"
    retryable = False

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message


class ProviderTimeout(ProviderError):
    """The provider did not answer within the time it was given."""

    code = "timeout"
    retryable = True


class ProviderRateLimited(ProviderError):
    """The provider answered 429; ``retry_after`` is its hint in seconds, if any."""

    code = "rate_limited"
    retryable = True

    def __init__(self, provider: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(provider, message)
        self.retry_after = retry_after


class ProviderUnavailable(ProviderError):
    """A 5xx status or a transport failure (refused, reset, closed early)."""

    code = "unavailable"
    retryable = True


class ProviderAuthError(ProviderError):
    """The provider refused our credentials (401/403). Never retried."""

    code = "auth"


class ProviderBadResponse(ProviderError):
    """A 4xx other than 401/403/429, or a body that is not the dialect's JSON."""

    code = "bad_response"

    def __init__(self, provider: str, message: str, status: int | None = None,
                 excerpt: str = "") -> None:
        super().__init__(provider, message)
        self.status = status
        self.excerpt = excerpt
