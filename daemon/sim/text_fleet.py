"""A simulated open-text fleet: texts that differ in quality and in style.

Three providers write *bland* texts: the same stock phrases around the
prompt's topic, so their texts resemble one another and a consensus (the
weighted medoid of uniform ``select``) picks one of them. One provider writes
*distinctive* texts (its own words, rarely shared) that readers like more
often, and one writes *terse* texts of middling appeal. Each recorded text
carries a score of 1.0 (a reader would like it) or 0.0, drawn with the
provider's appeal, so a simulated user's thumbs follow the text's quality.

Used by the tests and by ``alchemist bench replay`` through a replay file
(:func:`text_fleet`); a learned ``select`` should serve the distinctive
provider's texts, which no amount of agreement can tell apart from the rest.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from types import MappingProxyType

from alchemist.adapters.base import Message
from alchemist.daemon.sim.replay import RecordedAnswer, ReplayItem, ReplaySet

__all__ = ["APPEAL", "text_fleet"]

#: the chance that a reader likes a provider's text
APPEAL: Mapping[str, float] = MappingProxyType({
    "stock1": 0.35, "stock2": 0.35, "stock3": 0.35, "terse": 0.5, "sage": 0.8,
})

_TOPICS = ("gardening", "budgeting", "sleep", "running", "cooking", "negotiation", "email",
           "travel", "learning", "painting", "chess", "baking", "hiring", "saving", "cycling")
_STOCK = ("here is a general overview of {t}", "it is important to consider many factors",
          "there are several things to keep in mind about {t}", "everyone's situation is different",
          "in summary {t} depends on your goals and circumstances",
          "it is always a good idea to consult a professional", "i hope this helps")
_VOCAB = tuple(f"{a}{b}" for a in ("kin", "vel", "mor", "tas", "plu", "dra", "sen", "quo")
               for b in ("ar", "ent", "ive", "ous", "ic", "al", "ure", "ion"))


def _stock(rng: random.Random, topic: str) -> str:
    lines = rng.sample(_STOCK, 5)
    return ". ".join(line.format(t=topic) for line in lines) + "."


def _sage(rng: random.Random, topic: str) -> str:
    steps = [" ".join(rng.sample(_VOCAB, 6)) for _ in range(4)]
    return f"{topic}: " + "; ".join(f"step {i + 1}, {s}" for i, s in enumerate(steps)) + "."


def _terse(rng: random.Random, topic: str) -> str:
    return f"{topic}: {' '.join(rng.sample(_VOCAB, 3))}."


def text_fleet(n_tasks: int = 400, seed: int = 1) -> ReplaySet:
    """``n_tasks`` prompts (skill ``advice``), each answered by every provider of
    :data:`APPEAL`, scored 1.0 with the provider's appeal, else 0.0."""
    rng = random.Random(seed)
    items = []
    for i in range(n_tasks):
        topic = rng.choice(_TOPICS)
        answers = {}
        for model, appeal in APPEAL.items():
            if model.startswith("stock"):
                text = _stock(rng, topic)
            elif model == "sage":
                text = _sage(rng, topic)
            else:
                text = _terse(rng, topic)
            answers[model] = RecordedAnswer(text, 1.0 if rng.random() < appeal else 0.0)
        prompt = f"request {i}: some advice on {topic}, please."
        items.append(ReplayItem(f"text-{i:04d}", "advice", (Message("user", prompt),), None,
                                MappingProxyType(answers)))
    return ReplaySet(tuple(items), tuple(APPEAL))
