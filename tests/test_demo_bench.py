"""The demo and the replay benchmark, run as a user runs them (the CLI, real NATS, real HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alchemist.daemon.cli import main
from tests.conftest import BENCH_DIR
from tests.scenarios import check_report, write_replay


def test_bench_replay_writes_a_well_formed_report(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "fleet.jsonl"
    write_replay(data, 120)
    out = tmp_path / "out"
    assert main(["bench", "replay", "--dataset", str(data), "--answer", "json:answer",
                 "--rated", "0.5", "--requests", "200", "--seed", "1", "--out", str(out)]) == 0
    report = check_report(out, 200)
    assert report["ratings_sent"] > 50  # type: ignore[operator]
    printed = capsys.readouterr()
    assert "served score, last half" in printed.out and "200/200" in printed.err


def test_bench_replay_on_recorded_answers(tmp_path: Path) -> None:
    data = BENCH_DIR / "gsm8k.jsonl.gz"
    if not data.exists():
        pytest.skip(f"no recorded replay set at {data} (set ALCHEMIST_BENCH_DIR to run this)")
    out = tmp_path / "out"
    assert main(["bench", "replay", "--dataset", str(data), "--answer", "number",
                 "--requests", "150", "--out", str(out)]) == 0
    report = check_report(out, 150)
    assert report["best_single"]["model"] == "gpt-4o-mini-2024-07-18"  # type: ignore[index]


def test_bench_replay_refuses_bad_arguments(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "fleet.jsonl"
    write_replay(data, 10)
    assert main(["bench", "replay", "--dataset", str(data), "--models", "nope"]) == 2
    assert "--models: nope not in" in capsys.readouterr().err
    assert main(["bench", "replay", "--dataset", str(tmp_path / "missing.jsonl")]) == 2


@pytest.mark.slow  # the demo runs for 4 s of wall time
def test_demo_runs_headless_and_serves(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--duration", "4", "--headless", "--tasks", "80"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "status page and OpenAI-compatible API at http://127.0.0.1:" in captured.err
    lines = [ln for ln in out.splitlines() if ln.startswith("[")]
    assert len(lines) >= 2, out
    counts = [int(ln.split("requests ")[1].split()[0]) for ln in lines]
    assert counts == sorted(counts) and counts[-1] > 20
    assert "served" in out.splitlines()[-1]


def test_bench_replay_runs_a_cascade(tmp_path: Path) -> None:
    data = tmp_path / "fleet.jsonl"
    write_replay(data, 60)
    args = ["bench", "replay", "--dataset", str(data), "--answer", "json:answer",
            "--requests", "60", "--seed", "2"]
    assert main([*args, "--out", str(tmp_path / "all")]) == 0
    assert main([*args, "--first-wave", "2", "--out", str(tmp_path / "waves")]) == 0
    everyone = check_report(tmp_path / "all", 60)
    waves = check_report(tmp_path / "waves", 60)
    called = waves["mean_providers_called"]
    assert isinstance(called, float) and 2.0 <= called < everyone["mean_providers_called"]  # type: ignore[operator]
