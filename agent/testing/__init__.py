"""What a plugin author tests with: the contract suite and the rig it runs plugins in."""

from __future__ import annotations

from agent.testing.contract import PluginContract
from agent.testing.rig import FaultySensor, Rig, build_rig

__all__ = ["FaultySensor", "PluginContract", "Rig", "build_rig"]
