"""Small plugins and a simulator for the engine, host, HAL, run and bench tests.

The run/bench subprocess tests register these classes as entry points through a dist-info
directory (see `write_entry_points`), with `paths.child_env` putting `tests.support` in reach.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import Field

from agent.config.sections import AgentConfig, RuntimeConfig
from agent.engine.host import PluginHost
from agent.hal.base import ActuatorSpec, SensorSpec
from agent.hal.router import Hal
from agent.hal.shm import Layout
from agent.hal.simulator import Simulator
from agent.plugin.base import Plugin, PluginContext, PluginParams
from agent.plugin.registry import PluginRegistry
from agent.runtime.base import Model

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
WAVE_MODEL = "waveform_classifier"
WINDOW = 16


def load_test_model(name: str = WAVE_MODEL, fmt: str | None = None) -> Model:
    """A real committed model, loaded by the agent's runtime."""
    from agent.runtime.loader import load_model

    return load_model(MODELS / name, RuntimeConfig(), fmt=fmt)  # type: ignore[arg-type]


class WaveSim(Simulator):
    """A 16-sample window of a sine wave; records what is written to its `label` actuator."""

    dt: ClassVar[float] = 0.001
    sensors: ClassVar[dict[str, SensorSpec]] = {"signal": SensorSpec((WINDOW,))}
    actuators: ClassVar[dict[str, ActuatorSpec]] = {"label": ActuatorSpec((1,))}

    def reset(self, seed: int) -> None:
        """Start at t=0 with a seeded phase."""
        self.t = 0.0
        self.phase = float(np.random.default_rng(seed).uniform(0, 1))
        self.window = np.zeros(WINDOW, np.float32)
        self.label = np.full(1, -1.0, np.float32)
        self.writes = 0
        self.dropout = False
        self._fill()

    def step(self) -> None:
        """Advance time and refresh the window."""
        self.t += self.dt
        self._fill()

    def _fill(self) -> None:
        k = np.arange(WINDOW, dtype=np.float32)
        self.window[:] = np.sin(2 * np.pi * (k / WINDOW * 1.5 + self.phase + self.t))

    def read(self, sensor: str, out: npt.NDArray[np.float32]) -> bool:
        """Copy the window (False while `dropout` is set)."""
        if self.dropout:
            return False
        np.copyto(out, self.window)
        return True

    def actuate(self, actuator: str, value: npt.NDArray[np.float32]) -> None:
        """Keep a copy of the last command."""
        np.copyto(self.label, value)
        self.writes += 1


class CounterParams(PluginParams):
    """Params of CounterPlugin."""

    gain: float = Field(1.0, ge=0, le=100, description="Multiplies the counter")
    label: str = Field("a", description="Free text")


class CounterPlugin(Plugin):
    """Counts its ticks and keeps the params it was given."""

    Params = CounterParams
    default_rate_hz = 200.0

    def setup(self, ctx: PluginContext) -> None:
        """Keep the context."""
        self.ctx = ctx
        self.params = ctx.params
        self.count = 0
        self.setups = getattr(self, "setups", 0) + 1

    def tick(self, now_ns: int) -> None:
        """Count."""
        self.count += 1

    def apply_params(self, params: PluginParams) -> None:
        """Keep new params."""
        self.params = params


class ParamProbeParams(PluginParams):
    """Params of ParamProbePlugin."""

    value: int = Field(0, description="Copied into the tick twice")
    spin_us: int = Field(200, ge=0, description="Busy time between the two reads")


class ParamProbePlugin(Plugin):
    """Reads its param at the start and at the end of a busy tick; counts any difference."""

    Params = ParamProbeParams
    default_rate_hz = 200.0
    mismatches = 0
    seen: ClassVar[list[int]] = []

    def setup(self, ctx: PluginContext) -> None:
        """Start with the configured value."""
        self.p: ParamProbeParams = ctx.params  # type: ignore[assignment]
        type(self).mismatches = 0
        type(self).seen = []

    def tick(self, now_ns: int) -> None:
        """Read, spin, read again."""
        first = self.p.value
        end = time.perf_counter_ns() + self.p.spin_us * 1000
        while time.perf_counter_ns() < end:
            pass
        if self.p.value != first:
            type(self).mismatches += 1
        if not self.seen or self.seen[-1] != first:
            self.seen.append(first)

    def apply_params(self, params: PluginParams) -> None:
        """Swap the params object (between ticks, by contract)."""
        self.p = params  # type: ignore[assignment]


