"""Smart home simulator: a four-room house with heating, cooling, lights, ventilation, people."""

from sim.smart_home.house import ROOMS, Behaviour, Climate, Houses
from sim.smart_home.world import HouseSim

__all__ = ["ROOMS", "Behaviour", "Climate", "HouseSim", "Houses"]
