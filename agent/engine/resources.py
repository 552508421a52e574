"""What a plugin's runner is built from: resources made once, and how its loop threads run.

Resources outlive plugin instances and loops (a restart reuses them), so a crash storm never
reloads a model or reopens a device.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.engine.gc_slack import SlackCollector
from agent.hal.base import Actuator, Sensor
from agent.plugin.channel import OutputChannel
from agent.runtime.slot import ModelSlot


@dataclass
class RunnerResources:
    """What the host built for a plugin once: kept across restarts."""

    slot: ModelSlot | None
    sensors: dict[str, Sensor]
    actuators: dict[str, Actuator]
    channel: OutputChannel
    model_name: str | None = None


@dataclass
class LoopOptions:
    """How this plugin's loop threads run (applies to loops started from then on)."""

    cpu_affinity: list[int] | None = None
    realtime_priority: int | None = None
    collector: SlackCollector | None = None
    wait: str = "sleep"
    """"sleep" (sleep, then spin the last engine.spin_us) or "spin" (the whole period)."""
