"""The configuration schema: one pydantic model per section, unknown keys rejected."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class Section(BaseModel):
    """Base of every config section: strict about unknown keys, immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceConfig(Section):
    """Who this agent is in the fleet."""

    id: str = Field("edge-dev-1", pattern=ID_PATTERN, description="Device id, used in MQTT topics")
    name: str = Field("", description="Human-readable name shown in Home Assistant")
    board: str = Field("generic-x86", description="Board kind this config was written for")
    group: str = Field("default", pattern=ID_PATTERN, description="Fleet group for group commands")


class RuntimeConfig(Section):
    """Where and how models run."""

    accelerator: Literal["auto", "cpu", "npu", "coral"] = Field(
        "cpu", description="auto tries coral, then npu, then cpu"
    )
    strict: bool = Field(False, description="Fail instead of falling back to CPU")
    threads: int = Field(1, ge=1, le=64, description="Intra-op threads per model")
    npu_delegate: str | None = Field(
        None, description="TFLite external delegate library for the NPU, e.g. libvx_delegate.so"
    )
    npu_delegate_options: dict[str, str] = Field(
        default_factory=dict, description="Options passed to the external delegate"
    )
    onnx_providers: list[str] = Field(
        default_factory=list,
        description="ONNX Runtime execution providers tried in order for npu, before CPU",
    )
    edgetpu_library: str = Field("libedgetpu.so.1", description="Coral Edge TPU delegate library")


class TlsConfig(Section):
    """TLS files for the MQTT connection."""

    ca_file: Path = Field(description="CA certificate that signed the broker's certificate")
    cert_file: Path | None = Field(None, description="Client certificate (mutual TLS)")
    key_file: Path | None = Field(None, description="Client private key (mutual TLS)")
    verify: bool = Field(True, description="Verify the broker certificate and host name")

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class MqttConfig(Section):
    """Connection to the MQTT broker."""

    enabled: bool = Field(True, description="Sync over MQTT at all")
    host: str = Field("127.0.0.1", min_length=1, description="Broker host")
    port: int = Field(1883, ge=1, le=65535, description="Broker port")
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version")
    client_id: str | None = Field(None, description="Client id; default edge-agent-<device id>")
    tls: TlsConfig | None = Field(None, description="TLS settings; plain TCP when absent")
    username: str | None = Field(None, description="Username for broker authentication")
    password_file: Path | None = Field(None, description="File holding the password")
    password_credential: str | None = Field(
        None, description="systemd credential name holding the password ($CREDENTIALS_DIRECTORY)"
    )
    keepalive: int = Field(30, ge=5, le=3600, description="Keepalive in seconds")
    topic_root: str = Field("edge", pattern=r"^[A-Za-z0-9_-]+$", description="First topic level")
    telemetry_qos: Literal[0, 1] = Field(0, description="QoS for telemetry batches")
    reconnect_min_s: float = Field(0.5, gt=0, description="First reconnect delay")
    reconnect_max_s: float = Field(30.0, gt=0, description="Longest reconnect delay")
    max_payload_bytes: int = Field(65536, ge=256, description="Largest command payload accepted")
    commands: list[str] | None = Field(
        None, description="Allow-list of remote commands; all built-in commands when absent"
    )
    home_assistant: bool = Field(True, description="Publish Home Assistant MQTT discovery")

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttConfig:
        if self.password_file is not None and self.password_credential is not None:
            raise ValueError("give password_file or password_credential, not both")
        return self


class OutboxConfig(Section):
    """Durable store of outgoing messages in state_dir."""

    max_bytes: int = Field(64 * 1024 * 1024, ge=64 * 1024, description="Size bound of the outbox")
    telemetry_share: float = Field(
        0.5, gt=0, le=1, description="Share of max_bytes telemetry may use before dropping oldest"
    )


class HalDeviceConfig(Section):
    """Where one HAL device of one plugin comes from, when not from the default backend."""

    backend: Literal["sim", "mqtt"] = Field("sim", description="HAL backend for this device")
    topic: str | None = Field(None, description="mqtt: sensor topic to read, or actuator topic")
    field: str | None = Field(None, description="mqtt: dotted path of the value in the JSON payload")
    stale_after_s: float = Field(60.0, gt=0, description="mqtt sensor: reported stale after this")


