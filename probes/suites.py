"""Probe suites: prompts with known answers, grouped by skill, written as TOML data.

A suite file holds ``name``, ``skill``, optional ``description`` and ``answer``
(the default extraction spec of its probes), optional ``[[templates]]`` and
``[[probes]]``; ``probes/README.md`` documents the format. :func:`load_suites`
loads the suites shipped in ``probes/suites/`` plus a user directory's;
:func:`render` turns a probe and a template into chat messages, and
:func:`apply_template` renders any request's messages with a template;
:func:`template_catalog` lists each skill's templates (what recipes pick from).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

from alchemist.adapters.base import Message
from alchemist.answers.extract import AnswerSpec
from alchemist.probes.checker_spec import build_checker
from alchemist.probes.checkers import Checker

_SUITE_KEYS: Final = frozenset({"name", "skill", "description", "answer", "templates", "probes"})
_TEMPLATE_KEYS: Final = frozenset({"name", "system", "suffix"})
_PROBE_KEYS: Final = frozenset({"id", "prompt", "check", "answer", "skill"})
_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-.")
_Fail = Callable[[str], "SuiteError"]


class SuiteError(ValueError):
    """A suite file that can't be loaded; the message names the file and the probe."""


@dataclass(frozen=True, slots=True)
class Template:
    """A prompt variant: an optional system prompt and an instruction appended to the prompt."""

    name: str
    system: str | None = None
    suffix: str = ""


@dataclass(frozen=True, slots=True)
class Probe:
    """One prompt with a known answer, and the checker that knows it."""

    id: str
    suite: str
    skill: str
    prompt: str
    checker: Checker
    answer: AnswerSpec | None = None

    @property
    def key(self) -> str:
        """``suite/id``: unique across loaded suites."""
        return f"{self.suite}/{self.id}"


@dataclass(frozen=True, slots=True)
class Suite:
    """A named group of probes of one skill, with the templates to try on them."""

    name: str
    skill: str
    probes: tuple[Probe, ...]
    templates: tuple[Template, ...] = ()
    description: str = ""
    path: str | None = None

    def template(self, name: str) -> Template:
        """The template called ``name``; raises ``KeyError`` naming the known ones."""
        for template in self.templates:
            if template.name == name:
                return template
        known = ", ".join(t.name for t in self.templates) or "none"
        raise KeyError(f"Suite {self.name!r} has no template {name!r} (it has: {known}).")


def apply_template(messages: Sequence[Message], template: Template | None) -> tuple[Message, ...]:
    """``messages`` rendered with ``template``: its system prompt (if any) inserted first,
    before the request's own messages (a system message among them is kept), and its
    suffix appended after a blank line to the last user message (or sent as a new user
    message when there is none). ``None`` leaves the messages as they are."""
    out = list(messages)
    if template is None:
        return tuple(out)
    suffix = template.suffix.strip()
    if suffix:
        last = next((i for i in range(len(out) - 1, -1, -1) if out[i].role == "user"), None)
        if last is None:
            out.append(Message("user", suffix))
        else:
            out[last] = Message("user", f"{out[last].content.rstrip()}\n\n{suffix}")
    if template.system:
        out.insert(0, Message("system", template.system))
    return tuple(out)


def render(probe: Probe, template: Template | None = None) -> list[Message]:
    """The chat messages for ``probe``: the template's system prompt (if any), then the
    prompt with the template's suffix appended after a blank line."""
    return list(apply_template([Message("user", probe.prompt)], template))


