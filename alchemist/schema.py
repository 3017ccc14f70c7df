"""One schema layer: msgspec Structs for the wire, feedback, recipes, config and suites.

Every external document is declared once as a :class:`msgspec.Struct` (each
default written once, in its field) and converted here. msgspec checks types,
ranges, lengths, enums and unknown fields in one pass (in C, which matters on
the request path); this module turns its terse errors into the sentences our
users read, naming the field by its path and what is accepted::

    max_tokens must be an integer between 1 and 1000000, got 0
    messages[0].role must be one of 'assistant', 'system', 'user'; got 'bot'
    unknown field 'promp'; accepted fields: prompt, messages, recipe, ...
    providers[1].timeout_s must be a number, got a string
    weights.math.a must be a number between 0 and 1, got 2

msgspec names no dict key in its paths (``weights[...]``): the entry that does
not fit its declared type is found again, so the path names it. A field may
say what it accepts in words, ``Meta(description=...)``, used in its errors.

Cross-field rules live in a Struct's ``__post_init__`` and raise
:class:`ValueError`; their message is kept and prefixed with the field path.
This module is the lowest layer of the package: it imports nothing of ours.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from msgspec import inspect as mi

T = TypeVar("T")

_AT = re.compile(r" - at (?:`(?P<key>key)` in )?`\$(?P<path>[^`]*)`$")
_PATH = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_EXPECTED = re.compile(r"^Expected `(?P<want>[^`]+)`(?P<rest>.*?)(?:, got `(?P<got>[^`]+)`)?$")
_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
          "array": "a list", "object": "a map", "null": "null", "bytes": "bytes"}
_IDENT = re.compile(r"^[A-Za-z0-9_*-]+$")


class SchemaError(ValueError):
    """A document that does not fit its schema; ``str()`` is the whole sentence.

    ``path`` is the field path (``""`` for the document itself) and
    :meth:`about` says the same with another subject, so a caller can write
    ``recipe field 'weights.a' must be ...`` without taking the sentence apart.
    """

    def __init__(self, message: str, path: str = "", tail: str = "") -> None:
        super().__init__(message)
        self.path = path
        self._tail = tail or f": {message}"

    def about(self, subject: str) -> str:
        """The sentence with ``subject`` in place of the field path."""
        return f"{subject}{self._tail}"


class _Key:
    """A dict key in a field path (msgspec gives none; see :func:`_resolve`)."""

    __slots__ = ("key",)

    def __init__(self, key: object) -> None:
        self.key = key


_Step = str | int | _Key


def convert(raw: object, kind: type[T], *, where: str = "", document: str = "the document") -> T:
    """``raw`` (a decoded JSON, msgpack or TOML document) as ``kind``, or :class:`SchemaError`.

    ``where`` prefixes every field path (``"providers[1]"``); ``document``
    names the whole document when the problem is the document itself ("the
    document must be a map"). Strings are taken as they are (no
    string-to-number coercion): a config value ``"10"`` for a number is an
    error, as it is on the wire.
    """
    try:
        return msgspec.convert(raw, kind, strict=True)
    except msgspec.ValidationError as exc:
        raise _explain(exc, kind, raw, where, document) from None


def decode_json(data: bytes, kind: type[T], *, document: str = "the document") -> T:
    """Decode and validate JSON in one pass; :class:`msgspec.DecodeError` for bad syntax.

    msgspec also raises :class:`RecursionError` for a document nested too deeply.
    """
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise _explain(exc, kind, _loose(msgspec.json.decode, data), "", document) from None


def decode_msgpack(data: bytes, kind: type[T], *, document: str = "the document") -> T:
    """Decode and validate msgpack in one pass; :class:`msgspec.DecodeError` for bad bytes.

    msgspec also raises :class:`RecursionError` for a document nested too deeply.
    """
    try:
        return msgspec.msgpack.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise _explain(exc, kind, _loose(msgspec.msgpack.decode, data), "", document) from None


def field_names(kind: type[msgspec.Struct]) -> tuple[str, ...]:
    """The accepted (encoded) field names of a Struct, in declaration order."""
    return tuple(f.encode_name for f in msgspec.structs.fields(kind))


def _explain(exc: msgspec.ValidationError, kind: object, raw: object, where: str,
             document: str) -> SchemaError:
    text = str(exc)
    m = _AT.search(text)
    steps: list[_Step] = []
    if m:
        text = text[: m.start()]
        found = _PATH.findall(m.group("path"))
        steps = _resolve(kind, raw, [int(i) if i.isdigit() else (i or name) for name, i in found])
    path = _join(where, steps)
    node = _type_at(mi.type_info(kind), steps)
    value = _value_at(raw, steps)
    if m and m.group("key"):
        return _key_error(path or document, path, node, value, _py_key(_py_at(kind, steps)))
    if text.startswith("Object contains unknown field "):
        name = _quoted(text)
        accepted = _accepted(node)
        listed = f"; accepted fields: {accepted}" if accepted else ""
        inside = f" in {path}" if path else ""
        return SchemaError(f"unknown field {name!r}{inside}{listed}", path,
                           f" has an unknown field {name!r}{listed}")
    if text.startswith("Object missing required field "):
        full = _join(path, [_quoted(text)])
        return SchemaError(f"{full} is required", full, " is required")
    if node is not None and isinstance(_unwrap(node), mi.StructType) \
            and not text.startswith("Expected `"):
        # a __post_init__ rule: keep its words, say where
        return SchemaError(f"{path}: {text}" if path else text, path, f": {text}")
    want = _want(node) if node is not None else _words(text)
    got = _got(value, text)
    tail = f" must be {want}" + (f"; got {got}" if got and want.startswith("one of ") else
                                 f", got {got}" if got else "")
    return SchemaError(f"{path or document}{tail}", path, tail)


def _key_error(subject: str, path: str, node: mi.Type | None, container: object,
               key_type: object) -> SchemaError:
    mapping = _unwrap(node, want_struct=False) if node is not None else None
    want = _want(mapping.key_type) if isinstance(mapping, mi.DictType) else "a string"
    bad = _MISSING
    if isinstance(container, dict):
        bad = next((k for k in container if not _fits(k, key_type)), _MISSING)
    key = f" {_show(bad)}" if bad is not _MISSING else ""
    tail = f" has a key{key} that is not {want}"
    return SchemaError(f"{subject}{tail}", path, tail)


# -- paths -------------------------------------------------------------------------------

_MISSING: Any = object()


def _quoted(text: str) -> str:
    """The name msgspec quotes in ``text``: from the first backtick to the last (a name may hold one)."""
    return text[text.find("`") + 1 : text.rfind("`")]


def _join(where: str, steps: list[_Step]) -> str:
    out = where
    for s in steps:
        if isinstance(s, _Key):
            k = s.key
            out = f"{out}.{k}" if isinstance(k, str) and _IDENT.match(k) and out else \
                k if isinstance(k, str) and _IDENT.match(k) else f"{out}[{k!r}]"
        else:
            # "..." is a dict key msgspec did not name and we could not find again
            out = f"{out}[{s}]" if isinstance(s, int) or s == "..." else f"{out}.{s}" if out else s
    return out


def _resolve(kind: object, raw: object, steps: list[str | int]) -> list[_Step]:
    """``steps`` with each ``"..."`` (some dict key) replaced by the key whose value fails."""
    out: list[_Step] = []
    for s in steps:
        container = _value_at(raw, out)
        if s == "..." and isinstance(container, dict):
            value_type = _py_at(kind, [*out, "..."])
            bad = next((k for k, v in container.items() if not _fits(v, value_type)), _MISSING)
            out.append(_Key(bad) if bad is not _MISSING else s)
        else:
            out.append(s)
    return out


def _fits(value: object, kind: object) -> bool:
    if kind is None:
        return True
    try:
        msgspec.convert(value, kind, strict=True)
    except msgspec.ValidationError:
        return False
    return True


def _value_at(raw: object, steps: list[_Step]) -> object:
    for s in steps:
        key: object = s.key if isinstance(s, _Key) else s
        indexed = isinstance(s, int) and isinstance(raw, list | tuple) and s < len(raw)
        keyed = not isinstance(s, int) and isinstance(raw, dict) and key in raw
        if not (indexed or keyed):
            return _MISSING
        raw = raw[key]  # type: ignore[index]
    return raw


def _py_at(kind: object, steps: list[_Step]) -> object:
    """The Python type at a path (``"..."`` or a key: a dict's values), or None."""
    for s in steps:
        kind = _py_pick(kind, s)
        if kind is None:
            return None
    return kind


def _py_pick(kind: object, step: _Step) -> object:
    while typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        picks = [p for p in (_py_pick(a, step) for a in args if a is not type(None)) if p is not None]
        return picks[0] if picks else None
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct) and isinstance(step, str):
        hints = typing.get_type_hints(kind, include_extras=True)
        match = [f.name for f in msgspec.structs.fields(kind) if f.encode_name == step]
        return hints[match[0]] if match else None
    if origin is dict and not isinstance(step, int) and len(args) == 2:
        return args[1]
    if origin in (list, tuple, set, frozenset) and isinstance(step, int) and args:
        return args[0]
    return None


