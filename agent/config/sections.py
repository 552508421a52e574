"""The configuration schema: one pydantic model per section, unknown keys rejected."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

# The runtime and HAL sections live in their own modules; re-exported so every section is
# still imported from here.
from agent.config.base import CHECK_FILES as CHECK_FILES
from agent.config.base import ID_PATTERN as ID_PATTERN
from agent.config.base import RequiredFile, Section
from agent.config.hal import HalConfig as HalConfig
from agent.config.hal import HalDeviceConfig as HalDeviceConfig
from agent.config.hal import MqttDeviceConfig as MqttDeviceConfig
from agent.config.hal import SimDeviceConfig as SimDeviceConfig
from agent.config.runtime import AutoRuntime as AutoRuntime
from agent.config.runtime import CoralRuntime as CoralRuntime
from agent.config.runtime import CpuRuntime as CpuRuntime
from agent.config.runtime import NpuRuntime as NpuRuntime
from agent.config.runtime import RuntimeConfig as RuntimeConfig
from agent.config.runtime import RuntimeSection
from agent.config.schedule import ScheduleConfig as ScheduleConfig

MIN_RATE_HZ = 0.01
"""Slowest plugin tick rate (one tick in 100 s): slower ones are a typo, and 1e-300 overflowed."""


def _shipped_models_dir() -> Path:
    # Imported when first needed: the agent.runtime package imports this module.
    from agent.shipped import shipped_models_dir

    return shipped_models_dir()


class DeviceConfig(Section):
    """Who this agent is in the fleet."""

    id: str = Field(
        default="edge-dev-1", pattern=ID_PATTERN, description="Device id, used in MQTT topics"
    )
    name: str = Field(default="", description="Human-readable name shown in Home Assistant")
    board: str = Field(default="generic-x86", description="Board kind this config was written for")
    group: str = Field(
        default="default", pattern=ID_PATTERN, description="Fleet group for group commands"
    )


class TlsConfig(Section):
    """TLS files for the MQTT connection."""

    ca_file: RequiredFile = Field(description="CA certificate that signed the broker's certificate")
    cert_file: RequiredFile | None = Field(
        default=None, description="Client certificate (mutual TLS)"
    )
    key_file: RequiredFile | None = Field(
        default=None, description="Client private key (mutual TLS)"
    )
    verify: bool = Field(default=True, description="Verify the broker certificate and host name")

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of `HOST:PORT` (`[v6]:PORT` too); ValueError saying what is wrong."""
    host, sep, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or any(c.isspace() or c in "/[]" for c in host):
        raise ValueError("must be HOST:PORT")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("port must be a number from 1 to 65535")
    return host, int(port)


def _check_address(address: str) -> str:
    split_address(address)
    return address


BrokerAddress = Annotated[str, AfterValidator(_check_address)]
"""One broker as HOST:PORT."""