def template_catalog(suites: Sequence[Suite]) -> dict[str, tuple[Template, ...]]:
    """The templates of every skill: those of the skill's suites, in suite then template
    order, each name once. Skills without templates are left out.

    One name must mean one template within a skill: the same name with another
    ``system`` or ``suffix`` in two suites of a skill raises :class:`SuiteError`. A
    template with neither is the same as none (the prompt as written) and is left out.
    """
    found: dict[str, dict[str, tuple[Template, Suite]]] = {}
    for suite in suites:
        for template in suite.templates:
            if not template.system and not template.suffix.strip():
                continue
            seen = found.setdefault(suite.skill, {})
            first = seen.get(template.name)
            if first is None:
                seen[template.name] = (template, suite)
            elif first[0] != template:
                raise SuiteError(
                    f"{_label(first[1])} and {_label(suite)} both define template "
                    f"{template.name!r} for skill {suite.skill!r}, with different 'system' or "
                    "'suffix'; a template name must mean one template within a skill (rename one).")
    return {skill: tuple(t for t, _ in seen.values()) for skill, seen in found.items()}


def _label(suite: Suite) -> str:
    return f"suite {suite.name!r} ({suite.path})" if suite.path else f"suite {suite.name!r}"


# --------------------------------------------------------------------------- loading


