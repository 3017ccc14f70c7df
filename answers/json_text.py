"""JSON objects in model text, read leniently and within bounds.

Models wrap JSON in code fences, put LaTeX backslashes in its strings, write Python
dicts with single quotes, or break it with an unescaped quote in the reasoning.
:func:`json_objects` is the one scanner of a text for objects: read leniently (the
extraction's :func:`first_json_object`: JSON, then JSON with stray backslashes
escaped, then a Python literal) or strictly (the probe checkers, which judge whether a
model wrote JSON). :func:`loose_field` reads one ``"key": value`` pair by pattern when
nothing decodes. Every reader is a pure function that never raises.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from collections.abc import Iterator
from typing import Final

__all__ = ["CODE_FENCE", "JSON_FENCE", "MAX_LITERAL_CHARS", "first_json_object", "json_objects",
           "json_path", "literal_value", "loose_field", "unquote"]

#: '{' positions tried as an object's start, per fenced block and in the whole text: strictly,
#: and leniently, where one try may decode the rest of the text three times (JSON, JSON with
#: backslashes escaped, a Python literal) and which runs on the request path
MAX_JSON_STARTS: Final = 32
MAX_LENIENT_STARTS: Final = 24
MAX_LITERAL_CHARS: Final = 20_000  # ast.literal_eval input bound

#: a fenced block tagged as JSON, or untagged
JSON_FENCE = re.compile(r"```(?:json|JSON|js|javascript)?[ \t]*\n(.*?)```", re.DOTALL)
#: a fenced block with any language tag
CODE_FENCE = re.compile(r"```[ \t]*[\w+-]*[ \t]*\n(.*?)```", re.DOTALL)
# A backslash not starting a valid JSON escape (LaTeX "\(", "\$" in reasoning).
_BAD_ESCAPE = re.compile(r'\\(?![\"\\/bfnrtu])')
_STRICT: Final = json.JSONDecoder()
_LENIENT: Final = json.JSONDecoder(strict=False)  # tolerate raw newlines in strings


def json_objects(text: str, *, lenient: bool) -> Iterator[dict[str, object]]:
    """Each JSON object in ``text``: those in its fenced blocks, then those in the whole text.

    Each '{' of a block is tried as an object's start (a bounded number of them) and
    the scan goes on after every object found. Strictly, only valid JSON counts, in a
    block of any language (a model may tag its JSON anything). Leniently (the answer,
    however it was written) raw newlines in strings, stray backslashes and Python dicts
    count too, and only JSON-tagged or untagged blocks come first: a ```python block's
    dict is code, which the lenient reading would otherwise prefer as the answer.
    """
    fence, limit = (JSON_FENCE, MAX_LENIENT_STARTS) if lenient else (CODE_FENCE, MAX_JSON_STARTS)
    decode = _decode_at if lenient else _strict_at
    for source in [f.group(1) for f in fence.finditer(text)] + [text]:
        start, tries = source.find("{"), 0
        while start != -1 and tries < limit:
            tries += 1
            obj, end = decode(source, start)
            if obj is not None:
                yield obj
            start = source.find("{", end if obj is not None else start + 1)


def first_json_object(text: str, key: str) -> dict[str, object] | None:
    """The first JSON object in ``text`` (fences first, read leniently) holding ``key``,
    else the first one."""
    fallback: dict[str, object] | None = None
    for obj in json_objects(text, lenient=True):
        if key in obj:
            return obj
        fallback = fallback if fallback is not None else obj
    return fallback


def json_path(value: object, path: str) -> tuple[bool, object]:
    """Follow a dotted ``path`` ("a.b", "items.0") into objects and lists: (found, value)."""
    for key in path.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return False, None
    return True, value


def literal_value(text: str) -> tuple[bool, object]:
    """``text`` read as a Python literal (at most :data:`MAX_LITERAL_CHARS`): (read, value)."""
    if len(text) > MAX_LITERAL_CHARS:
        return False, None
    try:
        with warnings.catch_warnings():  # prose like "1st" or "\w" warns while parsing
            warnings.simplefilter("ignore")
            return True, ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def loose_field(text: str, key: str) -> str | None:
    """``"key": "value"`` or ``"key": value`` read by pattern, for broken JSON."""
    name = re.escape(key)  # re's own pattern cache makes the compiles below cheap
    quoted = re.search(rf'"{name}"\s*:\s*"((?:[^"\\]|\\.){{0,2000}})"', text)
    if quoted:
        try:
            return str(_LENIENT.decode(f'"{quoted.group(1)}"'))
        except ValueError:
            return quoted.group(1).replace('\\"', '"')
    bare = re.search(rf'"{re.escape(name)}"\s*:\s*([^,\s}}\]"][^,\n}}\]]{{0,200}})', text)
    return bare.group(1) if bare else None  # "answer": 42 (no quotes)


def unquote(value: str) -> str:
    """Drop one layer of matching quotes: models write "'abc'" and "abc" for one string."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"`":
        inner = value[1:-1]
        if value[0] not in inner:  # "'a', 'b'" is two strings, not one quoted one
            return inner
    return value


def _strict_at(text: str, start: int) -> tuple[dict[str, object] | None, int]:
    """The JSON object at ``start`` and the index after it, or None."""
    try:
        value, end = _STRICT.raw_decode(text, start)
    except (ValueError, RecursionError):
        return None, start + 1
    return (value if isinstance(value, dict) else None), end


def _decode_at(text: str, start: int) -> tuple[dict[str, object] | None, int]:
    """Decode the object at ``start``: JSON (raw newlines allowed in strings), then JSON
    with stray backslashes escaped (LaTeX in the reasoning), then a Python literal
    (single-quoted keys)."""
    try:
        value, end = _LENIENT.raw_decode(text, start)
        return (value if isinstance(value, dict) else None), end
    except (ValueError, RecursionError):
        pass
    end = _balanced_end(text, start)
    chunk = text[start:end]
    try:
        value = _LENIENT.decode(_BAD_ESCAPE.sub(r"\\\\", chunk))
    except (ValueError, RecursionError):
        value = literal_value(chunk)[1] if end > start and "'" in chunk else None
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
