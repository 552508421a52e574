"""Every board file in firmware-configs/ validates with the agent's own models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, format_config, load_config
from agent.runtime.shipped import shipped_models_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
FIRMWARE_CONFIGS = REPO / "firmware-configs"

BOARD_FILES = sorted(FIRMWARE_CONFIGS.glob("*.toml"))
EXPECTED_BOARDS = {
    "generic-x86",
    "raspberry-pi-4",
    "raspberry-pi-5",
    "coral-dev-board",
    "jetson-orin-nano",
    "imx8mp-npu",
}
PLUGIN_MODELS = {
    "smart_home": "smart_home_comfort",
    "energy": "energy_anomaly",
    "robot": "robot_policy",
}


def test_every_board_has_a_file() -> None:
    assert {p.stem for p in BOARD_FILES} >= EXPECTED_BOARDS


@pytest.mark.parametrize("path", BOARD_FILES, ids=lambda p: p.stem)
def test_board_file_validates(path: Path) -> None:
    # Board files name files that exist only on their board (CA, OTA key), hence no file check.
    cfg = load_config(path, env={}, check_files=False)
    assert cfg.device.board == path.stem
    assert {p.name: p.model for p in cfg.plugins} == PLUGIN_MODELS
    assert cfg.state_dir.is_absolute() and cfg.models_dir.is_absolute()


@pytest.mark.parametrize("path", BOARD_FILES, ids=lambda p: p.stem)
def test_board_file_round_trips_through_format_config(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path, env={}, check_files=False)
    text = format_config(cfg)
    tomllib.loads(text)
    copy = tmp_path / "copy.toml"
    copy.write_text(text)
    assert load_config(copy, env={}, check_files=False) == cfg


@pytest.mark.parametrize("path", BOARD_FILES, ids=lambda p: p.stem)
def test_board_file_only_misses_files_of_the_board(path: Path) -> None:
    # With file checks on, the only complaints may be about files a board install provides.
    try:
        load_config(path, env={})
    except ConfigError as exc:
        for key, message, value in exc.errors:
            assert message == "file not found", (key, message)
            assert str(value).startswith("/etc/edge-agent/"), (key, value)


def test_generic_x86_is_the_development_default() -> None:
    cfg = load_config(FIRMWARE_CONFIGS / "generic-x86.toml", env={})
    assert cfg.runtime.accelerator == "cpu"
    assert cfg.hal.backend == "sim"
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.tls) == ("127.0.0.1", 1883, None)
    assert {p.name: p.rate_hz for p in cfg.plugins} == {
        "smart_home": 10,
        "energy": 50,
        "robot": 500,
    }
    assert cfg.state_dir == REPO / "state"
    assert cfg.models_dir == REPO / "models"


def test_board_accelerator_settings() -> None:
    def board(name: str):  # type: ignore[no-untyped-def]
        return load_config(FIRMWARE_CONFIGS / f"{name}.toml", env={}, check_files=False).runtime

    assert board("raspberry-pi-5").threads == 4
    assert board("coral-dev-board").accelerator == "coral"
    assert board("coral-dev-board").edgetpu_library
    assert board("jetson-orin-nano").accelerator == "npu"
    assert board("jetson-orin-nano").onnx_providers == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
    ]
    assert board("imx8mp-npu").npu_delegate == "/usr/lib/libvx_delegate.so"


@pytest.mark.parametrize("path", [p for p in BOARD_FILES if p.stem != "generic-x86"])
def test_real_boards_use_tls_and_system_paths(path: Path) -> None:
    cfg = load_config(path, env={}, check_files=False)
    assert cfg.mqtt.tls is not None and cfg.mqtt.port == 8883
    assert cfg.state_dir == Path("/var/lib/edge-agent")
    assert cfg.models_dir == shipped_models_dir()