class SlowParams(PluginParams):
    """Params of SlowPlugin."""

    every: int = Field(10, ge=1, description="Every n-th tick is slow")
    periods: float = Field(2.5, gt=0, description="A slow tick lasts this many periods")


class SlowPlugin(Plugin):
    """Every n-th tick busy-waits for a few periods: a deliberate overrun."""

    Params = SlowParams
    default_rate_hz = 100.0

    def setup(self, ctx: PluginContext) -> None:
        """Read params and the period."""
        self.p: SlowParams = ctx.params  # type: ignore[assignment]
        self.period_ns = int(1e9 / ctx.rate_hz)
        self.n = 0
        self.slow = 0

    def tick(self, now_ns: int) -> None:
        """Spin through several deadlines every n-th tick."""
        self.n += 1
        if self.n % self.p.every == 0:
            self.slow += 1
            end = now_ns + int(self.p.periods * self.period_ns)
            while time.perf_counter_ns() < end:
                pass


class CrashyParams(PluginParams):
    """Params of CrashyPlugin."""

    crash_at: int = Field(5, ge=1, description="Raise on this tick of every instance")
    crashes: int = Field(1000, ge=0, description="Stop crashing after this many crashes")
    setup_ok: int = Field(0, ge=0, description="Setups after this many raise (0: never)")


class CrashyPlugin(Plugin):
    """Raises on its n-th tick (a fresh instance counts from zero again); with `setup_ok`, every
    setup after the first `setup_ok` ones raises too (a plugin that cannot come back)."""

    Params = CrashyParams
    default_rate_hz = 100.0
    setups = 0
    crashed = 0
    teardowns = 0

    def setup(self, ctx: PluginContext) -> None:
        """Count setups."""
        self.p: CrashyParams = ctx.params  # type: ignore[assignment]
        self.n = 0
        type(self).setups += 1
        if self.p.setup_ok and type(self).setups > self.p.setup_ok:
            raise FileNotFoundError(f"setup {type(self).setups}: calibration table missing")

    def tick(self, now_ns: int) -> None:
        """Raise on tick `crash_at`."""
        self.n += 1
        if self.n == self.p.crash_at and type(self).crashed < self.p.crashes:
            type(self).crashed += 1
            raise RuntimeError(f"boom {type(self).crashed}")

    def teardown(self) -> None:
        """Count teardowns."""
        type(self).teardowns += 1


class HangPlugin(Plugin):
    """Ticks normally until `hang` is set, then blocks inside a tick until `release` is set."""

    default_rate_hz = 100.0
    hang = threading.Event()
    release = threading.Event()

    def setup(self, ctx: PluginContext) -> None:
        """Nothing to prepare."""

    def tick(self, now_ns: int) -> None:
        """Block while asked to (a stuck driver call, say)."""
        if self.hang.is_set():
            self.release.wait()


class WaveParams(PluginParams):
    """Params of WavePlugin."""

    telemetry_every: int = Field(10, ge=1, description="Emit a telemetry row every n ticks")


