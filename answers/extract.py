"""Answer extraction: turn a model's free text into a short, comparable answer key.

Fusion votes on these keys, so answers that mean the same must map to one string
("18", "18.0" and "$18" all become "18"). Extraction is a pure function of the text,
returns ``None`` when it finds nothing and never raises: model output is untrusted.

- ``text``: the whole text, casefolded, whitespace collapsed, surrounding
  quotes and trailing punctuation stripped.
- ``choice``: one letter A-J, preferring an explicit answer statement.
- ``number``: a canonical decimal string, preferring a JSON ``answer`` field,
  then an "answer is X" / "#### X" / ``\\boxed{X}`` statement, then the last
  number in the text.
- ``json``: a (dotted) field of the first JSON object in the text; a string
  value is stripped of whitespace and of one layer of matching quotes.
- ``regex``: the first capture group (or whole match) of a pattern,
  normalized like ``text``.

The parts live apart: numbers and their canonical form in :mod:`alchemist.answers.numbers`,
lenient JSON reading in :mod:`alchemist.answers.json_text`, the bounded, time-boxed client
pattern in :mod:`alchemist.answers.safe_regex`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, cast, get_args

from alchemist.answers.json_text import first_json_object, json_path, loose_field, unquote
from alchemist.answers.numbers import NUMBER, canonical_number, json_number, number_key
from alchemist.answers.safe_regex import PatternGaveUp, check_pattern, search

__all__ = ["ANSWER_KINDS", "AnswerKind", "AnswerSpec", "canonical_number", "extract", "normalize_text"]

AnswerKind = Literal["text", "choice", "number", "json", "regex"]
ANSWER_KINDS: Final[tuple[str, ...]] = get_args(AnswerKind)
_SPEC_KEYS: Final = frozenset({"kind", "field", "pattern"})

_WS = re.compile(r"\s+")
_EDGE_QUOTES: Final = "\"'`\u201c\u201d\u2018\u2019*"
_TRAILING_PUNCT: Final = ".,;:!?\u3002"
_NUMBER_STATEMENTS: Final = (
    re.compile(r"\\boxed\{([^{}]{1,200})\}"),
    re.compile(r"####\s*([^\n]{1,200})"),
    re.compile(r"(?i:final\s+answer|answer)\s*(?:is|=|:)\s*(?:\*\*)?\s*([^\n]{1,200})"),
)

_LETTER = r"\(?\[?([A-J])\]?\)?"
_CHOICE_EXPLICIT = re.compile(
    r"(?i:answer|option|choice)(?:\s+is)?\s*[:=]?\s*(?:\*\*)?\s*" + _LETTER + r"(?![\w])"
)
_CHOICE_ALONE = re.compile(r"^\s*(?:\*\*)?\s*" + _LETTER + r"\s*[.):]?\s*(?:\*\*)?\s*$")
_CHOICE_BOLD = re.compile(r"\*\*\s*" + _LETTER + r"[.):]?\s*\*\*")
_CHOICE_LINE = re.compile(r"^\s*" + _LETTER + r"[.)]?\s*$", re.MULTILINE)
_CHOICE_PAREN = re.compile(r"\(([A-J])\)")
_CHOICE_VALUE = re.compile(r"^\s*\(?([A-J])\)?(?:[.):]|\s|$)|^\s*\(?([a-j])\)?\s*$")


@dataclass(frozen=True, slots=True)
class AnswerSpec:
    """How to extract a comparable answer key from a model's text.

    ``field`` is a dotted path and is used (and required) only by ``json``;
    ``pattern`` is a regular expression used (and required) only by ``regex``.
    """

    kind: AnswerKind = "text"
    field: str | None = None
    pattern: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ANSWER_KINDS:
            raise _kind_error(self.kind)
        if self.kind == "json":
            if not isinstance(self.field, str) or not all(self.field.split(".")):
                msg = "The json answer kind needs a field, a dotted path like 'answer' or 'a.b'."
                raise ValueError(msg)
        elif self.field is not None:
            raise ValueError(f"Only the json answer kind takes a field, not {self.kind!r}.")
        if self.kind == "regex":
            if not isinstance(self.pattern, str) or not self.pattern:
                raise ValueError("The regex answer kind needs a non-empty pattern.")
            check_pattern(self.pattern)
        elif self.pattern is not None:
            raise ValueError(f"Only the regex answer kind takes a pattern, not {self.kind!r}.")

    @classmethod
    def parse(cls, value: object) -> AnswerSpec:
        """Build a spec from a wire dict, a short string ``KIND[:FIELD|:PATTERN]`` or a spec.

        Examples: ``{"kind": "json", "field": "answer"}``, ``"number"``,
        ``"json:answer"``, ``"regex:Result: (\\w+)"``.
        """
        if isinstance(value, AnswerSpec):
            return value
        if isinstance(value, str):
            kind, sep, rest = value.strip().partition(":")
            kind = kind.strip()
            if kind == "regex":
                return cls._build(kind, None, rest if sep else None)
            if kind == "json":
                return cls._build(kind, rest.strip() if sep else None, None)
            if sep:
                raise ValueError(
                    f"The answer kind {kind!r} takes no ':' argument; "
                    "write KIND, json:FIELD or regex:PATTERN."
                )
            return cls._build(kind, None, None)
        if isinstance(value, Mapping):
            unknown = sorted(str(k) for k in value if k not in _SPEC_KEYS)
            if unknown:
                raise ValueError(
                    f"The answer spec has unknown key(s) {', '.join(map(repr, unknown))}; "
                    "the accepted keys are 'kind', 'field' and 'pattern'."
                )
            return cls._build(value.get("kind", "text"), value.get("field"), value.get("pattern"))
        raise ValueError(
            "The answer spec must be an object like {\"kind\": \"json\", \"field\": \"answer\"} "
            f"or a string like 'json:answer', not a {type(value).__name__}."
        )

    @classmethod
    def _build(cls, kind: object, field: object, pattern: object) -> AnswerSpec:
        for name, item in (("field", field), ("pattern", pattern)):
            if item is not None and not isinstance(item, str):
                msg = f"The answer spec {name} must be a string, not a {type(item).__name__}."
                raise ValueError(msg)
        if not isinstance(kind, str) or kind not in ANSWER_KINDS:
            raise _kind_error(kind)
        return cls(cast(AnswerKind, kind), cast("str | None", field), cast("str | None", pattern))

    def to_dict(self) -> dict[str, str]:
        """The wire form: ``kind`` plus ``field`` / ``pattern`` when set."""
        out: dict[str, str] = {"kind": self.kind}
        if self.field is not None:
            out["field"] = self.field
        if self.pattern is not None:
            out["pattern"] = self.pattern
        return out


def _kind_error(kind: object) -> ValueError:
    return ValueError(f"The answer kind must be one of {', '.join(ANSWER_KINDS)}, not {kind!r}.")


def extract(text: str, spec: AnswerSpec) -> str | None:
    """The normalized answer key of ``text`` under ``spec``, or None when there is none.

    Never raises on any string input.
    """
    if not isinstance(text, str):
        return None
    if spec.kind == "text":
        return normalize_text(text)
    if spec.kind == "choice":
        return _extract_choice(text)
    if spec.kind == "number":
        return _extract_number(text)
    if spec.kind == "json":
        return _extract_json(text, spec.field or "answer")
    return _extract_regex(text, spec.pattern or "")


def normalize_text(text: str) -> str | None:
    """Casefold, collapse whitespace, strip edge quotes and trailing punctuation."""
    out = _WS.sub(" ", text.casefold()).strip()
    previous = None
    while out != previous:
        previous = out
        out = out.strip().strip(_EDGE_QUOTES).rstrip(_TRAILING_PUNCT)
    return out or None


def _extract_number(text: str) -> str | None:
    # A stated JSON answer is final even without a number in it ("cannot be
    # determined"): reading one out of the reasoning would put words in its mouth.
    obj = first_json_object(text, "answer")
    if obj is not None and "answer" in obj:
        value = obj["answer"]
        found = json_number(value)
        if found is None and isinstance(value, str):
            found = canonical_number(value)
        return found
    loose = loose_field(text, "answer")
    if loose is not None:
        return canonical_number(loose)
    for statement in _NUMBER_STATEMENTS:
        last = _last(statement, text)
        found = None if last is None else canonical_number(last.group(1))
        if found is not None:
            return found
    last = _last(NUMBER, text)  # every NUMBER match holds digits
    return None if last is None else number_key(last)


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = None
    for last in pattern.finditer(text):  # noqa: B007 - the loop keeps the last match
        pass
    return last


def _extract_choice(text: str) -> str | None:
    obj = first_json_object(text, "answer")
    value = None if obj is None else obj.get("answer")
    if isinstance(value, str):
        hit = _CHOICE_VALUE.match(value)
        if hit:
            return str(hit.group(1) or hit.group(2)).upper()
    for pattern in (_CHOICE_EXPLICIT, _CHOICE_ALONE):
        last = _last(pattern, text)
        if last is not None:
            return last.group(1)
    for pattern in (_CHOICE_BOLD, _CHOICE_LINE):
        letters = {m.group(1) for m in pattern.finditer(text)}
        if len(letters) == 1:
            return letters.pop()
    # A parenthesized letter counts only when it is the only one: "(A) ... (B)"
    # lists the options rather than answering.
    letters = {m.group(1) for m in _CHOICE_PAREN.finditer(text)}
    return letters.pop() if len(letters) == 1 else None


def _extract_json(text: str, path: str) -> str | None:
    keys = path.split(".")
    obj = first_json_object(text, keys[0])
    if obj is None or keys[0] not in obj:
        # Broken JSON (an unescaped quote in the reasoning) still often has a
        # readable '"answer": "..."' pair; only a flat field can be read that way.
        loose = loose_field(text, keys[0]) if len(keys) == 1 else None
        if loose is not None or obj is None:
            return None if loose is None else unquote(loose.strip())
    found, value = json_path(obj, path)
    return _json_value_key(value) if found else None


def _json_value_key(value: object) -> str | None:
    if isinstance(value, str):
        return unquote(value.strip())
    if (number := json_number(value)) is not None:
        return number
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        return None  # a non-string dict key from the lenient parse, nan, ...


def _extract_regex(text: str, pattern: str) -> str | None:
    try:
        match = search(pattern, text)  # a client's pattern: time-boxed
    except PatternGaveUp:
        return None
    group = None if match is None else match.group(1 if match.re.groups else 0)
    return None if group is None else normalize_text(group)
