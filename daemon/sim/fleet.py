"""A simulated fleet of LLM providers, generated locally (no API keys, no downloads).

:func:`make_fleet` writes tasks in four skills, each with a gold answer, and the
answers of five simulated providers with clearly different per-skill accuracy
(:data:`ACCURACY`). A wrong answer is drawn from a few plausible distractors of
its task, the common mistakes first, so two wrong providers sometimes agree, as
real LLMs do. Every answer looks like what a real model gives to a prompt
that asks for ``{"reasoning": ..., "answer": ...}``. Latency and failure rate
per provider go with the fleet, for :class:`~alchemist.daemon.sim.replay.ReplayServer`.
Everything is deterministic given the seed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from alchemist.adapters.base import Message
from alchemist.daemon.sim.replay import Latency, RecordedAnswer, ReplayItem, ReplaySet

__all__ = ["ACCURACY", "FAILURE_RATE", "LATENCY", "PROVIDERS", "SKILLS", "SPECIALISTS", "Fleet",
           "make_fleet", "specialist_fleet"]

SKILLS: tuple[str, ...] = ("math", "code", "knowledge", "format")
PROVIDERS: tuple[str, ...] = ("sim-mathwiz", "sim-coder", "sim-generalist", "sim-cheap",
                              "sim-flaky")


def _skills(math: float, code: float, knowledge: float, fmt: float) -> Mapping[str, float]:
    return MappingProxyType({"math": math, "code": code, "knowledge": knowledge, "format": fmt})


#: probability that a provider answers a task of a skill right
ACCURACY: Mapping[str, Mapping[str, float]] = MappingProxyType({
    "sim-mathwiz": _skills(0.93, 0.40, 0.60, 0.70),
    "sim-coder": _skills(0.40, 0.93, 0.60, 0.85),
    "sim-generalist": _skills(0.60, 0.60, 0.65, 0.60),
    "sim-cheap": _skills(0.45, 0.45, 0.45, 0.50),
    "sim-flaky": _skills(0.80, 0.80, 0.80, 0.80),
})
LATENCY: Mapping[str, Latency] = MappingProxyType({
    "sim-mathwiz": Latency(60.0, "lognormal", 3.0),
    "sim-coder": Latency(50.0, "lognormal", 3.0),
    "sim-generalist": Latency(40.0, "lognormal", 2.5),
    "sim-cheap": Latency(15.0, "lognormal", 2.0),
    "sim-flaky": Latency(80.0, "lognormal", 20.0),
})
FAILURE_RATE: Mapping[str, float] = MappingProxyType({
    "sim-mathwiz": 0.01, "sim-coder": 0.01, "sim-generalist": 0.005, "sim-cheap": 0.02,
    "sim-flaky": 0.10,
})
#: how a wrong answer picks among a task's distractors: most wrong providers make the
#: same common mistake, so a plain vote is often outvoted by agreeing wrong answers
_DISTRACTOR_WEIGHTS = (0.7, 0.15, 0.1, 0.05)


@dataclass(frozen=True, slots=True)
class Fleet:
    """A generated replay set with the latency and failure rate of each provider."""

    replay: ReplaySet
    latency: dict[str, Latency]
    failure_rate: dict[str, float]
    description: str


@dataclass(frozen=True, slots=True)
class _Task:
    question: str
    gold: str
    distractors: tuple[str, ...]
    work: str  # one sentence of reasoning shared by every answer
    example: str  # the example answer shown in the instruction


_NAMES = ("Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonah",
          "Kira", "Liam", "Maya", "Noor", "Omar", "Priya")
_CITIES = ("Lisbon", "Oslo", "Nairobi", "Lima", "Osaka", "Quito", "Perth", "Tunis", "Riga",
           "Hanoi", "Bogota", "Cork")
_THINGS = ("stickers", "marbles", "cookies", "stamps", "seashells", "postcards")


def _finish(gold: int | str, candidates: list[int | str]) -> tuple[str, ...]:
    """Distinct distractors (common mistakes first), padded with near misses to four."""
    out: list[str] = []
    for c in candidates:
        s = str(c)
        if s != str(gold) and s not in out:
            out.append(s)
    step = 1
    while len(out) < len(_DISTRACTOR_WEIGHTS):
        near = str(int(gold) + step) if isinstance(gold, int) else f"{gold}{'!' * step}"
        if near not in out and near != str(gold):
            out.append(near)
        step = -step if step > 0 else -step + 1
    return tuple(out[: len(_DISTRACTOR_WEIGHTS)])


def _math(rng: random.Random) -> _Task:
    kind = rng.randrange(4)
    name = rng.choice(_NAMES)
    if kind == 0:
        a, b, c, d = rng.randint(5, 40), rng.randint(2, 9), rng.randint(3, 12), rng.randint(1, 5)
        thing = rng.choice(_THINGS)
        q = (f"{name} has {a} {thing}. {name} buys {b} packs of {c} {thing} each and then "
             f"gives {d} {thing} to a friend. How many {thing} does {name} have now?")
        gold = a + b * c - d
        wrong: list[int | str] = [a + b * c + d, (a + b) * c - d, a + b + c - d, a + b * c]
        work = f"{name} starts with {a}, gains {b} * {c} = {b * c}, then gives away {d}."
    elif kind == 1:
        v, h, w, k = rng.randint(4, 12) * 10, rng.randint(2, 5), rng.randint(3, 9) * 10, \
            rng.randint(1, 4)
        q = (f"A train travels at {v} km/h for {h} hours, then at {w} km/h for {k} hours. "
             "How many kilometres does it travel in total?")
        gold = v * h + w * k
        wrong = [(v + w) * (h + k), v * (h + k), v * h + w, v * h * k]
        work = f"The first leg is {v} * {h} = {v * h} km and the second {w} * {k} = {w * k} km."
    elif kind == 2:
        p, hours, weeks, s = rng.randint(9, 25), rng.randint(5, 20), rng.randint(2, 6), \
            rng.randint(10, 90)
        q = (f"{name} earns ${p} per hour and works {hours} hours a week. After {weeks} weeks, "
             f"{name} spends ${s} on a jacket. How many dollars does {name} have left?")
        gold = p * hours * weeks - s
        wrong = [p * hours * weeks + s, p * hours - s, p * (hours + weeks) - s,
                 p * hours * weeks]
        work = f"{name} earns {p} * {hours} * {weeks} = {p * hours * weeks} dollars, minus {s}."
    else:
        per, price, packs = rng.randint(2, 6), rng.randint(2, 9), rng.randint(3, 12)
        n = per * packs
        q = (f"A shop sells pencils at {per} for ${price}. How many dollars do {n} pencils "
             "cost?")
        gold = packs * price
        wrong = [n * price, packs + price, n * price // per + price, (packs + 1) * price]
        work = f"{n} pencils are {n} / {per} = {packs} groups of {per}, each costing {price}."
    return _Task(q, str(gold), _finish(gold, wrong), work, "42")


def _code(rng: random.Random) -> _Task:
    kind = rng.randrange(5)
    if kind == 0:
        a, b = rng.randint(0, 10), rng.randint(12, 30)
        expr, gold = f"sum(range({a}, {b}))", sum(range(a, b))
        wrong: list[int | str] = [sum(range(a, b + 1)), sum(range(a + 1, b)), b - a,
                                  sum(range(a, b)) - a]
    elif kind == 1:
        word = rng.choice(("alchemist", "mercury", "crucible", "philosopher", "transmute"))
        i = rng.randint(0, 3)
        j = rng.randint(i + 2, len(word) + 3)
        k = rng.randint(2, 5)
        expr, gold = f'len("{word}"[{i}:{j}]) * {k}', len(word[i:j]) * k
        wrong = [(j - i + 1) * k, (j - i) * k, (len(word[i:j]) - 1) * k, len(word) * k]
    elif kind == 2:
        a, b = rng.randint(20, 99), rng.randint(3, 9)
        expr, gold = f"{a} // {b} + {a} % {b}", a // b + a % b
        wrong = [a // b, round(a / b) + a % b, a % b, a // b + a % b + 1]
    elif kind == 3:
        n, m = rng.randint(3, 12), rng.randint(2, 9)
        expr, gold = f"[x * {m} for x in range({n})][-1]", (n - 1) * m
        wrong = [n * m, (n - 2) * m, m, (n - 1) * m + 1]
    else:
        word = rng.choice(("silver", "copper", "cobalt", "bismuth", "sulfur", "antimony"))
        k = rng.randint(2, 4)
        gold_s = repr("-".join(word[:k]))
        expr = f'"-".join("{word}"[:{k}])'
        wrong = [repr("-".join(word[:k]) + "-"), repr(word[:k]), repr("-".join(word[: k + 1])),
                 repr("-".join(word[:k - 1]))]
        q = f"What does this Python expression evaluate to?\n\n    {expr}"
        return _Task(q, gold_s, _finish(gold_s, wrong),
                     f"Slicing gives {word[:k]!r}, then join puts '-' between the characters.",
                     "'abc'")
    q = f"What does this Python expression evaluate to?\n\n    {expr}"
    work = f"Evaluate `{expr}` left to right, following Python's rules."
    return _Task(q, str(gold), _finish(gold, wrong), work, "42")


_FACTS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("What is the capital of {}?", (
        ("Australia", "Canberra"), ("Canada", "Ottawa"), ("Brazil", "Brasilia"),
        ("Turkey", "Ankara"), ("Switzerland", "Bern"), ("Nigeria", "Abuja"),
        ("New Zealand", "Wellington"), ("Morocco", "Rabat"), ("Vietnam", "Hanoi"),
        ("Kazakhstan", "Astana"), ("Pakistan", "Islamabad"), ("Myanmar", "Naypyidaw"),
        ("Bolivia", "Sucre"), ("Tanzania", "Dodoma"))),
    ("What is the chemical symbol of {}?", (
        ("gold", "Au"), ("silver", "Ag"), ("iron", "Fe"), ("lead", "Pb"), ("tin", "Sn"),
        ("sodium", "Na"), ("potassium", "K"), ("mercury", "Hg"), ("tungsten", "W"),
        ("copper", "Cu"), ("antimony", "Sb"))),
    ("Who wrote {}?", (
        ("Don Quixote", "Miguel de Cervantes"), ("War and Peace", "Leo Tolstoy"),
        ("Pride and Prejudice", "Jane Austen"), ("One Hundred Years of Solitude",
                                                 "Gabriel Garcia Marquez"),
        ("The Trial", "Franz Kafka"), ("Things Fall Apart", "Chinua Achebe"),
        ("Beloved", "Toni Morrison"), ("The Tale of Genji", "Murasaki Shikibu"))),
)
_LETTERS = "ABCD"


def _knowledge(rng: random.Random) -> _Task:
    template, pairs = rng.choice(_FACTS)
    subject, right = rng.choice(pairs)
    others = rng.sample([v for _, v in pairs if v != right], 3)
    options = [right, *others]
    rng.shuffle(options)
    gold = _LETTERS[options.index(right)]
    # the most plausible wrong option is the first of `others`
    wrong = [_LETTERS[options.index(o)] for o in others]
    lines = "\n".join(f"{letter}. {opt}" for letter, opt in zip(_LETTERS, options, strict=True))
    q = f"{template.format(subject)}\n\n{lines}\n\nAnswer with the letter of the correct option."
    work = f"The question is: {template.format(subject)} Recall the fact, match it to an option."
    return _Task(q, gold, tuple(wrong), work, "A")


def _format(rng: random.Random) -> _Task:
    record: dict[str, object] = {
        "order_id": rng.randint(10000, 99999),
        "customer": f"{rng.choice(_NAMES)} {rng.choice(('Silva', 'Okafor', 'Tanaka', 'Novak'))}",
        "city": rng.choice(_CITIES),
        "items": rng.randint(1, 9),
        "total": rng.randint(12, 480),
        "ship_city": rng.choice(_CITIES),
    }
    keys = list(record)
    field = rng.choice(keys)
    gold = str(record[field])
    at = keys.index(field)
    # neighbours first: a field next to the asked one is the usual confusion
    order = sorted((k for k in keys if k != field), key=lambda k: (abs(keys.index(k) - at), k))
    wrong: list[int | str] = [str(record[k]) for k in order]
    q = (f"Here is a record:\n\n{json.dumps(record)}\n\nWhat is the value of the `{field}` "
         "field? Answer with the value only.")
    distractors = _finish(int(gold) if gold.isdigit() else gold, wrong)
    return _Task(q, gold, distractors, f"The record has a `{field}` field; read its value.",
                 "Oslo")


_GENERATORS: Mapping[str, Callable[[random.Random], _Task]] = MappingProxyType({
    "math": _math, "code": _code, "knowledge": _knowledge, "format": _format})


def _prompt(task: _Task) -> str:
    return (f"\n## Question: \n\n{task.question}\n\n\n## Instruction \n\n"
            "Please answer this question by first reasoning and then providing your answer.\n"
            "Present your reasoning and solution in the following json format. \n"
            f'Please show your final answer in the `answer` field, e.g.,`"answer": '
            f'"{task.example}"`.\n\n```json\n{{\n    "reasoning": "___",\n    "answer": "___"\n}}'
            "\n```\n")


def _render(model: str, work: str, answer: str) -> str:
    """The answer text in the provider's own house style."""
    obj = {"reasoning": f"{work} So the answer is {answer}.", "answer": answer}
    if model == "sim-mathwiz":
        return f"```json\n{json.dumps(obj, indent=4)}\n```"
    if model == "sim-coder":
        return f"```json\n{json.dumps(obj, indent=2)}\n```"
    if model == "sim-generalist":
        return f"Here is my answer:\n\n```json\n{json.dumps(obj, indent=4)}\n```"
    if model == "sim-cheap":
        return json.dumps(obj)
    return json.dumps(obj, indent=2)


