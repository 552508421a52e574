"""Parameters of the smart home plugin: comfort band, setbacks, thresholds, fixed schedule."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.plugin.base import PluginParams

ROOMS = ("living", "kitchen", "bedroom", "office")

Period = tuple[float, float]


class RoomSchedule(BaseModel):
    """Comfort periods of one room for the fixed-schedule mode, as (start, end) local hours."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weekday: list[Period] = Field(default_factory=list, description="Monday to Friday periods")
    weekend: list[Period] = Field(default_factory=list, description="Saturday and Sunday periods")

    @field_validator("weekday", "weekend")
    @classmethod
    def _hours(cls, periods: list[Period]) -> list[Period]:
        for start, end in periods:
            if not 0.0 <= start < end <= 24.0:
                raise ValueError(f"period ({start}, {end}) must satisfy 0 <= start < end <= 24")
        return periods


def default_schedule() -> dict[str, RoomSchedule]:
    """What an installer programs into a thermostat for a household that commutes."""
    return {
        "living": RoomSchedule(weekday=[(6.5, 8.5), (16.5, 23.0)], weekend=[(7.5, 23.5)]),
        "kitchen": RoomSchedule(weekday=[(6.5, 8.5), (17.0, 21.0)], weekend=[(7.5, 21.0)]),
        "bedroom": RoomSchedule(
            weekday=[(0.0, 7.5), (21.5, 24.0)], weekend=[(0.0, 9.0), (22.0, 24.0)]
        ),
        "office": RoomSchedule(weekday=[(8.5, 17.5)], weekend=[]),
    }


class Params(PluginParams):
    """Smart home params; thresholds apply to the model's per-room occupancy probabilities."""

    control: Literal["model", "schedule"] = Field(
        "model",
        description="model: occupancy forecasts drive every room; schedule: fixed-schedule "
        "thermostat (also used when no model is configured)",
    )
    comfort_low: float = Field(20.0, ge=10.0, le=28.0, description="Comfort band floor (degC)")
    comfort_high: float = Field(24.0, ge=16.0, le=32.0, description="Comfort band ceiling (degC)")
    margin: float = Field(
        0.7, ge=0.0, le=3.0, description="Setpoints sit this far inside the band (degC)"
    )
    eco_offset: float = Field(
        1.0,
        ge=0.0,
        le=8.0,
        description="Band widening for rooms likely used within the hour (P within 60 min)",
    )
    setback_heat: float = Field(
        16.0, ge=5.0, le=25.0, description="Heating setpoint of rooms nobody is expected in"
    )
    setback_cool: float = Field(
        28.0, ge=20.0, le=35.0, description="Cooling setpoint of rooms nobody is expected in"
    )
    occupied_threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="P(occupied now) above which a room counts as in use"
    )
    demand_low: float = Field(
        0.05, ge=0.0, lt=1.0, description="Demand (P in use now or within 30 min) of full setback"
    )
    demand_high: float = Field(
        0.35, gt=0.0, le=1.0, description="Demand from which the room is held at full comfort"
    )
    window_hvac_off: bool = Field(
        True, description="Switch a room's heating and cooling off while its window is open"
    )
    co2_on_ppm: float = Field(
        1000.0, ge=500.0, le=5000.0, description="CO2 that switches demand ventilation on"
    )
    co2_off_ppm: float = Field(
        750.0, ge=420.0, le=4000.0, description="CO2 under which demand ventilation stops"
    )
    vent_min: float = Field(
        0.1, ge=0.0, le=1.0, description="Ventilation level of an occupied room at low CO2"
    )
    lux_target: float = Field(
        300.0, ge=0.0, le=2000.0, description="Illuminance lamps top daylight up to (lux)"
    )
    light_hold_min: float = Field(
        10.0, ge=0.5, le=120.0, description="Lamps stay on this long after the last motion (min)"
    )
    schedule: dict[str, RoomSchedule] = Field(
        default_factory=default_schedule,
        description="Comfort periods per room for control = schedule",
    )
    telemetry_every: int = Field(
        10, ge=1, le=100_000, description="Emit one telemetry row every this many ticks"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        if self.comfort_high - self.comfort_low < 2 * self.margin + 0.5:
            raise ValueError("comfort_high - comfort_low must exceed 2 * margin + 0.5")
        if self.demand_low >= self.demand_high:
            raise ValueError("demand_low must be below demand_high")
        if self.co2_off_ppm >= self.co2_on_ppm:
            raise ValueError("co2_off_ppm must be below co2_on_ppm")
        unknown = sorted(set(self.schedule) - set(ROOMS))
        if unknown:
            raise ValueError(f"schedule names unknown rooms {unknown}; rooms are {list(ROOMS)}")
        return self
