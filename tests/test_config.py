"""Config validation: bad files are refused at start-up with the key's path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from alchemist.adapters import ProviderOptions, ProviderSpec, Secret, resolve_spec
from alchemist.answers.recipes import DEFAULT_PARAMS
from alchemist.daemon.cli import main
from alchemist.daemon.config import (
    ConfigError,
    EvolverConfig,
    ServiceConfig,
    default_document,
    load_config,
    parse_config,
)
from alchemist.optimizers.policy import PolicyParams

PROVIDER = {"name": "a", "kind": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m"}


def test_defaults_are_embedded_and_valid() -> None:
    cfg = parse_config({})
    assert cfg.nats.embedded and cfg.service.subject_prefix == "alchemist"
    assert "default" in cfg.recipes and cfg.recipes["default"].strategy == "vote"


@pytest.mark.parametrize(("raw", "message"), [
    ({"nats": {"ulr": "x"}}, "unknown field 'ulr' in nats; accepted fields: url, port,"),
    ({"service": {"max_concurrency": "ten"}}, "service.max_concurrency must be an integer"),
    ({"service": {"max_concurrency": 0}},
     "service.max_concurrency must be an integer between 1 and 100000, got 0"),
    ({"service": {"subject_prefix": "a b"}}, "service: subject_prefix must be a NATS subject"),
    ({"nats": {"url": "http://x"}}, 'nats: url must be "embedded" or a nats://'),
    ({"providers": [{"name": "a"}]}, "providers[0].kind is required"),
    ({"providers": [{**PROVIDER, "kind": "nope"}]},
     "providers[0].kind must be one of alchemist, anthropic, gemini, ollama, openai"),
    ({"providers": [PROVIDER, PROVIDER]}, "the name 'a' is used twice"),
    ({"providers": [{**PROVIDER, "base_url": "ftp://x"}]}, "providers[0].base_url must start"),
    ({"providers": [{**PROVIDER, "timeout_s": True}]}, "providers[0].timeout_s must be a number"),
    ({"providers": [{**PROVIDER, "api_key_env": "A", "api_key_file": "/f"}]}, "at most one"),
    ({"providers": [{**PROVIDER, "colour": "red"}]},
     "unknown field 'colour' in providers[0]; accepted fields: name, kind,"),
    ({"providers": [PROVIDER], "recipes": {"default": {"weights": {"*": {"zz": 1}}}}},
     "recipes.default.weights.*.zz names no configured provider"),
    ({"providers": [PROVIDER], "recipes": {"default": {"weights": {"*": {"a": 2}}}}},
     "recipes.default.weights.*.a must be a number between 0 and 1, got 2"),
    ({"recipes": {"default": {"strategy": "magic"}}},
     "recipes.default.strategy must be one of 'select', 'vote'; got 'magic'"),
    ({"providers": [PROVIDER], "recipes": {"default": {"weights": {"math": 1}}}},
     "recipes.default.weights.math must be a map, got 1"),
    ({"providers": [PROVIDER], "recipes": {"default": {"weights": [1]}}},
     "recipes.default.weights must be a map {skill: {provider: weight from 0 to 1}}, got a list"),
    ({"recipes": {"default": {"answer": {"kind": "json"}}}}, "recipes.default.answer"),
    ({"recipes": {"default": {"params": {"explore": 0.9}}}}, "recipes.default.params.explore"),
    ({"providers": [PROVIDER], "recipes": {"default": {"templates": "plain"}}},
     "recipes.default.templates must be a map {skill: {provider: template name}}, got 'plain'"),
    ({"providers": [PROVIDER], "recipes": {"default": {"templates": {"math": "plain"}}}},
     "recipes.default.templates.math must be a map {provider: template name}, got 'plain'"),
    ({"providers": [PROVIDER], "recipes": {"default": {"templates": {"*": {"a": "plain"}}}}},
     "recipes.default.templates.*: templates belong to a probe suite's skill and no suite has skill '*'"),
    ({"providers": [PROVIDER], "recipes": {"default": {"templates": {"Math": {"a": "plain"}}}}},
     "recipes.default.templates has a key 'Math' that is not a probe suite's skill name (lowercase "
     "letters, digits, '_', '-' or '.'; not the fallback '*')"),
    ({"providers": [PROVIDER], "recipes": {"default": {"templates": {"math": {"zz": "plain"}}}}},
     "recipes.default.templates.math.zz names no configured provider"),
    ({"providers": [PROVIDER], "recipes": {"default": {"templates": {"math": {"a": 3}}}}},
     "recipes.default.templates.math.a must be a template name (lowercase letters, digits, '_', "
     "'-' or '.'), got 3"),
    ({"providers": [PROVIDER], "recipes": {"default": {"templates": {"math": {"a": "Step by step"}}}}},
     "recipes.default.templates.math.a must be a template name (lowercase letters, digits"),
    ({"providers": [PROVIDER], "recipes": {"default": {"templates": {"math": {"a": ""}}}}},
     "recipes.default.templates.math.a must be a template name"),
    ({"evolver": {"population": 2}}, "evolver.population must be an integer between 4 and 4096, got 2"),
    ({"probes": {"sample": 0}}, "probes.sample must be an integer between 1 and 10000, got 0"),
    ({"probes": {"template_explore": 1.5}},
     "probes.template_explore must be a number between 0 and 1, got 1.5"),
    ({"probes": {"template_explore": -0.1}},
     "probes.template_explore must be a number between 0 and 1, got -0.1"),
    ({"probes": {"template_explore": "some"}}, "probes.template_explore must be a number"),
    ({"providers": [PROVIDER], "recipes": {"default": {"templates": {"math": {"a": "plain"}}}}},
     "recipes.default.templates: templates need an answer extraction other than text"),
    ({"probes": {"apply_templates": "always"}},
     "probes.apply_templates must be one of 'hinted', 'never', 'routed'; got 'always'"),
    ({"probes": {"apply_templates": True}},
     "probes.apply_templates must be one of 'hinted', 'never', 'routed'; got true"),
    ({"metrics": {"port": 70000}}, "metrics.port must be an integer between 0 and 65535, got 70000"),
    ({"bogus": {}}, "unknown field 'bogus'; accepted fields: nats, service, state,"),
    ({"nats": 3}, "nats must be a map, got 3"),
    ({"nats": {"tls_cert": "/c"}}, "nats: tls_cert and tls_key must be given together"),
    ({"service": {"default_deadline_ms": 200_000}},
     "service: default_deadline_ms must not exceed max_deadline_ms"),
    ({"service": {"log_level": "loud"}}, "service.log_level must be one of"),
    ({"state": {"dir": 3}}, "state.dir must be a string, got 3"),
    ({"providers": {"name": "a"}}, "providers must be a list"),
    ({"providers": [{**PROVIDER, "timeout_s": "10"}]},
     "providers[0].timeout_s must be a number between 0.01 and 3600, got '10'"),
    ({"providers": [{**PROVIDER, "max_retries": 11}]},
     "providers[0].max_retries must be an integer between 0 and 10, got 11"),
    ({"providers": [{**PROVIDER, "rate_per_s": 0}]}, "providers[0].rate_per_s must be a number >= 0.001"),
    ({"providers": [{**PROVIDER, "name": "*"}]}, "providers[0].name must be 1-64 letters"),
    ({"providers": [{**PROVIDER, "api_key_env": ""}]}, "providers[0].api_key_env must not be empty"),
    ({"providers": [{**PROVIDER, "kind": "alchemist"}]},
     "providers[0].base_url must start with nats:// or tls:// for kind 'alchemist'"),
    ({"recipes": {"bad name": {}}}, "recipes.bad name: a recipe name must be 1-64 letters"),
    ({"recipes": {"default": {"colour": 1}}}, "unknown field 'colour' in recipes.default; accepted fields: "
     "strategy, answer, weights, params, templates"),
    ({"recipes": {"default": {"params": {"min_weight": 1.5}}}},
     "recipes.default.params.min_weight must be a number between 0 and 1, got 1.5"),
    ({"recipes": {"default": {"params": {"tilt": 1}}}}, "unknown field 'tilt' in recipes.default.params"),
    ({"recipes": {"default": {"answer": 3}}}, "recipes.default.answer must be a string or a map, got 3"),
    ({"providers": [PROVIDER], "recipes": {"default": {"weights": {"*": {"a": "x"}}}}},
     "recipes.default.weights.*.a must be a number between 0 and 1, got 'x'"),
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


def test_the_file_name_prefixes_every_message(tmp_path: Path) -> None:
    path = tmp_path / "alchemist.toml"
    path.write_text('[[providers]]\nname = "a"\nkind = "openai"\nbase_url = "http://x/v1"\nmodel = "m"\n'
                    '[[providers]]\nname = "b"\nkind = "openai"\nbase_url = "http://x/v1"\nmodel = "m"\n'
                    'timeout_s = "10"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"{path}: providers[1].timeout_s must be a number "
                               "between 0.01 and 3600, got '10'")


def test_a_key_written_in_the_file_is_refused_and_never_shown(tmp_path: Path) -> None:
    path = tmp_path / "alchemist.toml"
    path.write_text('[[providers]]\nname = "a"\nkind = "openai"\nbase_url = "http://x/v1"\n'
                    'model = "m"\napi_key = "sk-live-0123456789"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: unknown field 'api_key' in providers[0]; accepted fields:")
    assert "api_key_env" in message and "sk-live" not in message


def test_a_provider_entry_becomes_the_adapters_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALCH_TEST_KEY", "sk-live-0123456789")
    cfg = parse_config({"providers": [{**PROVIDER, "api_key_env": "ALCH_TEST_KEY", "timeout_s": 7,
                                       "rate_per_s": 2.5, "price_input": 1, "logprobs": True}]})
    options = cfg.provider("a")
    assert isinstance(options, ProviderOptions) and options.timeout_s == 7.0
    spec = resolve_spec(options)
    assert isinstance(spec, ProviderSpec) and spec.api_key == Secret("sk-live-0123456789")
    assert all(getattr(spec, f) == getattr(options, f) for f in ProviderOptions.__struct_fields__)
    assert spec.cost(1_000_000, 0) == 1.0
    assert "sk-live" not in repr(spec) and "sk-live" not in repr(cfg)
    keyless = resolve_spec(parse_config({"providers": [PROVIDER]}).providers[0])
    assert keyless.api_key is None
    assert keyless.timeout_s == ProviderOptions(name="x", kind="openai", base_url="", model="m").timeout_s


def test_nats_credentials_never_show_in_a_repr() -> None:
    cfg = parse_config({"nats": {"url": "nats://h:4222", "password": "hunter2-pw", "token": "tok-123"}})
    assert "hunter2" not in repr(cfg) and "tok-123" not in repr(cfg.nats)


def test_the_default_document_holds_the_structs_defaults() -> None:
    doc = default_document()
    assert doc["recipes"]["default"]["params"]["min_weight"] == DEFAULT_PARAMS.min_weight
    assert doc["service"]["max_concurrency"] == ServiceConfig().max_concurrency
    assert doc["evolver"]["population"] == EvolverConfig().population
    cfg = parse_config(doc)
    assert cfg.recipes["default"].min_weight == DEFAULT_PARAMS.min_weight
    assert cfg.recipes["default"].initial(["local-a", "openai"]).explore == 0.05
    assert parse_config({}).recipes["default"].params == DEFAULT_PARAMS


def test_the_evolver_defaults_are_the_optimizers_and_cost_no_numpy() -> None:
    policy = PolicyParams()
    evolver = EvolverConfig()
    assert (evolver.population, evolver.generations, evolver.min_ratings, evolver.holdout_share,
            evolver.margin, evolver.z) == (policy.population, policy.generations,
                                           policy.min_records, policy.holdout_share, policy.margin,
                                           policy.z)
    assert (evolver.noise, evolver.cost_weight, evolver.shrink_k) == (
        policy.fitness.noise, policy.fitness.cost_weight, policy.fitness.shrink_k)
    # reading the config (every CLI command does) must not load the optimizers' numpy
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, alchemist.daemon.config; "
                               "print(sorted({'numpy', 'pygad'} & set(sys.modules)))"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
