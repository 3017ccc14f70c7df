"""Probe suites: the shipped suites load, every expected answer is verified by computing
it (arithmetic in Python, code by running it), rendering, directories, and clear errors."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from alchemist.adapters.base import Message
from alchemist.probes.checkers import (
    ChoiceChecker,
    JsonChecker,
    NumberChecker,
    PythonLiteralChecker,
)
from alchemist.probes.suites import (
    Probe,
    Suite,
    SuiteError,
    Template,
    apply_template,
    load_suite,
    load_suites,
    render,
    shipped_suite_files,
    template_catalog,
)

SUITES = {s.name: s for s in load_suites()}


def probes_of(name: str) -> dict[str, Probe]:
    return {p.id: p for p in SUITES[name].probes}


def test_shipped_suites_load_with_enough_probes() -> None:
    assert [p.name for p in shipped_suite_files()] == [
        "arithmetic.toml", "code_output.toml", "instructions.toml", "json_format.toml", "knowledge.toml"]
    minimum = {"arithmetic": 12, "knowledge": 12, "code_output": 12, "json_format": 8, "instructions": 8}
    skills = {"arithmetic": "math", "knowledge": "knowledge", "code_output": "code",
              "json_format": "format", "instructions": "instructions"}
    assert set(SUITES) == set(minimum)
    for name, suite in SUITES.items():
        assert len(suite.probes) >= minimum[name], name
        assert suite.skill == skills[name]
        assert all(p.suite == name and p.skill == suite.skill for p in suite.probes)
        assert suite.templates, name
    keys = [p.key for s in SUITES.values() for p in s.probes]
    assert len(keys) == len(set(keys))


# ------------------------------------------------------------------ arithmetic: recomputed


def _father_age() -> int:
    return next(4 * son for son in range(1, 100) if 4 * son + 20 == 2 * (son + 20))


ARITHMETIC: dict[str, Fraction | int] = {
    "apples": 3 * 6 - 4,
    "train-distance": 80 * Fraction("2.5"),
    "pencils-cost": 12 * Fraction("0.35"),
    "average-temperature": Fraction(12 + 15 + 9 + 20, 4),
    "discount": 80 * (1 - Fraction(25, 100)),
    "workers": Fraction(6 * 10, 15),
    "library-books": 1250 - 347 + 129,
    "pizza-left": 1 - Fraction(3, 8) - Fraction(1, 4),
    "egg-cartons": 156 // 12,
    "weekly-savings": Fraction(255, 15),
    "rectangle-perimeter": 2 * (14 + 9),
    "father-age": _father_age(),
    "simple-interest": 2000 * Fraction(5, 100) * 3,
    "laps": Fraction(10 * 1000, 400),
    "class-girls": 28 - 28 * Fraction(3, 7),
    "cyclist-speed": Fraction(45) / Fraction(3, 2),
}


def test_arithmetic_answers_are_computed() -> None:
    probes = probes_of("arithmetic")
    assert set(probes) == set(ARITHMETIC)
    for pid, value in ARITHMETIC.items():
        checker = probes[pid].checker
        assert isinstance(checker, NumberChecker)
        assert checker.expected == value, pid
        assert checker.tolerance == 0
        assert 156 % 12 == 0 and 255 % 15 == 0  # the word problems have whole answers
        # the answer passes in every template's shape
        key = checker.expected_key
        for text in (key, f"Step 1 ... so {key}.\nAnswer: {key}", f'{{"answer": {key}}}'):
            assert checker.check(text).passed, (pid, text)
        assert not checker.check(str(value + 1)).passed


# ------------------------------------------------------------------ knowledge: letters label the right option

KNOWLEDGE: dict[str, str] = {
    "gold-symbol": "Au",
    "largest-planet": "Jupiter",
    "water-boils": "100",
    "pride-and-prejudice": "Jane Austen",
    "australia-capital": "Canberra",
    "smallest-prime": str(min(n for n in range(10) if n > 1 and all(n % d for d in range(2, n)))),
    "closest-to-sun": "Mercury",
    "photosynthesis-gas": "Carbon dioxide",
    "general-relativity": "Albert Einstein",
    "atomic-number-one": "Hydrogen",
    "largest-ocean": "Pacific Ocean",
    "brazil-language": "Portuguese",
    "pumps-blood": "Heart",
    "hexagon-sides": "6",
    "light-year": "Distance",
    "ww2-end": "1945",
}


def test_knowledge_letters_label_the_correct_option() -> None:
    probes = probes_of("knowledge")
    assert set(probes) == set(KNOWLEDGE)
    letters: Counter[str] = Counter()
    for pid, answer in KNOWLEDGE.items():
        options = dict(re.findall(r"^([A-J])\) (.+)$", probes[pid].prompt, re.MULTILINE))
        assert len(options) == 4 and len(set(options.values())) == 4, pid
        checker = probes[pid].checker
        assert isinstance(checker, ChoiceChecker)
        assert options[checker.expected] == answer, pid
        assert list(options.values()).count(answer) == 1
        letters[checker.expected] += 1
        assert checker.check(f"Answer: {checker.expected}").passed
    assert len(letters) == 4 and max(letters.values()) <= 6  # no letter bias to exploit


# ------------------------------------------------------------------ code output: every snippet runs


def _snippet(prompt: str) -> str:
    match = re.search(r"```python\n(.*?)```", prompt, re.DOTALL)
    assert match, prompt
    return match.group(1)


def test_code_output_expected_is_what_the_snippet_prints() -> None:
    probes = probes_of("code_output")
    assert len(probes) >= 12
    for pid, probe in probes.items():
        checker = probe.checker
        assert isinstance(checker, PythonLiteralChecker)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(_snippet(probe.prompt), f"<{pid}>", "exec"), {})  # our own snippets
        printed = out.getvalue()
        assert printed.count("\n") == 1, pid  # one line of output
        printed = printed.rstrip("\n")
        assert str(ast.literal_eval(checker.source)) == printed, pid
        assert checker.check(printed).passed, (pid, printed)
        assert checker.check(f"Tracing...\nOutput: {printed}").passed, pid
        assert checker.check(json.dumps({"answer": printed})).passed, pid
        assert not checker.check("None").passed


# ------------------------------------------------------------ JSON format: values computed, references pass

JSON_REFERENCES: dict[str, str] = {
    "person": '{"name": "Alice", "age": 30}',
    "country-capital": '{"country": "Japan", "capital": "Tokyo"}',
    "sum": json.dumps({"a": 17, "b": 25, "sum": 17 + 25}),
    "primes-list": json.dumps({"primes": [n for n in range(2, 20) if all(n % d for d in range(2, n))]}),
    "nested-user": '{"user": {"id": 7, "active": true}}',
    "is-prime": json.dumps({"number": 91, "is_prime": all(91 % d for d in range(2, 91))}),
    "vowel-count": json.dumps({"word": "mississippi", "vowels": sum(c in "aeiou" for c in "mississippi")}),
    "escaped-quote": '{"quote": "She said \\"hi\\" and left."}',
    "order-items": '{"items": [{"name": "pen", "qty": 2}, {"name": "book", "qty": 1}]}',
    "unknown-author": '{"title": "Untitled", "author": null}',
}


def test_json_format_references_pass_and_variants_fail() -> None:
    probes = probes_of("json_format")
    assert set(probes) == set(JSON_REFERENCES)
    for pid, reference in JSON_REFERENCES.items():
        checker = probes[pid].checker
        assert isinstance(checker, JsonChecker) and checker.strict
        assert checker.check(reference).passed, (pid, checker.check(reference).reason)
        assert checker.check(f"\n{reference}\n").passed
        assert not checker.check(f"```json\n{reference}\n```").passed, pid  # strict: no fences
        assert not checker.check(f"Here it is: {reference}").passed, pid
        for key in checker.required:  # every required key is asked for in the prompt
            assert f'"{key.split(".")[-1]}"' in probes[pid].prompt, (pid, key)
    assert not probes["is-prime"].checker.check('{"number": 91, "is_prime": true}').passed
    assert not probes["sum"].checker.check('{"a": 17, "b": 25, "sum": "42"}').passed


# ------------------------------------------------------------ instructions: references verified independently


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z']+", text)


INSTRUCTIONS: dict[str, tuple[str, str, bool]] = {
    # id: (a reply that follows the instruction, one that does not, independent check of the first)
    "three-words": ("Red, orange, yellow.", "Red, orange, yellow and green.",
                    len(_words("Red, orange, yellow.")) == 3),
    "include-turquoise": ("The sea glowed turquoise at dawn.", "The sea was blue.",
                          "turquoise" in "The sea glowed turquoise at dawn.".lower()),
    "all-caps-capital": ("THE CAPITAL OF FRANCE IS PARIS.", "The capital of France is Paris.",
                         "THE CAPITAL OF FRANCE IS PARIS.".isupper()),
    "one-word-opposite": ("Cold.", "It is cold.", len(_words("Cold.")) == 1),
    "no-letter-e": ("A cat naps on a warm rug.", "The cat sleeps.",
                    "e" not in "A cat naps on a warm rug.".lower()),
    "numbered-list": ("1. Mercury\n2. Venus\n3. Mars", "Here are three:\n1. Mercury\n2. Venus\n3. Mars",
                      [ln.split(".")[0] for ln in "1. Mercury\n2. Venus\n3. Mars".splitlines()]
                      == ["1", "2", "3"]),
    "reverse-word": ("ananab", "bananA", "banana"[::-1] == "ananab"),
    "yesterday-exclaim": ("Yesterday it snowed all day!", "It snowed yesterday!",
                          "Yesterday it snowed all day!".startswith("Yesterday")),
    "apple-and-orange": ("An apple and an orange sat in a bowl.", "An apple sat in a bowl.", True),
    "dog-without-bark": ("The dog wagged its tail happily.", "The dog began barking loudly.",
                         "bark" not in "The dog wagged its tail happily."),
    "double-brackets": ("[[5]]", "[[6]]", 2 + 3 == 5),
    "under-ten-words": ("Air scatters blue sunlight more than red.",
                        "Because molecules in the air scatter short blue wavelengths of sunlight much more.",
                        len(_words("Air scatters blue sunlight more than red.")) < 10),
}


def test_instructions_references_pass_and_violations_fail() -> None:
    probes = probes_of("instructions")
    assert set(probes) == set(INSTRUCTIONS)
    for pid, (good, bad, verified) in INSTRUCTIONS.items():
        assert verified, pid
        checker = probes[pid].checker
        assert checker.check(good).passed, (pid, checker.check(good).reason)
        assert not checker.check(bad).passed, pid
    assert len(_words(INSTRUCTIONS["under-ten-words"][1])) >= 10


# ------------------------------------------------------------------ render


def test_render_with_and_without_template() -> None:
    probe = probes_of("arithmetic")["apples"]
    assert render(probe) == [Message("user", probe.prompt)]
    assert render(probe, None) == [Message("user", probe.prompt)]
    plain = SUITES["arithmetic"].template("plain")
    assert render(probe, plain) == [Message("user", probe.prompt + "\n\nAnswer with only the number.")]
    reasoning = SUITES["arithmetic"].template("reasoning")
    messages = render(probe, reasoning)
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[0].content == reasoning.system
    assert messages[1].content.startswith(probe.prompt) and messages[1].content.endswith("<number>'.")
    assert render(probe, Template("bare")) == [Message("user", probe.prompt)]
    with pytest.raises(KeyError, match="has no template 'nope' \\(it has: plain, json, reasoning\\)"):
        SUITES["arithmetic"].template("nope")


def test_apply_template_puts_the_system_prompt_first_and_keeps_the_requests_own() -> None:
    request = (Message("system", "Be brief."), Message("user", "What is 2+3?"))
    out = apply_template(request, Template("t", system="You are a tutor.", suffix="  Number only.\n"))
    assert out == (Message("system", "You are a tutor."), Message("system", "Be brief."),
                   Message("user", "What is 2+3?\n\nNumber only."))
    assert request == (Message("system", "Be brief."), Message("user", "What is 2+3?"))  # untouched


def test_apply_template_suffixes_the_last_user_message_only() -> None:
    request = [Message("user", "first  "), Message("assistant", "ok"), Message("user", "second \n"),
               Message("assistant", "prefill")]
    out = apply_template(request, Template("t", suffix="Answer: <n>"))
    assert out == (Message("user", "first  "), Message("assistant", "ok"),
                   Message("user", "second\n\nAnswer: <n>"), Message("assistant", "prefill"))


def test_apply_template_without_a_user_message_adds_one() -> None:
    out = apply_template([Message("system", "s")], Template("t", system="sys", suffix="Do it."))
    assert out == (Message("system", "sys"), Message("system", "s"), Message("user", "Do it."))
    assert apply_template([Message("system", "s")], Template("t", suffix=" \n")) == (Message("system", "s"),)


def test_apply_template_none_and_empty_leave_messages_as_they_are() -> None:
    request = [Message("system", "s"), Message("user", "u")]
    assert apply_template(request, None) == tuple(request)
    assert isinstance(apply_template(request, None), tuple)
    assert apply_template(request, Template("bare")) == tuple(request)
    assert apply_template([], None) == ()


def suite(name: str, skill: str, *templates: Template, path: str | None = None) -> Suite:
    return Suite(name, skill, (), templates, path=path)


def test_template_catalog_unions_and_deduplicates_per_skill() -> None:
    a, b, c = Template("a", suffix="A."), Template("b", system="B"), Template("c", suffix="C.")
    catalog = template_catalog([suite("one", "math", a, b), suite("two", "code", c),
                                suite("three", "math", b, c), suite("four", "format")])
    assert catalog == {"math": (a, b, c), "code": (c,)}  # "format" has none: absent
    assert template_catalog([]) == {}
    shipped = template_catalog(list(SUITES.values()))
    assert set(shipped) == {s.skill for s in SUITES.values()}
    assert [t.name for t in shipped["math"]] == ["plain", "json", "reasoning"]


def test_template_catalog_refuses_one_name_for_two_templates_of_a_skill() -> None:
    one = suite("one", "math", Template("plain", suffix="Number only."), path="/s/one.toml")
    two = suite("two", "math", Template("plain", suffix="Digits only."))
    with pytest.raises(SuiteError) as err:
        template_catalog([one, two])
    message = str(err.value)
    assert ("suite 'one' (/s/one.toml) and suite 'two' both define template 'plain' "
            "for skill 'math'") in message
    assert "rename one" in message
    # the same name in another skill is another template
    other = suite("two", "code", Template("plain", suffix="Digits only."))
    assert len(template_catalog([one, other])) == 2


# ------------------------------------------------------------------ directories and errors

GOOD = """
name = "mine"
skill = "math"
answer = "number"

