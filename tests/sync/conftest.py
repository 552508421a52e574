"""Fixtures of the sync tests: configs pointing at the test broker, started services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config.sections import AgentConfig
from agent.sync.service import SyncService
from tests.support.sync import FakeEngine, agent_config


@pytest.fixture
def make_config(tmp_path: Path, unique_id: str) -> Callable[..., AgentConfig]:
    """`make_config(broker, **sections)`: a config for this test's device against `broker`."""

    def make(broker: Any, **sections: Any) -> AgentConfig:
        state = Path(sections.pop("state_dir", tmp_path / "state"))
        return agent_config(broker.port, unique_id, state, **sections)

    return make


@pytest.fixture
def start_service() -> Iterator[Callable[..., tuple[SyncService, FakeEngine]]]:
    """`start_service(config, engine=None, config_path=None)`: a started SyncService; stopped
    after the test."""
    made: list[tuple[SyncService, FakeEngine]] = []

    def start(
        config: AgentConfig, engine: FakeEngine | None = None, config_path: Path | None = None
    ) -> tuple[SyncService, FakeEngine]:
        eng = engine or FakeEngine()
        svc = SyncService(config, eng, config_path=config_path)
        svc.start()
        made.append((svc, eng))
        return svc, eng

    yield start
    for svc, eng in made:
        eng.close()
        svc.stop(1.0)
