"""The agent of bench's agent phase: plain loops, or with `--sync` the agent as `run` builds it,
syncing to the bench's broker, so the loops are measured beside the threads that publish their
telemetry, keep the outbox and serve commands."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from agent.config.sections import AgentConfig
from agent.plugin.registry import PluginRegistry
from agent.service.app import AgentApp


@contextlib.contextmanager
def synced_agent(
    config: AgentConfig, registry: PluginRegistry | None, sync_to: tuple[str, int] | None
) -> Iterator[AgentApp]:
    """The agent to measure; with `sync_to` (host, port) it syncs there, from a temporary
    state_dir: a running agent's outbox, lock and pending telemetry are never touched."""
    if sync_to is None:
        yield AgentApp(config, registry=registry)
        return
    from agent.service.compose import build_agent

    host, port = sync_to
    with tempfile.TemporaryDirectory(prefix="edge-bench-state-") as tmp:
        mqtt = config.mqtt.model_copy(
            update={
                "enabled": True,
                "host": host,
                "port": port,
                "hosts": None,
                "tls": None,
                "username": None,
                "password_file": None,
                "password_credential": None,
            }
        )
        synced = config.model_copy(update={"state_dir": Path(tmp), "mqtt": mqtt})
        yield build_agent(synced, registry=registry)