def load_suite(path: str | Path) -> Suite:
    """Load and validate one suite file; raises :class:`SuiteError` naming file and probe."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read the suite file: {exc.strerror or exc}.") from exc
    except UnicodeDecodeError as exc:
        raise SuiteError(f"{path}: the suite file is not UTF-8 text: {exc}.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{path}: the suite file is not valid TOML: {exc}.") from exc
    return parse_suite(data, source=str(path))


def parse_suite(data: Mapping[str, object], *, source: str = "<suite>") -> Suite:
    """Validate a suite already parsed from TOML (``source`` names it in errors)."""

    def fail(message: str) -> SuiteError:
        return SuiteError(f"{source}: {message}")

    unknown = sorted(str(k) for k in data if k not in _SUITE_KEYS)
    if unknown:
        raise fail(f"unknown top-level key(s) {', '.join(map(repr, unknown))}; "
                   f"a suite accepts {', '.join(map(repr, sorted(_SUITE_KEYS)))}.")
    name = _name(data.get("name"), "The suite 'name'", fail)
    skill = _name(data.get("skill"), "The suite 'skill'", fail)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("The suite 'description' must be a string.")
    default_answer = _answer(data.get("answer"), "The suite 'answer'", fail)
    templates = _templates(data.get("templates", []), fail)
    raw_probes = data.get("probes")
    if not isinstance(raw_probes, list) or not raw_probes:
        raise fail("The suite needs at least one [[probes]] entry.")
    probes: list[Probe] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_probes, 1):
        probe = _probe(raw, index, name, skill, default_answer, fail)
        if probe.id in seen:
            raise fail(f"probe {probe.id!r}: the id is used twice; probe ids must be unique in a suite.")
        seen.add(probe.id)
        probes.append(probe)
    return Suite(name, skill, tuple(probes), templates, description,
                 None if source.startswith("<") else source)


def _name(value: object, what: str, fail: _Fail) -> str:
    if not isinstance(value, str) or not value or not set(value) <= _NAME_CHARS or value == "*":
        raise fail(f"{what} must be a non-empty string of lowercase letters, digits, '_', '-' or '.', "
                   f"not {value!r}.")
    return value


def _answer(value: object, what: str, fail: _Fail) -> AnswerSpec | None:
    if value is None:
        return None
    try:
        return AnswerSpec.parse(value)
    except ValueError as exc:
        raise fail(f"{what} is not a valid extraction spec: {exc}") from exc


def _templates(value: object, fail: _Fail) -> tuple[Template, ...]:
    if not isinstance(value, list):
        raise fail("'templates' must be an array of tables ([[templates]]).")
    out: list[Template] = []
    for index, raw in enumerate(value, 1):
        if not isinstance(raw, Mapping):
            raise fail(f"template #{index} must be a table with 'name', 'system' and 'suffix'.")
        unknown = sorted(str(k) for k in raw if k not in _TEMPLATE_KEYS)
        if unknown:
            raise fail(f"template #{index} has unknown key(s) {', '.join(map(repr, unknown))}; "
                       "a template accepts 'name', 'system' and 'suffix'.")
        name = _name(raw.get("name"), f"Template #{index}'s 'name'", fail)
        system, suffix = raw.get("system"), raw.get("suffix", "")
        if system is not None and (not isinstance(system, str) or not system.strip()):
            raise fail(f"template {name!r}: 'system' must be a non-empty string when given.")
        if not isinstance(suffix, str):
            raise fail(f"template {name!r}: 'suffix' must be a string.")
        if any(t.name == name for t in out):
            raise fail(f"template {name!r} is defined twice; template names must be unique.")
        out.append(Template(name, system, suffix))
    return tuple(out)


def _probe(raw: object, index: int, suite: str, skill: str, default_answer: AnswerSpec | None,
           fail: _Fail) -> Probe:
    if not isinstance(raw, Mapping):
        raise fail(f"probe #{index} must be a table with 'id', 'prompt' and 'check'.")
    pid = raw.get("id")
    label = f"probe {pid!r}" if isinstance(pid, str) and pid else f"probe #{index}"
    unknown = sorted(str(k) for k in raw if k not in _PROBE_KEYS)
    if unknown:
        raise fail(f"{label} has unknown key(s) {', '.join(map(repr, unknown))}; "
                   f"a probe accepts {', '.join(map(repr, sorted(_PROBE_KEYS)))}.")
    pid = _name(pid, f"The 'id' of {label}", fail)
    prompt = raw.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise fail(f"{label}: 'prompt' must be a non-empty string.")
    probe_skill = _name(raw.get("skill", skill), f"The 'skill' of {label}", fail)
    answer = _answer(raw.get("answer"), f"The 'answer' of {label}", fail) or default_answer
    check = raw.get("check")
    if not isinstance(check, Mapping):
        raise fail(f"{label} needs a 'check' table (like check = {{kind = \"number\", expected = 42}}).")
    try:
        checker = build_checker(check, answer=answer)
    except ValueError as exc:
        raise fail(f"{label}: {exc}") from exc
    return Probe(pid, suite, probe_skill, prompt, checker, answer)


# --------------------------------------------------------------------------- directories


def shipped_suite_files() -> list[Path]:
    """The suite files that ship with the package, in name order."""
    root = resources.files("probes") / "suites"
    return sorted((Path(str(entry)) for entry in root.iterdir()
                   if entry.name.endswith(".toml") and entry.is_file()), key=lambda p: p.name)


def load_suites(dir: str | Path | None = None, *, shipped: bool = True) -> list[Suite]:
    """The shipped suites, then those in ``dir`` (``*.toml``, not recursive).

    A suite in ``dir`` with the name of a shipped one replaces it in place; new
    names are appended in file-name order. ``shipped=False`` loads ``dir`` alone.
    Two files in ``dir`` defining one suite name is an error.
    """
    suites: list[Suite] = [load_suite(p) for p in shipped_suite_files()] if shipped else []
    if dir is None:
        return suites
    directory = Path(dir)
    if not directory.is_dir():
        raise SuiteError(f"{directory}: the probe suites directory does not exist or is not a directory.")
    index = {s.name: i for i, s in enumerate(suites)}
    own: dict[str, str] = {}
    for path in sorted(directory.glob("*.toml")):
        suite = load_suite(path)
        if suite.name in own:
            raise SuiteError(f"{path}: suite {suite.name!r} is already defined in {own[suite.name]}; "
                             "suite names must be unique in a directory.")
        own[suite.name] = str(path)
        if suite.name in index:
            suites[index[suite.name]] = suite
        else:
            index[suite.name] = len(suites)
            suites.append(suite)
    return suites


def all_probes(suites: Sequence[Suite]) -> list[Probe]:
    """Every probe of ``suites``, in order."""
    return [probe for suite in suites for probe in suite.probes]
