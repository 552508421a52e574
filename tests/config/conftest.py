"""Fixtures for the configuration tests: write a TOML file, collect the errors loading it raises."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config

ErrorsByKey = dict[str, tuple[str, object]]


@pytest.fixture
def write_toml(tmp_path: Path) -> Callable[..., Path]:
    """Write TOML text to a file in a fresh folder and return its path."""

    def write(text: str, name: str = "agent.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def config_errors() -> Callable[..., ErrorsByKey]:
    """Load a file (with an empty environment unless given) and return its errors by key path."""

    def collect(path: Path | None, env: Mapping[str, str] | None = None) -> ErrorsByKey:
        with pytest.raises(ConfigError) as caught:
            load_config(path, env={} if env is None else env)
        found = {key: (msg, value) for key, msg, value in caught.value.errors}
        assert len(found) == len(caught.value.errors), caught.value.errors
        return found

    return collect
