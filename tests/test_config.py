"""Config validation: bad files are refused at start-up with the key's path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from alchemist.daemon.cli import main
from alchemist.daemon.config import ConfigError, load_config, parse_config

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
    ({"providers": [PROVIDER], "recipes": {"default": {"templates": "plain"}}},
     "recipes.default.templates must be a table"),
    ({"providers": [PROVIDER], "recipes": {"default": {"templates": {"math": "plain"}}}},
     "recipes.default.templates.math must be a table"),
    ({"providers": [PROVIDER], "recipes": {"default": {"templates": {"*": {"a": "plain"}}}}},
     "recipes.default.templates.*: templates belong to a probe suite's skill and no suite has skill '*'"),
    ({"providers": [PROVIDER], "recipes": {"default": {"templates": {"Math": {"a": "plain"}}}}},
     "recipes.default.templates.Math: a skill must be lowercase letters"),
    ({"providers": [PROVIDER], "recipes": {"default": {"templates": {"math": {"zz": "plain"}}}}},
     "recipes.default.templates.math.zz names no configured provider"),
    ({"providers": [PROVIDER], "recipes": {"default": {"templates": {"math": {"a": 3}}}}},
     "recipes.default.templates.math.a must be a string, got 3"),
    ({"providers": [PROVIDER], "recipes": {"default": {"templates": {"math": {"a": "Step by step"}}}}},
     "recipes.default.templates.math.a must be a template name (lowercase letters, digits"),
    ({"providers": [PROVIDER], "recipes": {"default": {"templates": {"math": {"a": ""}}}}},
     "recipes.default.templates.math.a must be a template name"),
    ({"evolver": {"population": 2}}, "evolver.population must be between 4"),
    ({"probes": {"sample": 0}}, "probes.sample must be between 1"),
    ({"probes": {"template_explore": 1.5}}, "probes.template_explore must be between 0.0 and 1.0"),
    ({"probes": {"template_explore": -0.1}}, "probes.template_explore must be between 0.0 and 1.0"),
    ({"probes": {"template_explore": "some"}}, "probes.template_explore must be a number"),
    ({"providers": [PROVIDER], "recipes": {"default": {"templates": {"math": {"a": "plain"}}}}},
     "recipes.default.templates: templates need an answer extraction other than text"),
    ({"probes": {"apply_templates": "always"}},
     "probes.apply_templates must be one of hinted, routed, never; got 'always'"),
    ({"probes": {"apply_templates": True}}, "probes.apply_templates must be a string, got a boolean"),
    ({"metrics": {"port": 70000}}, "metrics.port must be between 0"),
])
def test_bad_values_name_their_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert message in str(info.value)


def test_recipe_templates_and_probe_template_keys() -> None:
    cfg = parse_config({})
    assert cfg.recipes["default"].templates == {}
    assert (cfg.probes.template_explore, cfg.probes.apply_templates) == (0.25, "hinted")
    b = {**PROVIDER, "name": "b"}
    cfg = parse_config({
        "providers": [PROVIDER, b],
        "recipes": {"default": {"answer": "number",
                                "templates": {"math": {"a": "reasoning", "b": "plain"},
                                              "code-2.x": {"b": "json_v2.1"}}}},
        "probes": {"template_explore": 0, "apply_templates": "routed"},
    })
    assert cfg.recipes["default"].templates == {"math": {"a": "reasoning", "b": "plain"},
                                                "code-2.x": {"b": "json_v2.1"}}
    assert (cfg.probes.template_explore, cfg.probes.apply_templates) == (0.0, "routed")
    for mode in ("hinted", "never"):
        assert parse_config({"probes": {"apply_templates": mode}}).probes.apply_templates == mode
    assert parse_config({"probes": {"template_explore": 1}}).probes.template_explore == 1.0


def test_recipe_templates_in_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "alchemist.toml"
    path.write_text('''
[[providers]]
name = "a"
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
model = "m"

[recipes.default]
answer = "number"

[recipes.default.templates.math]
a = "reasoning"

[probes]
apply_templates = "never"
''')
    cfg = load_config(path)
    assert cfg.recipes["default"].templates == {"math": {"a": "reasoning"}}
    assert cfg.probes.apply_templates == "never"
    path.write_text(path.read_text().replace('a = "reasoning"', 'a = "Reasoning"'))
    with pytest.raises(ConfigError, match=r"alchemist\.toml: recipes\.default\.templates\.math\.a must be"):
        load_config(path)


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
