"""Answer extraction: a case table per kind, spec parsing, and never-raises properties."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alchemist.answers.extract import ANSWER_KINDS, AnswerSpec, canonical_number, extract

TEXT = AnswerSpec("text")
CHOICE = AnswerSpec("choice")
NUMBER = AnswerSpec("number")
JSON_ANSWER = AnswerSpec("json", "answer")

FENCED = '```json\n{\n  "reasoning": "3 * 6 = 18, so $18.",\n  "answer": "$18.00"\n}\n```'

CASES: list[tuple[AnswerSpec, str, str | None]] = [
    # text
    (TEXT, "  Paris.  ", "paris"),
    (TEXT, '"Hello,   World!"', "hello, world"),
    (TEXT, "PARIS\n", "paris"),
    (TEXT, "'''", None),
    (TEXT, "", None),
    # choice: explicit statements first, then bold, lone lines, a lone (X)
    (CHOICE, "The answer is (C)", "C"),
    (CHOICE, "Answer: C", "C"),
    (CHOICE, "**C**", "C"),
    (CHOICE, "(C)", "C"),
    (CHOICE, "C.", "C"),
    (CHOICE, '{"answer": "C"}', "C"),
    (CHOICE, '```json\n{"answer": "B) a dog"}\n```', "B"),
    (CHOICE, '{"answer": "d"}', "D"),
    (CHOICE, "A is tempting, but the answer is (B).", "B"),
    (CHOICE, "Options (A) and (B) are wrong.\nThe correct option is D", "D"),
    (CHOICE, "Looking at it again, I pick (J)", "J"),
    (CHOICE, "(A) cat (B) dog", None),  # a list of options, not an answer
    (CHOICE, "I think the answer is that nobody knows.", None),
    (CHOICE, "Answer: K", None),
    (CHOICE, "no letters here", None),
    # number: JSON answer, statements, last number; canonical forms
    (NUMBER, FENCED, "18"),
    (NUMBER, 'Sure. {"reasoning": "x", "answer": 0.5} Hope it helps', "0.5"),
    (NUMBER, '{"answer": -3}', "-3"),
    (NUMBER, '{"answer": "1,000,000 dollars"}', "1000000"),
    (NUMBER, '{"answer": "3/4"}', "0.75"),
    (NUMBER, '{"answer": "18.0"}', "18"),
    (NUMBER, '{"answer": "45%"}', "45"),
    (NUMBER, '{"answer": "Cannot be determined"}', None),  # a stated non-number stays so
    (NUMBER, "5 + 13 = 18\n#### 18", "18"),
    (NUMBER, "We get 12 apples, so the answer is 7 pears.", "7"),
    (NUMBER, "Answer: $1,234.50", "1234.5"),
    (NUMBER, "So \\boxed{42} it is; 43 was a typo.", "42"),
    (NUMBER, "First 3 then 4 then 5", "5"),
    (NUMBER, "Range 5-3 is two", "3"),
    (NUMBER, "no digits at all", None),
    (NUMBER, '{"reasoning": "a \\( x \\) b", "answer": "12"}', "12"),  # bad JSON escape
    # json: fences, prose around, lenient fallbacks, value kinds
    (JSON_ANSWER, FENCED, "$18.00"),
    (JSON_ANSWER, 'Here: {"answer": "  Hello World "} trailing', "Hello World"),
    (JSON_ANSWER, '{"answer": 2.50}', "2.5"),
    (JSON_ANSWER, '{"answer": true}', "true"),
    (JSON_ANSWER, '{"answer": null}', "null"),
    (JSON_ANSWER, '{"answer": {"b": 1, "a": [1, 2]}}', '{"a": [1, 2], "b": 1}'),
    (JSON_ANSWER, '{"answer": ""}', ""),
    (JSON_ANSWER, "{'answer': 'single quoted'}", "single quoted"),
    (JSON_ANSWER, '{"reasoning": "f({"l": 1}) is odd", "answer": "{\'l\': 1}"}', "{'l': 1}"),
    (JSON_ANSWER, '{"reasoning": "line one\nline two", "answer": "x"}', "x"),
    (JSON_ANSWER, '{"answer": "\'bcksrutq\'"}', "bcksrutq"),  # a quoted string literal
    (JSON_ANSWER, '{"answer": "\\"!?\\""}', "!?"),
    (JSON_ANSWER, '{"answer": "\'a\', \'b\'"}', "'a', 'b'"),  # two strings, kept whole
    (JSON_ANSWER, '{"other": 1}', None),
    (JSON_ANSWER, "not json at all", None),
    (JSON_ANSWER, '{"answer": "unterminated', None),
    (AnswerSpec("json", "result.value"), '{"result": {"value": 7.0}}', "7"),
    (AnswerSpec("json", "items.1"), '{"items": ["a", "b"]}', "b"),
    (AnswerSpec("json", "result.value"), '{"result": 3}', None),
    # regex
    (AnswerSpec("regex", pattern=r"Result:\s*(\w+)"), "Result: PASS. ok", "pass"),
    (AnswerSpec("regex", pattern=r"\d+"), "abc 123 def 456", "123"),
    (AnswerSpec("regex", pattern=r"(x)?y"), "y", None),  # group did not take part
    (AnswerSpec("regex", pattern=r"zzz"), "abc", None),
]


@pytest.mark.parametrize(("spec", "text", "expected"), CASES)
def test_extract_case_table(spec: AnswerSpec, text: str, expected: str | None) -> None:
    assert extract(text, spec) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("18", "18"), ("18.0", "18"), ("-0.0", "0"), ("1/3", "0.333333333333"), ("3 / 0", "3"),
     ("1e5", "1"), ("x2", None), ("$ 7", "7"), ("\u22125", "-5"), ("9" * 80, None)],
)
def test_canonical_number(text: str, expected: str | None) -> None:
    assert canonical_number(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("number", AnswerSpec("number")),
        ("json:answer", AnswerSpec("json", "answer")),
        ("json:a.b", AnswerSpec("json", "a.b")),
        ("regex:Result: (\\w+)", AnswerSpec("regex", pattern="Result: (\\w+)")),
        ({"kind": "json", "field": "answer"}, AnswerSpec("json", "answer")),
        ({"kind": "choice", "field": None}, AnswerSpec("choice")),
        ({}, AnswerSpec("text")),
        (AnswerSpec("choice"), AnswerSpec("choice")),
    ],
)
def test_spec_parse(value: object, expected: AnswerSpec) -> None:
    assert AnswerSpec.parse(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("json", "needs a field"),
        ("json:", "needs a field"),
        ({"kind": "json", "field": "a..b"}, "needs a field"),
        ("regex:", "needs a non-empty pattern"),
        ("regex:(unclosed", "does not compile"),
        ("number:answer", "takes no ':' argument"),
        ("poem", "must be one of text, choice, number, json, regex"),
        ({"kind": "json", "field": "answer", "path": "x"}, "unknown key(s) 'path'"),
        ({"kind": 3}, "must be one of"),
        ({"kind": "json", "field": 3}, "field must be a string"),
        ({"kind": "text", "pattern": "x"}, "Only the regex answer kind takes a pattern"),
        ({"kind": "number", "field": "answer"}, "Only the json answer kind takes a field"),
        (42, "not a int"),
    ],
)
def test_spec_parse_refuses(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        AnswerSpec.parse(value)
    assert str(info.value).endswith(".")  # full sentences


def test_spec_round_trips_through_dict() -> None:
    for spec in (AnswerSpec(), AnswerSpec("json", "a.b"), AnswerSpec("regex", pattern="x(y)")):
        assert AnswerSpec.parse(spec.to_dict()) == spec
    assert AnswerSpec("json", "answer").to_dict() == {"kind": "json", "field": "answer"}


ALL_SPECS = [AnswerSpec.parse(kind) for kind in ANSWER_KINDS if kind not in ("json", "regex")] + [
    JSON_ANSWER,
    AnswerSpec("json", "a.b.0"),
    AnswerSpec("regex", pattern=r"answer:\s*(\S+)"),
]
_JSONISH = st.text(alphabet='{}[]"\':,.\\ \n0123456789-/$%abcnrtuAnswer#*()eE', max_size=300)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s.kind)
@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=400), _JSONISH))
def test_extract_never_raises(spec: AnswerSpec, text: str) -> None:
    result = extract(text, spec)
    assert result is None or isinstance(result, str)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s.kind)
def test_extract_survives_hostile_input(spec: AnswerSpec) -> None:
    hostile = [
        "{" * 5000,
        "{" * 100 + "}" * 100,
        '{"answer": ' + "[" * 3000 + "]" * 3000 + "}",
        '{"answer": ' + "9" * 6000 + "}",
        "{'answer': " + "(" * 500 + ")" * 500 + "}",
        "{'answer': '\x00'}",
        '{"answer": NaN}',
        "1" * 100_000,
        "1," * 50_000,
    ]
    for text in hostile:
        result = extract(text, spec)
        assert result is None or isinstance(result, str)
