"""``service.event_loop``: uvloop by default, asyncio on request or where uvloop is missing."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from alchemist.daemon.cli import main
from alchemist.daemon.config import ConfigError, parse_config
from alchemist.daemon.runtime.launch import loop_factory, loop_name, run_on
from alchemist.daemon.runtime.reload import restart_keys


async def _which() -> str:
    await asyncio.sleep(0)
    return loop_name()


def test_uvloop_is_the_default_and_runs() -> None:
    cfg = parse_config({})
    assert cfg.service.event_loop == "uvloop"
    assert run_on(_which(), loop_factory("uvloop")) == "uvloop"
    assert run_on(_which(), loop_factory("asyncio")) == "asyncio"


def test_without_uvloop_the_daemon_runs_on_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    assert loop_factory("uvloop") is None
    assert run_on(_which(), loop_factory("uvloop")) == "asyncio"


def test_a_bad_event_loop_is_refused_with_the_key_and_choices(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"service\.event_loop must be one of 'asyncio', "
                                          r"'uvloop'; got 'tokio'"):
        parse_config({"service": {"event_loop": "tokio"}})
    path = tmp_path / "alchemist.toml"
    path.write_text('[service]\nevent_loop = "trio"\n')
    assert main(["run", "-c", str(path)]) == 2  # refused before any loop starts
    err = capsys.readouterr().err
    assert "service.event_loop" in err and "'trio'" in err
    with pytest.raises(ValueError, match="event_loop"):
        loop_factory("trio")


def test_the_event_loop_changes_only_at_a_restart() -> None:
    running = parse_config({})
    new = parse_config({"service": {"event_loop": "asyncio"}})
    assert restart_keys(running, new) == ["service.event_loop"]
