"""The schedules users write (`[[schedule]]`), run by APScheduler 3 as commands.

Importing this package imports neither APScheduler nor the sync package; they load when the
schedules start or are checked.
"""

from __future__ import annotations

from agent.scheduler.check import check_schedules, schedule_errors
from agent.scheduler.schedules import CHANNEL, EVENT_KIND, Schedules

__all__ = [
    "CHANNEL",
    "EVENT_KIND",
    "Schedules",
    "check_schedules",
    "schedule_errors",
]
