"""Loading a TOML file: defaults, relative paths, and errors that name the exact key path."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.config import AgentConfig, ConfigError, format_config, load_config
from agent.config.sections import AutoRuntime, CpuRuntime, RuntimeConfig
from agent.shipped import shipped_models_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

Write = Callable[..., Path]
Errors = Callable[..., dict[str, tuple[str, object]]]


def test_no_file_gives_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, env={})
    assert cfg.mqtt == AgentConfig().mqtt
    assert cfg.models_dir == shipped_models_dir()


def test_file_values_override_defaults(write_toml: Write) -> None:
    cfg = load_config(write_toml('[mqtt]\nhost = "broker.lan"\nport = 8883\n'), env={})
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.keepalive) == ("broker.lan", 8883, 30)


def test_relative_paths_resolve_against_the_files_folder(
    write_toml: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "ca.pem").write_text("ca")
    (tmp_path / "secrets" / "pw").write_text("pw")
    (tmp_path / "ota.pem").write_text("key")
    path = write_toml(
        'state_dir = "../state"\n'
        '[mqtt]\nusername = "u"\npassword_file = "secrets/pw"\n'
        '[mqtt.tls]\nca_file = "secrets/ca.pem"\n'
        '[ota]\ntrusted_keys = ["ota.pem", "/abs/not/checked.pem"]\n'
    )
    monkeypatch.chdir("/")
    cfg = load_config(path, env={}, check_files=False)
    assert cfg.state_dir == tmp_path.parent / "state"
    assert cfg.models_dir == shipped_models_dir()  # omitted: the package's own models
    assert cfg.mqtt.tls is not None and cfg.mqtt.tls.ca_file == tmp_path / "secrets" / "ca.pem"
    assert cfg.mqtt.password_file == tmp_path / "secrets" / "pw"
    assert cfg.ota.trusted_keys == [tmp_path / "ota.pem", Path("/abs/not/checked.pem")]


def test_unknown_top_level_key(write_toml: Write, config_errors: Errors) -> None:
    errors = config_errors(write_toml('colour = "blue"\n'))
    assert errors == {"colour": ("unknown key", "blue")}


def test_unknown_nested_key_suggests_the_near_one(write_toml: Write, config_errors: Errors) -> None:
    errors = config_errors(write_toml('[mqtt]\nhst = "broker"\n'))
    assert errors == {"mqtt.hst": ("unknown key (did you mean 'host'?)", "broker")}


def test_wrong_type(write_toml: Write, config_errors: Errors) -> None:
    errors = config_errors(write_toml('[mqtt]\nport = "eighty"\n'))
    message, value = errors["mqtt.port"]
    assert "integer" in message and value == "eighty"


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_port_out_of_range(write_toml: Write, config_errors: Errors, port: int) -> None:
    errors = config_errors(write_toml(f"[mqtt]\nport = {port}\n"))
    assert list(errors) == ["mqtt.port"]
    message, value = errors["mqtt.port"]
    assert "than or equal to" in message and value == port


def test_missing_password_file(write_toml: Write, config_errors: Errors, tmp_path: Path) -> None:
    errors = config_errors(write_toml('[mqtt]\nusername = "u"\npassword_file = "nope.txt"\n'))
    assert errors == {"mqtt.password_file": ("file not found", str(tmp_path / "nope.txt"))}


def test_missing_tls_ca_file(write_toml: Write, config_errors: Errors, tmp_path: Path) -> None:
    errors = config_errors(write_toml('[mqtt.tls]\nca_file = "certs/ca.pem"\n'))
    assert errors == {"mqtt.tls.ca_file": ("file not found", str(tmp_path / "certs" / "ca.pem"))}


def test_missing_trusted_key_names_its_index(
    write_toml: Write, config_errors: Errors, tmp_path: Path
) -> None:
    (tmp_path / "a.pem").write_text("key")
    errors = config_errors(write_toml('[ota]\ntrusted_keys = ["a.pem", "b.pem"]\n'))
    assert errors == {"ota.trusted_keys[1]": ("file not found", str(tmp_path / "b.pem"))}


def test_a_folder_is_not_a_file(write_toml: Write, config_errors: Errors, tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    errors = config_errors(write_toml('[mqtt.tls]\nca_file = "certs"\n'))
    assert errors == {"mqtt.tls.ca_file": ("not a regular file", str(tmp_path / "certs"))}


def test_file_checks_can_be_skipped(write_toml: Write) -> None:
    path = write_toml('[mqtt.tls]\nca_file = "/etc/edge-agent/none.pem"\n')
    cfg = load_config(path, env={}, check_files=False)
    assert cfg.mqtt.tls is not None


def test_duplicate_plugin_names(write_toml: Write, config_errors: Errors) -> None:
    path = write_toml(
        '[[plugins]]\nname = "energy"\n[[plugins]]\nname = "robot"\n[[plugins]]\nname = "energy"\n'
    )
    errors = config_errors(path)
    assert list(errors) == ["plugins"]
    assert errors["plugins"][0] == "plugin names must be unique: energy"


def test_plugin_errors_name_the_plugin(write_toml: Write, config_errors: Errors) -> None:
    path = write_toml(
        '[[plugins]]\nname = "energy"\nrate_hz = 0\n'
        "[[plugins]]\nrate_hz = 5\n"
        '[[plugins]]\nname = "robot"\nparams = {gain = 2}\nspeed = 3\n'
    )
    errors = config_errors(path)
    assert set(errors) == {"plugins[energy].rate_hz", "plugins[1].name", "plugins[robot].speed"}
    assert errors["plugins[1].name"] == ("required key missing", None)
    assert errors["plugins[robot].speed"][0] == "unknown key"


def test_quoted_keys_in_paths(write_toml: Write, config_errors: Errors) -> None:
    errors = config_errors(write_toml('[hal.devices."energy.meter"]\nbackend = "zigbee"\n'))
    assert list(errors) == ['hal.devices."energy.meter".backend']


def test_every_error_is_reported_not_just_the_first(
    write_toml: Write, config_errors: Errors
) -> None:
    path = write_toml(
        'unknown = 1\n[device]\nid = "bad id!"\n[mqtt]\nport = 0\nkeepalive = 1\n'
        '[runtime]\naccelerator = "gpu"\nthreads = 0\n[engine]\nspin_us = -1\n'
    )
    # An accelerator naming no settings class leaves nothing to check the rest of [runtime] by.
    assert set(config_errors(path)) == {
        "unknown",
        "device.id",
        "mqtt.port",
        "mqtt.keepalive",
        "runtime.accelerator",
        "engine.spin_us",
    }


def test_cross_field_checks_name_their_section(write_toml: Write, config_errors: Errors) -> None:
    path = write_toml(
        '[mqtt]\nreconnect_min_s = 10.0\nreconnect_max_s = 1.0\npassword_credential = "a/b"\n'
        '[mqtt.tls]\nca_file = "/etc/hosts"\ncert_file = "/etc/hosts"\n'
    )
    errors = config_errors(path)
    assert set(errors) == {"mqtt.password_credential", "mqtt.tls"}
    assert "cert_file and key_file" in errors["mqtt.tls"][0]
    path = write_toml("[mqtt]\nreconnect_min_s = 10.0\nreconnect_max_s = 1.0\n")
    assert "reconnect_min_s" in config_errors(path)["mqtt"][0]


def test_toml_syntax_error_names_file_line_and_column(
    write_toml: Write, config_errors: Errors
) -> None:
    path = write_toml('[mqtt]\nhost = "a"\nport = = 1\n')
    errors = config_errors(path)
    assert list(errors) == [f"{path}:3:8"]
    message, value = errors[f"{path}:3:8"]
    assert message.startswith("TOML syntax error") and value == "port = = 1"


def test_duplicate_toml_key_is_a_syntax_error(write_toml: Write, config_errors: Errors) -> None:
    path = write_toml("[mqtt]\nport = 1\nport = 2\n")
    (key,) = config_errors(path)
    assert key.startswith(f"{path}:3:")


def test_missing_config_file(tmp_path: Path, config_errors: Errors) -> None:
    path = tmp_path / "absent.toml"
    errors = config_errors(path)
    assert list(errors) == [str(path)]
    assert "No such file" in errors[str(path)][0]


def test_config_error_carries_the_source(write_toml: Write) -> None:
    path = write_toml("[mqtt]\nport = 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.source == str(path)
    assert "mqtt.port" in str(caught.value)


def test_format_config_round_trips(write_toml: Write, tmp_path: Path) -> None:
    path = write_toml(
        '[runtime]\naccelerator = "npu"\nnpu_delegate_options = {"cache.path" = "/tmp/x"}\n'
        '[hal.devices."energy.meter"]\nbackend = "mqtt"\ntopic = "z2m/meter"\n'
        '[[plugins]]\nname = "energy"\nrate_hz = 50.5\nmodel = "energy_anomaly"\n'
        '[plugins.params]\nwindow = 64\nlabel = "a \\"quoted\\" name"\nwhen = 2024-05-01\n'
        "zones = [{id = 1}, {id = 2}]\nlimits = [0.5, 1e-06]\n"
        '[[plugins]]\nname = "robot"\ncpu_affinity = [1]\n'
    )
    cfg = load_config(path, env={})
    text = format_config(cfg)
    assert tomllib.loads(text)["plugins"][0]["params"]["window"] == 64
    copy = write_toml(text, name="copy.toml")
    assert load_config(copy, env={}) == cfg


def test_file_that_is_not_utf8(tmp_path: Path, config_errors: Errors) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[device]\nname = "Küche"\n'.encode("latin-1"))
    ((message, _),) = config_errors(path).values()
    assert message.startswith("not UTF-8 text")


def test_an_unknown_accelerator_names_the_choices(write_toml: Write, config_errors: Errors) -> None:
    errors = config_errors(write_toml('[runtime]\naccelerator = "gpu"\n'))
    assert errors == {
        "runtime.accelerator": ("Input should be 'cpu' or 'coral' or 'npu' or 'auto'", "gpu")
    }


def test_a_key_of_another_accelerator_names_the_accelerator(
    write_toml: Write, config_errors: Errors
) -> None:
    errors = config_errors(write_toml('[runtime]\naccelerator = "coral"\nnpu_delegate = "x"\n'))
    assert errors == {"runtime.npu_delegate": ("unknown key for accelerator 'coral'", "x")}
    errors = config_errors(write_toml('[runtime]\naccelerator = "npu"\nnpu_delegat = "x"\n'))
    assert errors["runtime.npu_delegat"][0].endswith("(did you mean 'npu_delegate'?)")


def test_accelerator_settings_are_checked_in_their_class(
    write_toml: Write, config_errors: Errors
) -> None:
    errors = config_errors(write_toml('[runtime]\naccelerator = "npu"\nonnx_providers = "CUDA"\n'))
    assert list(errors) == ["runtime.onnx_providers"]
    cfg = load_config(write_toml('[runtime]\naccelerator = "auto"\nthreads = 2\n'), env={})
    assert isinstance(cfg.runtime, AutoRuntime) and cfg.runtime.edgetpu_library
    assert load_config(write_toml("[runtime]\nthreads = 2\n"), env={}).runtime == CpuRuntime(
        threads=2
    )


def test_a_bare_runtime_config_means_cpu() -> None:
    assert RuntimeConfig().accelerator == "cpu"
    with pytest.raises(ValidationError, match="needs its own settings class"):
        RuntimeConfig(accelerator="npu")


def test_hal_device_tables_by_backend(write_toml: Write, config_errors: Errors) -> None:
    device = '[hal.devices."energy.meter"]\n'
    errors = config_errors(write_toml(device + 'backend = "mqtt"\nfield = "power"\n'))
    assert errors == {'hal.devices."energy.meter".topic': ("required key missing", None)}
    errors = config_errors(write_toml(device + 'topic = "tele/plug"\n'))
    assert errors == {
        'hal.devices."energy.meter".topic': ("unknown key for backend 'sim'", "tele/plug")
    }
    errors = config_errors(write_toml(device + 'backend = "zigbee"\n'))
    assert errors == {
        'hal.devices."energy.meter".backend': ("Input should be 'sim' or 'mqtt'", "zigbee")
    }
    errors = config_errors(write_toml('[hal.devices]\n"energy.meter" = 3\n'))
    assert list(errors) == ['hal.devices."energy.meter"']
