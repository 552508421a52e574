"""The robot plugin on the real runtime and the robot world: control, safety, dropouts, params."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.config.sections import RuntimeConfig
from agent.errors import PluginError
from agent.hal.base import Actuator, Buffer, Sensor
from agent.hal.sim import SimActuator, SimSensor
from agent.plugin.base import PluginContext
from agent.plugin.channel import OutputChannel
from agent.runtime.base import Model
from agent.runtime.loader import load_model
from agent.runtime.slot import ModelSlot
from agent.runtime.verify import verify_folder
from plugins.robot import RobotParams, RobotPlugin
from sim.robot.controllers import ControllerModel, naive_model
from sim.robot.eval import EVAL_WORLD, run_episodes
from sim.robot.expert import as_output, wheels
from sim.robot.world import N_RAYS, ROBOT_RADIUS, RobotWorld

MODELS = Path(__file__).resolve().parents[2] / "models"
POLICY = MODELS / "robot_policy"


@pytest.fixture(scope="module")
def policy() -> Iterator[Model]:
    model = load_model(POLICY, RuntimeConfig(), fmt="tflite")
    yield model
    model.close()


class FlakySensor(Sensor):
    """A sim sensor that can be told to drop out: 'stale' (returns False), 'nan', or 'torn'
    (scribbles inf over the buffer, then reports no reading)."""

    def __init__(self, inner: SimSensor) -> None:
        self.spec = inner.spec
        self._inner = inner
        self.mode = "ok"

    def read_into(self, out: Buffer) -> bool:
        """The simulator's reading, unless dropping out."""
        if self.mode == "stale":
            return False
        if self.mode == "torn":
            out.fill(np.inf)
            return False
        ok = self._inner.read_into(out)
        if self.mode == "nan":
            out.fill(np.nan)
        return ok


class LastCommand(Actuator):
    """Forwards to the simulator and remembers the last command."""

    def __init__(self, inner: SimActuator) -> None:
        self.spec = inner.spec
        self._inner = inner
        self.last = np.zeros(2, np.float32)

    def write(self, value: Buffer) -> None:
        """Remember, then drive the simulator."""
        np.copyto(self.last, value)
        self._inner.write(value)


class Rig:
    """The plugin wired by hand to a world, so a test can reach between two ticks."""

    def __init__(self, model: Model, seed: int, **params: float) -> None:
        self.world = RobotWorld(**EVAL_WORLD)
        self.world.reset(seed)
        self.plugin = RobotPlugin()
        s, a = RobotPlugin.sensors, RobotPlugin.actuators
        self.lidar = FlakySensor(SimSensor(self.world, "lidar", s["lidar"]))
        self.goal = FlakySensor(SimSensor(self.world, "goal", s["goal"]))
        self.wheels = LastCommand(SimActuator(self.world, "wheels", a["wheels"]))
        self.out = OutputChannel("robot", RobotPlugin.telemetry_fields)
        self.ctx = PluginContext(
            name="robot",
            rate_hz=500.0,
            params=RobotParams(**params),
            model=ModelSlot(model),
            sensors={"lidar": self.lidar, "goal": self.goal},
            actuators={"wheels": self.wheels},
            out=self.out,
        )
        self.plugin.setup(self.ctx)
        self.ticks = 0

    def run(self, ticks: int) -> None:
        """Tick at 500 Hz of simulated time (two 1 ms physics steps per tick)."""
        for _ in range(ticks):
            self.plugin.tick(self.ticks * 2_000_000)
            self.ticks += 1
            self.world.step()
            self.world.step()

    def kinds(self) -> list[str]:
        """Kinds of the events raised since the last call."""
        return [e.kind for e in self.out.drain_events()]


def _facing_obstacle_seed() -> int:
    """A room whose robot starts with something 0.6-1.5 m straight ahead."""
    scan = np.zeros(N_RAYS, np.float32)
    for seed in range(200):
        world = RobotWorld(**EVAL_WORLD)
        world.reset(seed)
        world.read("lidar", scan)
        if 0.6 < scan[0] < 1.5:
            return seed
    raise AssertionError("no such room in 200 seeds")


def _constant(heading: float, speed: float) -> ControllerModel:
    """A 'policy' that always asks for the same heading (rad) and speed (m/s)."""
    out = as_output((np.array([heading]), np.array([speed])))
    return ControllerModel("constant", lambda obs: out)


FULL_AHEAD = _constant(0.0, 1.0)


def test_policy_beats_the_naive_baseline(policy: Model) -> None:
    seeds = range(10_000, 10_003)
    student = run_episodes(policy, seeds)
    baseline = run_episodes(naive_model(), seeds)
    wins = sum(e.success for e in student)
    assert wins >= 2
    assert wins > sum(e.success for e in baseline)
    assert not any(e.outcome == "collision" for e in student)


@pytest.mark.parametrize("heading", [0.0, 0.3, -1.0, 3.1, -3.1, 2.0])
def test_policy_action_becomes_wheel_speeds(heading: float) -> None:
    """The plugin decodes heading logits and speed into the reference wheel law."""
    rig = Rig(_constant(heading, 0.6), 10_000)
    rig.run(1)
    np.testing.assert_allclose(rig.wheels.last, wheels([heading], [0.6])[0], atol=2e-3)