class WavePlugin(Plugin):
    """The shape of a real plugin: sensor -> model -> actuator, telemetry every n ticks."""

    Params = WaveParams
    sensors: ClassVar[dict[str, SensorSpec]] = {"signal": SensorSpec((WINDOW,))}
    actuators: ClassVar[dict[str, ActuatorSpec]] = {"label": ActuatorSpec((1,))}
    telemetry_fields = ("label", "score")
    default_model = WAVE_MODEL
    default_rate_hz = 200.0
    simulator = "tests.support.engine:WaveSim"

    def setup(self, ctx: PluginContext) -> None:
        """Allocate every buffer and cache references."""
        assert ctx.model is not None
        self.ctx = ctx
        self.every = ctx.params.telemetry_every  # type: ignore[attr-defined]
        self.run = ctx.model.run
        self.inp = ctx.model.inputs[0]
        self.inp_row = self.inp[0]
        self.outp = ctx.model.outputs[0][0]
        self.read = ctx.sensors["signal"].read_into
        self.write = ctx.actuators["label"].write
        self.emit = ctx.out.telemetry
        self.label = np.zeros(1, np.float32)
        self.row = np.zeros(2, np.float64)
        self.n = 0

    def tick(self, now_ns: int) -> None:
        """Read, infer, actuate, report."""
        if not self.read(self.inp_row):
            return
        self.run()
        best = int(self.outp.argmax())
        self.label[0] = best
        self.write(self.label)
        self.n += 1
        if self.n % self.every == 0:
            self.row[0] = best
            self.row[1] = self.outp[best]
            self.emit(now_ns, self.row)

    def apply_params(self, params: PluginParams) -> None:
        """Take a new telemetry interval."""
        self.every = params.telemetry_every  # type: ignore[attr-defined]


class BeaconParams(PluginParams):
    """Params of BeaconPlugin."""

    every: int = Field(10, ge=1, description="Raise a `beat` event every n ticks")


class BeaconPlugin(Plugin):
    """Raises a `beat` event (carrying its tick number and pid) every n ticks."""

    Params = BeaconParams
    default_rate_hz = 200.0

    def setup(self, ctx: PluginContext) -> None:
        """Keep the channel and the interval."""
        self.out = ctx.out
        self.every = ctx.params.every  # type: ignore[attr-defined]
        self.pid = os.getpid()
        self.n = 0

    def tick(self, now_ns: int) -> None:
        """Count; beat every n ticks."""
        self.n += 1
        if self.n % self.every == 0:
            self.out.event(now_ns, "beat", 1.0, n=self.n, pid=self.pid)

    def apply_params(self, params: PluginParams) -> None:
        """Take a new interval."""
        self.every = params.every  # type: ignore[attr-defined]


class SegfaultParams(PluginParams):
    """Params of SegfaultPlugin."""

    crash_at: int = Field(20, ge=1, description="Crash on this tick")
    flag: str = Field("", description="Crash only while this file does not exist (made first)")
    in_setup: bool = Field(False, description="Crash in setup instead (a model that kills on load)")
    hang: bool = Field(False, description="Block in the tick instead (a driver call that hangs)")


class SegfaultPlugin(Plugin):
    """Dies of SIGSEGV on its n-th tick, from native code, the way a broken delegate would;
    with `flag`, only the first instance does (it leaves the file behind)."""

    Params = SegfaultParams
    default_rate_hz = 200.0

    def setup(self, ctx: PluginContext) -> None:
        """Read params (or crash, with `in_setup`)."""
        self.p: SegfaultParams = ctx.params  # type: ignore[assignment]
        self.n = 0
        if self.p.in_setup:
            self._crash()

    def tick(self, now_ns: int) -> None:
        """Read address 0 on tick `crash_at`."""
        self.n += 1
        if self.n == self.p.crash_at and not self.p.in_setup:
            self._crash()

    def _crash(self) -> None:
        flag = Path(self.p.flag) if self.p.flag else None
        if flag is None or not flag.exists():
            if flag is not None:
                flag.touch()
            if self.p.hang:
                time.sleep(3600)  # blocked in C, as in a USB transfer that never returns
            ctypes.string_at(0)  # a NULL read in C: SIGSEGV, no Python exception


