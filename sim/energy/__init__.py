"""Energy monitoring world: household mains power with appliance signatures and injected faults."""

from __future__ import annotations

from sim.energy.appliances import CIRCUITS
from sim.energy.schedule import FAULT_KINDS, Dropout, Fault
from sim.energy.world import HouseholdPower, Recording

__all__ = ["CIRCUITS", "FAULT_KINDS", "Dropout", "Fault", "HouseholdPower", "Recording"]
