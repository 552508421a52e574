"""Smart home comfort control: occupancy forecasts drive heating, cooling, lights, ventilation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plugins.smart_home.plugin import SmartHomePlugin

__all__ = ["SmartHomePlugin"]


def __getattr__(name: str) -> Any:
    # Lazy, so the training script can import plugins.smart_home.features from a venv that has
    # numpy but not the agent's own dependencies (pydantic).
    if name == "SmartHomePlugin":
        from plugins.smart_home.plugin import SmartHomePlugin

        return SmartHomePlugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
