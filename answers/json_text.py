"""JSON objects in model text, read leniently and within bounds.

Models wrap JSON in code fences, put LaTeX backslashes in its strings, write Python
dicts with single quotes, or break it with an unescaped quote in the reasoning.
:func:`first_json_object` tries strict JSON, then JSON with stray backslashes escaped,
then a Python literal; :func:`loose_field` reads one ``"key": value`` pair by pattern
when nothing decodes. Every reader is a pure function that never raises.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from typing import Final

__all__ = ["MAX_LITERAL_CHARS", "first_json_object", "json_path", "literal_value", "loose_field",
           "unquote"]

MAX_JSON_STARTS: Final = 24  # '{' positions tried as a JSON start
MAX_LITERAL_CHARS: Final = 20_000  # ast.literal_eval input bound

_FENCE = re.compile(r"```(?:json|JSON|js|javascript)?[ \t]*\n(.*?)```", re.DOTALL)
# A backslash not starting a valid JSON escape (LaTeX "\(", "\$" in reasoning).
_BAD_ESCAPE = re.compile(r'\\(?![\"\\/bfnrtu])')
_DECODER: Final = json.JSONDecoder(strict=False)  # tolerate raw newlines in strings


def first_json_object(text: str, key: str) -> dict[str, object] | None:
    """The first JSON object in ``text`` (fences first) holding ``key``, else the first one."""
    fallback: dict[str, object] | None = None
    sources = [fence.group(1) for fence in _FENCE.finditer(text)] + [text]
    for source in sources:
        start, tries = source.find("{"), 0
        while start != -1 and tries < MAX_JSON_STARTS:
            tries += 1
            obj, end = _decode_at(source, start)
            if obj is not None and key in obj:
                return obj
            fallback = fallback if fallback is not None else obj
            start = source.find("{", end if obj is not None else start + 1)
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
            return str(_DECODER.decode(f'"{quoted.group(1)}"'))
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
