"""benchmarks/gate_power.py: the oracle bound on how soon any sound gate can promote."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import BENCH_DIR

ROOT = Path(__file__).resolve().parents[1]


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gate_power", ROOT / "benchmarks" / "gate_power.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_oracle_bound_on_recorded_cruxeval(tmp_path: Path) -> None:
    data = BENCH_DIR / "cruxeval.jsonl.gz"
    if not data.exists():
        pytest.skip(f"no recorded replay set at {data} (set ALCHEMIST_BENCH_DIR to run this)")
    out = tmp_path / "power.json"
    assert _module().main(["--dataset", str(data), "--answer",
                           "json:answer", "--draws", "20", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    # the reference numbers of ../shared/bench/README.md: the best model alone, 75.88
    assert report["prompts"] == 800 and report["accuracy"]["best provider"] == 75.88
    best = report["challengers"]["best provider"]
    assert 0.05 < best["gain"] < 0.06 and 0.1 < best["discordant"] < 0.15
    for row in best["power"]:
        # validity under continuous monitoring costs power: never more passes than one look
        assert row["always_valid"] <= row["fixed_z"]
    last = best["power"][-1]
    assert (last["n"], last["fixed_z"], last["narrow"]) == (800, 1.0, 0.0)
    assert last["lenient"] >= last["always_valid"] >= last["narrow"]
    assert best["power"][0]["fixed_z"] < 0.5  # 100 labelled prompts rarely show a 5.5-point gain
