"""One schema layer: msgspec Structs for the wire, feedback, recipes, config and suites.

Every external document is declared once as a :class:`msgspec.Struct` (each
default written once, in its field) and converted here. msgspec checks types,
ranges, lengths, enums and unknown fields in one pass (in C, which matters on
the request path); this module turns its terse errors into the sentences our
users read, naming the field by its path and what is accepted::

    max_tokens must be an integer >= 1, got 0
    messages[0].role must be one of 'system', 'user', 'assistant'; got 'bot'
    unknown field 'promp'; accepted fields: prompt, messages, recipe, ...
    providers[1].timeout_s must be a number, got a string

Cross-field rules live in a Struct's ``__post_init__`` and raise
:class:`ValueError`; their message is kept and prefixed with the field path.
This module is the lowest layer of the package: it imports nothing of ours.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from msgspec import inspect as mi

T = TypeVar("T")

_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_PATH = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_EXPECTED = re.compile(r"^Expected `(?P<want>[^`]+)`(?P<rest>.*?)(?:, got `(?P<got>[^`]+)`)?$")
_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
          "array": "a list", "object": "a map", "null": "null", "bytes": "bytes"}


class SchemaError(ValueError):
    """A document that does not fit its schema; ``str()`` is the whole sentence."""


def convert(raw: object, kind: type[T], *, where: str = "") -> T:
    """``raw`` (a decoded JSON, msgpack or TOML document) as ``kind``, or :class:`SchemaError`.

    ``where`` prefixes every field path (``"providers[1]"``). Strings are taken
    as they are (no string-to-number coercion): a config value ``"10"`` for a
    number is an error, as it is on the wire.
    """
    try:
        return msgspec.convert(raw, kind, strict=True)
    except msgspec.ValidationError as exc:
        raise SchemaError(explain(exc, kind, raw, where)) from None


def decode_json(data: bytes, kind: type[T]) -> T:
    """Decode and validate JSON in one pass; :class:`msgspec.DecodeError` for bad syntax."""
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise SchemaError(explain(exc, kind, _loose_json(data), "")) from None


def decode_msgpack(data: bytes, kind: type[T]) -> T:
    """Decode and validate msgpack in one pass; :class:`msgspec.DecodeError` for bad bytes."""
    try:
        return msgspec.msgpack.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise SchemaError(explain(exc, kind, _loose_msgpack(data), "")) from None


def field_names(kind: type[msgspec.Struct]) -> tuple[str, ...]:
    """The accepted (encoded) field names of a Struct, in declaration order."""
    return tuple(f.encode_name for f in msgspec.structs.fields(kind))


def explain(exc: msgspec.ValidationError, kind: object, raw: object, where: str) -> str:
    """One sentence for a msgspec validation error: the field's path, what is accepted, what came."""
    text = str(exc)
    m = _AT.search(text)
    steps: list[str | int] = []
    if m:
        text = text[: m.start()]
        steps = [int(i) if i.isdigit() else (i or name) for name, i in _PATH.findall(m.group("path"))]
    path = _join(where, steps)
    node = _type_at(mi.type_info(kind), steps)
    value = _value_at(raw, steps)
    if text.startswith("Object contains unknown field "):
        name = text.split("`")[1]
        accepted = _accepted(node)
        inside = f" in {path}" if path else ""
        return f"unknown field {name!r}{inside}" + (f"; accepted fields: {accepted}" if accepted else "")
    if text.startswith("Object missing required field "):
        name = text.split("`")[1]
        return f"{_join(path, [name])} is required"
    if text.startswith("Invalid enum value "):
        choices = ", ".join(repr(v) for v in _literal_values(node))
        return f"{path or 'the value'} must be one of {choices}; got {_show(value)}"
    e = _EXPECTED.match(text)
    if e:
        want = _words(e.group("want"), e.group("rest"))
        got = f", got {_show(value)}" if value is not _MISSING and not isinstance(value, dict | list) \
            else (f", got {_NAMES.get(e.group('got') or '', 'something else')}" if e.group("got") else "")
        return f"{path or 'the document'} must be {want}{got}"
    # a __post_init__ rule or another message: keep it, say where
    return f"{path}: {text}" if path else text


# -- helpers -----------------------------------------------------------------------------

_MISSING: Any = object()


def _join(where: str, steps: list[str | int]) -> str:
    out = where
    for s in steps:
        # msgspec names no dict key: it says "[...]"
        out = f"{out}[{s}]" if isinstance(s, int) or s == "..." else f"{out}.{s}" if out else s
    return out


def _words(want: str, rest: str) -> str:
    kinds = [k.strip() for k in want.split("|")]
    named = [_NAMES.get(k, k) for k in kinds if k != "null"]
    out = " or ".join(named) if named else "null"
    rest = rest.strip()
    rest = re.sub(r"^of length <= (\d+)", r"of at most \1 characters", rest) if "str" in kinds \
        else re.sub(r"^of length <= (\d+)", r"of at most \1 items", rest)
    rest = re.sub(r"^of length >= (\d+)", r"of at least \1 characters" if "str" in kinds
                  else r"of at least \1 items", rest)
    return f"{out} {rest}".strip()


def _show(value: object) -> str:
    if value is _MISSING:
        return "something else"
    if isinstance(value, bool) or value is None:
        return "true" if value is True else "false" if value is False else "null"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, int | float):
        return repr(value)
    return f"a {type(value).__name__}"


def _value_at(raw: object, steps: list[str | int]) -> object:
    for s in steps:
        indexed = isinstance(s, int) and isinstance(raw, list | tuple) and s < len(raw)
        keyed = isinstance(s, str) and isinstance(raw, dict) and s in raw
        if not (indexed or keyed):
            return _MISSING
        raw = raw[s]  # type: ignore[index]
    return raw


def _type_at(node: mi.Type, steps: list[str | int]) -> mi.Type | None:
    for s in steps:
        node = _unwrap(node, want_struct=isinstance(s, str))
        if isinstance(node, mi.StructType) and isinstance(s, str) and s != "...":
            match = [f.type for f in node.fields if f.encode_name == s]
            if not match:
                return None
            node = match[0]
        elif isinstance(node, mi.DictType):
            node = node.value_type
        elif isinstance(node, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType):
            node = node.item_type
        else:
            return None
    return node


def _unwrap(node: mi.Type, want_struct: bool = True) -> mi.Type:
    if isinstance(node, mi.UnionType):
        for t in node.types:
            if isinstance(t, mi.StructType | mi.DictType) == want_struct and not isinstance(t, mi.NoneType):
                return t
        return next(t for t in node.types if not isinstance(t, mi.NoneType))
    return node


def _accepted(node: mi.Type | None) -> str:
    node = _unwrap(node) if node is not None else None
    if isinstance(node, mi.StructType):
        return ", ".join(f.encode_name for f in node.fields)
    return ""


def _literal_values(node: mi.Type | None) -> tuple[Any, ...]:
    node = _unwrap(node, want_struct=False) if node is not None else None
    if isinstance(node, mi.LiteralType):
        return tuple(node.values)
    if isinstance(node, mi.EnumType):
        return tuple(m.value for m in node.cls)
    return ()


def _loose_json(data: bytes) -> object:
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return _MISSING


def _loose_msgpack(data: bytes) -> object:
    try:
        return msgspec.msgpack.decode(data)
    except msgspec.DecodeError:
        return _MISSING
