"""The `[[schedule]]` entries: commands the user runs at cron times or every N seconds."""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, field_validator, model_validator

from agent.config.base import ID_PATTERN, Section


class ScheduleConfig(Section):
    """One schedule the user writes: a command run at cron times or every N seconds."""

    name: str = Field(pattern=ID_PATTERN, description="Unique name, in logs and events")
    cron: str | None = Field(
        default=None,
        description="Crontab line 'minute hour day month weekday' (weekday 0 or 7 = Sunday)",
    )
    every_s: float | None = Field(
        default=None, ge=1.0, allow_inf_nan=False, description="Run every this many seconds"
    )
    command: str = Field(min_length=1, description="Command to run, e.g. plugin.set")
    args: dict[str, Any] = Field(
        default_factory=dict, description="Arguments of the command, as a remote request's args"
    )
    timezone: str | None = Field(
        default=None, description="IANA time zone of the cron times; default the system's zone"
    )
    misfire_grace_s: float = Field(
        default=300.0,
        gt=0,
        le=86400,
        allow_inf_nan=False,
        description="A run this late (clock step, busy agent) still runs; later ones are missed",
    )

    @model_validator(mode="after")
    def _cron_or_every(self) -> ScheduleConfig:
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("give exactly one of cron or every_s")
        return self

    @field_validator("args")
    @classmethod
    def _finite_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not _all_finite(value):
            raise ValueError("numbers must be finite (no nan or inf)")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            import zoneinfo

            try:
                zoneinfo.ZoneInfo(value)
            except (ValueError, zoneinfo.ZoneInfoNotFoundError):
                raise ValueError("unknown time zone (an IANA name, e.g. Europe/Berlin)") from None
        return value


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_all_finite(v) for v in value)
    return True
