"""Numbers in model text: finding them and writing each value in one canonical form.

Fusion votes on answer keys, so "18", "18.0", "$18" and "36/2" must all become "18".
A value is read exactly (as a :class:`~fractions.Fraction`) and written as the shortest
decimal string; digit runs too long to be an answer are not numbers here.
"""

from __future__ import annotations

import re
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Final

__all__ = ["MAX_NUMBER_DIGITS", "NUMBER", "canonical_number", "json_number", "number_key"]

MAX_NUMBER_DIGITS: Final = 60  # longer digit runs are not answers (and bound the arithmetic)

#: optional sign, thousands groups or plain digits, optional decimals, optional
#: "/denominator". The lookbehind keeps "5-3" from reading as -3 and "x2" as 2.
NUMBER: Final = re.compile(
    r"(?<![\w.])(?P<sign>[-\u2212]?)\$?\s?(?=\.?\d)"
    r"(?P<int>\d{1,3}(?:,\d{3})+(?![\d])|\d+)?(?P<frac>\.\d+)?"
    r"(?:\s?/\s?(?P<den>\d+(?:\.\d+)?))?(?![\d])"
)


def canonical_number(text: str) -> str | None:
    """The first number in ``text`` as a canonical decimal string ("18", "0.75", "-3")."""
    for match in NUMBER.finditer(text):
        key = number_key(match)
        if key is not None:
            return key
    return None


def number_key(match: re.Match[str]) -> str | None:
    """The canonical string of one :data:`NUMBER` match, or None when it is too long."""
    value = _number_value(match)
    return None if value is None else _format_number(value)


def json_number(value: object) -> str | None:
    """The canonical string of a JSON number (not a bool, nan or inf), else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if abs(value) < 10**MAX_NUMBER_DIGITS else None
    if isinstance(value, float) and abs(value) < 10.0**MAX_NUMBER_DIGITS:  # not nan / inf
        return _format_number(Fraction(Decimal(repr(value))))
    return None


def _number_value(match: re.Match[str]) -> Fraction | None:
    int_part, frac_part, den = match.group("int"), match.group("frac"), match.group("den")
    digits = (int_part or "0").replace(",", "") + (frac_part or "")
    if len(digits) > MAX_NUMBER_DIGITS or (den is not None and len(den) > MAX_NUMBER_DIGITS):
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