[[templates]]
name = "t"
suffix = "Number only."

[[probes]]
id = "one"
prompt = "What is 1 + 1?"
check = { kind = "number", expected = 2 }

[[probes]]
id = "two"
prompt = "Give the result field."
answer = "json:result"
skill = "math-json"
check = { kind = "number", expected = 3 }
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_suite_from_a_file(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, "mine.toml", GOOD))
    assert isinstance(suite, Suite)
    assert (suite.name, suite.skill, [t.name for t in suite.templates]) == ("mine", "math", ["t"])
    one, two = suite.probes
    assert one.answer is not None and one.answer.kind == "number"
    assert two.skill == "math-json" and two.answer is not None and two.answer.field == "result"
    assert two.checker.check('{"result": 3, "answer": 1}').passed


def test_user_dir_overrides_and_extends(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", GOOD)
    write(tmp_path, "b.toml", GOOD.replace('name = "mine"', 'name = "arithmetic"'))
    (tmp_path / "notes.txt").write_text("ignored")
    suites = load_suites(tmp_path)
    names = [s.name for s in suites]
    assert names == [*SUITES, "mine"]
    assert len(suites[names.index("arithmetic")].probes) == 2  # replaced in place
    assert [s.name for s in load_suites(tmp_path, shipped=False)] == ["mine", "arithmetic"]  # file order
    write(tmp_path, "c.toml", GOOD)
    with pytest.raises(SuiteError, match=r"c\.toml: suite 'mine' is already defined in .*a\.toml"):
        load_suites(tmp_path)
    with pytest.raises(SuiteError, match="does not exist"):
        load_suites(tmp_path / "missing")


P = "[[probes]]\nid='a'\nprompt='p'\ncheck={kind='exact', expected='a'}\n"
BAD_SUITES: list[tuple[str, str]] = [
    ("name = 'x'\nskill = ", "is not valid TOML"),
    ("skill = 'math'\n" + P,
     "bad.toml: name is required"),
    ("name = 'x'\nskill = 'Math Skills'\n" + P,
     "bad.toml: skill must be a non-empty string of lowercase letters, digits, '_', '-' or '.', "
     "not 'Math Skills'."),
    ("name = 'x'\nskill = 'math'\nversion = 2\n[[probes]]\nid='a'\nprompt='p'\n"
     "check={kind='exact', expected='a'}",
     "bad.toml: unknown field 'version'; accepted fields: name, skill, description,"),
    ("name = 'x'\nskill = 'math'", "needs at least one [[probes]] entry"),
    ("name = 'x'\nskill = 'math'\n[[probes]]\nid='a'\nprompt='p'", "bad.toml: probe 'a': check is required"),
    ("name = 'x'\nskill = 'math'\n[[probes]]\nid='a'\nprompt='p'\ncheck={kind='number', expected='many'}",
     "probe 'a': The number check field 'expected' must be a finite number"),
    ("name = 'x'\nskill = 'math'\n[[probes]]\nid='a'\nprompt='p'\ncheck={kind='choice', expected='Z'}",
     "probe 'a': The choice check field 'expected' must be one letter A-J"),
    ("name = 'x'\nskill = 'math'\n[[probes]]\nid='a'\nprompt=''\ncheck={kind='exact', expected='a'}",
     "probe 'a': prompt must be a non-empty string"),
    ("name = 'x'\nskill = 'math'\n[[probes]]\nprompt='p'\ncheck={kind='exact', expected='a'}",
     "bad.toml: probes[0]: id is required"),
    ("name = 'x'\nskill = 'math'\n[[probes]]\nid='a'\nprompt='p'\nexpected=3\n"
     "check={kind='exact', expected='a'}",
     "probe 'a': unknown field 'expected'; accepted fields: id, prompt, check,"),
    ("name = 'x'\nskill = 'math'\n[[probes]]\nid='a'\nprompt='p'\nanswer='json'\n"
     "check={kind='exact', expected='a'}",
     "probe 'a': answer is not a valid extraction spec: The json answer kind needs a field"),
    ("name = 'x'\nskill = 'math'\n" + P * 2,
     "probe 'a': the id is used twice"),
    ("name = 'x'\nskill = 'math'\n[[templates]]\nname='t'\nprefix='x'\n" + P,
     "unknown field 'prefix' in templates[0]; accepted fields: name, system, suffix"),
    ("name = 'x'\nskill = 'math'\n[[templates]]\nname='t'\n[[templates]]\nname='t'\n" + P,
     "template 't' is defined twice"),
    ("name = 'x'\nskill = 'math'\n[[templates]]\nname='T 1'\n" + P,
     "templates[0]: name must be a non-empty string of lowercase letters"),
    ("name = 'x'\nskill = 'math'\n[[templates]]\nname='t'\nsystem=' '\n" + P,
     "templates[0]: system must be a non-empty string when given."),
    ("name = 'x'\nskill = 'math'\n[[templates]]\nname='t'\nsuffix=3\n" + P,
     "templates[0].suffix must be a string, got 3"),
    ("name = 'x'\nskill = 'math'\ndescription = 3\n" + P, "bad.toml: description must be a string, got 3"),
    ("name = 'x'\nskill = 'math'\nprobes = [3]", "bad.toml: probes[0] must be a map, got 3"),
    ("name = 'x'\nskill = 'math'\nanswer = 'nope'\n" + P,
     "bad.toml: answer is not a valid extraction spec: The answer kind must be one of"),
    ("name = 'x'\nskill = 'math'\n[[probes]]\nid='a'\nprompt='p'\nskill='*'\n"
     "check={kind='exact', expected='a'}", "probe 'a': skill must be a non-empty string"),
    ("name = 'x'\nskill = 'math'\n[[probes]]\nid='a'\nprompt=3\ncheck={kind='exact', expected='a'}",
     "probe 'a': prompt must be a string, got 3"),
    ("name = 'x'\nskill = 'math'\n[[probes]]\nid='a'\nprompt='p'\ncheck=3",
     "probe 'a': check must be a map, got 3"),
    ("name = 'x'\nskill = 'math'\n[[probes]]\nid='a'\nprompt='p'\n"
     "check={kind='number', expected=1, tolerance='1'}",
     "probe 'a': The number check field 'tolerance' must be a number, got '1'."),
]


@pytest.mark.parametrize(("text", "message"), BAD_SUITES)
def test_bad_suite_files_say_which_file_and_probe(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "bad.toml", text)
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert str(err.value).startswith(str(path)), err.value
    assert message in str(err.value), err.value


def test_unreadable_suite_file(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="cannot read the suite file"):
        load_suite(tmp_path / "nope.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe name")
    with pytest.raises(SuiteError, match="not UTF-8 text"):
        load_suite(tmp_path / "bin.toml")

