"""Fixtures of the fault tests: what the agent logs, a stand-in for systemd's notify socket,
every model the agent loads, the whole agent started and ready, a small tmpfs, and an
event sink in its own process."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config.sections import AgentConfig
from agent.service.app import AgentApp
from agent.service.compose import build_agent
from sim.broker import Broker
from tests.support.disk import SmallDisk
from tests.support.eventsink import EventSink
from tests.support.soak import LogLines, NotifySocket


@pytest.fixture
def lines() -> Iterator[LogLines]:
    """Everything the agent logs at INFO and above, as a production log would show it."""
    handler = LogLines()
    logger = logging.getLogger("agent")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[NotifySocket]:
    """A notify socket standing in for systemd's, counting WATCHDOG=1 pings."""
    fake = NotifySocket(str(tmp_path / "notify.sock"))
    yield fake
    fake.close()


@pytest.fixture
def model_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every model the agent loads from now on."""
    import agent.runtime.loader as loader

    loads: list[str] = []
    real = loader.load_model

    def counting(folder: Any, *args: Any, **kwargs: Any) -> Any:
        loads.append(str(folder))
        return real(folder, *args, **kwargs)

    monkeypatch.setattr(loader, "load_model", counting)
    return loads


@pytest.fixture
def run_agent() -> Iterator[Callable[[AgentConfig], AgentApp]]:
    """`run_agent(config)`: the whole agent, as `edge-agent run` builds it, started and ready."""
    apps: list[AgentApp] = []

    def start(config: AgentConfig) -> AgentApp:
        app = build_agent(config)
        apps.append(app)
        app.start()
        assert app.wait_ready(30), "the agent did not get ready"
        return app

    yield start
    for app in apps:
        app.stop(timeout=3.0)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], SmallDisk]]:
    """`small_disk(size)`: a mounted tmpfs at tmp_path/state; unmounted after the test."""
    mounted: list[SmallDisk] = []

    def make(size: str) -> SmallDisk:
        disk = SmallDisk(tmp_path / "state", size)
        disk.mount()
        mounted.append(disk)
        return disk

    yield make
    for disk in mounted:
        disk.unmount()


@pytest.fixture
def event_sink(tmp_path: Path) -> Iterator[Callable[[Broker, list[str]], EventSink]]:
    """`event_sink(broker, filters)`: a subscribed out-of-process sink; stopped after the test."""
    made: list[EventSink] = []

    def make(broker: Broker, filters: list[str]) -> EventSink:
        sink = EventSink(broker, filters, tmp_path / f"sink-{len(made)}.txt")
        made.append(sink)
        sink.wait_subscribed()
        return sink

    yield make
    for sink in made:
        sink.close()
