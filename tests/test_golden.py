"""Golden sets: `alchemist probe import` refuses bad lines by number and writes nothing then;
a good file becomes a suite the loader accepts; `bench replay --golden N` asks them apart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from alchemist.answers.extract import AnswerSpec
from alchemist.daemon.cli import main
from alchemist.daemon.sim.fleet import make_fleet
from alchemist.daemon.sim.golden import choose_golden, served_order
from alchemist.daemon.sim.harness import ordered
from alchemist.daemon.sim.replay import load_replay
from alchemist.probes.golden import MAX_LISTED, GoldenError, import_golden
from alchemist.probes.suites import load_suite, load_suites, render
from tests.scenarios import check_report, write_replay

GOOD: list[dict[str, Any]] = [
    {"prompt": "What is 6 times 7?", "gold": 42, "skill": "math", "answer": "number", "id": "mul"},
    {"prompt": "Half of 3?", "gold": "3/2", "skill": "math", "answer": "number"},
    {"prompt": "Total: $1,250 plus $0?", "gold": "$1,250", "skill": "math", "answer": "number"},
    {"messages": [{"role": "system", "content": "Answer with one letter."},
                  {"role": "user", "content": "Capital of France? A) Rome B) Paris"}],
     "gold": "b", "skill": "knowledge", "answer": "choice"},
    {"prompt": "print(sorted('ba'))", "gold": ["a", "b"], "skill": "code", "answer": "json:answer"},
    {"prompt": "Say the word yes.", "gold": "Yes.", "answer": "text"},
]


def jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_a_good_file_round_trips_into_a_golden_suite(tmp_path: Path) -> None:
    source = jsonl(tmp_path / "mine.jsonl", GOOD)
    done = import_golden(source, suite="mine", directory=tmp_path / "suites")
    suite = load_suite(done.path)
    assert done.path == tmp_path / "suites" / "mine.toml" and not done.replaced
    assert suite.golden and suite.name == "mine" and suite.skill == "math"  # the most common skill
    assert [p.skill for p in suite.probes] == ["math", "math", "math", "knowledge", "code", "math"]
    mul, half, total, capital, code, yes = suite.probes
    assert mul.id == "mul" and half.id.startswith("h-")  # a made id: the prompt's hash
    assert mul.checker.check("6 * 7 = 42").passed and not mul.checker.check("41").passed
    assert half.checker.check("Answer: 1.5").passed  # '3/2' kept as a fraction
    assert total.checker.check("It is $1250.").passed
    assert render(capital)[0].content == "Answer with one letter." and capital.prompt.startswith("Capital")
    assert capital.checker.check("The answer is B.").passed and not capital.checker.check("A").passed
    assert code.checker.check('{"answer": ["a", "b"]}').passed  # the list, as extracted
    assert yes.checker.check("yes").passed and not yes.checker.check("no").passed
    # the daemon's loader takes it with the others, and an import again is the same suite
    assert [s for s in load_suites(tmp_path / "suites") if s.golden] == [suite]
    again = import_golden(source, suite="mine", directory=tmp_path / "suites", force=True)
    assert again.replaced and [p.id for p in again.suite.probes] == [p.id for p in suite.probes]


def test_bad_lines_are_refused_by_number_and_nothing_is_written(tmp_path: Path) -> None:
    rows: list[Any] = [
        GOOD[0],
        {"prompt": "no gold here", "answer": "number", "skill": "math"},   # 2
        '{"prompt": "broken", "gold": 1',                                     # 3: not JSON
        {"prompt": "x?", "gold": 1, "answer": "numbr", "skill": "math"},     # 4: unknown kind
        {"prompt": "What is 6 times 7?", "gold": 42, "answer": "number"},   # 5: same prompt as 1
        {"prompt": "other", "gold": 1, "answer": "number", "id": "mul"},    # 6: same id as 1
        {"prompt": "p", "messages": [{"role": "user", "content": "p"}], "gold": 1,
         "answer": "number"},                                                 # 7: both
        {"prompt": "q", "gold": "many", "answer": "number"},                # 8: not a number
        {"prompt": "r", "gold": "AB", "answer": "choice"},                  # 9: not a letter
        {"prompt": "s", "gold": 1},                                          # 10: no answer kind
        GOOD[1],
    ]
    source = jsonl(tmp_path / "bad.jsonl", rows)
    target = tmp_path / "suites"
    with pytest.raises(GoldenError) as err:
        import_golden(source, suite="mine", directory=target)
    assert [n for n, _ in err.value.problems] == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    why = dict(err.value.problems)
    assert "no gold" in why[2] and "not JSON" in why[3] and "'numbr'" in why[4]
    assert "duplicate" in why[5] and "line 1" in why[5]
    assert "duplicate: id 'mul'" in why[6] and "not both" in why[7]
    assert "number" in why[8] and "one letter" in why[9] and "--answer" in why[10]
    assert not target.exists() or not list(target.iterdir())  # nothing, not even a temp file
    # the CLI lists them, one line each, and exits non-zero without writing
    assert main(["probe", "import", str(source), "--suite", "mine", "--dir", str(target)]) == 2


def test_the_cli_caps_the_list_and_keeps_the_old_suite(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "suites"
    good = jsonl(tmp_path / "good.jsonl", GOOD)
    assert main(["probe", "import", str(good), "--suite", "mine", "--dir", str(target)]) == 0
    assert "wrote" in capsys.readouterr().out
    before = (target / "mine.toml").read_text()
    bad = jsonl(tmp_path / "bad.jsonl", [{"prompt": f"q{i}", "answer": "number"} for i in range(30)])
    assert main(["probe", "import", str(bad), "--suite", "mine", "--dir", str(target),
                 "--force"]) == 2
    err = capsys.readouterr().err
    assert err.count(": no gold") == MAX_LISTED and "and 10 more bad line(s)" in err
    assert f"{bad}:1: no gold" in err and "30 bad line(s)" in err and "nothing was imported" in err
    assert (target / "mine.toml").read_text() == before and sorted(target.iterdir()) == [target / "mine.toml"]
    # without --force an existing suite stays; --skill and --answer fill lines that give none
    plain = jsonl(tmp_path / "plain.jsonl", [{"prompt": "2+2?", "gold": 4}])
    assert main(["probe", "import", str(plain), "--suite", "mine", "--dir", str(target),
                 "--answer", "number", "--skill", "math"]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["probe", "import", str(plain), "--suite", "sums", "--dir", str(target),
                 "--skill", "math", "--answer", "number"]) == 0
    sums = load_suite(target / "sums.toml")
    assert sums.skill == "math" and sums.probes[0].answer == AnswerSpec("number")
    assert main(["probe", "import", str(plain), "--suite", "x", "--answer", "number",
                 "--skill", "math"]) == 2  # no --dir and no config suites_dir
    assert "pass --dir" in capsys.readouterr().err


def test_golden_prompts_are_chosen_by_seed_and_spread_over_skills() -> None:
    replay = make_fleet(200, seed=5).replay  # four skills, 50 items each
    spec = AnswerSpec.parse("json:answer")
    chosen = choose_golden(replay, 10, seed=1, answer=spec)
    assert chosen == choose_golden(replay, 10, seed=1, answer=spec) != choose_golden(
        replay, 10, seed=2, answer=spec)
    counts = {s: sum(i.skill == s for i in chosen) for s in {i.skill for i in replay.items}}
    assert sorted(counts.values()) == [2, 2, 3, 3]
    assert {i.skill for i in choose_golden(replay, 4, seed=0, answer=spec)} == set(counts)
    skip = {i.id for i in chosen}
    stream = served_order(replay, 500, 1, skip)
    assert len(stream) == 500 and not skip & {i.id for i in stream}
    assert served_order(replay, 500, 1) == ordered(replay, 500, 1)  # nothing skipped: the same
    with pytest.raises(ValueError, match="between 1 and"):
        choose_golden(replay, 200, seed=0, answer=spec)


def test_bench_replay_golden_keeps_golden_prompts_out_and_counts_their_calls(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "fleet.jsonl"
    write_replay(data, 60)
    picked = choose_golden(load_replay(data), 8, 3, AnswerSpec.parse("json:answer"))
    # every model scores 0 on a golden prompt and sim-coder 1 on every other one: the
    # oracle is 100 exactly when no golden prompt was served or scored
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for row in rows:
        for model, answer in row["answers"].items():
            answer["score"] = 0.0 if row["id"] in {i.id for i in picked} else \
                1.0 if model == "sim-coder" else answer["score"]
    jsonl(data, rows)
    out = tmp_path / "out"
    assert main(["bench", "replay", "--dataset", str(data), "--answer", "json:answer",
                 "--rated", "0.5", "--requests", "120", "--seed", "3", "--golden", "8",
                 "--out", str(out)]) == 0
    report = check_report(out, 120)
    assert report["oracle"] == 100.0
    assert report["golden"] == 8
    assert report["golden_calls"] == 8 * 5  # each of the five providers asked each prompt once
    served = report["mean_providers_called"]
    assert report["provider_calls_per_request"] == pytest.approx(served + 40 / 120, abs=2e-3)  # type: ignore[operator]
    golden = load_suite(out / "golden" / "bench-golden.toml")
    assert golden.golden and [render(p) for p in golden.probes] == [list(i.messages) for i in picked]
    assert "golden provider calls" in capsys.readouterr().out


def test_bench_replay_golden_refuses_sets_without_gold(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "text.jsonl"
    write_replay(data, 10)
    rows = [dict(json.loads(line), gold=None) for line in data.read_text().splitlines()]
    jsonl(data, rows)
    assert main(["bench", "replay", "--dataset", str(data), "--golden", "4",
                 "--out", str(tmp_path / "out")]) == 2
    assert "gold null" in capsys.readouterr().err
