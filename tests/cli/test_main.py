"""The `edge-agent` entry point: version, help for users, log level flags, the demo target."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent import __version__
from agent.cli.main import COMMANDS, build_parser, main

REPO = Path(__file__).resolve().parents[2]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"edge-agent {__version__}"


def test_top_level_help_is_written_for_users(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "lazily" not in text and "import" not in text.split("positional")[0]
    assert "edge-agent run --config FILE" in text and "--version" in text
    for flag in ("--log-level", "-v, --verbose", "-q, --quiet"):
        assert flag in text


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["-v", "config", "check", "f.toml"], "DEBUG"),
        (["config", "check", "f.toml", "-q"], "WARNING"),
        (["config", "check", "--log-level", "error", "f.toml"], "ERROR"),
        (["-q", "ota", "keygen", "--out", "k", "--verbose"], "DEBUG"),  # the later one wins
        (["config", "check", "f.toml"], None),
    ],
)
def test_log_level_flags_work_before_and_after_the_command(
    argv: list[str], level: str | None
) -> None:
    args = build_parser().parse_args(argv)
    assert getattr(args, "log_level", None) == level


def test_log_level_flags_are_exclusive_and_checked(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for argv in (["-v", "-q", "config", "check", "f"], ["--log-level", "loud", "config"]):
        with pytest.raises(SystemExit) as refused:
            parser.parse_args(argv)
        assert refused.value.code == 2
    assert "invalid choice: 'LOUD'" in capsys.readouterr().err


def test_a_named_command_builds_its_own_parser_alone() -> None:
    full = build_parser()
    for name, module in COMMANDS.items():
        sub = _commands(build_parser([name]))
        assert list(sub.choices) == [name], module  # the key is the name the module registers
        assert sub.choices[name].format_help() == _commands(full).choices[name].format_help()
    assert list(_commands(full).choices) == list(COMMANDS)
    for argv in (["-h"], ["-vh", "run"], ["--he", "run"], ["--version"], ["nope"], []):
        assert list(_commands(build_parser(argv)).choices) == list(COMMANDS), argv
    for argv in (["-q", "run"], ["--log-level", "info", "run"], ["--log-level=info", "run", "-h"]):
        assert list(_commands(build_parser(argv)).choices) == ["run"], argv


def _commands(parser: argparse.ArgumentParser) -> Any:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_installs_the_agent_without_the_test_tools(tmp_path: Path) -> None:
    plan = subprocess.run(
        ["make", "-n", "demo", f"VENV={tmp_path / 'venv'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "pip install -q -e .\n" in plan
    assert "[test" not in plan
    assert "edge-agent run --config firmware-configs/generic-x86.toml" in plan
