"""Golden sets: an operator's own labelled examples, imported as a probe suite.

A golden file is JSON lines (optionally gzipped), one example a line::

    {"prompt": "...", "gold": 14, "skill": "math", "answer": "number", "id": "apples"}
    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."}],
     "gold": "B", "answer": "choice"}

``prompt`` or ``messages`` (exactly one), ``gold`` (required), and optional
``skill``, ``answer`` (an extraction spec as :meth:`AnswerSpec.parse` reads it:
``number``, ``choice``, ``json:FIELD``, ``text``, ``regex:PATTERN``) and ``id``
(else one is made from the prompt's hash, so a re-import keeps it). Other keys
are ignored. The answer kind chooses the check: ``number`` -> the number check,
``choice`` -> the choice check, anything else -> ``exact`` on what that
extraction reads (``json:answer`` compares the ``answer`` field as the daemon
extracts it; ``text`` the whole normalized text).

:func:`import_golden` refuses the whole file when any line is bad, naming every
bad line (:class:`GoldenError`), and writes the suite (``golden = true``)
atomically: a temporary file, loaded back by the suite loader, then renamed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
import tomllib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import tomli_w

from alchemist.answers.extract import AnswerSpec, extract
from alchemist.answers.numbers import canonical_number
from alchemist.probes.checker_spec import build_checker
from alchemist.probes.suites import Suite, check_name, load_suite

#: examples in one golden file at most (the prober keeps every probe in memory)
MAX_ITEMS: Final = 100_000
#: bad lines named in an error; the rest are counted
MAX_LISTED: Final = 20
_ROLES: Final = ("system", "user", "assistant")


class BadLine(ValueError):
    """Why one line of a golden file can't be imported."""


