"""Checkers of structured answers: a JSON object with required keys and values, and a
Python literal (CRUXEval-style output prediction).

Both look for the answer in more than one place (the whole text, code fences, each
'{', the last line) and judge every candidate; a verdict names the first problem of
the best candidate. The verdict types are in :mod:`alchemist.probes.verdict`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from alchemist.answers.extract import AnswerSpec, extract
from alchemist.answers.json_text import CODE_FENCE, json_objects, json_path, literal_value
from alchemist.probes.verdict import MAX_TEXT, CheckResult, failed, passed

__all__ = ["JsonChecker", "PythonLiteralChecker"]

_STATEMENT = re.compile(
    r"(?i:(?:final\s+)?(?:answer|output|result|prints?|returns?)(?:\s+(?:is|would\s+be|will\s+be))?)"
    r"\s*[:=]?\s*(.+)$"
)


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
        text = text[:MAX_TEXT]
        if self.strict:
            objects = _whole_json_object(text)
            if not objects:
                return failed(None, "The answer is not one JSON object and nothing else.")
        else:
            objects = _json_objects(text)
            if not objects:
                return failed(None, "The answer holds no JSON object.")
        best: tuple[dict[str, object], list[str]] | None = None
        for obj in objects:
            problems = self._problems(obj)
            if not problems:
                return passed(_compact(obj), "The JSON object has every required key and value.")
            if best is None:
                best = (obj, problems)
        assert best is not None
        return failed(_compact(best[0]), f"The JSON object {'; '.join(best[1])}.")

    def _problems(self, obj: dict[str, object]) -> list[str]:
        problems: list[str] = []
        missing = [k for k in self.required if not json_path(obj, k)[0]]
        if missing:
            problems.append(f"lacks the key(s) {', '.join(map(repr, missing))}")
        for key, want in (self.equals or {}).items():
            found, value = json_path(obj, key)
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
        text = text[:MAX_TEXT]
        first: list[object] = []
        for candidate, loose in self._candidates(text):
            for value in _literal_values(candidate):
                if not first:
                    first.append(value)
                if _literal_equal(value, self.expected, loose):
                    return passed(_literal_key(value), f"The answer equals {self.source[:80]}.")
        if not first:
            return failed(None, "The answer is empty.")
        key = _literal_key(first[0])
        return failed(key, f"The answer {(key or '?')[:80]} is not {self.source[:80]}.")

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


def _literal_values(candidate: str) -> list[object]:
    """What the candidate text may mean: its Python literal value, then itself as a string."""
    if not candidate:
        return []
    read, value = literal_value(candidate)
    return [value, candidate] if read else [candidate]


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


def _whole_json_object(text: str) -> list[dict[str, object]]:
    try:
        value = json.loads(text.strip())
    except (ValueError, RecursionError):
        return []
    return [value] if isinstance(value, dict) else []


def _json_objects(text: str) -> list[dict[str, object]]:
    """Valid JSON objects in the text: the whole text, then in fenced blocks, then at each '{'."""
    return _whole_json_object(text) + list(json_objects(text, lenient=False))


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


def _strip_fences(text: str) -> str:
    fence = CODE_FENCE.search(text)
    return fence.group(1) if fence else text
