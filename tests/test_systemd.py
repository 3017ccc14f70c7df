"""The shipped systemd units (one instance, and the template for several): clean
`systemd-analyze verify`, low exposure score."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "alchemist.service"
TEMPLATE = UNIT.with_name("alchemist@.service")
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def installed_unit(tmp_path: Path, unit: Path = UNIT, name: str = "alchemist.service") -> Path:
    """The unit as installed here (as ``name``): ExecStart pointing at this environment's
    `alchemist`."""
    alchemist = Path(sys.executable).parent / "alchemist"
    assert alchemist.exists(), "the project is not installed in this environment"
    text = unit.read_text().replace("/opt/llm-alchemist/bin/alchemist", str(alchemist))
    out = tmp_path / name
    out.write_text(text)
    return out


@needs_analyze
def test_unit_verifies_without_warnings(tmp_path: Path) -> None:
    unit = installed_unit(tmp_path)
    done = subprocess.run([str(ANALYZE), "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


@needs_analyze
def test_unit_exposure_is_at_most_2(tmp_path: Path) -> None:
    unit = installed_unit(tmp_path)
    done = subprocess.run([str(ANALYZE), "security", "--offline=yes", str(unit)],
                          capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout + done.stderr)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 2.0


@needs_analyze
def test_template_instance_verifies_and_keeps_the_exposure(tmp_path: Path) -> None:
    """``alchemist@b.service``: its own config and state dir, the same sandbox."""
    unit = installed_unit(tmp_path, TEMPLATE, "alchemist@b.service")
    text = unit.read_text()
    assert "-c /etc/alchemist/%i.toml" in text and "StateDirectory=alchemist/%i" in text
    done = subprocess.run([str(ANALYZE), "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr
    done = subprocess.run([str(ANALYZE), "security", "--offline=yes", str(unit)],
                          capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout + done.stderr)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 2.0
