"""Config validation: bad files are refused at start-up with the key's path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon.cli import main
from daemon.config import ConfigError, load_config, parse_config

PROVIDER = {"name": "a", "kind": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m"}


def test_defaults_are_embedded_and_valid() -> None:
    cfg = parse_config({})
    assert cfg.nats.embedded and cfg.service.subject_prefix == "alchemist"
    assert "default" in cfg.recipes and cfg.recipes["default"].strategy == "vote"


@pytest.mark.parametrize(("raw", "message"), [
    ({"nats": {"ulr": "x"}}, "unknown key nats.ulr"),
    ({"service": {"max_concurrency": "ten"}}, "service.max_concurrency must be an integer"),
    ({"service": {"max_concurrency": 0}}, "service.max_concurrency must be between 1"),
    ({"service": {"subject_prefix": "a b"}}, "service.subject_prefix must be a NATS subject"),
    ({"nats": {"url": "http://x"}}, 'nats.url must be "embedded" or a nats://'),
    ({"providers": [{"name": "a"}]}, "providers[0] is missing the required key 'kind'"),
    ({"providers": [{**PROVIDER, "kind": "nope"}]},
     "providers[0].kind must be one of alchemist, anthropic, gemini, ollama, openai"),
    ({"providers": [PROVIDER, PROVIDER]}, "the name 'a' is used twice"),
    ({"providers": [{**PROVIDER, "base_url": "ftp://x"}]}, "providers[0].base_url must start"),
    ({"providers": [{**PROVIDER, "timeout_s": True}]}, "providers[0].timeout_s must be a number"),
    ({"providers": [{**PROVIDER, "api_key_env": "A", "api_key_file": "/f"}]}, "at most one"),
    ({"providers": [{**PROVIDER, "colour": "red"}]}, "unknown key providers[0].colour"),
    ({"providers": [PROVIDER], "recipes": {"default": {"weights": {"*": {"zz": 1}}}}},
     "recipes.default.weights.*.zz names no configured provider"),
    ({"providers": [PROVIDER], "recipes": {"default": {"weights": {"*": {"a": 2}}}}},
     "recipes.default.weights.*.a must be between 0.0 and 1.0"),
    ({"recipes": {"default": {"strategy": "magic"}}}, "recipes.default.strategy must be one of"),
    ({"recipes": {"default": {"answer": {"kind": "json"}}}}, "recipes.default.answer"),
    ({"recipes": {"default": {"params": {"explore": 0.9}}}}, "recipes.default.params.explore"),
    ({"evolver": {"population": 2}}, "evolver.population must be between 4"),
    ({"probes": {"sample": 0}}, "probes.sample must be between 1"),
    ({"metrics": {"port": 70000}}, "metrics.port must be between 0"),
])
def test_bad_values_name_their_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert message in str(info.value)


def test_config_init_writes_a_loadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "alchemist.toml"
    assert main(["config", "init", str(path)]) == 0
    cfg = load_config(path)
    assert [p.name for p in cfg.providers] == ["local-a", "openai"]
    assert main(["config", "init", str(path)]) == 2  # refuses to overwrite
    assert "--force" in capsys.readouterr().err


def test_bad_toml_and_missing_file_are_one_line_errors(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[nats\nurl=")
    assert main(["run", "-c", str(bad)]) == 2
    assert "is not valid TOML" in capsys.readouterr().err
    assert main(["run", "-c", str(tmp_path / "missing.toml")]) == 2
    assert "alchemist config init" in capsys.readouterr().err


def test_the_shipped_example_config_loads() -> None:
    path = Path(__file__).resolve().parents[1] / "systemd" / "alchemist.toml.example"
    cfg = load_config(path)
    assert [p.name for p in cfg.providers] == ["openai", "local-llama"]
    assert cfg.providers[0].api_key_credential == "openai"
