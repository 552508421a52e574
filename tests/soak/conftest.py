"""Fixtures of the fault tests: what the agent logs, a stand-in for systemd's notify socket,
and every model the agent loads."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
