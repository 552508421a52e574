"""What `config check` and the agent's start ask of every schedule beyond its section model.

The section model (`agent.config.sections.ScheduleConfig`) checks shapes: one of cron or
every_s, a known time zone, finite numbers, unique names. Here the parts that need the command
table and APScheduler: the cron expression parses, the command exists and the allow-list
permits it, the args fit its argument model, and the request fits `mqtt.max_payload_bytes`.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ValidationError

from agent.config.errors import ErrorEntry, key_path
from agent.config.sections import AgentConfig, ScheduleConfig
from agent.errors import ConfigError

ArgsTable = Mapping[str, type[BaseModel]]


def schedule_errors(config: AgentConfig, commands: ArgsTable) -> list[ErrorEntry]:
    """Every problem of `config.schedule`, as (key path, message, value)."""
    if not config.schedule:
        return []
    data = config.model_dump(include={"schedule"})
    if not config.mqtt.enabled:
        why = "schedules run through the MQTT sync service's commands: set mqtt.enabled = true"
        return [("schedule", why, [s.name for s in config.schedule])]
    errors: list[ErrorEntry] = []
    for index, sched in enumerate(config.schedule):
        for loc, message, value in _one(sched, config, commands):
            errors.append((key_path(("schedule", index, *loc), data), message, value))
    return errors


def check_schedules(config: AgentConfig, commands: ArgsTable) -> None:
    """Raise ConfigError listing every schedule problem; nothing when all is well."""
    errors = schedule_errors(config, commands)
    if errors:
        raise ConfigError(errors)


def _one(
    sched: ScheduleConfig, config: AgentConfig, commands: ArgsTable
) -> list[tuple[tuple[str | int, ...], str, object]]:
    out: list[tuple[tuple[str | int, ...], str, object]] = []
    if sched.cron is not None:
        from agent.scheduler.triggers import cron_trigger

        try:
            cron_trigger(sched.cron, ZoneInfo("UTC"))
        except ValueError as exc:
            out.append((("cron",), str(exc), sched.cron))
    model = commands.get(sched.command)
    if model is None:
        close = difflib.get_close_matches(sched.command, list(commands), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f"; known: {', '.join(commands)}"
        out.append((("command",), f"unknown command{hint}", sched.command))
        return out
    allowed = config.mqtt.commands
    if allowed is not None and sched.command not in allowed:
        out.append((("command",), "not in mqtt.commands, the commands allowed", sched.command))
    try:
        model.model_validate(sched.args)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = ("args", *err["loc"])
            value = None if err["type"] == "missing" else err["input"]
            out.append((loc, err["msg"].removeprefix("Value error, "), value))
    size = len(request_payload(sched.name, 1, sched.args))
    if size > config.mqtt.max_payload_bytes:
        limit = config.mqtt.max_payload_bytes
        out.append(
            (("args",), f"request is {size} bytes, over mqtt.max_payload_bytes {limit}", None)
        )
    return out


def request_payload(name: str, run: int, args: Mapping[str, object]) -> bytes:
    """The command request of run `run` of schedule `name`, as a remote one would send it."""
    return json.dumps({"id": f"schedule:{name}:{run}", "args": args}).encode()
