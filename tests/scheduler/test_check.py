"""`edge-agent config check` on `[[schedule]]`: every bad entry named by its key path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.config import load_config

GOOD = """\
[[plugins]]
name = "smart_home"

[[schedule]]
name = "night_setback"
cron = "0 22 * * *"
timezone = "Europe/Berlin"
command = "plugin.set"
args = { name = "smart_home", params = { setback_heat = 15.0 } }

[[schedule]]
name = "energy_summary"
cron = "55 23 * * *"
command = "stats"
args = { plugin = "energy" }

[[schedule]]
name = "heartbeat"
every_s = 3600
command = "ping"
"""


@pytest.fixture(autouse=True)
def _no_overrides_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("EDGE_AGENT__")]:
        monkeypatch.delenv(name)


def check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    code = main(["config", "check", "--no-file-check", str(path)])
    return code, capsys.readouterr().err.splitlines()


def entry(name: str, body: str) -> str:
    return f'\n[[schedule]]\nname = "{name}"\n{body}\n'


def test_a_good_file_passes_and_prints_its_schedules_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(GOOD)
    assert main(["config", "check", "--no-file-check", str(path)]) == 0
    printed = capsys.readouterr().out
    again = tmp_path / "again.toml"
    again.write_text(printed)
    assert load_config(again, env={}).schedule == load_config(path, env={}).schedule


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (
            'cron = "0 22 * *"\ncommand = "ping"',
            "schedule[s].cron: a cron expression has 5 fields (minute hour day month weekday),"
            ' got 4 (got "0 22 * *")',
        ),
        (
            'cron = "0 25 * * *"\ncommand = "ping"',
            "schedule[s].cron: Error validating expression '25': the last value (25) is higher"
            ' than the maximum value (23) (got "0 25 * * *")',
        ),
        (
            'cron = "0 22 * * mon-fry"\ncommand = "ping"',
            "schedule[s].cron: day of week 'fry' is not 0-7 or sun-sat (got \"0 22 * * mon-fry\")",
        ),
        (
            'every_s = 60\ncommand = "plugin.sett"',
            "schedule[s].command: unknown command (did you mean 'plugin.set'?)"
            ' (got "plugin.sett")',
        ),
        (
            'every_s = 60\ncommand = "plugin.set"\nargs = { name = "smart_home" }',
            "schedule[s].args.params: Field required (got nothing)",
        ),
        (
            'every_s = 60\ncommand = "plugin.set"\nargs = { name = "x", params = 5, colour = 1 }',
            "schedule[s].args.params: Input should be a valid dictionary (got 5)",
        ),
        (
            'every_s = 60\ncommand = "ping"\nargs = { colour = 1 }',
            "schedule[s].args.colour: Extra inputs are not permitted (got 1)",
        ),
        (
            'every_s = 60\ncron = "0 22 * * *"\ncommand = "ping"',
            "schedule[s]: give exactly one of cron or every_s"
            ' (got {"name": "s", "every_s": 60, "cron": "0 22 * * *", "command": "ping"})',
        ),
        (
            'command = "ping"',
            "schedule[s]: give exactly one of cron or every_s"
            ' (got {"name": "s", "command": "ping"})',
        ),
        (
            'every_s = 0.5\ncommand = "ping"',
            "schedule[s].every_s: Input should be greater than or equal to 1 (got 0.5)",
        ),
        (
            'every_s = inf\ncommand = "ping"',
            "schedule[s].every_s: Input should be a finite number (got Infinity)",
        ),
        (
            'every_s = 60\ncommand = "stats"\nargs = { plugin = "energy", x = nan }',
            "schedule[s].args: numbers must be finite (no nan or inf)"
            ' (got {"plugin": "energy", "x": NaN})',
        ),
        (
            'every_s = 60\ncommand = "ping"\ntimezone = "Europe/Berlinn"',
            "schedule[s].timezone: unknown time zone (an IANA name, e.g. Europe/Berlin)"
            ' (got "Europe/Berlinn")',
        ),
    ],
)
def test_a_bad_schedule_is_named_by_its_key_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, line: str
) -> None:
    code, err = check(tmp_path, entry("s", body), capsys)
    assert code == 2
    assert err[0] == line, err


def test_every_bad_schedule_is_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = entry("a", 'cron = "x"\ncommand = "nope"') + entry("b", 'every_s = 5\ncommand = "ping"')
    code, err = check(tmp_path, text, capsys)
    assert code == 2
    assert [e.split(":")[0] for e in err] == ["schedule[a].cron", "schedule[a].command"]


def test_names_are_unique(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = entry("twice", 'every_s = 5\ncommand = "ping"')
    code, err = check(tmp_path, one + one, capsys)
    assert code == 2
    assert err[0].startswith("schedule: schedule names must be unique: twice"), err


def test_a_command_outside_the_allow_list_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = '[mqtt]\ncommands = ["ping"]\n' + entry("s", 'every_s = 5\ncommand = "stats"')
    code, err = check(tmp_path, text, capsys)
    assert code == 2
    assert err == ['schedule[s].command: not in mqtt.commands, the commands allowed (got "stats")']


def test_schedules_need_mqtt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = "[mqtt]\nenabled = false\n" + entry("s", 'every_s = 5\ncommand = "ping"')
    code, err = check(tmp_path, text, capsys)
    assert code == 2
    assert err == [
        "schedule: schedules run through the MQTT sync service's commands:"
        ' set mqtt.enabled = true (got ["s"])'
    ]


def test_an_environment_variable_reaches_a_schedule_by_name(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(GOOD)
    env = {"EDGE_AGENT__SCHEDULE__heartbeat__EVERY_S": "60"}
    assert load_config(path, env=env).schedule[2].every_s == 60.0
