"""Schedules at run time: each run a command dispatched through a real CommandRegistry, logged and
reported as a `schedule_run` event on the `schedule` output channel."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel, ConfigDict

from agent.config.sections import ScheduleConfig
from agent.errors import CommandError
from agent.events import Event
from agent.plugin.channel import OutputChannel
from agent.scheduler import CHANNEL, EVENT_KIND, Schedules
from agent.scheduler.schedules import RESULT_MAX_BYTES
from agent.sync.commands import CommandRegistry


class SetArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: int


class Target:
    """What the commands change: a value, the request ids seen."""

    def __init__(self) -> None:
        self.value = 0
        self.calls = 0

    def set(self, args: SetArgs) -> dict[str, Any]:
        self.calls += 1
        self.value = args.value
        return {"value": self.value}


@pytest.fixture
def registry() -> tuple[CommandRegistry, Target]:
    target = Target()
    reg = CommandRegistry(device_id="dev", allowed=lambda: None)
    reg.register("thing.set", target.set, SetArgs)

    def fail(_: Any) -> None:
        raise CommandError("not_found", "no such thing")

    reg.register("thing.fail", fail)
    reg.register("thing.big", lambda _: "x" * (RESULT_MAX_BYTES + 10))
    return reg, target


def inline(reg: CommandRegistry) -> Callable[[str, bytes, Callable[[Any], None]], bool]:
    """A command worker that runs each command at once on the caller's thread."""

    def submit(name: str, payload: bytes, reply: Callable[[Any], None]) -> bool:
        reply(reg.dispatch(name, payload, max_bytes=65536))
        return True

    return submit


@pytest.fixture
def running() -> Iterator[list[Schedules]]:
    made: list[Schedules] = []
    yield made
    for s in made:
        s.stop()


def start(running: list[Schedules], reg: CommandRegistry, *entries: dict[str, Any]) -> Schedules:
    schedules = Schedules(
        [ScheduleConfig.model_validate(e) for e in entries],
        inline(reg),
        channel=OutputChannel(CHANNEL, (), capacity=1, events=64),
        default_zone=ZoneInfo("UTC"),
    )
    schedules.start()
    running.append(schedules)
    return schedules


Until = Callable[..., bool]


def events_until(until: Until, channel: OutputChannel, count: int) -> list[Event]:
    seen: list[Event] = []

    def enough() -> bool:
        seen.extend(channel.drain_events())
        return len(seen) >= count

    assert until(enough, 10.0), seen
    return seen


def test_each_run_dispatches_the_command_and_reports_an_event(
    until: Until,
    registry: tuple[CommandRegistry, Target],
    running: list[Schedules],
    caplog: pytest.LogCaptureFixture,
) -> None:
    reg, target = registry
    caplog.set_level(logging.INFO, logger="agent.scheduler")
    entry = {"name": "set7", "every_s": 1, "command": "thing.set", "args": {"value": 7}}
    schedules = start(running, reg, entry)
    assert schedules.channel is not None
    first, second = events_until(until, schedules.channel, 2)
    assert target.value == 7 and target.calls >= 2
    assert (first.plugin, first.kind, first.score) == (CHANNEL, EVENT_KIND, 1.0)
    assert {k: first.data[k] for k in ("name", "command", "run", "ok", "error")} == {
        "name": "set7",
        "command": "thing.set",
        "run": 1,
        "ok": True,
        "error": None,
    }
    assert first.data["result"] == {"value": 7}
    assert second.data["run"] == 2
    assert "schedule set7: thing.set ran (run 1" in caplog.text
    (job,) = schedules.jobs()
    assert job["runs"] >= 2 and job["failed"] == 0 and job["when"] == "every 1 s"
    assert job["timezone"] == "UTC" and job["next_run"] is not None


def test_a_failing_run_is_an_event_with_the_error_code(
    until: Until,
    registry: tuple[CommandRegistry, Target],
    running: list[Schedules],
    caplog: pytest.LogCaptureFixture,
) -> None:
    reg, _ = registry
    schedules = start(running, reg, {"name": "f", "every_s": 1, "command": "thing.fail"})
    assert schedules.channel is not None
    (event,) = events_until(until, schedules.channel, 1)
    assert event.score == 0.0
    assert event.data["ok"] is False and event.data["error"] == "not_found"
    assert event.data["message"] == "no such thing" and "result" not in event.data
    assert "schedule f: thing.fail failed: not_found: no such thing" in caplog.text
    assert schedules.jobs()[0]["last_error"] == "not_found: no such thing"


def test_a_large_result_stays_out_of_the_event(
    until: Until, registry: tuple[CommandRegistry, Target], running: list[Schedules]
) -> None:
    reg, _ = registry
    schedules = start(running, reg, {"name": "b", "every_s": 1, "command": "thing.big"})
    assert schedules.channel is not None
    (event,) = events_until(until, schedules.channel, 1)
    assert event.data["ok"] is True and "result" not in event.data


def test_request_ids_name_the_schedule_and_the_run(until: Until, running: list[Schedules]) -> None:
    seen: list[bytes] = []

    def record(name: str, payload: bytes, reply: Callable[[Any], None]) -> bool:
        seen.append(payload)
        reply({"id": None, "ok": True, "result": None})
        return True

    schedules = Schedules(
        [ScheduleConfig(name="n", every_s=1, command="c", args={"k": [1, 2]})],
        record,
        default_zone=ZoneInfo("UTC"),
    )
    schedules.start()
    running.append(schedules)
    assert until(lambda: len(seen) >= 2, 10.0)
    assert seen[:2] == [
        b'{"id": "schedule:n:1", "args": {"k": [1, 2]}}',
        b'{"id": "schedule:n:2", "args": {"k": [1, 2]}}',
    ]


def test_a_cron_schedule_lists_its_next_run_in_its_zone(
    registry: tuple[CommandRegistry, Target], running: list[Schedules]
) -> None:
    reg, _ = registry
    entry = {
        "name": "night",
        "cron": "0 22 * * *",
        "timezone": "Europe/Berlin",
        "command": "thing.set",
        "args": {"value": 1},
    }
    (job,) = start(running, reg, entry).jobs()
    assert job["timezone"] == "Europe/Berlin" and job["when"] == "cron '0 22 * * *'"
    assert job["next_run"].split("T")[1] in ("22:00:00+01:00", "22:00:00+02:00")
    assert job["runs"] == 0


def test_no_schedules_start_nothing(registry: tuple[CommandRegistry, Target]) -> None:
    schedules = Schedules([], inline(registry[0]))
    schedules.start()
    assert schedules.jobs() == []
    schedules.stop()
