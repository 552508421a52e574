"""Fixtures shared by the engine tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.engine.host import PluginHost
from tests.support import engine as kit


@pytest.fixture
def hosts() -> Iterator[list[PluginHost]]:
    """Hosts a test starts (append them); each is stopped after the test."""
    made: list[PluginHost] = []
    yield made
    for host in made:
        kit.stop_host(host)
