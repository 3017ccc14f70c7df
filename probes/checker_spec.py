"""Building checkers from a suite's ``check = {kind = ..., ...}`` table, validated.

Each check kind is a msgspec Struct: the one declaration of the fields it
accepts, their types and their defaults. Its ``build`` method checks what a
type cannot say (a finite number, one letter, a pattern that compiles) and
makes the checker. Every problem is a full-sentence ``ValueError`` naming the
field, like ``The number check field 'tolerance' must be a number, got '1'.``
"""

from __future__ import annotations

import ast
import math
import re
import warnings
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, ClassVar, Final

import msgspec

from alchemist.answers.extract import AnswerSpec
from alchemist.probes.checkers import (
    Checker,
    ChoiceChecker,
    ContainsChecker,
    ExactChecker,
    JsonChecker,
    NumberChecker,
    PythonLiteralChecker,
    RegexChecker,
)
from alchemist.schema import SchemaError, convert

#: one string, or a list of them
Strings = str | tuple[str, ...]


class CheckSpec(msgspec.Struct, frozen=True):
    """The fields of one check kind (``kind`` itself selects the Struct)."""

    kind: ClassVar[str]

    def build(self, answer: AnswerSpec | None) -> Checker:
        """The checker, or ``ValueError`` naming the field that is wrong."""
        raise NotImplementedError


class ExactCheck(CheckSpec, frozen=True):
    """The answer equals one of ``expected`` (normalized text)."""

    kind: ClassVar[str] = "exact"
    expected: Strings = ()

    def build(self, answer: AnswerSpec | None) -> Checker:
        return ExactChecker(_strings(self.expected, self.kind, "expected", required=True), answer)


class NumberCheck(CheckSpec, frozen=True):
    """The answer is ``expected`` (a number, or a string like ``'1/3'``) within ``tolerance``."""

    kind: ClassVar[str] = "number"
    expected: int | float | str | None = None
    tolerance: int | float = 0
    relative: bool = False

    def build(self, answer: AnswerSpec | None) -> Checker:
        expected = _fraction(self.expected)
        if expected is None:
            raise ValueError("The number check field 'expected' must be a finite number (or a string "
                             f"like '1/3' or '2.50'), not {self.expected!r}.")
        tolerance = _fraction(self.tolerance)
        if tolerance is None or tolerance < 0:
            raise ValueError("The number check field 'tolerance' must be a non-negative number, "
                             f"not {self.tolerance!r}.")
        return NumberChecker(expected, tolerance, self.relative, answer)


class ChoiceCheck(CheckSpec, frozen=True):
    """The answer is the option letter ``expected`` (A-J)."""

    kind: ClassVar[str] = "choice"
    expected: str = ""

    def build(self, answer: AnswerSpec | None) -> Checker:
        if not re.fullmatch(r"[A-Ja-j]", self.expected.strip()):
            raise ValueError("The choice check field 'expected' must be one letter A-J, "
                             f"not {self.expected!r}.")
        return ChoiceChecker(self.expected.strip().upper(), answer)


class RegexCheck(CheckSpec, frozen=True):
    """The answer matches ``pattern``."""

    kind: ClassVar[str] = "regex"
    pattern: str = ""

    def build(self, answer: AnswerSpec | None) -> Checker:
        if not self.pattern:
            raise ValueError("The regex check field 'pattern' must be a non-empty string, not ''.")
        try:
            AnswerSpec("regex", pattern=self.pattern)  # compiles it and bounds its size
        except ValueError as exc:
            raise ValueError(f"The regex check field 'pattern' is invalid: {exc}") from exc
        return RegexChecker(self.pattern, answer)


class ContainsCheck(CheckSpec, frozen=True):
    """The text holds every ``required`` string and no ``forbidden`` one."""

    kind: ClassVar[str] = "contains"
    required: Strings = ()
    forbidden: Strings | None = None

    def build(self, answer: AnswerSpec | None) -> Checker:
        return ContainsChecker(_strings(self.required, self.kind, "required", required=True),
                               _strings(self.forbidden, self.kind, "forbidden", required=False))