class MqttConfig(Section):
    """Connection to the MQTT broker."""

    enabled: bool = Field(default=True, description="Sync over MQTT at all")
    host: str = Field(default="127.0.0.1", min_length=1, description="Broker host")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port")
    hosts: list[BrokerAddress] | None = Field(
        default=None,
        min_length=1,
        description="Brokers of a cluster as HOST:PORT, tried in order (instead of host/port)",
    )
    protocol: Literal["5", "3.1.1"] = Field(default="5", description="MQTT protocol version")
    client_id: str | None = Field(
        default=None, description="Client id; default edge-agent-<device id>"
    )
    tls: TlsConfig | None = Field(default=None, description="TLS settings; plain TCP when absent")
    username: str | None = Field(default=None, description="Username for broker authentication")
    password_file: RequiredFile | None = Field(
        default=None, description="File holding the password"
    )
    password_credential: str | None = Field(
        default=None,
        description="systemd credential name holding the password ($CREDENTIALS_DIRECTORY)",
    )
    keepalive: int = Field(default=30, ge=5, le=3600, description="Keepalive in seconds")
    topic_root: str = Field(
        default="edge", pattern=r"^[A-Za-z0-9_-]+$", description="First topic level"
    )
    telemetry_qos: Literal[0, 1] = Field(default=0, description="QoS for telemetry batches")
    reply_prefix: str = Field(
        default="replies",
        pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$",
        description="The only place under topic_root (besides <root>/<id>/reply) a response "
        "topic may point: <topic_root>/<reply_prefix>/...",
    )
    reconnect_min_s: float = Field(
        default=0.5, ge=0.01, le=3600, description="First reconnect delay"
    )
    reconnect_max_s: float = Field(
        default=30.0, ge=0.01, le=3600, description="Longest reconnect delay"
    )
    max_payload_bytes: int = Field(
        default=65536, ge=256, description="Largest command payload accepted"
    )
    commands: list[str] | None = Field(
        default=None, description="Allow-list of remote commands; all built-in commands when absent"
    )
    home_assistant: bool = Field(default=True, description="Publish Home Assistant MQTT discovery")
    resubscribe_s: float = Field(
        default=300.0,
        ge=0,
        le=86400,
        description="Subscribe again to the command and update topics this often (0: only at "
        "connect); a broker may lose a subscription silently (a NATS node dies)",
    )

    @field_validator("password_credential")
    @classmethod
    def _credential_is_a_name(cls, value: str | None) -> str | None:
        # A credential is a file name inside $CREDENTIALS_DIRECTORY, never a path out of it.
        if value is not None and (not value or "/" in value or value in (".", "..")):
            raise ValueError("must be a credential name (no '/'), as in LoadCredential=NAME:...")
        return value

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttConfig:
        if self.password_file is not None and self.password_credential is not None:
            raise ValueError("give password_file or password_credential, not both")
        return self

    @model_validator(mode="after")
    def _hosts_or_host(self) -> MqttConfig:
        # Compared with the defaults, not `model_fields_set`: the loader validates its own dump
        # again, where every field is set.
        fields = type(self).model_fields
        moved = (self.host, self.port) != (fields["host"].default, fields["port"].default)
        if self.hosts is not None and moved:
            raise ValueError("give hosts, or host and port, not both")
        return self

    def endpoints(self) -> list[tuple[str, int]]:
        """The brokers to try, in order: `hosts`, else the one `host`:`port`."""
        if self.hosts is None:
            return [(self.host, self.port)]
        return [split_address(a) for a in self.hosts]

    @model_validator(mode="after")
    def _reconnect_bounds(self) -> MqttConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        return self


class OutboxConfig(Section):
    """Durable store of outgoing messages in state_dir."""

    max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=64 * 1024, description="Size bound of the outbox"
    )
    telemetry_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Share of max_bytes telemetry may use before dropping oldest",
    )


class PluginConfig(Section):
    """One plugin instance run by the host."""

    name: str = Field(pattern=ID_PATTERN, description="Entry point name in edge_agent.plugins")
    enabled: bool = Field(default=True, description="Start this plugin")
    rate_hz: float = Field(
        default=100.0, ge=MIN_RATE_HZ, le=20000, description="Tick rate (0.01 Hz to 20 kHz)"
    )
    model: str | None = Field(default=None, description="Model name (folder in models_dir)")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Plugin parameters, validated by the plugin's own model"
    )
    cpu_affinity: list[int] | None = Field(
        default=None, description="CPUs the loop thread may run on"
    )
    realtime_priority: int | None = Field(
        default=None, ge=1, le=99, description="SCHED_FIFO priority (needs CAP_SYS_NICE)"
    )
    wait: Literal["sleep", "spin"] = Field(
        default="sleep",
        description="sleep: sleep to engine.spin_us before each deadline, then spin; spin: "
        "spin the whole period so the core stays hot (one core at 100 %, give it cpu_affinity)",
    )
    isolate: bool = Field(
        default=False,
        description="Run this plugin's loop in a child process: a native crash in its runtime or "
        "driver restarts the plugin and leaves the agent and the other loops running",
    )

    @field_validator("cpu_affinity")
    @classmethod
    def _cpus_not_negative(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or min(value) < 0):
            raise ValueError("must list one or more CPU numbers >= 0")
        return value


