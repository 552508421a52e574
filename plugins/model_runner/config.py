"""The model runner's params: which sensors feed the input tensor, what is published, the rules."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from agent.plugin.base import PluginParams

NAME = r"^[a-z][a-z0-9_]*$"


class ChannelParams(PluginParams):
    """One HAL sensor (one value per reading) mapped into the input tensor."""

    sensor: str = Field(
        pattern=NAME, description="Sensor name; its HAL device is '<plugin>.<sensor>'"
    )
    scale: float = Field(1.0, description="Reading x scale + offset goes into the tensor")
    offset: float = Field(0.0, description="Added after scaling")
    unit: str = Field("", description="Unit of the raw reading, for listings")


class OutputParams(PluginParams):
    """One model output published as telemetry."""

    name: str = Field(pattern=NAME, description="Telemetry name prefix of this output")
    index: int = Field(0, ge=0, le=63, description="Which model output (0 = first)")
    labels: list[str] = Field(
        default_factory=list,
        description="Class names: publish the top class and its probability, not every value",
    )
    size: int = Field(
        1, ge=1, le=256, description="Values in this output (without labels); checked at setup"
    )


class ClassChangeRule(PluginParams):
    """An event when the top class of a classifier output changes and holds."""

    kind: Literal["class_change"] = Field(description="Rule type")
    output: str = Field(pattern=NAME, description="Name of a labelled output")
    min_probability: float = Field(0.6, ge=0.0, le=1.0, description="Ignore weaker top classes")
    hold_s: float = Field(0.5, ge=0.0, le=3600.0, description="The new class must hold this long")
    event: str = Field("class_change", pattern=NAME, description="Event kind emitted")


class ThresholdRule(PluginParams):
    """An event when an output value rises above `above`, and again when it falls below `clear`."""

    kind: Literal["threshold"] = Field(description="Rule type")
    output: str = Field(pattern=NAME, description="Name of an output")
    value: int = Field(0, ge=0, description="Which value of that output (or class index)")
    above: float = Field(description="Raise the event when the value reaches this")
    clear: float = Field(description="Clear it when the value falls to this (hysteresis)")
    event: str = Field("threshold", pattern=NAME, description="Event kind emitted")

    @model_validator(mode="after")
    def _hysteresis(self) -> ThresholdRule:
        if self.clear > self.above:
            raise ValueError(f"clear ({self.clear}) must not exceed above ({self.above})")
        return self


Rule = Annotated[ClassChangeRule | ThresholdRule, Field(discriminator="kind")]


class ModelRunnerParams(PluginParams):
    """Everything the model runner needs: it has no code of its own for any one model."""

    channels: list[ChannelParams] = Field(
        default_factory=lambda: [ChannelParams(sensor="signal")],
        min_length=1,
        max_length=64,
        description="Sensors stacked into the input, in this order",
    )
    window: int = Field(16, ge=1, le=4096, description="Last N readings per channel in the input")
    layout: Literal["time_major", "channel_major"] = Field(
        "time_major",
        description="time_major: the input is [window, channels]; channel_major: [channels, "
        "window] (any batch or unit axes of size 1 around them are fine)",
    )
    every_n_ticks: int = Field(1, ge=1, le=1_000_000, description="Run the model every Nth tick")
    outputs: list[OutputParams] = Field(
        default_factory=lambda: [OutputParams(name="output")],
        min_length=1,
        max_length=16,
        description="Model outputs published as telemetry",
    )
    rules: list[Rule] = Field(default_factory=list, description="Events raised from outputs")
    telemetry_every: int = Field(
        1, ge=1, le=1_000_000, description="One telemetry row every this many model runs"
    )

    @model_validator(mode="after")
    def _names(self) -> ModelRunnerParams:
        sensors = [c.sensor for c in self.channels]
        if len(set(sensors)) != len(sensors):
            raise ValueError(f"channels name a sensor twice: {sensors}")
        outputs = {o.name: o for o in self.outputs}
        if len(outputs) != len(self.outputs):
            raise ValueError("outputs repeat a name")
        for rule in self.rules:
            target = outputs.get(rule.output)
            if target is None:
                raise ValueError(f"rule output {rule.output!r} is not one of {sorted(outputs)}")
            if isinstance(rule, ClassChangeRule) and not target.labels:
                raise ValueError(f"class_change needs labels on output {rule.output!r}")
        return self

    def layout_key(self) -> tuple[object, ...]:
        """What fixes the devices, buffers and telemetry fields (a change needs a restart)."""
        return (
            tuple(c.sensor for c in self.channels),
            self.window,
            self.layout,
            tuple((o.name, o.index, len(o.labels), o.size) for o in self.outputs),
        )


def telemetry_fields(params: ModelRunnerParams) -> tuple[str, ...]:
    """Labelled outputs publish `<name>_class` and `<name>_p`; others one field per value."""
    fields: list[str] = []
    for o in params.outputs:
        if o.labels:
            fields += [f"{o.name}_class", f"{o.name}_p"]
        elif o.size == 1:
            fields.append(o.name)
        else:
            fields += [f"{o.name}_{i}" for i in range(o.size)]
    return (*fields, "dropouts")
