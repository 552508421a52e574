"""The robot plugin's params: safety layer, speed limit, goal handling, telemetry rate."""

from __future__ import annotations

from pydantic import Field

from agent.plugin.base import PluginParams


class RobotParams(PluginParams):
    """Tunable at run time (config or remote command); applied between two ticks."""

    estop_distance: float = Field(
        0.27,
        ge=0.2,
        le=1.5,
        description="E-stop: refuse motion toward any lidar return closer than this "
        "(m from the robot centre; the robot's radius is 0.18 m)",
    )
    estop_corridor: float = Field(
        0.21,
        ge=0.18,
        le=0.6,
        description="Half-width (m) of the path ahead or behind in which a close return "
        "blocks motion; returns off to the side never block",
    )
    max_wheel_speed: float = Field(
        1.0, gt=0.0, le=1.0, description="Clip each wheel command to this (m/s)"
    )
    turn_gain: float = Field(
        3.0, gt=0.0, le=20.0, description="Turn rate (rad/s) per rad of heading error"
    )
    max_turn: float = Field(2.5, gt=0.0, le=10.0, description="Largest turn rate (rad/s)")
    wheel_base: float = Field(
        0.32, gt=0.05, le=2.0, description="Distance between the wheels (m), for the turn"
    )
    goal_tolerance: float = Field(
        0.25, ge=0.05, le=2.0, description="Stop at the goal when it is this close (m)"
    )
    goal_hold_s: float = Field(
        0.5,
        ge=0.0,
        le=5.0,
        description="Keep steering on the last good goal reading this long while the goal "
        "sensor drops out, then stop",
    )
    estop_rearm_s: float = Field(
        0.5,
        ge=0.0,
        le=60.0,
        description="An e-stop counts as a new one (event) after this long without blocking",
    )
    telemetry_every: int = Field(
        50, ge=1, le=1_000_000, description="Emit one telemetry row every this many ticks"
    )
