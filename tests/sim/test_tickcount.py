"""`python -m sim.tickcount`: the parts of a robot tick that docs/realtime.md counts."""

from __future__ import annotations

import pytest

from sim import tickcount


def test_every_part_runs_and_a_tick_drives_the_robot() -> None:
    table = tickcount.parts()
    assert {"tick", "run", "bare", "policy", "read_lidar", "read_goal", "write"} <= set(table)
    for call in table.values():
        call()
        call()


def test_the_command_calls_a_part_and_names_the_parts_when_one_is_unknown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tickcount.main(["tick", "3"])
    with pytest.raises(SystemExit):
        tickcount.main(["tock", "1"])
    assert "unknown part 'tock': one of empty, tick" in capsys.readouterr().err
