"""matplotlib is an optional extra: nothing loads it at import, and a run without it still works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from alchemist.daemon.cli import main
from alchemist.daemon.sim.report import PLOT_EXTRA_HINT, write_plot
from tests.scenarios import write_replay

HINT = f"curve.png not written: {PLOT_EXTRA_HINT}"


def test_the_daemon_and_the_cli_import_without_matplotlib() -> None:
    code = ("import sys\n"
            "import alchemist.daemon.cli, alchemist.daemon.runtime.app\n"
            "import alchemist.daemon.sim.cli, alchemist.daemon.sim.report\n"
            "print(sorted(m for m in sys.modules if m.partition('.')[0] == 'matplotlib'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """Imports of matplotlib fail as if the plot extra were not installed (a None entry in
    sys.modules makes ``import`` raise ModuleNotFoundError); undone after the test."""
    for name in [m for m in sys.modules if m.partition(".")[0] == "matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends",
                 "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.usefixtures("no_matplotlib")
def test_write_plot_without_matplotlib_says_so_in_one_line(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "curve.png"
    assert write_plot({"curve": {"x": [1], "served": [1.0], "best_single": [1.0]}}, png, "t") is False
    assert not png.exists()
    assert capsys.readouterr().err == HINT + "\n"


@pytest.mark.usefixtures("no_matplotlib")
def test_bench_replay_runs_without_matplotlib(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "fleet.jsonl"
    write_replay(data, 40)
    out = tmp_path / "out"
    assert main(["bench", "replay", "--dataset", str(data), "--answer", "json:answer",
                 "--requests", "60", "--seed", "2", "--out", str(out)]) == 0
    assert (out / "report.json").exists() and not (out / "curve.png").exists()
    printed = capsys.readouterr()
    assert HINT in printed.err.splitlines()
    assert "served score, last half" in printed.out
    assert "plot:" not in printed.out