class HalConfig(Section):
    """Hardware abstraction: which backend provides sensors and actuators."""

    backend: Literal["sim", "mqtt"] = Field("sim", description="Default backend for all devices")
    sim_seed: int = Field(0, description="Seed of the simulators behind the sim backend")
    sim_speed: float = Field(1.0, gt=0, le=1000, description="Simulated seconds per real second")
    devices: dict[str, HalDeviceConfig] = Field(
        default_factory=dict, description="Per device overrides, keyed '<plugin>.<device>'"
    )


class PluginConfig(Section):
    """One plugin instance run by the host."""

    name: str = Field(pattern=ID_PATTERN, description="Entry point name in edge_agent.plugins")
    enabled: bool = Field(True, description="Start this plugin")
    rate_hz: float = Field(100.0, gt=0, le=20000, description="Tick rate")
    model: str | None = Field(None, description="Model name (folder in models_dir)")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Plugin parameters, validated by the plugin's own model"
    )
    cpu_affinity: list[int] | None = Field(None, description="CPUs the loop thread may run on")
    realtime_priority: int | None = Field(
        None, ge=1, le=99, description="SCHED_FIFO priority (needs CAP_SYS_NICE)"
    )


class EngineConfig(Section):
    """How the real-time loops wait, collect garbage and recover."""

    spin_us: int = Field(100, ge=0, le=10000, description="Spin this long before each deadline")
    gc_mode: Literal["freeze", "default", "disabled"] = Field(
        "freeze", description="freeze: gc.freeze() after setup, collections in idle slack"
    )
    switch_interval_us: int = Field(
        100, ge=10, le=5000, description="Python thread switch interval (GIL hand-over)"
    )
    restart_backoff_s: float = Field(0.5, gt=0, description="First restart delay of a failed plugin")
    restart_backoff_max_s: float = Field(30.0, gt=0, description="Longest restart delay")
    overrun_reduce_rate: bool = Field(
        False, description="Halve the rate of a plugin that keeps overrunning"
    )
    overrun_report_ratio: float = Field(
        0.01, gt=0, le=1, description="Share of overrun ticks that counts as 'keeps overrunning'"
    )


class OtaConfig(Section):
    """Over-the-air model updates."""

    trusted_keys: list[Path] = Field(default_factory=list, description="Ed25519 public key files")
    keep_versions: int = Field(3, ge=2, le=20, description="Versions kept per model")
    health_window_s: float = Field(10.0, gt=0, description="Watch a new model this long")
    latency_regression: float = Field(
        3.0, gt=1, description="Roll back when p99 exceeds the previous model's by this factor"
    )
    max_bundle_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Largest bundle accepted")


class SchedulerConfig(Section):
    """Periodic jobs (APScheduler)."""

    telemetry_flush_s: float = Field(1.0, gt=0, description="Publish batched telemetry")
    metrics_s: float = Field(10.0, gt=0, description="Publish loop statistics")
    state_s: float = Field(300.0, gt=0, description="Republish the retained state")
    outbox_compaction_s: float = Field(600.0, gt=0, description="Vacuum the outbox")


class LoggingConfig(Section):
    """Logging output."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level")
    format: Literal["plain", "json"] = Field("plain", description="json suits journald shipping")


class ServiceConfig(Section):
    """Integration with the service manager."""

    watchdog: bool = Field(True, description="Send WATCHDOG=1 while the loops tick")
    prometheus_port: int | None = Field(
        None, ge=1, le=65535, description="Serve Prometheus metrics on localhost at this port"
    )


class AgentConfig(Section):
    """The whole agent configuration."""

    device: DeviceConfig = Field(default_factory=DeviceConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    hal: HalConfig = Field(default_factory=HalConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    plugins: list[PluginConfig] = Field(default_factory=list)
    ota: OtaConfig = Field(default_factory=OtaConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    state_dir: Path = Field(Path("/var/lib/edge-agent"), description="Outbox, OTA slots, seq")
    models_dir: Path = Field(Path("models"), description="Shipped models, one folder each")

    @model_validator(mode="after")
    def _unique_plugin_names(self) -> AgentConfig:
        names = [p.name for p in self.plugins]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"plugin names must be unique: {', '.join(dupes)}")
        return self
