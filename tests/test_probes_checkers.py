"""Answer checkers: a table of right, wrong and malformed answers per kind; spec errors; never raises."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alchemist.answers.extract import AnswerSpec
from alchemist.probes.checker_spec import CHECK_KINDS, SPECS, build_checker
from alchemist.probes.checkers import Checker, CheckResult

NUMBER = {"kind": "number", "expected": 18}
NUMBER_REL = {"kind": "number", "expected": 200, "tolerance": 0.01, "relative": True}
NUMBER_ABS = {"kind": "number", "expected": "1/3", "tolerance": 0.001}
EXACT = {"kind": "exact", "expected": ["Paris", "Paris, France"]}
CHOICE = {"kind": "choice", "expected": "c"}
REGEX = {"kind": "regex", "pattern": r"^\W*\w+\W+\w+\W+\w+\W*$"}
CONTAINS = {"kind": "contains", "required": ["apple", "Orange"], "forbidden": ["banana"]}
JSON = {"kind": "json", "required": ["name", "user.id"], "equals": {"user.id": 7, "ok": True}}
JSON_STRICT = {"kind": "json", "required": ["a"], "equals": {"a": [1, 2]}, "strict": True}
LITERAL = {"kind": "python_literal", "expected": "'abc'"}
LITERAL_LIST = {"kind": "python_literal", "expected": "(1, 'x')"}

# (spec, answer text, passed, extracted)
CASES: list[tuple[Mapping[str, object], str, bool, str | None]] = [
    # number: right in every template's shape, wrong, malformed
    (NUMBER, "18", True, "18"),
    (NUMBER, "3 * 6 = 18, so the answer is $18.00.", True, "18"),
    (NUMBER, '{"answer": 18}', True, "18"),
    (NUMBER, "Working...\nAnswer: 18", True, "18"),
    (NUMBER, "17", False, "17"),
    (NUMBER, "eighteen", False, None),
    (NUMBER, "", False, None),
    (NUMBER_REL, "201.5", True, "201.5"),
    (NUMBER_REL, "202.5", False, "202.5"),
    (NUMBER_ABS, "0.3335", True, "0.3335"),
    (NUMBER_ABS, "1/3", True, "0.333333333333"),
    (NUMBER_ABS, "0.335", False, "0.335"),
    # exact
    (EXACT, "paris", True, "paris"),
    (EXACT, '  "Paris, France."  ', True, "paris, france"),
    (EXACT, '{"answer": "Paris"}', True, "paris"),
    (EXACT, "Lyon", False, "lyon"),
    (EXACT, "   ", False, None),
    # choice
    (CHOICE, "C", True, "C"),
    (CHOICE, "The answer is (C).", True, "C"),
    (CHOICE, '{"answer": "C"}', True, "C"),
    (CHOICE, "Answer: B", False, "B"),
    (CHOICE, "I am not sure.", False, None),
    # regex: against the extracted answer or the text
    (REGEX, "Red, orange, yellow.", True, "Red, orange, yellow."),
    (REGEX, '{"answer": "red orange yellow"}', True, "red orange yellow"),
    (REGEX, "Red, orange, yellow and green.", False, "red, orange, yellow and green"),
    (REGEX, "", False, None),
    # contains
    (CONTAINS, "An APPLE and an orange.", True, "an apple and an orange"),
    (CONTAINS, "An apple.", False, "an apple"),
    (CONTAINS, "An apple, an orange and a banana.", False, "an apple, an orange and a banana"),
    (CONTAINS, "", False, None),
    # json (lenient): prose and fences allowed; dotted keys; bools are not numbers
    (JSON, 'Here you go: {"name": "a", "user": {"id": 7}, "ok": true}', True,
     '{"name":"a","ok":true,"user":{"id":7}}'),
    (JSON, '```json\n{"name": "a", "user": {"id": 7.0}, "ok": true}\n```', True,
     '{"name":"a","ok":true,"user":{"id":7.0}}'),
    (JSON, '{"name": "a", "user": {"id": 8}, "ok": true}', False, '{"name":"a","ok":true,"user":{"id":8}}'),
    (JSON, '{"name": "a", "user": {"id": 7}, "ok": 1}', False, '{"name":"a","ok":1,"user":{"id":7}}'),
    (JSON, '{"name": "a"}', False, '{"name":"a"}'),
    (JSON, '{"name": "a", "user": {"id": 7}, "ok": tru', False, '{"id":7}'),  # only the inner one parses
    (JSON, "no json here", False, None),
    # json (strict): the whole text is the object
    (JSON_STRICT, ' {"a": [1, 2], "b": null}\n', True, '{"a":[1,2],"b":null}'),
    (JSON_STRICT, '```json\n{"a": [1, 2]}\n```', False, None),
    (JSON_STRICT, 'Sure! {"a": [1, 2]}', False, None),
    (JSON_STRICT, '{"a": [2, 1]}', False, '{"a":[2,1]}'),
    (JSON_STRICT, "[1, 2]", False, None),
    # python_literal: 'abc' == "abc"; bare words are strings; statements and fences
    (LITERAL, "'abc'", True, "'abc'"),
    (LITERAL, '"abc"', True, "'abc'"),
    (LITERAL, "abc", True, "'abc'"),
    (LITERAL, "```python\n'abc'\n```", True, "'abc'"),
    (LITERAL, "The code slices the string.\nOutput: `abc`", True, "'abc'"),
    (LITERAL, '{"answer": "abc"}', True, "'abc'"),
    (LITERAL, "'abd'", False, "'abd'"),
    (LITERAL, "ABC", False, "'ABC'"),
    (LITERAL, "", False, None),
    (LITERAL_LIST, "(1, 'x')", True, "(1, 'x')"),
    (LITERAL_LIST, '{"answer": [1, "x"]}', True, "[1, 'x']"),
    (LITERAL_LIST, "[1, 'x']", False, "[1, 'x']"),
    (LITERAL_LIST, "(True, 'x')", False, "(True, 'x')"),
    (LITERAL_LIST, "(1, 'x'", False, "\"(1, 'x'\""),
]


@pytest.mark.parametrize(("spec", "text", "passed", "extracted"), CASES)
def test_checker_table(spec: Mapping[str, object], text: str, passed: bool, extracted: str | None) -> None:
    result = build_checker(spec).check(text)
    assert isinstance(result, CheckResult)
    assert (result.passed, result.extracted) == (passed, extracted), result.reason
    assert result.reason.endswith(".")


def test_table_covers_every_kind_with_right_and_wrong() -> None:
    for kind in CHECK_KINDS:
        outcomes = {passed for spec, _, passed, _ in CASES if spec["kind"] == kind}
        assert outcomes == {True, False}, kind


def test_checkers_implement_the_protocol() -> None:
    for spec, *_ in CASES:
        checker = build_checker(spec)
        assert isinstance(checker, Checker)
        assert checker.kind == spec["kind"]


def test_answer_spec_drives_extraction() -> None:
    json_answer = AnswerSpec.parse("json:result")
    number = build_checker({"kind": "number", "expected": 42}, answer=json_answer)
    assert number.check('{"result": "42 apples", "answer": 7}').passed
    assert not number.check('{"answer": 42}').passed
    choice = build_checker({"kind": "choice", "expected": "B"}, answer=json_answer)
    assert choice.check('{"result": "b"}').passed
    exact = build_checker({"kind": "exact", "expected": "Paris"},
                          answer=AnswerSpec.parse(r"regex:City: (\w+)"))
    assert exact.check("Country: France\nCity: Paris").passed
    assert not exact.check("Paris").passed
    literal = build_checker({"kind": "python_literal", "expected": "[1, 2]"}, answer=json_answer)
    assert literal.check('{"result": "[1, 2]"}').passed


def test_zero_tolerance_still_accepts_canonical_forms() -> None:
    checker = build_checker({"kind": "number", "expected": 0.1})
    assert checker.check("0.10").passed
    assert checker.check("1/10").passed
    assert not checker.check("0.1000001").passed
    big = build_checker({"kind": "number", "expected": 1250})
    assert big.check("1,250").passed


BAD_SPECS: list[tuple[object, str]] = [
    ("number", "must be a table"),
    ({}, "field 'kind' must be one of"),
    ({"kind": "fuzzy"}, "field 'kind' must be one of"),
    ({"kind": "number"}, "field 'expected' must be a finite number"),
    ({"kind": "number", "expected": True}, "field 'expected'"),
    ({"kind": "number", "expected": "lots"}, "field 'expected'"),
    ({"kind": "number", "expected": float("nan")}, "field 'expected'"),
    ({"kind": "number", "expected": 1, "tolerance": -1}, "field 'tolerance'"),
    ({"kind": "number", "expected": 1, "tolerance": "1"}, "field 'tolerance'"),
    ({"kind": "number", "expected": 1, "relative": "yes"}, "field 'relative'"),
    ({"kind": "number", "expected": 1, "pattern": "x"}, "unknown field(s) 'pattern'"),
    ({"kind": "exact", "expected": ""}, "field 'expected'"),
    ({"kind": "exact", "expected": []}, "field 'expected' must be a non-empty string or a non-empty "
                                        "list of non-empty strings, not []."),
    ({"kind": "contains", "required": ["a", ""]}, "not ['a', '']."),
    ({"kind": "exact", "expected": 3}, "field 'expected'"),
    ({"kind": "choice", "expected": "K"}, "one letter A-J"),
    ({"kind": "choice", "expected": "AB"}, "one letter A-J"),
    ({"kind": "regex", "pattern": "("}, "field 'pattern' is invalid"),
    ({"kind": "regex", "pattern": "a{100000}{100000}"}, "field 'pattern' is invalid"),
    ({"kind": "regex"}, "field 'pattern' must be a non-empty string"),
    ({"kind": "contains", "required": ["a", ""]}, "field 'required'"),
    ({"kind": "contains", "required": ["a"], "forbidden": "  "}, "field 'forbidden'"),
    ({"kind": "json"}, "needs 'required' keys or an 'equals' table"),
    ({"kind": "json", "required": ["a..b"]}, "malformed dotted key"),
    ({"kind": "json", "equals": []}, "field 'equals'"),
    ({"kind": "json", "required": ["a"], "strict": 1}, "field 'strict'"),
    ({"kind": "python_literal", "expected": "abc def"}, "not a Python literal"),
    ({"kind": "python_literal", "expected": ["a"]}, "field 'expected' must be a string"),
]


def test_an_unknown_kind_is_told_every_kind_a_check_has() -> None:
    with pytest.raises(ValueError) as err:
        build_checker({"kind": "fuzzy"})
    assert f"must be one of {', '.join(SPECS)}, not 'fuzzy'." in str(err.value)
    assert CHECK_KINDS == tuple(SPECS) == tuple(spec.kind for spec in SPECS.values())


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS)
def test_bad_specs_name_the_field(spec: object, message: str) -> None:
    with pytest.raises(ValueError, match=r"^The ") as err:
        build_checker(spec)  # type: ignore[arg-type]
    assert message in str(err.value)
    assert str(err.value).endswith((".", ")"))


ALL_SPECS: list[Mapping[str, object]] = [
    NUMBER, NUMBER_REL, NUMBER_ABS, EXACT, CHOICE, REGEX, CONTAINS, JSON, JSON_STRICT,
    LITERAL, LITERAL_LIST, {"kind": "regex", "pattern": r"(a+)+$"},
]
WITH_ANSWER: list[tuple[str, object, str]] = [
    ("number", 1, "json:answer.x"), ("exact", "x", "regex:(x+)"),
    ("python_literal", "1", "text"), ("choice", "A", "number"),
]
CHECKERS = [build_checker(s) for s in ALL_SPECS] + [
    build_checker({"kind": k, "expected": e}, answer=AnswerSpec.parse(a)) for k, e, a in WITH_ANSWER
]
ANSWERS = st.one_of(
    st.text(max_size=300),
    st.text(alphabet='{}[]"\':,0123456789.-/\\ eEanswer\n`()ABCabc*#$', max_size=300),
    st.builds(lambda n: "{" * n + "}" * n, st.integers(0, 3000)),
    st.builds(lambda n: "[" * n, st.integers(0, 3000)),
    st.builds(lambda n: "a" * n + "!", st.integers(0, 3000)),
    st.builds(lambda n: "9" * n, st.integers(0, 5000)),
)


@settings(max_examples=200, deadline=None)
@given(ANSWERS)
def test_checkers_never_raise(text: str) -> None:
    for checker in CHECKERS:
        result = checker.check(text)
        assert isinstance(result.passed, bool)
        assert result.extracted is None or isinstance(result.extracted, str)
        assert isinstance(result.reason, str) and result.reason
