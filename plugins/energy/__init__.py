"""Energy monitoring plugin: int8 CNN anomaly alarms and rolling energy aggregates on mains."""

from __future__ import annotations

from plugins.energy.config import Params
from plugins.energy.plugin import TELEMETRY_FIELDS, EnergyPlugin

__all__ = ["TELEMETRY_FIELDS", "EnergyPlugin", "Params"]
