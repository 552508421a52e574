"""The robot plugin: lidar and goal in, the policy's action out as wheel speeds, via the e-stop."""

from __future__ import annotations

import functools
import math
from typing import ClassVar

import numpy as np

from agent.errors import ModelError, PluginError
from agent.hal.base import ActuatorSpec, SensorSpec
from agent.plugin.base import Plugin, PluginContext, PluginParams
from agent.runtime.base import Model
from plugins.robot.config import RobotParams
from plugins.robot.safety import SafetyLayer

N_RAYS = 32
OBS_SIZE = N_RAYS + 3
N_BINS = 72  # heading bins of the policy, bin k = k * 5 degrees CCW of straight ahead
BIN_WIDTH = 2.0 * math.pi / N_BINS
BEHIND = math.radians(150.0)  # headings further round than this keep the turn direction
ACTION_SIZE = N_BINS + 1  # the output row: heading logits, then the speed ...
SPEED_UNIT = 0.1  # ... in units of 0.1 m/s (so int8 resolves it beside the logits)
_LIDAR, _GOAL = 1, 2  # dropout bits


class RobotPlugin(Plugin):
    """Drives a differential-drive robot to its goal with a distilled policy at 500 Hz.

    Each tick: read the lidar and the goal straight into the model slot's input row (the slot
    keeps its buffers for life, so the row doubles as the scan the safety layer checks; a bad
    goal is replaced there by the last good one), and run the policy. Its action row is a
    heading (72 bin logits: argmax, refined by a parabola through the peak and its neighbours)
    and a speed; one law turns it into wheel speeds (turn rate `turn_gain` x heading error,
    speed within what turning leaves). The safety layer then cuts any translation toward a lidar
    return nearer than `estop_distance`; the model cannot override it. A lidar dropout (no
    reading, NaN or infinite rays) stops the robot: with no scan, clearance cannot be checked. A
    goal dropout keeps the last good goal for `goal_hold_s`, then stops. Dropouts and e-stops
    are reported once per episode.
    """

    Params = RobotParams
    sensors: ClassVar[dict[str, SensorSpec]] = {
        "lidar": SensorSpec(
            (N_RAYS,),
            "m",
            "ranges from the robot centre, ray i at 360*i/32 deg CCW of heading",
            low=0,
            high=1000,
        ),
        "goal": SensorSpec(
            (3,),
            "m, 1, 1",
            "goal distance, cos and sin of its bearing (robot)",
            low=-1e6,
            high=1e6,
        ),
    }
    actuators: ClassVar[dict[str, ActuatorSpec]] = {
        "wheels": ActuatorSpec((2,), "m/s", "left and right wheel speed commands"),
    }
    telemetry_fields: ClassVar[tuple[str, ...]] = (
        "goal_distance",
        "min_range",
        "left",
        "right",
        "estop",
        "estops",
        "dropouts",
        "goals_reached",
    )
    default_model: ClassVar[str | None] = "robot_policy"
    default_rate_hz: ClassVar[float] = 500.0
    simulator: ClassVar[str | None] = "sim.robot.world:RobotWorld"

    def setup(self, ctx: PluginContext) -> None:
        """Bind devices and the model slot's buffers; allocate every buffer the tick uses."""
        if ctx.model is None:
            raise PluginError('robot needs its policy model: set model = "robot_policy"')
        self._check_shapes(
            [b.shape for b in ctx.model.inputs], [b.shape for b in ctx.model.outputs], None
        )
        self._ctx = ctx
        self._read_lidar = ctx.sensors["lidar"].read_into
        self._read_goal = ctx.sensors["goal"].read_into
        self._write_wheels = ctx.actuators["wheels"].write
        self._telemetry = ctx.out.telemetry
        self._run = ctx.model.run  # the slot's run: follows model swaps
        row = ctx.model.inputs[0][0]
        self._scan = row[:N_RAYS]
        self._goal = row[N_RAYS:]
        self._goal.fill(0.0)
        action = ctx.model.outputs[0][0]
        self._logits = action[:N_BINS]
        self._argmax = self._logits.argmax
        self._item = action.item
        self._goal_item = self._goal.item
        self._goal_good = np.zeros(3, np.float32)
        # argmin + item: about a third of what a ufunc reduction (np.min) costs on 32 values.
        self._scan_argmin = self._scan.argmin
        self._scan_item = self._scan.item
        # x.dot(x) is NaN or inf when any value is: one BLAS call, cheaper than a sum. The
        # common tick checks scan and goal together with one call on the whole input row.
        self._row_norm = functools.partial(row.dot, row)
        self._scan_norm = functools.partial(self._scan.dot, self._scan)
        self._goal_norm = functools.partial(self._goal.dot, self._goal)
        self._cmd = np.zeros(2, np.float32)
        self._row = np.zeros(len(self.telemetry_fields), np.float64)
        p = RobotParams.model_validate(ctx.params.model_dump())
        self._safety = SafetyLayer(N_RAYS, distance=p.estop_distance, corridor=p.estop_corridor)
        self.apply_params(p)
        self._ticks = 0
        self._goal_age = 1 << 62  # no good goal reading yet
        self._dropped = 0
        self._last_block = -(1 << 62)
        self._at_goal = False
        self._turn_sign = 0.0
        self._min_range = 0.0
        self._estop = False
        self.estops = 0
        self.dropouts = 0
        self.goals_reached = 0

    def apply_params(self, params: PluginParams) -> None:
        """Take new thresholds and limits; counters and buffers stay."""
        if not isinstance(params, RobotParams):
            raise PluginError(f"robot takes RobotParams, got {type(params).__name__}")
        rate = self._ctx.rate_hz
        self._params = params
        self._vmax = params.max_wheel_speed
        self._turn_gain = params.turn_gain
        self._max_turn = params.max_turn
        self._half_base = 0.5 * params.wheel_base
        self._goal_tol = params.goal_tolerance
        self._hold_ticks = int(params.goal_hold_s * rate)
        self._rearm_ticks = max(1, int(params.estop_rearm_s * rate))
        self._every = params.telemetry_every
        self._safety.configure(distance=params.estop_distance, corridor=params.estop_corridor)

    def check_model(self, model: Model) -> None:
        """A policy must map (1, 35) lidar + goal to a (1, 73) action row."""
        self._check_shapes(
            [tuple(s.shape) for s in model.inputs], [tuple(s.shape) for s in model.outputs], model
        )

    @staticmethod
    def _check_shapes(
        ins: list[tuple[int, ...]], outs: list[tuple[int, ...]], m: Model | None
    ) -> None:
        if ins != [(1, OBS_SIZE)] or outs != [(1, ACTION_SIZE)]:
            raise ModelError(
                f"robot policy must map (1, {OBS_SIZE}) lidar+goal to (1, {ACTION_SIZE}) "
                f"heading logits + speed, got inputs {ins} outputs {outs}",
                path=None if m is None else m.path,
            )

    def tick(self, now_ns: int) -> None:
        """Sense, infer, limit, actuate; telemetry every `telemetry_every` ticks."""
        self._ticks += 1
        left = right = 0.0
        # Both sensors read straight into the model's input row. On this VM each numpy call
        # made right after the loop's sleep costs 3-6 us, so the common tick (both readings
        # there and finite, no dropout going on) checks them with one call on the row.
        lidar_read = self._read_lidar(self._scan)
        goal_read = self._read_goal(self._goal)
        norm = float(self._row_norm())
        if lidar_read and goal_read and norm - norm == 0.0 and not self._dropped:
            self._min_range = self._scan_item(self._scan_argmin())
            self._goal_good[...] = self._goal
            self._goal_age = 0
            scan_ok = goal_ok = True
        else:
            scan_ok = self._sense_scan(now_ns, lidar_read)
            goal_ok = self._sense_goal(now_ns, goal_read)
        self._estop = False
        if scan_ok and goal_ok:
            distance = self._goal_item(0)
            if distance <= self._goal_tol:
                if not self._at_goal:
                    self._at_goal = True
                    self.goals_reached += 1
                    self._ctx.out.event(now_ns, "goal_reached", 1.0, distance=distance)
            else:
                self._at_goal = False
                left, right = self._policy()
                if self._min_range < self._safety.distance:  # else nothing is near enough
                    left, right = self._limit(now_ns, left, right)
        self._cmd[0] = left
        self._cmd[1] = right
        self._write_wheels(self._cmd)
        if self._ticks % self._every == 0:
            self._emit(now_ns, left, right)

    def _sense_scan(self, now_ns: int, ok: bool) -> bool:
        """The scan just read; False on a dropout (no reading, NaN or inf rays), reported once."""
        if ok:
            norm = float(self._scan_norm())
            ok = norm - norm == 0.0  # NaN when any ray is NaN or infinite
            if ok:
                self._min_range = self._scan_item(self._scan_argmin())
        return self._track(now_ns, _LIDAR, ok, "lidar")

    def _sense_goal(self, now_ns: int, ok: bool) -> bool:
        """The goal just read; during a dropout hold the last good one for `goal_hold_s`."""
        if ok:
            norm = float(self._goal_norm())
            ok = norm - norm == 0.0  # NaN when any value is NaN or infinite
        if ok:
            self._goal_good[...] = self._goal
            self._goal_age = 0
        else:
            self._goal[...] = self._goal_good  # the model sees the last good goal
            self._goal_age += 1
        self._track(now_ns, _GOAL, ok, "goal")
        return self._goal_age <= self._hold_ticks

    def _track(self, now_ns: int, bit: int, ok: bool, sensor: str) -> bool:
        if ok:
            self._dropped &= ~bit
        elif not self._dropped & bit:
            self._dropped |= bit
            self.dropouts += 1
            self._ctx.out.event(now_ns, "sensor_dropout", 1.0, sensor=sensor)
        return ok

    def _policy(self) -> tuple[float, float]:
        """Run the model on the scan and goal in its input row; wheel speeds from its action."""
        self._run()
        item = self._item
        k = int(self._argmax())
        peak = item(k)
        before = item(k - 1 if k else N_BINS - 1)  # headings wrap: bin 0 neighbours the last
        after = item(k + 1 if k + 1 < N_BINS else 0)
        speed = item(N_BINS) * SPEED_UNIT
        if peak != peak or speed != speed:  # NaN from a broken model: stop
            return 0.0, 0.0
        curve = before - 2.0 * peak + after
        shift = 0.5 * (before - after) / curve if curve < 0.0 else 0.0
        heading = (k + _clamp(shift, 0.5)) * BIN_WIDTH
        if heading > math.pi:
            heading -= 2.0 * math.pi
        if abs(heading) > BEHIND and heading * self._turn_sign < 0.0:
            # A target behind the robot is as near turning either way: keep turning the way
            # we were, or bins either side of 180 degrees would flip the turn every tick.
            heading -= math.copysign(2.0 * math.pi, heading)
        turn = _clamp(self._turn_gain * heading, self._max_turn)
        if turn != 0.0:
            self._turn_sign = math.copysign(1.0, turn)
        half = self._half_base * turn
        vmax = self._vmax
        room = vmax - abs(half)
        v = _clamp(speed, room if room > 0.0 else 0.0)
        left = _clamp(v - half, vmax)
        right = _clamp(v + half, vmax)
        return left, right

    def _limit(self, now_ns: int, left: float, right: float) -> tuple[float, float]:
        """The safety layer, once a return is nearer than the e-stop distance: zero the
        translation that would close on it."""
        speed = 0.5 * (left + right)
        if not self._safety.blocks(self._scan, speed):
            return left, right
        self._estop = True
        if self._ticks - self._last_block > self._rearm_ticks:
            self.estops += 1
            urgency = 1.0 - self._min_range / self._safety.distance
            self._ctx.out.event(
                now_ns, "estop", urgency, min_range=self._min_range, commanded_speed=speed
            )
        self._last_block = self._ticks
        turn = 0.5 * (right - left)
        return -turn, turn

    def _emit(self, now_ns: int, left: float, right: float) -> None:
        row = self._row
        row[0] = self._goal[0]
        row[1] = self._min_range
        row[2] = left
        row[3] = right
        row[4] = 1.0 if self._estop else 0.0
        row[5] = self.estops
        row[6] = self.dropouts
        row[7] = self.goals_reached
        self._telemetry(now_ns, row)


def _clamp(x: float, bound: float) -> float:
    """`x` limited to [-bound, bound] (NaN stays NaN). Two comparisons instead of the builtins
    min and max, whose argument parsing made them a fifth of the policy's decode time."""
    return -bound if x < -bound else (bound if x > bound else x)
