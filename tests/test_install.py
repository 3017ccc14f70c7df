"""Installing llm-alchemist breaks nothing else: everything lands under ``alchemist``.

The wheel is built from this checkout and installed into a fresh virtual
environment next to python-daemon (import name ``daemon``) and the transformer
``adapters`` library (import name ``adapters``); both keep their names. Needs
the package index (pip downloads setuptools for the build and the two
neighbours); CI reaches it.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

_CHECK = """
import importlib.metadata as md, importlib.util, sys
import daemon                                  # python-daemon, imported for real
assert hasattr(daemon, "DaemonContext"), daemon.__file__
spec = importlib.util.find_spec("adapters")    # the adapters library: its import needs torch, so
origin = spec.origin                           # only find it, and check whose file it is
owners = {f.locate().resolve() for f in md.files("adapters")}
from pathlib import Path
assert Path(origin).resolve() in owners, origin
import alchemist.daemon.cli, alchemist.adapters
assert "openai" in alchemist.adapters.ADAPTERS
assert alchemist.daemon.cli.__file__.startswith(sys.prefix), alchemist.daemon.cli.__file__
print("ok", daemon.__file__, origin)
"""


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                         timeout=600)
    assert out.returncode == 0, f"{args}: {out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", out, ROOT)
    (built,) = out.glob("llm_alchemist-*.whl")
    return built


def test_the_wheel_holds_one_top_level_package(wheel: Path) -> None:
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    dist_info = {t for t in tops if t.endswith((".dist-info", ".data"))}
    assert tops - dist_info == {"alchemist"}
    names = zipfile.ZipFile(wheel).namelist()
    assert "alchemist/probes/suites/arithmetic.toml" in names  # package data travels too
    for page in ("index.html", "status.css", "status.js"):  # the status page, no build step
        assert f"alchemist/daemon/http/static/{page}" in names
    assert "alchemist/daemon/serving/wire.py" in names


def test_installing_beside_python_daemon_and_adapters_breaks_neither(wheel: Path,
                                                                       tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    # ours last, so a clash would overwrite the neighbours' files
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
         "python-daemon", "adapters")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", wheel)
    # our dependencies (numpy, nats-py, ...) come from this environment's site-packages, appended
    # after the fresh one's; its .pth files are not run, so this checkout's editable install stays out
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (site / "zz_outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    out = _run(python, "-c", _CHECK, cwd=tmp_path)
    assert out.startswith("ok"), out