def test_safety_layer_stops_a_model_driving_into_an_obstacle() -> None:
    """The model cannot override the e-stop: full speed ahead halts short of contact."""
    rig = Rig(FULL_AHEAD, _facing_obstacle_seed())
    rig.run(2000)
    x, y, _ = rig.world.pose
    assert rig.world.collisions == 0
    assert ROBOT_RADIUS < rig.world.clearance(x, y) < 0.27 + 0.02
    assert rig.kinds().count("estop") == 1  # one e-stop episode, reported once
    assert rig.plugin.estops == 1
    left, right = rig.wheels.last
    assert left + right == pytest.approx(0.0, abs=1e-6)  # no translation while blocked


def _ahead(world: RobotWorld) -> float:
    """Nearest lidar return inside the robot's path ahead (m)."""
    scan = np.zeros(N_RAYS, np.float32)
    world.read("lidar", scan)
    ang = np.arange(N_RAYS) * (2 * np.pi / N_RAYS)
    in_path = (np.cos(ang) > 0) & (scan * np.abs(np.sin(ang)) < 0.21)
    return float(scan[in_path].min())


def test_params_apply_between_ticks() -> None:
    rig = Rig(FULL_AHEAD, _facing_obstacle_seed(), estop_distance=0.6, telemetry_every=10)
    rig.run(1500)
    x, y, _ = rig.world.pose
    far = rig.world.clearance(x, y)
    assert 0.4 < _ahead(rig.world) < 0.62
    rows_before = rig.out.pending[0]
    rig.plugin.apply_params(RobotParams(estop_distance=0.3, telemetry_every=100))
    rig.run(1500)
    x, y, _ = rig.world.pose
    assert _ahead(rig.world) < 0.33
    assert ROBOT_RADIUS < rig.world.clearance(x, y) < far - 0.08
    assert rows_before == 150
    assert rig.out.pending[0] - rows_before == 15
    assert rig.world.collisions == 0


def test_lidar_dropout_stops_the_robot_and_is_reported_once(policy: Model) -> None:
    rig = Rig(policy, 10_001)
    rig.run(300)
    assert np.abs(rig.wheels.last).max() > 0.05  # under way
    rig.kinds()
    for mode in ("nan", "stale"):
        rig.lidar.mode = mode
        rig.run(100)
        assert not rig.wheels.last.any()  # no scan, no motion
        rig.lidar.mode = "ok"
        rig.run(50)
    assert rig.kinds().count("sensor_dropout") == 2
    assert rig.plugin.dropouts == 2
    _, rows = rig.out.drain_telemetry()
    fields = RobotPlugin.telemetry_fields
    assert rows[-1][fields.index("dropouts")] == 2
    assert np.abs(rig.wheels.last).max() > 0.0  # moving again


@pytest.mark.parametrize("mode", ["nan", "torn", "stale"])
def test_goal_dropout_holds_the_last_goal_then_stops(policy: Model, mode: str) -> None:
    rig = Rig(policy, 10_001, goal_hold_s=0.2)
    rig.run(300)
    rig.kinds()
    assert rig.ctx.model is not None
    model_goal = rig.ctx.model.inputs[0][0][32:]
    last_good = model_goal.copy()
    rig.goal.mode = mode
    rig.run(50)  # 0.1 s: still steering on the held goal, which the model sees
    assert np.array_equal(model_goal, last_good)
    assert np.abs(rig.wheels.last).max() > 0.05
    rig.run(100)  # past 0.2 s: stop
    assert not rig.wheels.last.any()
    rig.goal.mode = "ok"
    rig.run(50)
    assert rig.kinds() == ["sensor_dropout"]


def test_setup_without_a_model_fails() -> None:
    rig_world = RobotWorld(**EVAL_WORLD)
    s, a = RobotPlugin.sensors, RobotPlugin.actuators
    ctx = PluginContext(
        name="robot",
        rate_hz=500.0,
        params=RobotParams(),
        model=None,
        sensors={n: SimSensor(rig_world, n, spec) for n, spec in s.items()},
        actuators={n: SimActuator(rig_world, n, spec) for n, spec in a.items()},
        out=OutputChannel("robot", RobotPlugin.telemetry_fields),
    )
    with pytest.raises(PluginError, match="robot_policy"):
        RobotPlugin().setup(ctx)


def test_params_are_validated() -> None:
    with pytest.raises(ValueError):
        RobotParams(estop_distance=0.1)  # inside the robot's own radius
    with pytest.raises(ValueError):
        RobotParams(unknown=1)  # type: ignore[call-arg]


def test_committed_model_reproduces_its_golden_vectors_in_every_format() -> None:
    rows = verify_folder(POLICY)
    assert {Path(r.file).name for r in rows} == {
        "model.tflite",
        "model_int8io.tflite",
        "model.onnx",
    }
    assert all(r.result == "ok" for r in rows), [(r.file, r.reason) for r in rows]
