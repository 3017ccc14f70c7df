"""Scenarios several test modules share: synthetic experience, probe specialists, replay files.

A helper module, not a test module: tests import from here, never from each other.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from alchemist.daemon.sim.fleet import make_fleet
from alchemist.optimizers.data import Snapshot
from alchemist.optimizers.synthetic import synthetic_snapshot
from alchemist.probes.suites import load_suites

# -- the A/B/C math/code scenario of the optimizer tests -------------------------------------

SKILLS = ("*", "math", "code")
PROVIDERS = ("A", "B", "C")
ACCURACY = [[0.65, 0.65, 0.6], [0.9, 0.4, 0.6], [0.4, 0.9, 0.6]]

def experience(accuracy: list[list[float]] = ACCURACY, n: int = 2000, seed: int = 1) -> Snapshot:
    """Synthetic rated experience for the A/B/C math/code scenario."""
    return synthetic_snapshot(
        accuracy, n, np.random.default_rng(seed), skills=SKILLS, providers=PROVIDERS
    )


# -- two specialists for the prober tests ----------------------------------------------------

SUITES = Path(__file__).resolve().parents[1] / "probes" / "suites"


def expected_answers() -> dict[str, tuple[str, str]]:
    """prompt -> (skill, a right answer text) for the arithmetic and code-output suites."""
    out = {}
    for name, skill in (("arithmetic", "math"), ("code_output", "code")):
        for probe in tomllib.loads((SUITES / f"{name}.toml").read_text())["probes"]:
            out[probe["prompt"]] = (skill, str(probe["check"]["expected"]))
    return out


def specialist(strong: str) -> Any:
    """A fake provider that is right on one skill and wrong on every other, whatever the template."""
    answers = expected_answers()

    def answer(messages: list[dict[str, Any]]) -> str:
        content = messages[-1]["content"]  # the probe's prompt, maybe with a template's suffix
        prompt = next((p for p in answers if content.startswith(p)), "")
        skill, right = answers.get(prompt, ("?", "0"))
        return right if skill == strong else "'nope'" if skill == "code" else "-1"
    return answer


def math_and_code() -> list[Any]:
    return [s for s in load_suites() if s.name in ("arithmetic", "code_output")]


# -- replay files for the bench tests ---------------------------------------------------------

REPORT_KEYS = {"served_score_all", "served_score_last_half", "best_single", "plurality_vote",
               "oracle", "mean_providers_called", "recipes_promoted", "ratings_sent", "curve"}


def write_replay(path: Path, n: int) -> None:
    """A replay file in the shared format, from the simulated fleet."""
    with path.open("w") as f:
        for item in make_fleet(n, seed=5).replay.items:
            f.write(json.dumps({
                "id": item.id, "skill": item.skill, "gold": item.gold,
                "messages": [{"role": m.role, "content": m.content} for m in item.messages],
                "answers": {k: {"text": a.text, "score": a.score} for k, a in item.answers.items()},
            }) + "\n")


def check_report(out: Path, requests: int) -> dict[str, object]:
    report: dict[str, object] = json.loads((out / "report.json").read_text())
    assert set(report) >= REPORT_KEYS
    assert report["requests"] == requests
    assert 0 <= report["served_score_all"] <= 100  # type: ignore[operator]
    assert report["oracle"] >= report["best_single"]["score"]  # type: ignore[index, operator]
    curve = report["curve"]
    assert len(curve["x"]) == len(curve["served"]) == len(curve["best_single"])  # type: ignore[index, arg-type]
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return report
