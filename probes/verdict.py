"""What a checker returns and the interface every checker meets.

A checker is a pure function of the answer text that never raises (provider output
is untrusted): ``check(text) -> CheckResult``. The checkers themselves are in
:mod:`alchemist.probes.checkers` (text and numbers) and
:mod:`alchemist.probes.structured_checkers` (JSON objects and Python literals).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

__all__ = ["MAX_EXTRACTED", "MAX_TEXT", "CheckResult", "Checker", "failed", "passed"]

MAX_EXTRACTED: Final = 500  # characters kept of a text-like extracted answer
MAX_TEXT: Final = 100_000  # characters of an answer looked at


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict on one answer: passed or not, what was judged, and why in words."""

    passed: bool
    extracted: str | None
    reason: str


@runtime_checkable
class Checker(Protocol):
    """Decides whether an answer text is right. ``check`` never raises."""

    @property
    def kind(self) -> str:
        """The check kind, one of :data:`alchemist.probes.checker_spec.CHECK_KINDS`."""
        ...

    def check(self, text: str) -> CheckResult:
        """The verdict on ``text``."""
        ...


def passed(extracted: str | None, reason: str) -> CheckResult:
    """A passing verdict; ``extracted`` is clipped to :data:`MAX_EXTRACTED` characters."""
    return CheckResult(True, _clip(extracted), reason)


def failed(extracted: str | None, reason: str) -> CheckResult:
    """A failing verdict; ``extracted`` is clipped to :data:`MAX_EXTRACTED` characters."""
    return CheckResult(False, _clip(extracted), reason)


def _clip(value: str | None) -> str | None:
    return None if value is None else value[:MAX_EXTRACTED]