class ClockSim(Simulator):
    """One sensor, `clock`: the microsecond within the current second of perf_counter_ns at the
    moment it is read (exact in float32), so a plugin can tell how old its reading is."""

    dt: ClassVar[float] = 0.01
    sensors: ClassVar[dict[str, SensorSpec]] = {"clock": SensorSpec((1,))}
    actuators: ClassVar[dict[str, ActuatorSpec]] = {}

    def reset(self, seed: int) -> None:
        """Start at t=0."""
        self.t = 0.0

    def step(self) -> None:
        """Only the simulated time moves: the reading is taken from the clock."""
        self.t += self.dt

    def read(self, sensor: str, out: npt.NDArray[np.float32]) -> bool:
        """The reading time, in microseconds modulo one second."""
        out[0] = (time.perf_counter_ns() // 1000) % 1_000_000
        return True

    def actuate(self, actuator: str, value: npt.NDArray[np.float32]) -> None:
        """No actuators."""


class AgePlugin(Plugin):
    """Emits, every tick, how many microseconds old its `clock` reading is."""

    sensors: ClassVar[dict[str, SensorSpec]] = {"clock": SensorSpec((1,))}
    telemetry_fields = ("age_us",)
    default_rate_hz = 200.0
    simulator = "tests.support.engine:ClockSim"

    def setup(self, ctx: PluginContext) -> None:
        """Keep the sensor and the channel."""
        self.read = ctx.sensors["clock"].read_into
        self.emit = ctx.out.telemetry
        self.clock = np.zeros(1, np.float32)
        self.row = np.zeros(1, np.float64)

    def tick(self, now_ns: int) -> None:
        """Read the clock sensor; report its age."""
        if self.read(self.clock):
            age = ((now_ns // 1000) - int(self.clock[0])) % 1_000_000
            self.row[0] = age if age < 500_000 else age - 1_000_000  # read after `now_ns`: < 0
            self.emit(now_ns, self.row)


def write_counting(shm_name: str, layout: Layout, writes: int) -> None:
    """In a child process: publish `writes` readings of sensor `signal`, the k-th all k."""
    from agent.hal.shm import DeviceBlock

    block = DeviceBlock.attach(shm_name, layout)
    buffer = block.sensors["signal"]
    value = np.zeros(buffer.values.shape, np.float32)
    for k in range(1, writes + 1):
        value.fill(k)
        buffer.write(value)


ENTRY_POINTS = {
    "counter": "tests.support.engine:CounterPlugin",
    "probe": "tests.support.engine:ParamProbePlugin",
    "slow": "tests.support.engine:SlowPlugin",
    "crashy": "tests.support.engine:CrashyPlugin",
    "hang": "tests.support.engine:HangPlugin",
    "wave": "tests.support.engine:WavePlugin",
    "beacon": "tests.support.engine:BeaconPlugin",
    "segfault": "tests.support.engine:SegfaultPlugin",
    "age": "tests.support.engine:AgePlugin",
}


def write_entry_points(site: Path) -> Path:
    """Register the test plugins as an installed distribution in `site` (a sys.path entry)."""
    dist = site / "edge_agent_testkit-0.0.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: edge-agent-testkit\nVersion: 0.0.0\n"
    )
    lines = [f"{name} = {ref}" for name, ref in ENTRY_POINTS.items()]
    (dist / "entry_points.txt").write_text("[edge_agent.plugins]\n" + "\n".join(lines) + "\n")
    return site


PLUGINS: dict[str, type[Plugin]] = {
    "counter": CounterPlugin,
    "probe": ParamProbePlugin,
    "slow": SlowPlugin,
    "crashy": CrashyPlugin,
    "hang": HangPlugin,
    "wave": WavePlugin,
    "beacon": BeaconPlugin,
    "segfault": SegfaultPlugin,
    "age": AgePlugin,
}


def make_config(plugins: list[dict[str, object]], **sections: object) -> AgentConfig:
    """An agent config with these plugin entries (no MQTT, models from the repo)."""
    data: dict[str, object] = {
        "plugins": plugins,
        "mqtt": {"enabled": False},
        "models_dir": str(MODELS),
        **sections,
    }
    return AgentConfig.model_validate(data)


def make_host(config: AgentConfig, **kwargs: object) -> PluginHost:
    """A host over the test plugins, with a started HAL and fast supervision."""
    hal = Hal(config.hal)
    hal.start()
    options: dict[str, object] = {"supervise_interval_s": 0.01, **kwargs}
    return PluginHost(
        config,
        hal=hal,
        registry=PluginRegistry(extra=PLUGINS),
        load_model=lambda name: load_model_by_name(name),
        **options,  # type: ignore[arg-type]
    )


def load_model_by_name(name: str) -> Model:
    """The committed model `name` with the default runtime config."""
    return load_test_model(name)


def stop_host(host: PluginHost) -> None:
    """Stop the loops and the HAL thread."""
    host.stop(timeout=2.0)
    host.hal.stop()
