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
"""

from __future__ import annotations

import ast
import json
import re
import re._constants as sre_constants  # type: ignore[import-not-found]  # stdlib, untyped
import re._parser as sre_parser  # type: ignore[import-not-found]  # sizes a pattern first
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any, Final, Literal, cast, get_args

import regex

AnswerKind = Literal["text", "choice", "number", "json", "regex"]
ANSWER_KINDS: Final[tuple[str, ...]] = get_args(AnswerKind)
_SPEC_KEYS: Final = frozenset({"kind", "field", "pattern"})

# Bounds that keep extraction linear-ish on adversarial text.
_MAX_JSON_STARTS: Final = 24  # '{' positions tried as a JSON start
_MAX_LITERAL_CHARS: Final = 20_000  # ast.literal_eval input bound
_MAX_NUMBER_DIGITS: Final = 60  # longer digit runs are not answers

REGEX_TIMEOUT_S = 0.05  # per extraction with a client's pattern
REGEX_MAX_TEXT = 100_000
REGEX_MAX_NODES = 10_000
_WS = re.compile(r"\s+")
_EDGE_QUOTES: Final = "\"'`\u201c\u201d\u2018\u2019*"
_TRAILING_PUNCT: Final = ".,;:!?\u3002"
_FENCE = re.compile(r"```(?:json|JSON|js|javascript)?[ \t]*\n(.*?)```", re.DOTALL)
# A backslash not starting a valid JSON escape (LaTeX "\(", "\$" in reasoning).
_BAD_ESCAPE = re.compile(r'\\(?![\"\\/bfnrtu])')
_DECODER: Final = json.JSONDecoder(strict=False)  # tolerate raw newlines in strings

# Numbers: optional sign, thousands groups or plain digits, optional decimals,
# optional "/denominator". The lookbehind keeps "5-3" from reading as -3 and
# "x2" from reading as 2.
_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-\u2212]?)\$?\s?(?=\.?\d)"
    r"(?P<int>\d{1,3}(?:,\d{3})+(?![\d])|\d+)?(?P<frac>\.\d+)?"
    r"(?:\s?/\s?(?P<den>\d+(?:\.\d+)?))?(?![\d])"
)
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
            if len(self.pattern) > 500:
                raise ValueError("The regex answer pattern must be at most 500 characters.")
            try:
                _check_pattern_size(self.pattern)
                regex.compile(self.pattern)
            except (re.error, regex.error, OverflowError, RecursionError) as exc:
                raise ValueError(
                    f"The regex answer pattern {self.pattern!r} does not compile: {exc}."
                ) from exc
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


def canonical_number(text: str) -> str | None:
    """The first number in ``text`` as a canonical decimal string ("18", "0.75", "-3")."""
    for match in _NUMBER.finditer(text):
        value = _number_value(match)
        if value is not None:
            return _format_number(value)
    return None


def _number_value(match: re.Match[str]) -> Fraction | None:
    int_part, frac_part, den = match.group("int"), match.group("frac"), match.group("den")
    digits = (int_part or "0").replace(",", "") + (frac_part or "")
    if len(digits) > _MAX_NUMBER_DIGITS or (den is not None and len(den) > _MAX_NUMBER_DIGITS):
        return None
    value = Fraction(digits)
    if den is not None:
        denominator = Fraction(den)
        if denominator != 0:
            value /= denominator
    return -value if match.group("sign") else value


def _format_number(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)  # -0 cannot happen: Fraction(-0) == 0
    with localcontext() as ctx:
        ctx.prec = 12  # enough for money and ratios; 1/3 and 0.333333333333 agree
        dec = (Decimal(value.numerator) / Decimal(value.denominator)).normalize()
    return format(dec, "f")


def _json_number(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if abs(value) < 10**_MAX_NUMBER_DIGITS else None
    if isinstance(value, float) and abs(value) < 10.0**_MAX_NUMBER_DIGITS:  # not nan / inf
        return _format_number(Fraction(Decimal(repr(value))))
    return None


def _extract_number(text: str) -> str | None:
    # A stated JSON answer is final even without a number in it ("cannot be
    # determined"): reading one out of the reasoning would put words in its mouth.
    obj = _first_json_object(text, "answer")
    if obj is not None and "answer" in obj:
        value = obj["answer"]
        found = _json_number(value)
        if found is None and isinstance(value, str):
            found = canonical_number(value)
        return found
    loose = _loose_field(text, "answer")
    if loose is not None:
        return canonical_number(loose)
    for statement in _NUMBER_STATEMENTS:
        last = _last(statement, text)
        found = None if last is None else canonical_number(last.group(1))
        if found is not None:
            return found
    last = _last(_NUMBER, text)  # every _NUMBER match holds digits
    value = None if last is None else _number_value(last)
    return None if value is None else _format_number(value)


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = None
    for last in pattern.finditer(text):  # noqa: B007 - the loop keeps the last match
        pass
    return last


def _extract_choice(text: str) -> str | None:
    obj = _first_json_object(text, "answer")
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
    obj = _first_json_object(text, keys[0])
    if obj is None or keys[0] not in obj:
        # Broken JSON (an unescaped quote in the reasoning) still often has a
        # readable '"answer": "..."' pair; only a flat field can be read that way.
        loose = _loose_field(text, keys[0]) if len(keys) == 1 else None
        if loose is not None or obj is None:
            return None if loose is None else _unquote(loose.strip())
    value: object = obj
    for key in keys:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return _json_value_key(value)


def _json_value_key(value: object) -> str | None:
    if isinstance(value, str):
        return _unquote(value.strip())
    if (number := _json_number(value)) is not None:
        return number
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        return None  # a non-string dict key from the lenient parse, nan, ...


def _unquote(value: str) -> str:
    """Drop one layer of matching quotes: models write "'abc'" and "abc" for one string."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"`":
        inner = value[1:-1]
        if value[0] not in inner:  # "'a', 'b'" is two strings, not one quoted one
            return inner
    return value


def _first_json_object(text: str, key: str) -> dict[str, object] | None:
    """The first JSON object in ``text`` (fences first) holding ``key``, else the first one."""
    fallback: dict[str, object] | None = None
    sources = [fence.group(1) for fence in _FENCE.finditer(text)] + [text]
    for source in sources:
        start, tries = source.find("{"), 0
        while start != -1 and tries < _MAX_JSON_STARTS:
            tries += 1
            obj, end = _decode_at(source, start)
            if obj is not None and key in obj:
                return obj
            fallback = fallback if fallback is not None else obj
            start = source.find("{", end if obj is not None else start + 1)
    return fallback


def _decode_at(text: str, start: int) -> tuple[dict[str, object] | None, int]:
    """Decode the object at ``start``: strict JSON, then JSON with stray backslashes
    escaped (LaTeX in the reasoning), then a Python literal (single-quoted keys)."""
    try:
        value, end = _DECODER.raw_decode(text, start)
        return (value if isinstance(value, dict) else None), end
    except (ValueError, RecursionError):
        pass
    end = _balanced_end(text, start)
    chunk = text[start:end]
    try:
        value = _DECODER.decode(_BAD_ESCAPE.sub(r"\\\\", chunk))
    except (ValueError, RecursionError):
        value = None
        if end > start and "'" in chunk and len(chunk) <= _MAX_LITERAL_CHARS:
            try:
                with warnings.catch_warnings():  # prose like "1st" or "\w" warns while parsing
                    warnings.simplefilter("ignore", SyntaxWarning)
                    warnings.simplefilter("ignore", DeprecationWarning)
                    value = ast.literal_eval(chunk)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                value = None
    return (value if isinstance(value, dict) else None), max(end, start + 1)


def _balanced_end(text: str, start: int) -> int:
    """Index just past the '}' closing the '{' at ``start`` (quote-aware), or ``start``."""
    depth, quote, escaped = 0, "", False
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            quote = "" if ch == quote and not escaped else quote
            escaped = ch == "\\" and not escaped
        elif ch in "\"'":
            quote = ch
        elif ch in "{}":
            depth += 1 if ch == "{" else -1
            if depth == 0:
                return i + 1
    return start


def _loose_field(text: str, key: str) -> str | None:
    """``"key": "value"`` or ``"key": value`` read by pattern, for broken JSON."""
    name = re.escape(key)  # re's own pattern cache makes the compiles below cheap
    quoted = re.search(rf'"{name}"\s*:\s*"((?:[^"\\]|\\.){{0,2000}})"', text)
    if quoted:
        try:
            return str(_DECODER.decode(f'"{quoted.group(1)}"'))
        except ValueError:
            return quoted.group(1).replace('\\"', '"')
    bare = re.search(rf'"{re.escape(name)}"\s*:\s*([^,\s}}\]"][^,\n}}\]]{{0,200}})', text)
    return bare.group(1) if bare else None  # "answer": 42 (no quotes)


def _expanded_size(items: Any) -> int:
    """How many nodes a parsed pattern unrolls to (counted repeats multiply)."""
    total = 0
    for op, av in items:
        if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT,
                  getattr(sre_constants, "POSSESSIVE_REPEAT", None)):
            lo, hi, sub = av
            times = lo if hi == sre_constants.MAXREPEAT else hi
            total += max(1, times) * _expanded_size(sub)
        elif op is sre_constants.SUBPATTERN:
            total += _expanded_size(av[-1])
        elif op is sre_constants.BRANCH:
            total += sum(_expanded_size(branch) for branch in av[1])
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            total += _expanded_size(av[1])
        else:
            total += 1
    return total


def _check_pattern_size(pattern: str) -> None:
    """Refuse patterns whose counted repeats unroll into a huge program.

    ``a{100000000}`` compiles into a program of that size: a memory bomb from a
    single request. Patterns use Python's ``re`` syntax and may unroll to at
    most ``REGEX_MAX_NODES`` nodes.
    """
    size = _expanded_size(sre_parser.parse(pattern))
    if size > REGEX_MAX_NODES:
        raise ValueError(f"The regex answer pattern unrolls to {size} nodes (counted repeats "
                         f"multiply); the limit is {REGEX_MAX_NODES}.")


def _extract_regex(text: str, pattern: str) -> str | None:
    # Patterns come from clients: the `regex` engine takes a timeout, so a
    # catastrophic pattern costs at most REGEX_TIMEOUT_S, not the event loop.
    try:
        match = regex.search(pattern, text[:REGEX_MAX_TEXT], timeout=REGEX_TIMEOUT_S)
    except (regex.error, RecursionError, TimeoutError):
        return None
    group = None if match is None else match.group(1 if match.re.groups else 0)
    return None if group is None else normalize_text(group)
