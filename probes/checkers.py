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
"""

from __future__ import annotations

import ast
import json
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, Final, Protocol, runtime_checkable

import regex

from alchemist.answers.extract import AnswerSpec, canonical_number, extract, normalize_text

CHECK_KINDS: Final[tuple[str, ...]] = (
    "exact", "number", "choice", "regex", "contains", "json", "python_literal",
)

MAX_EXTRACTED: Final = 500  # characters kept of a text-like extracted answer
_MAX_TEXT: Final = 100_000  # characters of an answer looked at
_MAX_LITERAL: Final = 20_000  # ast.literal_eval input bound
_MAX_JSON_STARTS: Final = 32  # '{' positions tried as the start of a JSON object
_REGEX_TIMEOUT_S: Final = 0.05

_NUMBER_SPEC: Final = AnswerSpec("number")
_CHOICE_SPEC: Final = AnswerSpec("choice")
_JSON_ANSWER: Final = AnswerSpec("json", "answer")
_FENCE = re.compile(r"```[ \t]*[\w+-]*[ \t]*\n(.*?)```", re.DOTALL)
_STATEMENT = re.compile(
    r"(?i:(?:final\s+)?(?:answer|output|result|prints?|returns?)(?:\s+(?:is|would\s+be|will\s+be))?)"
    r"\s*[:=]?\s*(.+)$"
)


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
        """The check kind, one of :data:`CHECK_KINDS`."""
        ...

    def check(self, text: str) -> CheckResult:
        """The verdict on ``text``."""
        ...


# --------------------------------------------------------------------------- helpers


def _clip(value: str | None) -> str | None:
    return None if value is None else value[:MAX_EXTRACTED]


def _answer_field(text: str) -> str | None:
    """The ``answer`` field of a JSON object in the text (the JSON template), if any."""
    return extract(text, _JSON_ANSWER) if "answer" in text else None


def _fail(extracted: str | None, reason: str) -> CheckResult:
    return CheckResult(False, _clip(extracted), reason)


def _ok(extracted: str | None, reason: str) -> CheckResult:
    return CheckResult(True, _clip(extracted), reason)


def _strip_fences(text: str) -> str:
    fence = _FENCE.search(text)
    return fence.group(1) if fence else text


# --------------------------------------------------------------------------- checkers


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
        text = text[:_MAX_TEXT]
        raw = extract(text, self.answer) if self.answer else (_answer_field(text) or text)
        got = None if raw is None else normalize_text(raw)
        if got is None:
            return _fail(None, "The answer is empty.")
        wanted = {normalize_text(e) for e in self.expected}
        if got in wanted:
            return _ok(got, "The answer equals the expected text.")
        return _fail(got, f"The answer {got[:80]!r} is not {self.expected[0][:80]!r}.")


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
        text = text[:_MAX_TEXT]
        if self.answer is None or self.answer.kind == "number":
            got = extract(text, self.answer or _NUMBER_SPEC)
        else:
            raw = extract(text, self.answer)
            got = None if raw is None else canonical_number(raw)
        if got is None:
            return _fail(None, "The answer holds no number.")
        key = self.expected_key
        if got == key:
            return _ok(got, "The number equals the expected value.")
        try:
            value = Fraction(got)
        except (ValueError, ZeroDivisionError):
            return _fail(got, f"The answer {got!r} is not a readable number.")
        allowed = self.tolerance * abs(self.expected) if self.relative else self.tolerance
        if abs(value - self.expected) <= allowed:
            return _ok(got, f"The number {got} is within {float(allowed):g} of {key}.")
        return _fail(got, f"The number {got} is not {key}"
                     + (f" (tolerance {float(allowed):g})." if allowed else "."))


@dataclass(frozen=True, slots=True)
class ChoiceChecker:
    """The chosen letter (A-J) is ``expected``."""

    expected: str
    answer: AnswerSpec | None = None
    kind: ClassVar[str] = "choice"

    def check(self, text: str) -> CheckResult:
        text = text[:_MAX_TEXT]
        if self.answer is None or self.answer.kind == "choice":
            got = extract(text, self.answer or _CHOICE_SPEC)
        else:
            raw = extract(text, self.answer)
            got = None if raw is None else extract(raw.upper() if len(raw) <= 3 else raw, _CHOICE_SPEC)
        if got is None:
            return _fail(None, "The answer names no choice letter.")
        if got == self.expected:
            return _ok(got, f"The answer is choice {got}.")
        return _fail(got, f"The answer is choice {got}, not {self.expected}.")


@dataclass(frozen=True, slots=True)
class RegexChecker:
    """``pattern`` (Python syntax, ``re.search`` semantics; anchor it to match the
    whole answer) matches the extracted answer or, failing that, the stripped text."""

    pattern: str
    answer: AnswerSpec | None = None
    kind: ClassVar[str] = "regex"

    def check(self, text: str) -> CheckResult:
        text = text[:_MAX_TEXT]
        candidates: list[str] = []
        raw = extract(text, self.answer) if self.answer else _answer_field(text)
        if raw is not None:
            candidates.append(raw)
        candidates.append(text.strip())
        for candidate in candidates:
            try:
                hit = regex.search(self.pattern, candidate, timeout=_REGEX_TIMEOUT_S)
            except (regex.error, RecursionError, TimeoutError):
                return _fail(None, "The pattern took too long on this answer.")
            if hit is not None:
                return _ok(hit.group(0), "The answer matches the pattern.")
        return _fail(normalize_text(text), f"The answer does not match the pattern {self.pattern!r}.")


@dataclass(frozen=True, slots=True)
class ContainsChecker:
    """Every ``required`` substring is in the text and no ``forbidden`` one is
    (case-insensitive, whitespace-collapsed)."""

    required: tuple[str, ...]
    forbidden: tuple[str, ...] = ()
    kind: ClassVar[str] = "contains"

    def check(self, text: str) -> CheckResult:
        text = text[:_MAX_TEXT]
        folded = " ".join(text.casefold().split())
        key = normalize_text(text)
        missing = [r for r in self.required if " ".join(r.casefold().split()) not in folded]
        present = [f for f in self.forbidden if " ".join(f.casefold().split()) in folded]
        if missing:
            return _fail(key, f"The answer lacks {', '.join(map(repr, missing))}.")
        if present:
            return _fail(key, f"The answer contains the forbidden {', '.join(map(repr, present))}.")
        return _ok(key, "The answer contains every required text.")


@dataclass(frozen=True, slots=True)
class JsonChecker:
    """The text holds a JSON object with every ``required`` key (dotted paths reach
    into nested objects) whose values include ``equals``; with ``strict`` the whole
    text (surrounding whitespace aside) must be that object: no prose, no fences."""

    required: tuple[str, ...] = ()
    equals: Mapping[str, object] | None = None
    strict: bool = False
    kind: ClassVar[str] = "json"

    def check(self, text: str) -> CheckResult:
        text = text[:_MAX_TEXT]
        if self.strict:
            objects = _whole_json_object(text)
            if not objects:
                return _fail(None, "The answer is not one JSON object and nothing else.")
        else:
            objects = _json_objects(text)
            if not objects:
                return _fail(None, "The answer holds no JSON object.")
        best: tuple[dict[str, object], list[str]] | None = None
        for obj in objects:
            problems = self._problems(obj)
            if not problems:
                return _ok(_compact(obj), "The JSON object has every required key and value.")
            if best is None:
                best = (obj, problems)
        assert best is not None
        return _fail(_compact(best[0]), f"The JSON object {'; '.join(best[1])}.")

    def _problems(self, obj: dict[str, object]) -> list[str]:
        problems: list[str] = []
        missing = [k for k in self.required if not _has_path(obj, k)]
        if missing:
            problems.append(f"lacks the key(s) {', '.join(map(repr, missing))}")
        for key, want in (self.equals or {}).items():
            found, value = _get_path(obj, key)
            if found and not _json_equal(value, want):
                problems.append(f"has {key!r} = {_short(value)}, not {_short(want)}")
            elif not found and key not in self.required:
                problems.append(f"lacks the key {key!r}")
        return problems


@dataclass(frozen=True, slots=True)
class PythonLiteralChecker:
    """The answer, read as a Python literal, equals ``expected`` (so ``'abc'`` and
    ``"abc"`` agree, as in CRUXEval); a bare word counts as a string.

    The answer is looked for in the JSON ``answer`` field, the whole text (code
    fences and backticks stripped), its last line, and what follows "output is" /
    "answer:" there. A JSON list also matches an expected tuple (JSON has none).
    """

    expected: object
    source: str
    answer: AnswerSpec | None = None
    kind: ClassVar[str] = "python_literal"

    def check(self, text: str) -> CheckResult:
        text = text[:_MAX_TEXT]
        first: list[object] = []
        for candidate, loose in self._candidates(text):
            for value in _literal_values(candidate):
                if not first:
                    first.append(value)
                if _literal_equal(value, self.expected, loose):
                    return _ok(_literal_key(value), f"The answer equals {self.source[:80]}.")
        if not first:
            return _fail(None, "The answer is empty.")
        key = _literal_key(first[0])
        return _fail(key, f"The answer {(key or '?')[:80]} is not {self.source[:80]}.")

    def _candidates(self, text: str) -> list[tuple[str, bool]]:
        if self.answer is not None:
            raw = extract(text, self.answer)
            return [] if raw is None else [(raw, False)]
        out: list[tuple[str, bool]] = []
        obj = next((o for o in _json_objects(text) if "answer" in o), None) if "answer" in text else None
        if obj is not None:
            value = obj["answer"]
            if not isinstance(value, str):
                return [(json.dumps(value), True)]
            out.append((value, True))
        body = _strip_fences(text).strip().strip("`").strip()
        out.append((body, False))
        lines = [line.strip().strip("`").strip() for line in body.splitlines() if line.strip()]
        if lines:
            last = lines[-1]
            out.append((last, False))
            stated = _STATEMENT.search(last)
            if stated:
                tail = stated.group(1).strip().strip("*").strip().strip("`").strip()
                out.append((tail, False))
                if tail.endswith("."):
                    out.append((tail[:-1].strip("`"), False))
        return out


# --------------------------------------------------------------------------- literal helpers


def _literal_values(candidate: str) -> list[object]:
    """What the candidate text may mean: its Python literal value, then itself as a string."""
    out: list[object] = []
    if candidate and len(candidate) <= _MAX_LITERAL:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out.append(ast.literal_eval(candidate))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            pass
    if candidate:
        out.append(candidate)
    return out


def _literal_equal(a: object, b: object, loose: bool) -> bool:
    """Structural equality in which ``True`` is not ``1`` and a tuple is not a list
    (unless ``loose``: the value came from JSON, which has no tuples)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return ((loose or type(a) is type(b)) and len(a) == len(b)
                and all(_literal_equal(x, y, loose) for x, y in zip(a, b, strict=True)))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_literal_equal(a[k], b[k], loose) for k in a)
    if isinstance(a, int | float | complex) and isinstance(b, int | float | complex):
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return a == b
    try:
        return type(a) is type(b) and bool(a == b)
    except (RecursionError, ValueError, TypeError):
        return False


