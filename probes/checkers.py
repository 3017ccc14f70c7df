"""Answer checkers: decide whether a provider's answer text to a probe is right.

Every checker implements :class:`Checker`: ``check(text) -> CheckResult``, a pure
function of the text that never raises (provider output is untrusted). Build one
from a suite's ``check = {kind = ..., ...}`` table with :func:`alchemist.probes.checker_spec.build_checker`,
which validates the table and says in a full sentence which field is wrong.

``CheckResult.extracted`` is the answer the checker judged, as a short comparable
key (the canonical number, the choice letter, the normalized text, the compact
JSON object): the prober records it as the provider's answer.

Checkers read the answer out of the text the way the daemon's extraction does
(:mod:`alchemist.answers.extract`), so the same probe checks right under every template:
"42", "The answer is 42." and ``{"answer": 42}`` all pass ``number`` 42. When the
probe gives an ``answer`` extraction spec, the checker judges what that spec
extracts instead (see ``probes/README.md``).

This module holds the text and number checkers (``exact``, ``number``, ``choice``,
``regex``, ``contains``) and is where every checker is imported from; the JSON and
Python-literal checkers live in :mod:`alchemist.probes.structured_checkers`, the
verdict type and the interface in :mod:`alchemist.probes.verdict`.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, Final

from alchemist.answers.extract import AnswerSpec, extract, normalize_text
from alchemist.answers.numbers import canonical_number
from alchemist.answers.safe_regex import PatternGaveUp, search
from alchemist.probes.structured_checkers import JsonChecker, PythonLiteralChecker
from alchemist.probes.verdict import (
    MAX_TEXT,
    Checker,
    CheckResult,
    failed,
    passed,
)

__all__ = [
    "CheckResult", "Checker", "ChoiceChecker", "ContainsChecker",
    "ExactChecker", "JsonChecker", "NumberChecker", "PythonLiteralChecker", "RegexChecker",
]

_NUMBER_SPEC: Final = AnswerSpec("number")
_CHOICE_SPEC: Final = AnswerSpec("choice")
_JSON_ANSWER: Final = AnswerSpec("json", "answer")


@dataclass(frozen=True, slots=True)
class ExactChecker:
    """Normalized text equality with any of the ``expected`` strings.

    Without an answer spec the judged answer is the ``answer`` field of a JSON
    object in the text when there is one, else the whole text.
    """

    expected: tuple[str, ...]
    answer: AnswerSpec | None = None
    kind: ClassVar[str] = "exact"

    def check(self, text: str) -> CheckResult:
        text = text[:MAX_TEXT]
        raw = extract(text, self.answer) if self.answer else (_answer_field(text) or text)
        got = None if raw is None else normalize_text(raw)
        if got is None:
            return failed(None, "The answer is empty.")
        wanted = {normalize_text(e) for e in self.expected}
        if got in wanted:
            return passed(got, "The answer equals the expected text.")
        return failed(got, f"The answer {got[:80]!r} is not {self.expected[0][:80]!r}.")


@dataclass(frozen=True, slots=True)
class NumberChecker:
    """A number equal to ``expected`` within ``tolerance`` (absolute, or relative to
    ``expected`` when ``relative``); canonical forms always match ("18.0" is 18)."""

    expected: Fraction
    tolerance: Fraction = Fraction(0)
    relative: bool = False
    answer: AnswerSpec | None = None
    kind: ClassVar[str] = "number"

    @property
    def expected_key(self) -> str:
        """The expected value as the canonical string extraction produces."""
        return canonical_number(_decimal_text(self.expected)) or "0"

    def check(self, text: str) -> CheckResult:
        text = text[:MAX_TEXT]
        if self.answer is None or self.answer.kind == "number":
            got = extract(text, self.answer or _NUMBER_SPEC)
        else:
            raw = extract(text, self.answer)
            got = None if raw is None else canonical_number(raw)
        if got is None:
            return failed(None, "The answer holds no number.")
        key = self.expected_key
        if got == key:
            return passed(got, "The number equals the expected value.")
        try:
            value = Fraction(got)
        except (ValueError, ZeroDivisionError):
            return failed(got, f"The answer {got!r} is not a readable number.")
        allowed = self.tolerance * abs(self.expected) if self.relative else self.tolerance
        if abs(value - self.expected) <= allowed:
            return passed(got, f"The number {got} is within {float(allowed):g} of {key}.")
        return failed(got, f"The number {got} is not {key}"
                     + (f" (tolerance {float(allowed):g})." if allowed else "."))


@dataclass(frozen=True, slots=True)
class ChoiceChecker:
    """The chosen letter (A-J) is ``expected``."""

    expected: str
    answer: AnswerSpec | None = None
    kind: ClassVar[str] = "choice"

    def check(self, text: str) -> CheckResult:
        text = text[:MAX_TEXT]
        if self.answer is None or self.answer.kind == "choice":
            got = extract(text, self.answer or _CHOICE_SPEC)
        else:
            raw = extract(text, self.answer)
            got = None if raw is None else extract(raw.upper() if len(raw) <= 3 else raw, _CHOICE_SPEC)
        if got is None:
            return failed(None, "The answer names no choice letter.")
        if got == self.expected:
            return passed(got, f"The answer is choice {got}.")
        return failed(got, f"The answer is choice {got}, not {self.expected}.")


@dataclass(frozen=True, slots=True)
class RegexChecker:
    """``pattern`` (Python syntax, ``re.search`` semantics; anchor it to match the
    whole answer) matches the extracted answer or, failing that, the stripped text."""

    pattern: str
    answer: AnswerSpec | None = None
    kind: ClassVar[str] = "regex"

    def check(self, text: str) -> CheckResult:
        text = text[:MAX_TEXT]
        candidates: list[str] = []
        raw = extract(text, self.answer) if self.answer else _answer_field(text)
        if raw is not None:
            candidates.append(raw)
        candidates.append(text.strip())
        for candidate in candidates:
            try:
                hit = search(self.pattern, candidate)
            except PatternGaveUp:
                return failed(None, "The pattern took too long on this answer.")
            if hit is not None:
                return passed(hit.group(0), "The answer matches the pattern.")
        return failed(normalize_text(text), f"The answer does not match the pattern {self.pattern!r}.")


@dataclass(frozen=True, slots=True)
class ContainsChecker:
    """Every ``required`` substring is in the text and no ``forbidden`` one is
    (case-insensitive, whitespace-collapsed)."""

    required: tuple[str, ...]
    forbidden: tuple[str, ...] = ()
    kind: ClassVar[str] = "contains"

    def check(self, text: str) -> CheckResult:
        text = text[:MAX_TEXT]
        folded = " ".join(text.casefold().split())
        key = normalize_text(text)
        missing = [r for r in self.required if " ".join(r.casefold().split()) not in folded]
        present = [f for f in self.forbidden if " ".join(f.casefold().split()) in folded]
        if missing:
            return failed(key, f"The answer lacks {', '.join(map(repr, missing))}.")
        if present:
            return failed(key, f"The answer contains the forbidden {', '.join(map(repr, present))}.")
        return passed(key, "The answer contains every required text.")


def _answer_field(text: str) -> str | None:
    """The ``answer`` field of a JSON object in the text (the JSON template), if any."""
    return extract(text, _JSON_ANSWER) if "answer" in text else None


def _decimal_text(value: Fraction) -> str:
    """``value`` as text that :func:`canonical_number` reads back exactly ("-1/3", "18")."""
    sign = "-" if value < 0 else ""
    if value.denominator == 1:
        return f"{sign}{abs(value.numerator)}"
    return f"{sign}{abs(value.numerator)}/{value.denominator}"
