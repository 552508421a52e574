"""What a configured plugin runs with: params validated by its own model, and its rate."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from agent.config.sections import PluginConfig
from agent.errors import ConfigError
from agent.plugin.base import Plugin, PluginParams


def effective_rate(pc: PluginConfig, cls: type[Plugin]) -> float:
    """The configured rate when the config sets one, else the plugin's default rate."""
    return pc.rate_hz if "rate_hz" in pc.model_fields_set else cls.default_rate_hz


def validate_params(name: str, cls: type[Plugin], data: dict[str, Any]) -> PluginParams:
    """The plugin's params model over `data`; ConfigError naming `plugins[name].params.key`."""
    try:
        return cls.Params.model_validate(data)
    except ValidationError as exc:
        errors: list[tuple[str, str, object]] = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            path = f"plugins[{name}].params" + (f".{key}" if key else "")
            errors.append((path, err["msg"], err.get("input")))
        raise ConfigError(errors, source="params") from None