def _literal_key(value: object) -> str | None:
    try:
        return repr(value)
    except (RecursionError, ValueError):
        return None


# --------------------------------------------------------------------------- JSON helpers

_DECODER: Final = json.JSONDecoder()


def _whole_json_object(text: str) -> list[dict[str, object]]:
    try:
        value = json.loads(text.strip())
    except (ValueError, RecursionError):
        return []
    return [value] if isinstance(value, dict) else []


def _json_objects(text: str) -> list[dict[str, object]]:
    """JSON objects in the text: the whole text, then fenced blocks, then at each '{'."""
    out = _whole_json_object(text)
    sources = [f.group(1) for f in _FENCE.finditer(text)] + [text]
    for source in sources:
        out.extend(_whole_json_object(source) if source is not text else [])
        start, tries = source.find("{"), 0
        while start != -1 and tries < _MAX_JSON_STARTS:
            tries += 1
            try:
                value, end = _DECODER.raw_decode(source, start)
            except (ValueError, RecursionError):
                start = source.find("{", start + 1)
                continue
            if isinstance(value, dict):
                out.append(value)
            start = source.find("{", max(end, start + 1))
    return out


def _get_path(obj: object, path: str) -> tuple[bool, object]:
    value = obj
    for key in path.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return False, None
    return True, value


def _has_path(obj: object, path: str) -> bool:
    return _get_path(obj, path)[0]


def _json_equal(a: object, b: object) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return a is None and b is None


def _compact(obj: object) -> str | None:
    try:
        return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return None


def _short(value: object) -> str:
    text = _compact(value) or repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

def _decimal_text(value: Fraction) -> str:
    """``value`` as text that :func:`canonical_number` reads back exactly ("-1/3", "18")."""
    sign = "-" if value < 0 else ""
    if value.denominator == 1:
        return f"{sign}{abs(value.numerator)}"
    return f"{sign}{abs(value.numerator)}/{value.denominator}"