def _describe(n_items: int, seed: int) -> str:
    head = f"{'provider':<16}" + "".join(f"{s:>10}" for s in SKILLS) + \
        f"{'p50 ms':>9}{'p99 ms':>9}{'fail':>7}"
    rows = [f"Simulated fleet: {n_items} tasks in skills {', '.join(SKILLS)} (seed {seed}).",
            "Per-skill accuracy, latency and failure rate of each simulated provider:", head]
    for p in PROVIDERS:
        lat = LATENCY[p]
        rows.append(f"{p:<16}" + "".join(f"{ACCURACY[p][s]:>10.2f}" for s in SKILLS)
                    + f"{lat.median_ms:>9.0f}{lat.median_ms * lat.p99_ratio:>9.0f}"
                    + f"{FAILURE_RATE[p]:>7.1%}")
    rows.append("Wrong answers come from a few plausible distractors per task, so they agree "
                "sometimes.")
    return "\n".join(rows)


def make_fleet(n_tasks: int = 400, seed: int = 0) -> Fleet:
    """Generate ``n_tasks`` tasks (skills in equal shares, shuffled) and every provider's answers.

    Deterministic given ``seed``; scores are 1.0 (right) or 0.0 (wrong).
    """
    if n_tasks < 1:
        raise ValueError(f"n_tasks must be >= 1, got {n_tasks}")
    rng = random.Random(seed)
    who_is_right = random.Random(seed + 1)  # apart from task generation: rates stay exact
    skills = [SKILLS[i % len(SKILLS)] for i in range(n_tasks)]
    rng.shuffle(skills)
    items: list[ReplayItem] = []
    seen: set[str] = set()
    counts = dict.fromkeys(SKILLS, 0)
    for skill in skills:
        for _ in range(1000):  # a fresh prompt; the task spaces are far larger than needed
            task = _GENERATORS[skill](rng)
            prompt = _prompt(task)
            if prompt not in seen:
                break
        else:
            raise ValueError(f"could not generate {n_tasks} distinct {skill!r} tasks")
        seen.add(prompt)
        counts[skill] += 1
        answers: dict[str, RecordedAnswer] = {}
        for model in PROVIDERS:
            if who_is_right.random() < ACCURACY[model][skill]:
                answer, score = task.gold, 1.0
            else:
                answer = who_is_right.choices(task.distractors,
                                     _DISTRACTOR_WEIGHTS[: len(task.distractors)])[0]
                score = 0.0
            answers[model] = RecordedAnswer(_render(model, task.work, answer), score)
        items.append(ReplayItem(f"sim-{skill}-{counts[skill]:04d}", skill,
                                (Message("user", prompt),), task.gold,
                                MappingProxyType(answers)))
    return Fleet(ReplaySet(tuple(items), PROVIDERS), dict(LATENCY), dict(FAILURE_RATE),
                 _describe(n_tasks, seed))


