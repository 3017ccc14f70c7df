"""Building checkers from a suite's ``check = {kind = ..., ...}`` table, validated.

Every problem is a full-sentence ``ValueError`` naming the field.
"""

from __future__ import annotations

import ast
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Final

from alchemist.answers.extract import AnswerSpec
from alchemist.probes.checkers import (
    CHECK_KINDS,
    Checker,
    ChoiceChecker,
    ContainsChecker,
    ExactChecker,
    JsonChecker,
    NumberChecker,
    PythonLiteralChecker,
    RegexChecker,
)

# --------------------------------------------------------------------------- building

_COMMON: Final = frozenset({"kind"})
_FIELDS: Final[Mapping[str, frozenset[str]]] = {
    "exact": frozenset({"expected"}),
    "number": frozenset({"expected", "tolerance", "relative"}),
    "choice": frozenset({"expected"}),
    "regex": frozenset({"pattern"}),
    "contains": frozenset({"required", "forbidden"}),
    "json": frozenset({"required", "equals", "strict"}),
    "python_literal": frozenset({"expected"}),
}


def build_checker(spec: Mapping[str, object], *, answer: AnswerSpec | None = None) -> Checker:
    """The checker a ``check`` table describes.

    ``answer`` is the probe's extraction spec, if any: the ``exact``, ``number``,
    ``choice``, ``regex`` and ``python_literal`` checkers then judge what it
    extracts. Raises ``ValueError`` with a sentence naming the bad field.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"The check must be a table like {{kind = \"number\", expected = 42}}, "
                         f"not a {type(spec).__name__}.")
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in CHECK_KINDS:
        raise ValueError(f"The check field 'kind' must be one of {', '.join(CHECK_KINDS)}, not {kind!r}.")
    accepted = _FIELDS[kind] | _COMMON
    unknown = sorted(str(k) for k in spec if k not in accepted)
    if unknown:
        raise ValueError(
            f"The {kind} check has unknown field(s) {', '.join(map(repr, unknown))}; "
            f"it accepts {', '.join(map(repr, sorted(accepted)))}."
        )
    if kind == "exact":
        return ExactChecker(_strings(spec, kind, "expected", required=True), answer)
    if kind == "number":
        return _build_number(spec, answer)
    if kind == "choice":
        letter = spec.get("expected")
        if not isinstance(letter, str) or not re.fullmatch(r"[A-Ja-j]", letter.strip()):
            raise ValueError(f"The choice check field 'expected' must be one letter A-J, not {letter!r}.")
        return ChoiceChecker(letter.strip().upper(), answer)
    if kind == "regex":
        pattern = spec.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"The regex check field 'pattern' must be a non-empty string, not {pattern!r}.")
        try:
            AnswerSpec("regex", pattern=pattern)  # compiles it and bounds its size
        except ValueError as exc:
            raise ValueError(f"The regex check field 'pattern' is invalid: {exc}") from exc
        return RegexChecker(pattern, answer)
    if kind == "contains":
        return ContainsChecker(_strings(spec, kind, "required", required=True),
                               _strings(spec, kind, "forbidden", required=False))
    if kind == "json":
        return _build_json(spec)
    return _build_literal(spec, answer)


def _strings(spec: Mapping[str, object], kind: str, name: str, *, required: bool) -> tuple[str, ...]:
    value = spec.get(name)
    if value is None and not required:
        return ()
    items = [value] if isinstance(value, str) else value
    if (not isinstance(items, Sequence) or isinstance(items, str) or not items
            or not all(isinstance(i, str) and i.strip() for i in items)):
        raise ValueError(f"The {kind} check field {name!r} must be a non-empty string or a non-empty "
                         f"list of non-empty strings, not {value!r}.")
    return tuple(str(i) for i in items)


def _fraction(value: object) -> Fraction | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(Decimal(repr(value))) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            return Fraction(value.strip().replace("_", ""))
        except (ValueError, ZeroDivisionError):
            try:
                return Fraction(Decimal(value.strip()))
            except (InvalidOperation, ValueError):
                return None
    return None




def _build_number(spec: Mapping[str, object], answer: AnswerSpec | None) -> NumberChecker:
    expected = _fraction(spec.get("expected"))
    if expected is None:
        raise ValueError("The number check field 'expected' must be a finite number (or a string like "
                         f"'1/3' or '2.50'), not {spec.get('expected')!r}.")
    tolerance = _fraction(spec.get("tolerance", 0))
    if tolerance is None or tolerance < 0 or isinstance(spec.get("tolerance"), str):
        raise ValueError("The number check field 'tolerance' must be a non-negative number, "
                         f"not {spec.get('tolerance')!r}.")
    relative = spec.get("relative", False)
    if not isinstance(relative, bool):
        raise ValueError(f"The number check field 'relative' must be true or false, not {relative!r}.")
    return NumberChecker(expected, tolerance, relative, answer)


def _build_json(spec: Mapping[str, object]) -> JsonChecker:
    required = _strings(spec, "json", "required", required=False)
    if any(not all(part for part in key.split(".")) for key in required):
        raise ValueError(f"The json check field 'required' holds a malformed dotted key: {required!r}.")
    equals = spec.get("equals")
    if equals is not None and (not isinstance(equals, Mapping) or not equals
                               or not all(isinstance(k, str) and k for k in equals)):
        raise ValueError(f"The json check field 'equals' must be a non-empty table of key = value, "
                         f"not {equals!r}.")
    if not required and not equals:
        raise ValueError("The json check needs 'required' keys or an 'equals' table (or both).")
    strict = spec.get("strict", False)
    if not isinstance(strict, bool):
        raise ValueError(f"The json check field 'strict' must be true or false, not {strict!r}.")
    return JsonChecker(required, dict(equals) if equals else None, strict)


def _build_literal(spec: Mapping[str, object], answer: AnswerSpec | None) -> PythonLiteralChecker:
    source = spec.get("expected")
    if not isinstance(source, str) or not source.strip():
        raise ValueError("The python_literal check field 'expected' must be a string holding a Python "
                         f"literal, like \"'abc'\" or \"[1, 2]\", not {source!r}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = ast.literal_eval(source.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise ValueError(f"The python_literal check field 'expected' is not a Python literal "
                         f"({source!r}: {exc}); write strings quoted, like \"'abc'\".") from exc
    return PythonLiteralChecker(value, source.strip(), answer)
