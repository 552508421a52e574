"""`edge-agent config check FILE`: exit 0 with the effective config, or 2 with every error."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.cli.main import main

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

Write = Callable[..., Path]
REPO = Path(__file__).resolve().parents[2]
GENERIC = REPO / "firmware-configs" / "generic-x86.toml"
ERROR_LINE = re.compile(r"^\S+: .+ \(got .+\)$")
BROKEN = (
    'colour = 1\n[mqtt]\nhst = "x"\nport = 70000\npassword_file = "missing.txt"\n'
    '[[plugins]]\nname = "energy"\nrate_hz = "fast"\n'
)


@pytest.fixture(autouse=True)
def _no_overrides_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("EDGE_AGENT__"):
            monkeypatch.delenv(name)


def test_valid_file_prints_the_effective_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(GENERIC)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("# effective configuration of")
    effective = tomllib.loads(out)
    assert effective["mqtt"]["port"] == 1883
    assert effective["models_dir"] == str(REPO / "models")
    assert [p["name"] for p in effective["plugins"]] == ["smart_home", "energy", "robot"]


def test_environment_shows_in_the_effective_config(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_AGENT__PLUGINS__robot__RATE_HZ", "250")
    assert main(["config", "check", str(GENERIC)]) == 0
    plugins = tomllib.loads(capsys.readouterr().out)["plugins"]
    assert {p["name"]: p["rate_hz"] for p in plugins}["robot"] == 250


def test_broken_file_prints_every_error(
    write_toml: Write, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "check", str(write_toml(BROKEN))]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert all(ERROR_LINE.match(line) for line in lines), lines
    assert sorted(lines) == sorted(
        [
            "colour: unknown key (got 1)",
            "mqtt.hst: unknown key (did you mean 'host'?) (got \"x\")",
            "mqtt.port: Input should be less than or equal to 65535 (got 70000)",
            "mqtt.password_file: file not found; if it exists only on the board, check with"
            f' --no-file-check (got "{tmp_path / "missing.txt"}")',
            "plugins[energy].rate_hz: Input should be a valid number, unable to parse string as a"
            ' number (got "fast")',
        ]
    )


def test_syntax_error_exits_2(write_toml: Write, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_toml("[mqtt\n")
    assert main(["config", "check", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"{path}:1:") and "TOML syntax error" in line


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(tmp_path / "none.toml")]) == 2
    assert "No such file" in capsys.readouterr().err


def test_board_file_needs_its_files_unless_told(capsys: pytest.CaptureFixture[str]) -> None:
    board = REPO / "firmware-configs" / "raspberry-pi-5.toml"
    assert main(["config", "check", str(board)]) == 2
    err = capsys.readouterr().err
    assert "mqtt.tls.ca_file: file not found" in err
    assert "--no-file-check" in err  # the way out is named where the error is
    assert main(["config", "check", "--no-file-check", str(board)]) == 0


def _plugins_file(write_toml: Write, body: str, models_dir: Path = REPO / "models") -> Path:
    return write_toml(f'models_dir = "{models_dir}"\n[mqtt]\nenabled = false\n' + body)


def test_a_misspelt_plugin_fails_the_check_with_did_you_mean(
    write_toml: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _plugins_file(write_toml, '[[plugins]]\nname = "smart_hom"\n')
    assert main(["config", "check", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "plugins[smart_hom].name: no plugin of that name is installed (did you mean 'smart_home'?)"
        ' (got "smart_hom")'
    ]
    # Not installed here and nothing close: the installed ones are listed instead.
    path = _plugins_file(write_toml, '[[plugins]]\nname = "zzz"\n')
    assert main(["config", "check", "--no-file-check", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "known: " in line and "smart_home" in line and ERROR_LINE.match(line)


def test_a_misspelt_model_fails_the_check_with_did_you_mean(
    write_toml: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    body = '[[plugins]]\nname = "energy"\nmodel = "energy_anomally"\n'
    assert main(["config", "check", str(_plugins_file(write_toml, body))]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"plugins[energy].model: no model of that name in {REPO / 'models'} (did you mean"
        " 'energy_anomaly'?) (got \"energy_anomally\")"
    )


def test_a_missing_models_dir_fails_the_check_naming_no_file_check(
    write_toml: Write, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _plugins_file(write_toml, '[[plugins]]\nname = "energy"\n', tmp_path / "nowhere")
    assert main(["config", "check", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "models_dir: directory not found; if it exists only on the board, check with"
        f' --no-file-check (got "{tmp_path / "nowhere"}")'
    ]
    # A board's file names its board's folders: checked away from the board, they are skipped.
    assert main(["config", "check", "--no-file-check", str(path)]) == 0


def test_file_argument_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["config", "check"])
    assert caught.value.code == 2


def _console_script() -> Path:
    script = Path(sys.executable).with_name("edge-agent")
    if not script.exists():
        pytest.skip(f"no edge-agent console script beside {sys.executable}")
    return script


def test_console_script(write_toml: Write) -> None:
    script = _console_script()
    env = {**os.environ, "EDGE_AGENT__MQTT__PORT": "1884"}
    ok = subprocess.run(
        [str(script), "config", "check", str(GENERIC)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert tomllib.loads(ok.stdout)["mqtt"]["port"] == 1884
    env["EDGE_AGENT__MQTT__PORT"] = "0"
    bad = subprocess.run(
        [str(script), "config", "check", str(GENERIC)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        "mqtt.port: Input should be greater than or equal to 1"
        " (set by EDGE_AGENT__MQTT__PORT) (got 0)"
    ]


def test_config_package_imports_no_runtime() -> None:
    # `edge-agent run` must import only the runtimes its models need: config pulls in none.
    code = (
        "import sys, agent.config, agent.cli.config_cmd\n"
        "heavy = {'ai_edge_litert', 'onnxruntime', 'paho', 'apscheduler', 'rich', 'tensorflow'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