def _py_key(kind: object) -> object:
    """The Python type of a mapping's keys (a Struct's are strings), or None."""
    while typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return next((k for k in map(_py_key, typing.get_args(kind)) if k is not None), None)
    if typing.get_origin(kind) is dict:
        return typing.get_args(kind)[0]
    return str if isinstance(kind, type) and issubclass(kind, msgspec.Struct) else None


def _type_at(node: mi.Type, steps: list[_Step]) -> mi.Type | None:
    for s in steps:
        node = _unwrap(node, want_struct=isinstance(s, str) and s != "...")
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


def _bare(node: mi.Type | None) -> mi.Type | None:
    while isinstance(node, mi.Metadata):
        node = node.type
    return node


def _unwrap(node: mi.Type, want_struct: bool = True) -> mi.Type:
    node = _bare(node)  # type: ignore[assignment]
    if isinstance(node, mi.UnionType):
        types = [_bare(t) for t in node.types]
        for t in types:
            if isinstance(t, mi.StructType | mi.DictType) == want_struct and not isinstance(t, mi.NoneType):
                return t  # type: ignore[return-value]
        return next(t for t in types if not isinstance(t, mi.NoneType))  # type: ignore[return-value]
    return node


def _accepted(node: mi.Type | None) -> str:
    node = _unwrap(node) if node is not None else None
    if isinstance(node, mi.StructType):
        return ", ".join(f.encode_name for f in node.fields)
    return ""


