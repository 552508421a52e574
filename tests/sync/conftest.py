"""Fixtures of the sync tests: configs pointing at the test broker, started services."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config.sections import AgentConfig
from agent.sync.service import SyncService

# The test kit of this folder (sync_fakes) is importable whatever pytest's import mode.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from sync_fakes import FakeEngine, agent_config  # noqa: E402


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