class JsonCheck(CheckSpec, frozen=True):
    """The text is a JSON object with the ``required`` keys and the ``equals`` values."""

    kind: ClassVar[str] = "json"
    required: Strings | None = None
    equals: dict[str, Any] | None = None
    strict: bool = False

    def build(self, answer: AnswerSpec | None) -> Checker:
        required = _strings(self.required, self.kind, "required", required=False)
        if any(not all(part for part in key.split(".")) for key in required):
            raise ValueError(f"The json check field 'required' holds a malformed dotted key: {required!r}.")
        if self.equals is not None and (not self.equals or not all(self.equals)):
            raise ValueError("The json check field 'equals' must be a non-empty table of key = value, "
                             f"not {self.equals!r}.")
        if not required and not self.equals:
            raise ValueError("The json check needs 'required' keys or an 'equals' table (or both).")
        return JsonChecker(required, dict(self.equals) if self.equals else None, self.strict)


class PythonLiteralCheck(CheckSpec, frozen=True):
    """The answer evaluates to the Python literal written in ``expected``."""

    kind: ClassVar[str] = "python_literal"
    expected: str = ""

    def build(self, answer: AnswerSpec | None) -> Checker:
        source = self.expected.strip()
        if not source:
            raise ValueError("The python_literal check field 'expected' must be a string holding a "
                             f"Python literal, like \"'abc'\" or \"[1, 2]\", not {self.expected!r}.")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = ast.literal_eval(source)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
            raise ValueError(f"The python_literal check field 'expected' is not a Python literal "
                             f"({self.expected!r}: {exc}); write strings quoted, like \"'abc'\".") from exc
        return PythonLiteralChecker(value, source, answer)


#: check ``kind`` -> the Struct of its fields
SPECS: Final[Mapping[str, type[CheckSpec]]] = {spec.kind: spec for spec in (
    ExactCheck, NumberCheck, ChoiceCheck, RegexCheck, ContainsCheck, JsonCheck, PythonLiteralCheck)}
#: every check ``kind``: those of :data:`SPECS`
CHECK_KINDS: Final[tuple[str, ...]] = tuple(SPECS)


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
    if not isinstance(kind, str) or kind not in SPECS:
        raise ValueError(f"The check field 'kind' must be one of {', '.join(SPECS)}, not {kind!r}.")
    return parse_spec(kind, spec).build(answer)


def parse_spec(kind: str, spec: Mapping[str, object]) -> CheckSpec:
    """``spec`` as the Struct of ``kind``.

    Each field is converted on its own so that its message names it the way a
    suite author reads it (``The number check field 'tolerance' ...``).
    """
    shape = SPECS[kind]
    accepted = ("kind", *shape.__struct_fields__)
    unknown = sorted(str(k) for k in spec if k not in accepted)
    if unknown:
        raise ValueError(f"The {kind} check has unknown field(s) {', '.join(map(repr, unknown))}; "
                         f"it accepts {', '.join(map(repr, sorted(accepted)))}.")
    values: dict[str, Any] = {}
    for field in msgspec.structs.fields(shape):
        if field.name in spec:
            try:
                values[field.name] = convert(spec[field.name], field.type,
                                             where=f"The {kind} check field {field.name!r}")
            except SchemaError as exc:
                raise ValueError(f"{exc}.") from None
    return shape(**values)


def _strings(value: Strings | None, kind: str, name: str, *, required: bool) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    items = (value,) if isinstance(value, str) else value or ()
    if not items or not all(i.strip() for i in items):
        written = list(value) if isinstance(value, tuple) else value  # a TOML list, as written
        raise ValueError(f"The {kind} check field {name!r} must be a non-empty string or a non-empty "
                         f"list of non-empty strings, not {written!r}.")
    return items


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
