"""The agent configuration: schema, loading with environment overrides, and its errors."""

from __future__ import annotations

from agent.config.loader import (
    ENV_PREFIX,
    format_config,
    load_config,
    read_mqtt_password,
    reload_from_file,
)
from agent.config.sections import AgentConfig, MqttConfig, PluginConfig, RuntimeConfig
from agent.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "AgentConfig",
    "ConfigError",
    "MqttConfig",
    "PluginConfig",
    "RuntimeConfig",
    "format_config",
    "load_config",
    "read_mqtt_password",
    "reload_from_file",
]
