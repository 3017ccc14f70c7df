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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from alchemist.adapters.base import Message
from alchemist.answers.extract import AnswerSpec
from alchemist.answers.recipes import SUITE_NAME
from alchemist.probes.checker_spec import build_checker
from alchemist.probes.checkers import Checker
from alchemist.schema import SchemaError, convert

T = TypeVar("T")
#: an extraction spec as a suite writes it: ``"number"``, ``"json:answer"``, or a table
Answer = str | dict[str, Any] | None


class SuiteError(ValueError):
    """A suite file that can't be loaded; the message names the file and the probe."""


def check_name(value: str, field: str) -> None:
    """``ValueError`` unless ``value`` names a suite, skill, template or probe."""
    if not SUITE_NAME.match(value) or value == "*":
        raise ValueError(f"{field} must be a non-empty string of lowercase letters, digits, '_', '-' "
                         f"or '.', not {value!r}.")


class Template(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A prompt variant: an optional system prompt and an instruction appended to the prompt.

    Also a ``[[templates]]`` entry of a suite file, as written.
    """

    name: str
    system: str | None = None
    suffix: str = ""

    def __post_init__(self) -> None:
        check_name(self.name, "name")
        if self.system is not None and not self.system.strip():
            raise ValueError("system must be a non-empty string when given.")


@dataclass(frozen=True, slots=True)
class Probe:
    """One prompt with a known answer, and the checker that knows it."""

    id: str
    suite: str
    skill: str
    prompt: str
    checker: Checker
    answer: AnswerSpec | None = None
    #: the whole conversation when the suite gives ``messages`` (``prompt`` is then its last
    #: user message); empty: one user message, ``prompt``
    messages: tuple[Message, ...] = ()

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
    #: a golden set (``golden = true``): the prober asks each probe once per provider and
    #: template, not in its sampled rounds (``probes/README.md``, "Golden sets")
    golden: bool = False

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
    prompt (or the probe's ``messages``) with the template's suffix appended after a
    blank line to the last user message."""
    return list(apply_template(probe.messages or [Message("user", probe.prompt)], template))


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
    """Load and validate one suite file; raises :class:`SuiteError` naming file and probe.

    The document is converted to :class:`SuiteDocument` (``alchemist.schema``):
    an unknown key or a bad value is refused with its path, and each probe's
    errors name it by its id.
    """
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


class SuiteDocument(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A suite file as written (``probes/README.md`` documents it)."""

    name: str
    skill: str
    description: str = ""
    #: the default extraction spec of the suite's probes
    answer: Answer = None
    #: a golden set: each probe asked once per provider and template (see :class:`Suite`)
    golden: bool = False
    templates: tuple[Template, ...] = ()
    #: each read as a :class:`ProbeDocument` on its own, so its errors name the probe by id
    probes: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        check_name(self.name, "name")
        check_name(self.skill, "skill")


class MessageDocument(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One entry of a probe's ``messages``."""

    role: Literal["system", "user", "assistant"]
    content: str


class ProbeDocument(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A ``[[probes]]`` entry as written; ``check`` is read by :func:`build_checker`."""

    id: str
    #: the question, sent as one user message; or else ``messages``, a whole conversation
    prompt: str | None = None
    check: dict[str, Any]
    messages: tuple[MessageDocument, ...] | None = None
    answer: Answer = None
    #: the suite's skill unless given
    skill: str | None = None

    def __post_init__(self) -> None:
        check_name(self.id, "id")
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt (a string) and messages (a list of "
                             "{role, content}).")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("prompt must be a non-empty string.")
        if self.messages is not None and not any(
                m.role == "user" and m.content.strip() for m in self.messages):
            raise ValueError("messages must hold a user message with non-empty content.")
        if self.skill is not None:
            check_name(self.skill, "skill")

    def conversation(self) -> tuple[str, tuple[Message, ...]]:
        """The prompt (the last user message of ``messages``) and the messages (or ``()``)."""
        if self.messages is None:
            return self.prompt or "", ()
        messages = tuple(Message(m.role, m.content) for m in self.messages)
        return next(m.content for m in reversed(messages) if m.role == "user"), messages


def parse_suite(data: Mapping[str, object], *, source: str = "<suite>") -> Suite:
    """Validate a suite already parsed from TOML (``source`` names it in errors)."""
    doc = _convert(dict(data), SuiteDocument, source)
    default_answer = _answer(doc.answer, source)
    names = [t.name for t in doc.templates]
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise SuiteError(f"{source}: template {twice!r} is defined twice; template names must be unique.")
    if not doc.probes:
        raise SuiteError(f"{source}: The suite needs at least one [[probes]] entry.")
    probes: list[Probe] = []
    ids: set[str] = set()  # a set: a golden suite may hold many thousands of probes
    for index, raw in enumerate(doc.probes):
        probe = _probe(raw, index, doc, default_answer, source)
        if probe.id in ids:
            raise SuiteError(f"{source}: probe {probe.id!r}: the id is used twice; probe ids must be "
                             "unique in a suite.")
        ids.add(probe.id)
        probes.append(probe)
    return Suite(doc.name, doc.skill, tuple(probes), doc.templates, doc.description,
                 None if source.startswith("<") else source, doc.golden)


def _probe(raw: dict[str, Any], index: int, suite: SuiteDocument, default_answer: AnswerSpec | None,
           source: str) -> Probe:
    pid = raw.get("id")
    label = f"{source}: probe {pid!r}" if isinstance(pid, str) and pid else f"{source}: probes[{index}]"
    doc = _convert(raw, ProbeDocument, label)
    answer = _answer(doc.answer, label) or default_answer
    try:
        checker = build_checker(doc.check, answer=answer)
    except ValueError as exc:
        raise SuiteError(f"{label}: {exc}") from exc
    prompt, messages = doc.conversation()
    return Probe(doc.id, suite.name, doc.skill or suite.skill, prompt, checker, answer, messages)


def _convert(raw: object, kind: type[T], label: str) -> T:
    try:
        return convert(raw, kind)
    except SchemaError as exc:
        raise SuiteError(f"{label}: {exc}") from None


def _answer(value: Answer, label: str) -> AnswerSpec | None:
    if value is None:
        return None
    try:
        return AnswerSpec.parse(value)
    except ValueError as exc:
        raise SuiteError(f"{label}: answer is not a valid extraction spec: {exc}") from exc


# --------------------------------------------------------------------------- directories


def shipped_suite_files() -> list[Path]:
    """The suite files that ship with the package, in name order."""
    root = resources.files("alchemist.probes") / "suites"
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
