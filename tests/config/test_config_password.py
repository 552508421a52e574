"""The MQTT password: from a file or a systemd credential."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, MqttConfig, read_mqtt_password


def test_no_password_source() -> None:
    assert read_mqtt_password(MqttConfig(), env={}) is None


def test_password_file_without_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret \n")
    cfg = MqttConfig(username="u", password_file=secret)
    assert read_mqtt_password(cfg, env={}) == "s3cret "


def test_password_file_gone_since_load(tmp_path: Path) -> None:
    cfg = MqttConfig(username="u", password_file=tmp_path / "gone")
    with pytest.raises(ConfigError) as caught:
        read_mqtt_password(cfg, env={})
    assert caught.value.errors[0][:2] == ("mqtt.password_file", "file not found")


def test_systemd_credential(tmp_path: Path) -> None:
    (tmp_path / "mqtt-password").write_text("from-systemd\n")
    cfg = MqttConfig(username="u", password_credential="mqtt-password")
    assert read_mqtt_password(cfg, env={"CREDENTIALS_DIRECTORY": str(tmp_path)}) == "from-systemd"


def test_systemd_credential_missing(tmp_path: Path) -> None:
    cfg = MqttConfig(username="u", password_credential="mqtt-password")
    with pytest.raises(ConfigError) as caught:
        read_mqtt_password(cfg, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    key, message, value = caught.value.errors[0]
    assert (key, message) == ("mqtt.password_credential", "file not found")
    assert value == str(tmp_path / "mqtt-password")


def test_no_credentials_directory() -> None:
    cfg = MqttConfig(username="u", password_credential="mqtt-password")
    with pytest.raises(ConfigError) as caught:
        read_mqtt_password(cfg, env={})
    key, message, _ = caught.value.errors[0]
    assert key == "mqtt.password_credential"
    assert "CREDENTIALS_DIRECTORY" in message and "LoadCredential=mqtt-password" in message


def test_os_environ_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("x")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert read_mqtt_password(MqttConfig(username="u", password_credential="pw")) == "x"
