"""The `[hal]` section: the default backend, and per-device tables chosen by their `backend`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, Tag, field_validator

from agent.config.base import Section, by_key, tag


class SimDeviceConfig(Section):
    """A device driven by the plugin's simulator, whatever `hal.backend` says."""

    backend: Literal["sim"] = Field(default="sim", description="HAL backend for this device")


class MqttDeviceConfig(Section):
    """A device behind an MQTT topic: a sensor reads it, an actuator publishes to it."""

    backend: Literal["mqtt"] = Field(default="mqtt", description="HAL backend for this device")
    topic: str = Field(min_length=1, description="Sensor topic to read, or actuator topic")
    field: str | None = Field(
        default=None, description="Dotted path of the value in the JSON payload"
    )
    stale_after_s: float = Field(
        default=60.0,
        ge=0.01,
        le=86400,
        description="Sensor: reported stale after this long without a reading",
    )


HalDeviceConfig = Annotated[
    Annotated[SimDeviceConfig, Tag(tag("backend", "sim"))]
    | Annotated[MqttDeviceConfig, Tag(tag("backend", "mqtt"))],
    by_key("backend", "sim", ("sim", "mqtt")),
]
"""One `[hal.devices."<plugin>.<device>"]` table: the class its `backend` names (sim if absent)."""


class HalConfig(Section):
    """Hardware abstraction: which backend provides sensors and actuators."""

    backend: Literal["sim", "mqtt"] = Field(
        default="sim", description="Default backend for all devices"
    )
    sim_seed: int = Field(default=0, description="Seed of the simulators behind the sim backend")
    sim_speed: float = Field(
        default=1.0, gt=0, le=1000, description="Simulated seconds per real second"
    )
    sim_process: bool = Field(
        default=False,
        description="Step the simulators in a process of their own, as hardware would be: "
        "their Python then takes no turns on the agent's interpreter lock",
    )
    devices: dict[str, HalDeviceConfig] = Field(
        default_factory=dict, description="Per device overrides, keyed '<plugin>.<device>'"
    )

    @field_validator("devices")
    @classmethod
    def _device_keys(cls, value: dict[str, HalDeviceConfig]) -> dict[str, HalDeviceConfig]:
        bad = sorted(k for k in value if k.count(".") != 1 or "" in k.split("."))
        if bad:
            raise ValueError(f"keys must look like '<plugin>.<device>': {', '.join(bad)}")
        return value
