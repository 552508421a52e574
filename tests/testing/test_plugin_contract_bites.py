"""The contract suite fails plugins that break the contract (so passing it means something)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest

from agent.hal.base import SensorSpec
from agent.plugin.base import Plugin, PluginContext, PluginParams
from agent.testing import PluginContract


class GoodParams(PluginParams):
    gain: float = 1.0


class Good(Plugin):
    """A minimal plugin that keeps the contract: one sensor, telemetry, dropouts as events."""

    Params = GoodParams
    sensors: ClassVar[dict[str, SensorSpec]] = {"x": SensorSpec((2,))}
    telemetry_fields: ClassVar[tuple[str, ...]] = ("x0", "x1")

    def setup(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.buf = np.zeros(2, np.float32)
        self.row = np.zeros(2, np.float64)
        self.out = False
        self.apply_params(ctx.params)

    def apply_params(self, params: PluginParams) -> None:
        self.params = params

    def tick(self, now_ns: int) -> None:
        ok = self.ctx.sensors["x"].read_into(self.buf)
        total = float(self.buf.sum())
        if not ok or total - total != 0.0:
            if not self.out:
                self.out = True
                self.ctx.out.event(now_ns, "sensor_dropout", sensor="x")
            return
        self.out = False
        self.row[:] = self.buf
        self.ctx.out.telemetry(now_ns, self.row)


class Leaky(Good):
    """Keeps a little of every tick."""

    def tick(self, now_ns: int) -> None:
        super().tick(now_ns)
        self.history = getattr(self, "history", [])
        self.history.append(now_ns * 3)


class NanBlind(Good):
    """Takes a NaN reading for a value."""

    def tick(self, now_ns: int) -> None:
        self.ctx.sensors["x"].read_into(self.buf)
        self.row[:] = self.buf
        self.ctx.out.telemetry(now_ns, self.row)


class Forgetful(Good):
    """Ignores new params."""

    def apply_params(self, params: PluginParams) -> None:
        if not hasattr(self, "params"):
            self.params = params


class Silent(Good):
    """Declares telemetry fields it never sends."""

    def tick(self, now_ns: int) -> None:
        self.ctx.sensors["x"].read_into(self.buf)


def _contract(cls: type[Plugin]) -> Any:
    class Check(PluginContract):
        plugin_class = cls
        changed_params: ClassVar[dict[str, Any] | None] = {"gain": 2.0}
        warmup_ticks = 300
        measured_ticks = 500
        telemetry_within = 300

    return Check()


def test_a_plugin_that_keeps_the_contract_passes() -> None:
    check = _contract(Good)
    check.test_tick_allocates_nothing_after_warm_up()
    check.test_params_apply_between_ticks()
    for fault in ("nan", "inf", "missing"):
        check.test_bad_readings_give_sensor_dropout(fault)
    check.test_declared_telemetry_fields_are_the_fields_sent()
    check.test_teardown_releases()


@pytest.mark.parametrize(
    ("cls", "check", "args"),
    [
        (Leaky, "test_tick_allocates_nothing_after_warm_up", ()),
        (NanBlind, "test_bad_readings_give_sensor_dropout", ("nan",)),
        (NanBlind, "test_bad_readings_give_sensor_dropout", ("missing",)),
        (Forgetful, "test_params_apply_between_ticks", ()),
        (Silent, "test_declared_telemetry_fields_are_the_fields_sent", ()),
    ],
)
def test_a_plugin_that_breaks_it_fails(cls: type[Plugin], check: str, args: tuple[str]) -> None:
    with pytest.raises(AssertionError):
        getattr(_contract(cls), check)(*args)