# -- words -------------------------------------------------------------------------------

def _want(node: mi.Type | None) -> str:
    """What a declared type accepts, in words."""
    if isinstance(node, mi.Metadata):
        described = (node.extra_json_schema or {}).get("description")
        return str(described) if described else _want(node.type)
    if isinstance(node, mi.UnionType):
        return _either([_want(t) for t in node.types if not isinstance(_bare(t), mi.NoneType)])
    if isinstance(node, mi.LiteralType):
        return "one of " + ", ".join(repr(v) for v in node.values)
    if isinstance(node, mi.EnumType):
        return "one of " + ", ".join(repr(m.value) for m in node.cls)
    if isinstance(node, mi.IntType | mi.FloatType):
        return ("an integer" if isinstance(node, mi.IntType) else "a number") + _range(node)
    if isinstance(node, mi.StrType):
        return _sized("string", "character", node.min_length, node.max_length) + (
            f" matching {node.pattern!r}" if node.pattern else "")
    if isinstance(node, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType):
        return _sized("list", "item", node.min_length, node.max_length)
    if isinstance(node, mi.DictType | mi.StructType):
        return "a map"
    if isinstance(node, mi.BoolType):
        return "true or false"
    return "null" if isinstance(node, mi.NoneType) else "a value of another type"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(v)


def _range(node: mi.IntType | mi.FloatType) -> str:
    if node.ge is not None and node.le is not None:
        return f" between {_num(node.ge)} and {_num(node.le)}"
    bounds = [(node.ge, ">="), (node.gt, ">"), (node.le, "<="), (node.lt, "<")]
    parts = [f"{op} {_num(v)}" for v, op in bounds if v is not None]
    return (" " + " and ".join(parts)) if parts else ""


def _sized(noun: str, unit: str, lo: int | None, hi: int | None) -> str:
    def n(k: int) -> str:
        return f"{k} {unit}" + ("" if k == 1 else "s")
    if lo == 1 and noun == "string":
        return f"a non-empty string of at most {n(hi)}" if hi is not None else "a non-empty string"
    if lo and hi is not None:
        return f"a {noun} of {lo} to {n(hi)}"
    if lo:
        return f"a {noun} of at least {n(lo)}"
    return f"a {noun} of at most {n(hi)}" if hi is not None else f"a {noun}"


def _words(text: str) -> str:
    """What msgspec's own message says is expected (when the type at the path is unknown)."""
    e = _EXPECTED.match(text)
    if not e:
        return "a value of another type"
    named = _either([_NAMES.get(k.strip(), k.strip()) for k in e.group("want").split("|")
                     if k.strip() != "null"])
    return f"{named} {e.group('rest').strip()}".strip()


def _either(parts: list[str]) -> str:
    """``parts`` joined by "or", an integer dropped where a number of the same range is there."""
    kept = [p for p in parts if not (p.startswith("an integer")
                                     and f"a number{p.removeprefix('an integer')}" in parts)]
    return " or ".join(dict.fromkeys(kept)) or "null"


def _got(value: object, text: str) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)} item" + ("" if len(value) == 1 else "s")
    if value is not _MISSING and not isinstance(value, dict):
        return _show(value)
    e = _EXPECTED.match(text)
    return _NAMES.get(e.group("got"), "something else") if e and e.group("got") else ""


def _show(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return "true" if value is True else "false" if value is False else "null"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, int) and abs(value) >= 10 ** 24:
        return f"an integer of {len(str(abs(value)))} digits"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "bytes"
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _loose(decode: Callable[[bytes], object], data: bytes) -> object:
    """The document without its schema, to show the value at a path (none if it does not decode)."""
    try:
        return decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return _MISSING
