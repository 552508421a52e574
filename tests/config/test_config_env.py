"""EDGE_AGENT__SECTION__KEY environment overrides: precedence, parsing, and errors naming them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config import load_config
from agent.config.sections import NpuRuntime

Write = Callable[..., Path]
Errors = Callable[..., dict[str, tuple[str, object]]]

PLUGINS = (
    '[[plugins]]\nname = "smart_home"\nrate_hz = 10\n'
    '[[plugins]]\nname = "energy"\nrate_hz = 50\n[plugins.params]\nwindow = 64\n'
)


def test_environment_wins_over_file(write_toml: Write) -> None:
    path = write_toml('[mqtt]\nhost = "from-file"\nport = 1883\n[device]\nid = "file-id"\n')
    env = {
        "EDGE_AGENT__MQTT__HOST": "from-env",
        "EDGE_AGENT__MQTT__PORT": "1884",
        "EDGE_AGENT__DEVICE__ID": "env-id",
    }
    cfg = load_config(path, env=env)
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.device.id) == ("from-env", 1884, "env-id")


def test_os_environ_is_the_default(write_toml: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT__MQTT__KEEPALIVE", "45")
    assert load_config(write_toml(""), env=None).mqtt.keepalive == 45


def test_values_parse_as_toml(write_toml: Write) -> None:
    env = {
        "EDGE_AGENT__MQTT__ENABLED": "false",
        "EDGE_AGENT__MQTT__RECONNECT_MAX_S": "12.5",
        "EDGE_AGENT__MQTT__COMMANDS": '["status", "stats"]',
        "EDGE_AGENT__RUNTIME__ACCELERATOR": "npu",
        "EDGE_AGENT__RUNTIME__ONNX_PROVIDERS": "['CUDAExecutionProvider']",
    }
    cfg = load_config(write_toml(""), env=env)
    assert cfg.mqtt.enabled is False and cfg.mqtt.reconnect_max_s == 12.5
    assert cfg.mqtt.commands == ["status", "stats"]
    assert isinstance(cfg.runtime, NpuRuntime)
    assert cfg.runtime.onnx_providers == ["CUDAExecutionProvider"]


def test_text_keys_keep_the_raw_string(write_toml: Write) -> None:
    env = {
        "EDGE_AGENT__DEVICE__ID": "42",
        "EDGE_AGENT__MQTT__PROTOCOL": "5",
        "EDGE_AGENT__DEVICE__NAME": "2024-01-01",
    }
    cfg = load_config(write_toml(""), env=env)
    assert (cfg.device.id, cfg.mqtt.protocol, cfg.device.name) == ("42", "5", "2024-01-01")


def test_names_match_without_case(write_toml: Write) -> None:
    cfg = load_config(
        write_toml(""),
        env={"edge_agent__Mqtt__host": "ignored-prefix-case", "EDGE_AGENT__mqtt__Host": "h"},
    )
    assert cfg.mqtt.host == "h"  # the prefix itself is exact: upper case only


def test_plugin_by_name_and_by_index(write_toml: Write) -> None:
    env = {
        "EDGE_AGENT__PLUGINS__energy__RATE_HZ": "25",
        "EDGE_AGENT__PLUGINS__0__ENABLED": "false",
        "EDGE_AGENT__PLUGINS__ENERGY__PARAMS__window": "128",
        "EDGE_AGENT__PLUGINS__energy__PARAMS__newKey": "x",
    }
    cfg = load_config(write_toml(PLUGINS), env=env)
    smart_home, energy = cfg.plugins
    assert smart_home.enabled is False and smart_home.rate_hz == 10
    assert energy.rate_hz == 25
    assert energy.params == {"window": 128, "newKey": "x"}


def test_whole_tables_and_their_keys(write_toml: Write, tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("ca")
    env = {
        "EDGE_AGENT__MQTT__TLS": f'{{ca_file = "{tmp_path / "ca.pem"}"}}',
        "EDGE_AGENT__MQTT__TLS__VERIFY": "false",
    }
    tls = load_config(write_toml(""), env=env).mqtt.tls
    assert tls is not None and tls.ca_file == tmp_path / "ca.pem" and tls.verify is False


def test_relative_env_paths_resolve_against_the_current_directory(
    write_toml: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_toml('state_dir = "state"\n')
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cfg = load_config(path, env={"EDGE_AGENT__MODELS_DIR": "my-models"})
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.models_dir == work / "my-models"


def test_other_variables_are_ignored(write_toml: Write) -> None:
    env = {"EDGE_AGENT_MQTT_HOST": "x", "MQTT__HOST": "y", "PATH": "/bin"}
    assert load_config(write_toml(""), env=env).mqtt.host == "127.0.0.1"


def test_bad_value_names_the_variable(write_toml: Write, config_errors: Errors) -> None:
    errors = config_errors(write_toml(""), env={"EDGE_AGENT__MQTT__PORT": "99999"})
    message, value = errors["mqtt.port"]
    assert "EDGE_AGENT__MQTT__PORT" in message and value == 99999


def test_bad_plugin_value_names_plugin_and_variable(
    write_toml: Write, config_errors: Errors
) -> None:
    errors = config_errors(write_toml(PLUGINS), env={"EDGE_AGENT__PLUGINS__energy__RATE_HZ": "-1"})
    assert "EDGE_AGENT__PLUGINS__energy__RATE_HZ" in errors["plugins[energy].rate_hz"][0]


def test_unknown_key_from_env(write_toml: Write, config_errors: Errors) -> None:
    errors = config_errors(write_toml(""), env={"EDGE_AGENT__MQTT__HST": "x"})
    assert errors == {
        "mqtt.hst": ("unknown key (did you mean 'host'?) (set by EDGE_AGENT__MQTT__HST)", "x")
    }


def test_unknown_plugin_from_env(write_toml: Write, config_errors: Errors) -> None:
    errors = config_errors(write_toml(PLUGINS), env={"EDGE_AGENT__PLUGINS__robot__RATE_HZ": "1"})
    message, value = errors["plugins"]
    assert message.startswith("EDGE_AGENT__PLUGINS__robot__RATE_HZ: no entry named 'robot'")
    assert "smart_home, energy" in message and value == "1"


def test_plugin_index_out_of_range(write_toml: Write, config_errors: Errors) -> None:
    errors = config_errors(write_toml(PLUGINS), env={"EDGE_AGENT__PLUGINS__2__RATE_HZ": "1"})
    assert "no entry 2" in errors["plugins"][0]


def test_plugins_when_the_file_has_none(write_toml: Write, config_errors: Errors) -> None:
    errors = config_errors(write_toml(""), env={"EDGE_AGENT__PLUGINS__energy__RATE_HZ": "1"})
    assert "EDGE_AGENT__PLUGINS__energy__RATE_HZ" in errors["plugins"][0]


def test_descending_into_a_value(write_toml: Write, config_errors: Errors) -> None:
    errors = config_errors(write_toml(""), env={"EDGE_AGENT__MQTT__PORT__LOW": "1"})
    assert errors["mqtt.port"][0] == "EDGE_AGENT__MQTT__PORT__LOW: is a single value, not a table"


def test_empty_level_in_name(write_toml: Write, config_errors: Errors) -> None:
    errors = config_errors(write_toml(""), env={"EDGE_AGENT__MQTT____HOST": "x"})
    ((message, _),) = errors.values()
    assert message.startswith("EDGE_AGENT__MQTT____HOST: empty level")


def test_env_and_file_errors_are_collected_together(
    write_toml: Write, config_errors: Errors
) -> None:
    errors = config_errors(
        write_toml("[mqtt]\nport = 0\n"),
        env={"EDGE_AGENT__RUNTIME__THREADS": "many", "EDGE_AGENT__NOPE__X": "1"},
    )
    assert set(errors) == {"mqtt.port", "runtime.threads", "nope"}
    assert "EDGE_AGENT__RUNTIME__THREADS" in errors["runtime.threads"][0]
    assert "EDGE_AGENT__NOPE__X" in errors["nope"][0]


def test_a_failed_variable_leaves_nothing_behind(write_toml: Write, config_errors: Errors) -> None:
    # Without rollback, the half-built [mqtt.tls] table would add a "ca_file missing" error.
    errors = config_errors(write_toml(""), env={"EDGE_AGENT__MQTT__TLS__VERIFY__X": "1"})
    assert list(errors) == ["mqtt.tls.verify"]


def test_an_accelerator_from_env_is_blamed_for_keys_it_does_not_take(
    write_toml: Write, config_errors: Errors
) -> None:
    path = write_toml('[runtime]\naccelerator = "npu"\nnpu_delegate = "/usr/lib/libvx.so"\n')
    errors = config_errors(path, env={"EDGE_AGENT__RUNTIME__ACCELERATOR": "cpu"})
    assert errors == {
        "runtime.npu_delegate": (
            "unknown key for accelerator 'cpu' (accelerator set by "
            "EDGE_AGENT__RUNTIME__ACCELERATOR)",
            "/usr/lib/libvx.so",
        )
    }
