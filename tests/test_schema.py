"""``alchemist.schema``: msgspec's errors as sentences that name the field and what it accepts."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import msgspec
import pytest
from msgspec import Meta

from alchemist.schema import SchemaError, convert, decode_json, decode_msgpack, field_names

Unit = Annotated[float, Meta(ge=0.0, le=1.0)]
Name = Annotated[str, Meta(pattern=r"^[a-z]+$", description="a name of lowercase letters")]


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    timeout_s: Annotated[float, Meta(gt=0.0)] = 1.0
    retries: Annotated[int, Meta(ge=0, le=5)] = 0


class Item(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    size: int = 1

    def __post_init__(self) -> None:
        if self.name == self.name.upper() and self.name:
            raise ValueError("the name must not be all capitals")


class Doc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    title: Annotated[str, Meta(min_length=1, max_length=8)] = "t"
    count: Annotated[int, Meta(ge=1)] = 1
    ratio: Unit = 0.5
    mode: Literal["fast", "slow"] = "fast"
    colour: Colour = Colour.RED
    flag: bool = False
    items: Annotated[list[Item], Meta(min_length=1, max_length=3)] = msgspec.field(
        default_factory=lambda: [Item("a")])
    tags: Annotated[tuple[str, ...], Meta(max_length=1)] = ()
    weights: dict[str, dict[str, Unit]] = {}
    named: Annotated[dict[Name, Name], Meta(description="a map {name: name}")] = {}
    limits: Limits = Limits()
    either: str | dict[str, Any] | None = None
    maybe: Annotated[int, Meta(ge=0)] | None = None
    opt: Item | None = None

    def __post_init__(self) -> None:
        if self.mode == "slow" and self.count > 1:
            raise ValueError("a slow doc counts 1")


@pytest.mark.parametrize(("raw", "message", "path"), [
    ({"count": 0}, "count must be an integer >= 1, got 0", "count"),
    ({"count": "2"}, "count must be an integer >= 1, got '2'", "count"),  # no coercion
    ({"count": True}, "count must be an integer >= 1, got true", "count"),
    ({"ratio": 2}, "ratio must be a number between 0 and 1, got 2", "ratio"),
    ({"ratio": 0.25, "limits": {"timeout_s": 0}}, "limits.timeout_s must be a number > 0, got 0",
     "limits.timeout_s"),
    ({"limits": {"retries": 9}}, "limits.retries must be an integer between 0 and 5, got 9",
     "limits.retries"),
    ({"title": ""}, "title must be a non-empty string of at most 8 characters, got ''", "title"),
    ({"title": "x" * 9}, "title must be a non-empty string of at most 8 characters, "
                         "got 'xxxxxxxxx'", "title"),
    ({"mode": "warp"}, "mode must be one of 'fast', 'slow'; got 'warp'", "mode"),
    ({"colour": "green"}, "colour must be one of 'red', 'blue'; got 'green'", "colour"),
    ({"flag": "yes"}, "flag must be true or false, got 'yes'", "flag"),
    ({"items": []}, "items must be a list of 1 to 3 items, got a list of 0 items", "items"),
    ({"items": "abc"}, "items must be a list of 1 to 3 items, got 'abc'", "items"),
    ({"tags": ["a", "b"]}, "tags must be a list of at most 1 item, got a list of 2 items", "tags"),
    ({"items": [{"name": "a"}, {"size": 2}]}, "items[1].name is required", "items[1].name"),
    ({"items": [{"name": "a", "size": "big"}]}, "items[0].size must be an integer, got 'big'",
     "items[0].size"),
    ({"items": [{"name": "a", "colour": 1}]},
     "unknown field 'colour' in items[0]; accepted fields: name, size", "items[0]"),
    ({"items": [{"name": "LOUD"}]}, "items[0]: the name must not be all capitals", "items[0]"),
    ({"mode": "slow", "count": 2}, "a slow doc counts 1", ""),
    ({"colour": "red", "nope": 1}, "unknown field 'nope'; accepted fields: title, count, ratio, "
                                   "mode, colour, flag, items, tags, weights, named, limits, "
                                   "either, maybe, opt", ""),
    ({"weights": {"math": {"a": 0.5}, "code": {"a": 1, "b": 1.5}}},
     "weights.code.b must be a number between 0 and 1, got 1.5", "weights.code.b"),
    ({"weights": {"a b": {"x": -1}}}, "weights['a b'].x must be a number between 0 and 1, "
                                      "got -1", "weights['a b'].x"),
    ({"weights": {"math": []}}, "weights.math must be a map, got a list of 0 items",
     "weights.math"),
    ({"named": {"ok": "FINE"}}, "named.ok must be a name of lowercase letters, got 'FINE'",
     "named.ok"),
    ({"named": "x"}, "named must be a map {name: name}, got 'x'", "named"),
    ({"named": {"ok": "ok", "Bad": "ok"}},
     "named has a key 'Bad' that is not a name of lowercase letters", "named"),
    ({"weights": {3: {}}}, "weights has a key 3 that is not a string", "weights"),
    ({"either": 3}, "either must be a string or a map, got 3", "either"),
    ({"either": {1: 2}}, "either has a key 1 that is not a string", "either"),
    ({"maybe": -1}, "maybe must be an integer >= 0, got -1", "maybe"),
    ({"opt": {"name": "LOUD"}}, "opt: the name must not be all capitals", "opt"),
    ({"opt": 3}, "opt must be a map, got 3", "opt"),
    ({"count": 10 ** 40, "ratio": "x"}, "ratio must be a number between 0 and 1, got 'x'",
     "ratio"),
    ({"limits": {"retries": 10 ** 30}}, "limits.retries must be an integer between 0 and 5, "
                                        "got an integer of 31 digits", "limits.retries"),
    ([1], "the document must be a map, got a list of 1 item", ""),
    (None, "the document must be a map, got null", ""),
])
def test_convert_says_where_and_what(raw: object, message: str, path: str) -> None:
    with pytest.raises(SchemaError) as info:
        convert(raw, Doc)
    assert str(info.value) == message
    assert info.value.path == path
    assert isinstance(info.value, ValueError)


def test_where_and_document_name_the_place() -> None:
    with pytest.raises(SchemaError) as info:
        convert({"count": 0}, Doc, where="docs[2]")
    assert str(info.value) == "docs[2].count must be an integer >= 1, got 0"
    assert info.value.path == "docs[2].count"
    with pytest.raises(SchemaError) as info:
        convert(3, Doc, document="the doc")
    assert str(info.value) == "the doc must be a map, got 3"


def test_about_puts_another_subject_in_front() -> None:
    cases = [({"ratio": 2}, "field 'ratio' must be a number between 0 and 1, got 2"),
             ({"items": [{}]}, "field 'items[0].name' is required"),
             ({"limits": {"x": 1}}, "field 'limits' has an unknown field 'x'; accepted fields: "
                                    "timeout_s, retries"),
             ({"items": [{"name": "LOUD"}]}, "field 'items[0]': the name must not be all "
                                             "capitals"),
             ({"x": 1}, "the doc has an unknown field 'x'; accepted fields: title, count"),
             ([], "the doc must be a map, got a list of 0 items")]
    for raw, sentence in cases:
        with pytest.raises(SchemaError) as info:
            convert(raw, Doc)
        exc = info.value
        assert exc.about(f"field {exc.path!r}" if exc.path else "the doc").startswith(sentence)


def test_decoders_validate_in_one_pass_and_keep_syntax_errors_apart() -> None:
    assert decode_json(b'{"count": 2, "ratio": 1}', Doc).ratio == 1.0
    assert decode_msgpack(msgspec.msgpack.encode({"count": 2}), Doc).count == 2
    with pytest.raises(SchemaError, match=r"^weights\.b\.x must be a number between 0 and 1, "
                                          r"got 7$"):
        decode_json(b'{"weights": {"a": {}, "b": {"x": 7}}}', Doc)
    with pytest.raises(SchemaError, match=r"^the body must be a map, got a list of 2 items$"):
        decode_msgpack(msgspec.msgpack.encode([1, 2]), Doc, document="the body")
    with pytest.raises(SchemaError, match=r"^count must be an integer >= 1$"):
        decode_json(b'{"count": 0, "x": ]', Doc)  # a broken rest: no value to show, still a path
    with pytest.raises(msgspec.DecodeError):
        decode_json(b'{"count": ', Doc)
    with pytest.raises(msgspec.DecodeError):
        decode_msgpack(b"\xc1", Doc)


class Amounts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    amount: int | float = 0
    low: Annotated[int, Meta(ge=0)] | Annotated[float, Meta(ge=0)] = 0
    mixed: Annotated[int, Meta(ge=1)] | Annotated[float, Meta(ge=0)] = 1


@pytest.mark.parametrize(("raw", "message"), [
    ({"amount": "x"}, "amount must be a number, got 'x'"),  # not "an integer or a number"
    ({"low": -1}, "low must be a number >= 0, got -1"),
    ({"mixed": -1}, "mixed must be an integer >= 1 or a number >= 0, got -1"),
    ({"a`b": 1}, "unknown field 'a`b'; accepted fields: amount, low, mixed"),
    ({"`x`": 1}, "unknown field '`x`'; accepted fields: amount, low, mixed"),
])
def test_numbers_read_as_numbers_and_odd_keys_are_named_whole(raw: object, message: str) -> None:
    with pytest.raises(SchemaError) as info:
        convert(raw, Amounts)
    assert str(info.value) == message


def test_field_names_in_declaration_order() -> None:
    assert field_names(Limits) == ("timeout_s", "retries")