class GoldenError(ValueError):
    """A golden file with bad lines: nothing was imported. ``str()`` is one summary line;
    :meth:`report` one line per bad line (at most :data:`MAX_LISTED`, then a count)."""

    def __init__(self, source: str, problems: list[tuple[int, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = ", ".join(str(n) for n, _ in problems[:MAX_LISTED])
        more = f" and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        super().__init__(f"{source}: {len(problems)} bad line(s) (line {lines}{more}); "
                         "nothing was imported.")

    def report(self) -> list[str]:
        """``FILE:LINE: reason`` for the first :data:`MAX_LISTED` bad lines, then how many more."""
        out = [f"{self.source}:{n}: {why}" for n, why in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            out.append(f"{self.source}: ... and {len(self.problems) - MAX_LISTED} more bad line(s)")
        return out


@dataclass(frozen=True, slots=True)
class Imported:
    """What :func:`import_golden` wrote."""

    path: Path
    suite: Suite
    replaced: bool

    def summary(self) -> str:
        """One line for the operator: what was written, and what happens next."""
        skills = ", ".join(sorted({p.skill for p in self.suite.probes}))
        return (f"{'replaced' if self.replaced else 'wrote'} {self.path}: golden suite "
                f"{self.suite.name!r}, {len(self.suite.probes)} examples ({skills}); with "
                "probes.enabled the prober asks each provider each example once")


@dataclass(frozen=True, slots=True)
class _Item:
    probe: dict[str, Any]  # the [[probes]] table, skill and answer not yet folded in
    skill: str | None
    answer: AnswerSpec
    identity: str  # the prompt's hash: two lines asking the same are duplicates


def gold_check(gold: object, spec: AnswerSpec) -> dict[str, Any]:
    """The ``check`` table that judges an answer against ``gold`` under ``spec``.

    Raises :class:`BadLine` when the gold can't be read the way the check needs it.
    """
    if gold is None or isinstance(gold, bool | dict):
        raise BadLine(f"gold {gold!r} can't be checked: give a string or a number.")
    if spec.kind == "number":
        check = {"kind": "number", "expected": gold}
        if isinstance(gold, str):  # "$1,000": the number the extraction reads, if not "1/3" as is
            try:
                build_checker(check)
            except ValueError:
                check["expected"] = canonical_number(gold) or gold
        return check
    if spec.kind == "choice":
        return {"kind": "choice", "expected": gold if isinstance(gold, str) else repr(gold)}
    if spec.kind == "json":
        # what the extraction reads out of a reply whose field holds the gold (a number's
        # canonical form, a string unquoted, a list as sorted JSON)
        nested: object = gold
        for key in reversed((spec.field or "answer").split(".")):
            nested = {key: nested}
        expected = extract(json.dumps(nested, ensure_ascii=False), spec)
        return {"kind": "exact", "expected": expected or ""}
    if isinstance(gold, list):
        return {"kind": "exact", "expected": [_scalar(g) for g in gold]}
    return {"kind": "exact", "expected": _scalar(gold)}


def _scalar(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return json.dumps(value)
    raise BadLine(f"gold {value!r} can't be checked: give a string, a number or a list of strings.")


def _messages(raw: object) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise BadLine("messages must be a non-empty list of {role, content} objects.")
    out = []
    for i, m in enumerate(raw):
        if not (isinstance(m, dict) and m.get("role") in _ROLES and isinstance(m.get("content"), str)):
            raise BadLine(f"messages[{i}] must be an object with role (one of {', '.join(_ROLES)}) "
                          "and string content.")
        out.append({"role": m["role"], "content": _utf8(m["content"], f"messages[{i}].content")})
    if not any(m["role"] == "user" and m["content"].strip() for m in out):
        raise BadLine("messages must hold a user message with non-empty content.")
    return out


def _utf8(text: str, field: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadLine(f"{field} holds a lone surrogate (\\ud800-\\udfff): not Unicode text.") from None
    return text


def _answer(obj: Mapping[str, object], default: AnswerSpec | None) -> AnswerSpec:
    raw = obj.get("answer")
    if raw is None:
        if default is None:
            raise BadLine("no answer kind: give `answer` (number, choice, json:FIELD, text or "
                          "regex:PATTERN) on the line, or --answer for the whole file.")
        return default
    try:
        return AnswerSpec.parse(raw)
    except ValueError as exc:
        raise BadLine(f"answer {raw!r} is not an answer kind: {exc}") from None


def parse_line(obj: object, default_skill: str | None, default_answer: AnswerSpec | None) -> _Item:
    """One decoded line as a probe; raises :class:`BadLine` saying what is wrong."""
    if not isinstance(obj, dict):
        raise BadLine(f"expected a JSON object, got {type(obj).__name__}.")
    has_prompt, has_messages = obj.get("prompt") is not None, obj.get("messages") is not None
    if has_prompt == has_messages:
        raise BadLine("give exactly one of prompt (a string) and messages (a list of "
                      f"{{role, content}}), not {'both' if has_prompt else 'neither'}.")
    probe: dict[str, Any] = {"id": ""}  # the id first in the file, once it is known
    if has_prompt:
        prompt = obj["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadLine("prompt must be a non-empty string.")
        probe["prompt"] = _utf8(prompt, "prompt")
        pairs = [["user", prompt]]
    else:
        probe["messages"] = _messages(obj["messages"])
        pairs = [[m["role"], m["content"]] for m in probe["messages"]]
    if "gold" not in obj or obj["gold"] is None:
        raise BadLine("no gold: every example needs its right answer in `gold`.")
    identity = hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode()).hexdigest()
    probe["id"] = _name(obj.get("id", f"h-{identity[:12]}"), "id")
    skill = obj.get("skill", default_skill)
    answer = _answer(obj, default_answer)
    probe["check"] = gold_check(obj["gold"], answer)
    try:
        build_checker(probe["check"], answer=answer)
    except ValueError as exc:
        raise BadLine(f"gold {obj['gold']!r} can't be checked as {answer.kind}: {exc}") from None
    return _Item(probe, None if skill is None else _name(skill, "skill"), answer, identity)


def _name(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise BadLine(f"{field} must be a string, not {type(value).__name__}.")
    try:
        check_name(value, field)
    except ValueError as exc:
        raise BadLine(str(exc)) from None
    return value


def read_items(lines: Iterable[tuple[int, bytes]], *, skill: str | None = None,
               answer: AnswerSpec | None = None, progress: Callable[[int], None] | None = None
               ) -> tuple[list[_Item], list[tuple[int, str]]]:
    """Every good line as an item, and every bad one as ``(line number, reason)``:
    not JSON, not UTF-8, no gold, no or an unknown answer kind, a duplicate id or prompt."""
    items: list[_Item] = []
    problems: list[tuple[int, str]] = []
    ids: dict[str, int] = {}
    prompts: dict[str, int] = {}
    for count, (lineno, raw) in enumerate(lines, 1):
        if progress is not None and count % 1000 == 0:
            progress(count)
        try:
            if not raw.strip():
                continue
            item = parse_line(json.loads(raw.decode("utf-8")), skill, answer)
            if item.identity in prompts:
                raise BadLine(f"duplicate: the same prompt is already on line {prompts[item.identity]}.")
            if item.probe["id"] in ids:
                raise BadLine(f"duplicate: id {item.probe['id']!r} is already on line "
                              f"{ids[item.probe['id']]}.")
        except UnicodeDecodeError:
            problems.append((lineno, "not UTF-8 text."))
        except json.JSONDecodeError as exc:
            problems.append((lineno, f"not JSON: {exc.msg} at column {exc.colno}."))
        except BadLine as exc:
            problems.append((lineno, str(exc)))
        else:
            ids[item.probe["id"]] = prompts[item.identity] = lineno
            items.append(item)
            if len(items) > MAX_ITEMS:
                problems.append((lineno, f"more than {MAX_ITEMS} examples: split the set."))
                break
    return items, problems


def suite_document(items: list[_Item], *, name: str, skill: str | None, answer: AnswerSpec | None,
                   description: str) -> dict[str, Any]:
    """The suite file (as a TOML-ready dict) holding ``items``: the suite's skill is ``skill``
    or the most common one of the items; a probe says its skill and answer only where they
    differ from the suite's."""
    check_name(name, "suite")
    counts = Counter(i.skill for i in items if i.skill is not None)
    suite_skill = skill or (counts.most_common(1)[0][0] if counts else None)
    if suite_skill is None:
        raise ValueError("no skill: give `skill` on the lines or --skill for the whole file.")
    check_name(suite_skill, "skill")
    doc: dict[str, Any] = {"name": name, "skill": suite_skill, "golden": True,
                           "description": description}
    if answer is not None:
        doc["answer"] = answer.to_dict()
    probes = []
    for item in items:
        probe = dict(item.probe)
        if item.skill is not None and item.skill != suite_skill:
            probe["skill"] = item.skill
        if item.answer != answer:
            probe["answer"] = item.answer.to_dict()
        probes.append(probe)
    doc["probes"] = probes
    return doc


def numbered_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """The lines of a ``.jsonl`` or ``.jsonl.gz`` file with their numbers (from 1)."""
    opener: Callable[..., Any] = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        yield from enumerate(fh, 1)


def write_suite(doc: Mapping[str, Any], directory: Path, *, force: bool = False) -> Imported:
    """Write a suite document as ``DIR/<name>.toml``, atomically: a temporary file in
    ``directory`` (named ``*.tmp``, which the suite loader never reads), loaded back by
    the suite loader, then renamed over the target. Refuses to replace an existing file
    unless ``force``, and a name another file of ``directory`` already defines."""
    name = str(doc["name"])
    target = suite_target(directory, name, force=force)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".toml.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(tomli_w.dumps(doc).encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        suite = load_suite(tmp)  # what we write must load, or nothing is written
        replaced = target.exists()
        # mkstemp makes it private; the daemon may run as another user: readable, as a
        # replaced file was
        os.chmod(tmp, target.stat().st_mode & 0o777 if replaced else 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Imported(target, suite, replaced)


def suite_target(directory: Path, name: str, *, force: bool = False) -> Path:
    """``DIR/<name>.toml``; ``ValueError`` when it exists (unless ``force``) or when another
    file of ``directory`` defines suite ``name`` (the daemon would refuse both)."""
    target = directory / f"{name}.toml"
    other = _defined_elsewhere(directory, name, target)
    if other is not None:
        raise ValueError(f"{other} already defines suite {name!r}; choose another --suite name.")
    if target.exists() and not force:
        raise ValueError(f"{target} exists; pass --force to replace it.")
    return target


def _defined_elsewhere(directory: Path, name: str, target: Path) -> Path | None:
    for path in sorted(directory.glob("*.toml")) if directory.is_dir() else ():
        if path == target:
            continue
        try:
            if tomllib.loads(path.read_text(encoding="utf-8")).get("name") == name:
                return path
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue  # the daemon's loader says what is wrong with it; not our file
    return None


def import_golden(source: Path, *, suite: str, directory: Path, skill: str | None = None,
                  answer: str | None = None, force: bool = False,
                  progress: Callable[[int], None] | None = None) -> Imported:
    """Import the golden file ``source`` as suite ``suite`` in ``directory``.

    ``skill`` and ``answer`` are the defaults of lines that give none (``answer`` also
    becomes the suite's ``answer``). Raises :class:`GoldenError` naming every bad line,
    ``ValueError`` for a bad argument or target, ``OSError`` when the file can't be read;
    in every case nothing is written.
    """
    check_name(suite, "--suite")
    if skill is not None:
        check_name(skill, "--skill")
    spec = None if answer is None else AnswerSpec.parse(answer)
    suite_target(directory, suite, force=force)  # before reading what could not be written
    items, problems = read_items(numbered_lines(source), skill=skill, answer=spec, progress=progress)
    if problems:
        raise GoldenError(str(source), problems)
    if not items:
        raise ValueError(f"{source}: no examples in the file; nothing was imported.")
    doc = suite_document(items, name=suite, skill=skill, answer=spec,
                         description=f"golden set imported from {source.name} ({len(items)} examples)")
    return write_suite(doc, directory, force=force)
