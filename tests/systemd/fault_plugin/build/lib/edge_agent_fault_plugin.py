"""A plugin for the systemd tests: counts ticks, emits an event every N, hangs or crashes on
command (`plugin.set {"mode": "hang"}` over MQTT, so a restarted agent comes back calm)."""

from __future__ import annotations

import threading
from typing import Literal

from pydantic import Field

from agent.plugin.base import Plugin, PluginContext, PluginParams


class FaultParams(PluginParams):
    """What the tick does."""

    mode: Literal["calm", "hang", "crash"] = Field(
        default="calm", description="calm: count; hang: never return; crash: raise every tick"
    )
    event_every: int = Field(default=0, ge=0, description="Emit an event every N ticks (0: none)")


class FaultPlugin(Plugin):
    """No model, no devices: only the behaviour of its tick."""

    Params = FaultParams
    default_rate_hz = 20.0

    def setup(self, ctx: PluginContext) -> None:
        """Keep the output channel and the params."""
        self.out = ctx.out
        self.params = ctx.params
        assert isinstance(self.params, FaultParams)
        self.ticks = 0
        self._never = threading.Event()

    def apply_params(self, params: PluginParams) -> None:
        """Take the new mode."""
        self.params = params

    def tick(self, now_ns: int) -> None:
        """Count; hang or crash when told to."""
        params = self.params
        assert isinstance(params, FaultParams)
        if params.mode == "hang":
            self._never.wait()  # a tick stuck for good: only the systemd watchdog gets us out
        if params.mode == "crash":
            raise RuntimeError("fault plugin: crashing on purpose")
        self.ticks += 1
        if params.event_every and self.ticks % params.event_every == 0:
            self.out.event(now_ns, "tick_mark", ticks=self.ticks)
