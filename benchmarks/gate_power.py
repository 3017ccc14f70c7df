"""How many labelled records the promotion gate needs to see a real gain: an oracle bound.

Usage::

    python benchmarks/gate_power.py --dataset ../shared/bench/cruxeval.jsonl.gz --answer json:answer
    python benchmarks/gate_power.py --dataset ../shared/bench/gsm8k.jsonl.gz --answer number

The incumbent is the uniform vote (ties to the first provider, as the daemon
breaks them); the challengers are the log-odds vote with every provider's
*true* accuracy and "follow the best provider". For each sample size ``n`` the
script draws ``n`` prompts at random (``--draws`` times) and gives the gate the
paired per-record gains computed from the gold labels of *every* provider on
them: more than any rating or golden record can tell (a rating speaks of the
served answer only, with noise). It reports how often

* a fixed-sample one-sided z-test at the gate's level would pass (looked at once);
* the gate's own always-valid test (:func:`alchemist.optimizers.sequential.evidence`,
  margin ``evolver.margin``, level ``alpha / 2`` as each of the policy's two tests)
  passes at that size; the same with the single 2-point mixture scale it had
  before; and the gate at the issue's bar (1 false promotion in 20 runs).

Since no evaluation of a challenger can know more than the labels, these are
upper bounds on how soon any sound gate can promote it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from alchemist.answers.extract import AnswerSpec, extract
from alchemist.daemon.sim.replay import load_replay
from alchemist.optimizers import defaults
from alchemist.optimizers.sequential import alpha_of, evidence

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

SIZES = (100, 140, 200, 300, 440, 600, 800)
#: the gate's single mixture scale before issue 12's last change (2 points), and the issue's
#: own bar (a false promotion in at most 1 of 20 runs) as the level, each of two tests at half
NARROW = (0.02,)
LENIENT = 0.025


def load(path: Path, answer: str) -> tuple[list[str], IntArray, FloatArray]:
    """Models, answer groups (N, M; -1 = no answer) and correctness (N, M) of a replay set."""
    data = load_replay(path)
    spec = AnswerSpec.parse(answer)
    models = list(data.models)
    groups = np.full((len(data.items), len(models)), -1, np.int64)
    correct = np.zeros(groups.shape)
    for i, item in enumerate(data.items):
        seen: dict[str, int] = {}
        for j, model in enumerate(models):
            recorded = item.answers.get(model)
            if recorded is None:
                continue
            correct[i, j] = recorded.score
            key = extract(recorded.text, spec)
            if key is not None:
                groups[i, j] = seen.setdefault(key, len(seen))
    return models, groups, correct


def vote(groups: IntArray, weights: FloatArray) -> IntArray:
    """The provider whose answer a weighted vote serves, per prompt (first index on ties)."""
    same = (groups[:, :, None] == groups[:, None, :]) & (groups[:, None, :] >= 0)
    score = same.astype(np.float64) @ weights
    score[groups < 0] = -np.inf
    out: IntArray = np.argmax(score + 1e-9 * weights, axis=1)
    return out


def power(gain: FloatArray, sizes: tuple[int, ...], draws: int, seed: int) -> list[dict[str, float]]:
    """Pass rates of a fixed z-test and of the gate's always-valid test per sample size."""
    z = NormalDist().inv_cdf(1.0 - alpha_of(defaults.Z) / 2)
    alpha = alpha_of(z)
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        if n > len(gain):
            break
        fixed = valid = narrow = lenient = 0
        for _ in range(draws):
            d = gain[rng.choice(len(gain), n, replace=False)]
            se = d.std(ddof=1) / math.sqrt(n) if d.std() > 0 else math.inf
            fixed += d.mean() - defaults.MARGIN > z * se
            gate = evidence(d, np.ones(n), defaults.MARGIN)
            valid += gate.passes(defaults.MARGIN, alpha)
            lenient += gate.passes(defaults.MARGIN, LENIENT)
            narrow += evidence(d, np.ones(n), defaults.MARGIN, NARROW).passes(defaults.MARGIN, alpha)
        rows.append({"n": n, "fixed_z": fixed / draws, "always_valid": valid / draws,
                     "narrow": narrow / draws, "lenient": lenient / draws})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--answer", required=True, help="answer kind, e.g. number or json:answer")
    ap.add_argument("--draws", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    models, groups, correct = load(args.dataset, args.answer)
    acc = correct.mean(axis=0)
    rows = np.arange(len(groups))
    served = {"uniform": vote(groups, np.ones(len(models))),
              "log-odds": vote(groups, np.log(np.clip(acc, 0.01, 0.99) / np.clip(1 - acc, 0.01, 0.99))),
              "best provider": np.full(len(groups), int(np.argmax(acc)))}
    score = {k: correct[rows, v] for k, v in served.items()}
    report: dict[str, object] = {"dataset": str(args.dataset), "prompts": len(groups),
                                 "accuracy": {k: round(100 * float(v.mean()), 2) for k, v in score.items()},
                                 "challengers": {}}
    print(f"{args.dataset.name}: {len(groups)} prompts; served accuracy "
          + ", ".join(f"{k} {100 * v.mean():.2f}" for k, v in score.items()))
    for name in ("log-odds", "best provider"):
        gain = score[name] - score["uniform"]
        table = power(gain, SIZES, args.draws, args.seed)
        report["challengers"][name] = {"gain": float(gain.mean()),  # type: ignore[index]
                                       "discordant": float(np.mean(gain != 0)), "power": table}
        print(f"  {name} vs uniform: gain {100 * gain.mean():+.2f} points, "
              f"picks differ on {100 * np.mean(gain != 0):.1f} % of prompts")
        for row in table:
            print(f"    n={row['n']:>4}: fixed z-test {100 * row['fixed_z']:5.1f} %; always valid: "
                  f"the gate's {100 * row['always_valid']:5.1f} %, with the scale {NARROW} "
                  f"only {100 * row['narrow']:5.1f} %, the gate at level {LENIENT} "
                  f"{100 * row['lenient']:5.1f} %")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
