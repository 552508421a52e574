"""Fixtures for the OTA tests: key pairs, a config with its own state_dir, an OTA service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config.sections import AgentConfig
from agent.ota import OtaService, generate_keypair
from tests.support.ota import make_config


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the operator's key pair (private.pem, public.pem)."""
    folder = tmp_path_factory.mktemp("keys")
    generate_keypair(folder)
    return folder


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second key pair that devices do not trust."""
    folder = tmp_path_factory.mktemp("other-keys")
    generate_keypair(folder)
    return folder


@pytest.fixture
def config(tmp_path: Path, keys: Path) -> AgentConfig:
    """A config trusting `keys`, with a fresh state_dir and the repo's shipped models."""
    return make_config(tmp_path, [keys / "public.pem"])


@pytest.fixture
def statuses() -> list[dict[str, Any]]:
    """Every status the `service` fixture reported, in order."""
    return []


@pytest.fixture
def service(config: AgentConfig, statuses: list[dict[str, Any]]) -> Iterator[OtaService]:
    """An OTA service without an engine (validates and installs, swaps nothing)."""
    svc = OtaService(config)
    svc.add_listener(statuses.append)
    yield svc
    svc.close()
