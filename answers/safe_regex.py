"""Client-supplied regular expressions, bounded in memory and in time.

A pattern comes from a request or a probe suite, so it is untrusted twice over:
``a{100000000}`` compiles into a program of that size (a memory bomb from one
request), and ``(a+)+$`` backtracks for ever. :func:`check_pattern` refuses the first
kind when the pattern is accepted; :func:`search` runs on the ``regex`` engine,
which takes a timeout, so the second costs at most :data:`REGEX_TIMEOUT_S`, not the
event loop. Patterns use Python's ``re`` syntax.
"""

from __future__ import annotations

import re
import re._constants as sre_constants  # type: ignore[import-not-found]  # stdlib, untyped
import re._parser as sre_parser  # type: ignore[import-not-found]  # sizes a pattern first
from typing import Any, Final

import regex

__all__ = [
    "REGEX_MAX_NODES", "REGEX_MAX_PATTERN", "REGEX_MAX_TEXT", "REGEX_TIMEOUT_S", "PatternGaveUp",
    "check_pattern", "search",
]

REGEX_TIMEOUT_S: Final = 0.05  # per search with a client's pattern
REGEX_MAX_TEXT: Final = 100_000  # characters of text searched
REGEX_MAX_NODES: Final = 10_000  # nodes a pattern may unroll to
REGEX_MAX_PATTERN: Final = 500  # characters of a pattern


class PatternGaveUp(ValueError):
    """The search failed: the pattern does not compile, recursed too deep or ran too long."""


def check_pattern(pattern: str) -> None:
    """Refuse a pattern that is too long, does not compile or unrolls into a huge program.

    Raises ``ValueError`` with a sentence that says which bound it broke.
    """
    if len(pattern) > REGEX_MAX_PATTERN:
        raise ValueError(f"The regex answer pattern must be at most {REGEX_MAX_PATTERN} characters.")
    try:
        _check_size(pattern)
        regex.compile(pattern)
    except (re.error, regex.error, OverflowError, RecursionError) as exc:
        raise ValueError(f"The regex answer pattern {pattern!r} does not compile: {exc}.") from exc


def search(pattern: str, text: str) -> Any:
    """``regex.search`` of ``pattern`` in (the first :data:`REGEX_MAX_TEXT` characters of)
    ``text``, time-boxed: a ``regex.Match`` or None.

    Raises :class:`PatternGaveUp` when the pattern does not compile or runs out of time.
    """
    try:
        return regex.search(pattern, text[:REGEX_MAX_TEXT], timeout=REGEX_TIMEOUT_S)
    except (regex.error, RecursionError, TimeoutError) as exc:
        raise PatternGaveUp(f"The pattern {pattern[:80]!r} gave up: {exc}.") from exc


def _check_size(pattern: str) -> None:
    size = _expanded_size(sre_parser.parse(pattern))
    if size > REGEX_MAX_NODES:
        raise ValueError(f"The regex answer pattern unrolls to {size} nodes (counted repeats "
                         f"multiply); the limit is {REGEX_MAX_NODES}.")


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
