"""The deployments file (CHATTER_DEPLOYMENTS) is checked as a process starts: a bad one stops it with a message
naming the setting, the file and every problem, and never the value of a key (the engine's DeploymentsInvalid names
the file and the problems; the app's start names the setting)."""
import json
import sys

import pytest

from engine.routing import DeploymentsInvalid, deployments_load
from tests import launcher
from tests.fixtures_server import ROOT, server_env

GOOD = {"cooldown_s": 10, "models": {
    "gpt-4o": {"deployments": [
        {"name": "east", "base_url": "https://east.example/v1/", "api_key_env": "EAST_KEY", "weight": 3, "rpm": 60,
         "tpm": 10000, "timeout_s": 20},
        {"base_url": "http://127.0.0.1:8080/v1", "model": "smollm2"}],
        "fallbacks": ["claude"]},
    "claude": {"deployments": [{"provider": "anthropic", "base_url": "https://api.anthropic.com",
                                "api_key_env": "CLAUDE_KEY", "model": "claude-3-5-haiku-latest"}]},
}}
ENV = {"EAST_KEY": "sk-east-secret", "CLAUDE_KEY": "sk-claude-secret"}


def write(tmp_path, data, name="deployments.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_a_good_file_gives_each_model_its_deployments_and_fallbacks(tmp_path):
    table = deployments_load(write(tmp_path, GOOD), environ=ENV)

    route = table.routes["gpt-4o"]
    east, local = route.deployments
    assert (route.provider, route.fallbacks, table.cooldown_s) == ("openai", ("claude",), 10)
    assert (east.label, east.base_url, east.weight, east.rpm, east.tpm, east.timeout_s, east.model) == (
        "gpt-4o/east", "https://east.example/v1", 3, 60, 10000, 20, "gpt-4o")
    assert (local.label, local.api_key, local.model, local.weight) == ("gpt-4o/2", None, "smollm2", 1)
    assert east.api_key == "sk-east-secret" and "sk-east-secret" not in repr(east)
    assert table.routes["claude"].provider == "anthropic"


def test_yaml_is_read_as_well(tmp_path):
    text = "models:\n  gpt-4o-mini:\n    deployments:\n      - base_url: http://127.0.0.1:9/v1\n        weight: 2\n"

    table = deployments_load(write(tmp_path, text, "deployments.yaml"), environ={})

    assert table.routes["gpt-4o-mini"].deployments[0].weight == 2


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["models"]["gpt-4o"]["deployments"][0].update(weight=0),
     "models.gpt-4o.deployments.0.weight: Input should be greater than 0"),
    (lambda d: d["models"]["gpt-4o"]["deployments"][0].update(region="eu"),
     "models.gpt-4o.deployments.0.region: Extra inputs are not permitted"),
    (lambda d: d["models"]["gpt-4o"]["deployments"][0].update(base_url="east.example"),
     "models.gpt-4o.deployments.0.base_url: must be an http:// or https:// URL"),
    (lambda d: d["models"]["gpt-4o"].update(fallbacks=["gpt-5"]),
     "models.gpt-4o.fallbacks.0: 'gpt-5' must be another model of this file"),
    (lambda d: d["models"]["gpt-4o"]["deployments"][1].update(name="east"),
     "models.gpt-4o.deployments.1.name: 'east' is used twice"),
    (lambda d: d["models"]["claude"]["deployments"][0].pop("api_key_env"),
     "an anthropic deployment needs api_key_env"),
    (lambda d: d["models"]["gpt-4o"].update(deployments=[]), "models.gpt-4o.deployments: List should have at least 1"),
    (lambda d: d.update(cooldown_s=-1), "cooldown_s: Input should be greater than 0"),
], ids=["zero weight", "unknown key", "not a URL", "unknown fallback", "a name twice", "anthropic without a key",
        "no deployments", "negative cooldown"])
def test_a_bad_file_is_refused_naming_the_setting_the_file_and_the_problem(tmp_path, change, expected):
    data = json.loads(json.dumps(GOOD))
    change(data)
    path = write(tmp_path, data)

    with pytest.raises(DeploymentsInvalid) as refused:
        deployments_load(path, environ=ENV)

    assert str(refused.value).startswith(f"deployments file {path}: ") and expected in str(refused.value)


def test_a_key_variable_that_is_not_set_is_named_and_no_key_is_shown(tmp_path):
    with pytest.raises(DeploymentsInvalid) as refused:
        deployments_load(write(tmp_path, GOOD), environ={"EAST_KEY": "sk-east-secret"})

    assert "the environment variable CLAUDE_KEY is not set" in str(refused.value)
    assert "sk-east-secret" not in str(refused.value)


@pytest.mark.parametrize("name, text, expected", [
    ("deployments.json", "{not json", "not valid JSON"), ("deployments.yaml", "models: [a\n", "not valid YAML"),
    ("deployments.json", None, "the file cannot be read")], ids=["malformed JSON", "malformed YAML", "missing"])
def test_an_unreadable_file_is_refused(tmp_path, name, text, expected):
    path = write(tmp_path, text, name) if text is not None else str(tmp_path / name)

    with pytest.raises(DeploymentsInvalid) as refused:
        deployments_load(path, environ={})

    assert expected in str(refused.value)


def test_a_process_does_not_start_with_a_bad_file(tmp_path):
    data = json.loads(json.dumps(GOOD))
    data["models"]["gpt-4o"]["deployments"][0]["weight"] = -2
    env = server_env(tmp_path, CHATTER_DEPLOYMENTS=write(tmp_path, data), **ENV)

    done = launcher.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, timeout=120)

    assert done.returncode != 0
    assert f"CHATTER_DEPLOYMENTS ({env['CHATTER_DEPLOYMENTS']}): models.gpt-4o.deployments.0.weight" in done.stderr
    assert "sk-east-secret" not in done.stderr + done.stdout
