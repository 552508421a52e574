"""Parameters of the energy plugin, validated by the host and settable remotely."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from agent.plugin.base import PluginParams


class Params(PluginParams):
    """Detector choice, alarm logic, baseline thresholds and output pacing."""

    detector: Literal["model", "threshold"] = Field(
        "model",
        description="model: the int8 CNN; threshold: the fixed-threshold baseline "
        "(also used when the plugin has no model)",
    )
    threshold: float = Field(
        0.95, ge=0.05, le=0.999, description="Anomaly score (1 - p(normal)) that raises an alarm"
    )
    release: float = Field(
        0.475, ge=0.0, le=0.999, description="Score below which an active alarm starts to clear"
    )
    confirm_ticks: int = Field(
        5, ge=1, le=600, description="Consecutive scores >= threshold before an alarm fires"
    )
    rearm_ticks: int = Field(
        30, ge=1, le=36000, description="Consecutive scores < release before the next alarm"
    )
    infer_every: int = Field(1, ge=1, le=600, description="Run the detector every N ticks")
    telemetry_every: int = Field(60, ge=1, le=36000, description="Ticks between telemetry rows")
    sample_period_s: float = Field(
        1.0, gt=0.0, le=3600.0, description="Seconds of the monitored house per reading (for kWh)"
    )
    spike_w: float = Field(
        750.0,
        ge=50.0,
        le=50000.0,
        description="threshold detector: alarm on a rise this big (W) from one reading to the next",
    )

    @model_validator(mode="after")
    def _release_below_threshold(self) -> Params:
        if self.release > self.threshold:
            raise ValueError("release must not exceed threshold")
        return self