class EngineConfig(Section):
    """How the real-time loops wait, collect garbage and recover."""

    spin_us: int = Field(
        default=100, ge=0, le=10000, description="Spin this long before each deadline"
    )
    gc_mode: Literal["freeze", "default", "disabled"] = Field(
        default="freeze", description="freeze: gc.freeze() after setup, collections in idle slack"
    )
    switch_interval_us: int = Field(
        default=100, ge=10, le=5000, description="Python thread switch interval (GIL hand-over)"
    )
    restart_backoff_s: float = Field(
        default=0.5, ge=0.001, le=3600, description="First restart delay of a failed plugin"
    )
    restart_backoff_max_s: float = Field(
        default=30.0, ge=0.001, le=3600, description="Longest restart delay"
    )
    overrun_reduce_rate: bool = Field(
        default=False, description="Halve the rate of a plugin that keeps overrunning"
    )
    overrun_report_ratio: float = Field(
        default=0.01,
        gt=0,
        le=1,
        description="Share of overrun ticks that counts as 'keeps overrunning'",
    )

    @model_validator(mode="after")
    def _backoff_bounds(self) -> EngineConfig:
        if self.restart_backoff_s > self.restart_backoff_max_s:
            raise ValueError("restart_backoff_s must not exceed restart_backoff_max_s")
        return self


class OtaConfig(Section):
    """Over-the-air model updates."""

    trusted_keys: list[RequiredFile] = Field(
        default_factory=list, description="Ed25519 public key files"
    )
    keep_versions: int = Field(default=3, ge=2, le=20, description="Versions kept per model")
    health_window_s: float = Field(
        default=10.0, ge=0.1, le=86400, description="Watch a new model this long"
    )
    latency_regression: float = Field(
        default=3.0,
        gt=1,
        le=1000,
        description="Roll back when p99 exceeds the previous model's by this factor",
    )
    max_bundle_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="Largest bundle accepted"
    )


class SchedulerConfig(Section):
    """Periodic jobs (APScheduler)."""

    telemetry_flush_s: float = Field(
        default=1.0, ge=0.05, le=3600, description="Publish batched telemetry (0.05 s to 1 h)"
    )
    metrics_s: float = Field(
        default=10.0, ge=0.1, le=86400, description="Publish loop statistics (0.1 s to 1 day)"
    )
    state_s: float = Field(
        default=300.0, ge=1, le=86400, description="Republish the retained state (1 s to 1 day)"
    )
    outbox_compaction_s: float = Field(
        default=600.0, ge=1, le=604800, description="Vacuum the outbox (1 s to 1 week)"
    )


class LoggingConfig(Section):
    """Logging output."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level"
    )
    format: Literal["plain", "json"] = Field(
        default="plain", description="json suits journald shipping"
    )


class ServiceConfig(Section):
    """Integration with the service manager."""

    watchdog: bool = Field(default=True, description="Send WATCHDOG=1 while the loops tick")
    prometheus_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve Prometheus metrics on localhost at this port",
    )


class AgentConfig(Section):
    """The whole agent configuration."""

    device: DeviceConfig = Field(default_factory=DeviceConfig)
    runtime: RuntimeSection = Field(default_factory=CpuRuntime)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    hal: HalConfig = Field(default_factory=HalConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    plugins: list[PluginConfig] = Field(default_factory=list)
    ota: OtaConfig = Field(default_factory=OtaConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    schedule: list[ScheduleConfig] = Field(
        default_factory=list, description="Schedules that run commands ([[schedule]] tables)"
    )
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    state_dir: Path = Field(
        default=Path("/var/lib/edge-agent"), description="Outbox, OTA slots, seq"
    )
    models_dir: Path = Field(
        default_factory=_shipped_models_dir,
        description="Models, one folder each; the package's shipped (read-only) ones when omitted",
    )

    # A field validator (not a model one) so the error points at `plugins`, not at the root.
    @field_validator("plugins")
    @classmethod
    def _unique_plugin_names(cls, plugins: list[PluginConfig]) -> list[PluginConfig]:
        names = [p.name for p in plugins]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"plugin names must be unique: {', '.join(dupes)}")
        return plugins

    @field_validator("state_dir", "models_dir", mode="before")
    @classmethod
    def _folder_named(cls, value: Any) -> Any:
        # Path("") is ".": an empty value would silently mean the working directory.
        if isinstance(value, str) and not value.strip():
            raise ValueError("must name a folder (an empty value would mean the working directory)")
        return value

    @field_validator("schedule")
    @classmethod
    def _unique_schedule_names(cls, schedules: list[ScheduleConfig]) -> list[ScheduleConfig]:
        names = [s.name for s in schedules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"schedule names must be unique: {', '.join(dupes)}")
        return schedules