#: :func:`specialist_fleet`'s providers, the two opposite specialists listed last: per-skill
#: accuracy; the two weak ones usually share one wrong answer
SPECIALISTS: Mapping[str, Mapping[str, float]] = MappingProxyType({
    "echo1": MappingProxyType({"math": 0.4, "code": 0.4}),
    "echo2": MappingProxyType({"math": 0.4, "code": 0.4}),
    "mathwiz": MappingProxyType({"math": 0.92, "code": 0.35}),
    "coder": MappingProxyType({"math": 0.35, "code": 0.92}),
})


def specialist_fleet(n_tasks: int = 400, seed: int = 1) -> ReplaySet:
    """Two opposite specialists and two weak providers who share their mistakes.

    A uniform vote is poor here (the weak pair outvotes the right specialist);
    a recipe that trusts the right specialist per skill serves about 0.9. Tasks
    alternate between ``math`` and ``code``; answers are ``{"answer": "..."}``.
    """
    rng = random.Random(seed)
    items = []
    for i in range(n_tasks):
        skill = "math" if i % 2 else "code"
        gold = str(rng.randint(100, 999))
        shared_wrong = str(int(gold) + 1)
        answers = {}
        for model, acc in SPECIALISTS.items():
            right = rng.random() < acc[skill]
            if right:
                text = gold
            elif model.startswith("echo") and rng.random() < 0.85:
                text = shared_wrong
            else:
                text = str(rng.randint(1000, 9999))
            answers[model] = RecordedAnswer(f'{{"answer": "{text}"}}', 1.0 if right else 0.0)
        items.append(ReplayItem(f"t{i}", skill, (Message("user", f"task {i}: {gold[::-1]}?"),),
                                gold, MappingProxyType(answers)))
    return ReplaySet(tuple(items), tuple(SPECIALISTS))
