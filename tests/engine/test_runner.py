"""PluginRunner.apply: the one way a plugin's params and rate change, between two ticks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import pytest
from pydantic import Field

from agent.config.sections import EngineConfig
from agent.engine.resources import LoopOptions, RunnerResources
from agent.engine.runner import PluginRunner
from agent.errors import PluginError
from agent.plugin.base import Plugin, PluginContext, PluginParams
from agent.plugin.channel import OutputChannel
from tests.support.waiting import until


class PickyParams(PluginParams):
    """Params of PickyPlugin."""

    level: int = Field(default=0, description="Refused by the plugin above 10")


class PickyPlugin(Plugin):
    """Refuses some params when they arrive (as a plugin may, by contract)."""

    Params = PickyParams
    instances: ClassVar[list[PickyPlugin]] = []

    def setup(self, ctx: PluginContext) -> None:
        """Keep the context and params; remember the instance for the test to look at."""
        self.ctx = ctx
        self.params = ctx.params
        type(self).instances.append(self)

    def tick(self, now_ns: int) -> None:
        """Nothing to do."""

    def apply_params(self, params: PluginParams) -> None:
        """Refuse a level above 10."""
        if isinstance(params, PickyParams) and params.level > 10:
            raise PluginError(f"level {params.level} is above 10")
        self.params = params


@pytest.fixture
def runner() -> Iterator[PluginRunner]:
    PickyPlugin.instances.clear()
    r = PluginRunner(
        "picky",
        PickyPlugin,
        params=PickyParams(),
        rate_hz=200.0,
        resources=RunnerResources(None, {}, {}, OutputChannel("picky", ())),
        options=LoopOptions(),
        engine=EngineConfig(),
    )
    r.start()
    assert until(lambda: r.ready)
    yield r
    r.stop()


def test_params_and_rate_reach_the_plugin_its_context_and_the_loop_together(
    runner: PluginRunner,
) -> None:
    plugin = PickyPlugin.instances[-1]
    runner.apply(params=PickyParams(level=3), rate_hz=50.0)
    assert runner.params == PickyParams(level=3) and runner.rate_hz == 50.0
    assert plugin.params == PickyParams(level=3)
    assert (plugin.ctx.params, plugin.ctx.rate_hz) == (PickyParams(level=3), 50.0)
    assert runner.info()["rate_hz"] == runner.stats()["rate_hz"] == 50.0
    runner.restart()  # a fresh instance starts from what is in force
    fresh = PickyPlugin.instances[-1]
    assert fresh is not plugin
    assert (fresh.ctx.params, fresh.ctx.rate_hz) == (PickyParams(level=3), 50.0)


def test_params_the_plugin_refuses_change_nothing(runner: PluginRunner) -> None:
    plugin = PickyPlugin.instances[-1]
    with pytest.raises(PluginError, match="above 10"):
        runner.apply(params=PickyParams(level=11), rate_hz=20.0)
    assert runner.params == PickyParams() and runner.rate_hz == 200.0
    assert (plugin.ctx.params, plugin.ctx.rate_hz) == (PickyParams(), 200.0)
    ticks = runner.counters()[0]
    assert until(lambda: runner.counters()[0] > ticks)  # still ticking after the refusal


def test_a_stopped_plugin_gets_what_was_applied_at_its_next_start(runner: PluginRunner) -> None:
    runner.stop()
    runner.apply(params=PickyParams(level=7), rate_hz=25.0)
    runner.start()
    plugin = PickyPlugin.instances[-1]
    assert (plugin.ctx.params, plugin.ctx.rate_hz) == (PickyParams(level=7), 25.0)
