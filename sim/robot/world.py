"""A differential-drive robot with a 32-ray lidar in rooms of obstacles, stepped at 1 kHz."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from agent.hal.base import ActuatorSpec, SensorSpec
from agent.hal.simulator import Simulator
from sim.robot.geometry import (
    FAR_AWAY,
    Layout,
    distance,
    generate_layout,
    raycast,
    sample_free_point,
    segment_clearance,
)

N_RAYS = 32
#: Ray i points 360 * i / N_RAYS degrees counter-clockwise from the heading.
RAY_ANGLES = np.arange(N_RAYS) * (2.0 * np.pi / N_RAYS)
ROBOT_RADIUS = 0.18
WHEEL_BASE = 0.32
MAX_WHEEL_SPEED = 1.0
LIDAR_RANGE = 4.0
GOAL_RADIUS = 0.25

_GRID = 0.05  # m per cell of the precomputed distance field
_GRID_SLACK = _GRID * 0.7072  # a cell-centre distance is exact to within half a diagonal


class RobotWorld(Simulator):
    """One robot in one room; episodes end on reaching the goal, a collision or a timeout.

    Physics runs at 1 kHz: wheel speeds follow their commands through a first-order motor lag,
    the pose integrates the unicycle model, and a move that would make the robot's disc overlap a
    wall or obstacle is refused (the robot stops there and the episode counts a collision), so the
    robot never passes through anything. The lidar scans at `lidar_hz` with Gaussian noise.

    Live demo defaults: with `auto_restart` a reached goal is replaced by a new one in the same
    room after `goal_dwell_s` and a collision or timeout starts a new room, so the world runs
    forever; "pop-up"
    obstacles (a person stepping in front) and lidar dropouts come every few seconds. The
    evaluation turns those off and ends each episode at its first outcome (`done`).
    """

    dt: ClassVar[float] = 0.001
    realtime_speed: ClassVar[float] = 1.0
    sensors: ClassVar[dict[str, SensorSpec]] = {
        "lidar": SensorSpec(
            (N_RAYS,), "m", "ranges from the robot centre, ray i at 360*i/32 deg CCW of heading"
        ),
        "goal": SensorSpec((3,), "m, 1, 1", "goal distance, cos and sin of its bearing (robot)"),
        "pose": SensorSpec((3,), "m, m, rad", "odometry pose: x, y, heading"),
    }
    actuators: ClassVar[dict[str, ActuatorSpec]] = {
        "wheels": ActuatorSpec((2,), "m/s", "left and right wheel speed commands"),
    }

    def __init__(
        self,
        *,
        auto_restart: bool = True,
        lidar_hz: float = 100.0,
        lidar_noise_m: float = 0.01,
        motor_tau_s: float = 0.06,
        wheel_gain_spread: float = 0.03,
        popup_interval_s: float = 8.0,
        popup_duration_s: float = 3.0,
        dropout_interval_s: float = 15.0,
        dropout_duration_s: tuple[float, float] = (0.1, 0.4),
        time_limit_s: float = 30.0,
        stuck_after_s: float = 5.0,
        goal_dwell_s: float = 1.0,
        min_goal_distance: float = 3.0,
        blocked_goal_share: float = 0.7,
    ) -> None:
        self.auto_restart = auto_restart
        self.lidar_every = max(1, round(1.0 / (lidar_hz * self.dt)))
        self.lidar_noise_m = lidar_noise_m
        self.motor_tau_s = motor_tau_s
        self.wheel_gain_spread = wheel_gain_spread
        self.popup_interval_s = popup_interval_s
        self.popup_duration_s = popup_duration_s
        self.dropout_interval_s = dropout_interval_s
        self.dropout_duration_s = dropout_duration_s
        self.time_limit_s = time_limit_s
        self.stuck_after_s = stuck_after_s
        self.goal_dwell_s = goal_dwell_s
        self.min_goal_distance = min_goal_distance
        self.blocked_goal_share = blocked_goal_share
        self.reset(0)

    # -- episodes -------------------------------------------------------------------------

    def reset(self, seed: int) -> None:
        """New room, start and goal from `seed`; counters back to zero."""
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.t = 0.0
        self.episodes = 0
        self.goals_reached = 0
        self.collisions = 0
        self.timeouts = 0
        self.popups = 0
        self.dropouts = 0
        self._new_room()

    @property
    def done(self) -> bool:
        """True once the episode has an outcome and nothing restarts it (evaluation mode)."""
        return bool(self.outcome) and not self.auto_restart

    @property
    def pose(self) -> tuple[float, float, float]:
        """True pose: x (m), y (m), heading (rad)."""
        return (self._x, self._y, self._th)

    @property
    def goal_xy(self) -> tuple[float, float]:
        """Goal position in the room (m)."""
        return (self._gx, self._gy)

    @property
    def popup(self) -> tuple[float, float, float] | None:
        """The pop-up obstacle (x, y, radius) while one stands in the room."""
        row = self._circles[-1]
        return None if row[0] >= FAR_AWAY else (float(row[0]), float(row[1]), float(row[2]))

    def clearance(self, x: float, y: float) -> float:
        """Exact distance (m) from (x, y) to the nearest wall or obstacle, pop-up included."""
        return float(distance(self.layout, np.array(x), np.array(y), self._circles))

    def place_goal(self, x: float, y: float) -> None:
        """Move the goal of the running episode (scripted scenes and tests)."""
        self._gx, self._gy = float(x), float(y)
        self.straight_distance = math.hypot(self._gx - self._x, self._gy - self._y)
        self._goal_now()

    def _new_room(self) -> None:
        self.layout: Layout = generate_layout(self._rng)
        self._build_grid()
        sx, sy = sample_free_point(self._rng, self.layout, 0.5)
        self._x, self._y = sx, sy
        self._th = float(self._rng.uniform(-np.pi, np.pi))
        self._wl = self._wr = 0.0
        self._cl = self._cr = 0.0
        gain = 1.0 + self.wheel_gain_spread * self._rng.uniform(-1.0, 1.0, 2)
        self._gain_l, self._gain_r = float(gain[0]), float(gain[1])
        self._circles = np.vstack([self.layout.circles, [[FAR_AWAY, FAR_AWAY, 0.1]]])
        self._popup_xyr = (FAR_AWAY, FAR_AWAY, 0.1)
        self._circle_list = [tuple(float(v) for v in c) for c in self.layout.circles]
        self._box_list = [tuple(float(v) for v in b) for b in self.layout.boxes]
        self._popup_until = 0.0
        self._next_popup = self.t + self._exp(self.popup_interval_s)
        self._dropout_until = 0.0
        self._dropout_nan = False
        self._next_dropout = self.t + self._exp(self.dropout_interval_s)
        self._new_goal()

    def _new_goal(self) -> None:
        """A goal far enough away; most have an obstacle on the straight line to them."""
        start = (self._x, self._y)
        want_blocked = self._rng.random() < self.blocked_goal_share
        best: tuple[float, float] | None = None
        for _ in range(300):
            g = sample_free_point(self._rng, self.layout, 0.45)
            if math.hypot(g[0] - start[0], g[1] - start[1]) < self.min_goal_distance:
                continue
            best = g
            blocked = segment_clearance(self.layout, start, g) < ROBOT_RADIUS + 0.05
            if blocked == want_blocked:
                break
        if best is None:  # a small room: take the farthest of a few free points
            pts = [sample_free_point(self._rng, self.layout, 0.45) for _ in range(20)]
            best = max(pts, key=lambda p: math.hypot(p[0] - start[0], p[1] - start[1]))
        self._gx, self._gy = best
        self.outcome = ""
        self._restart_at = 0.0
        self.episode_time = 0.0
        self.path_length = 0.0
        self.straight_distance = math.hypot(self._gx - self._x, self._gy - self._y)
        self._anchor = (self._x, self._y, 0.0)
        self.episodes += 1
        self._step_no = 0
        self._scan_now()
        self._goal_now()

    def _build_grid(self) -> None:
        nx = math.ceil(self.layout.width / _GRID)
        ny = math.ceil(self.layout.height / _GRID)
        xs = (np.arange(nx) + 0.5) * _GRID
        ys = (np.arange(ny) + 0.5) * _GRID
        self._grid = distance(self.layout, xs[:, None], ys[None, :])
        self._grid_max = (nx - 1, ny - 1)

    def _exp(self, mean: float) -> float:
        return float(self._rng.exponential(mean)) if mean > 0 else math.inf

    # -- physics --------------------------------------------------------------------------

    def step(self) -> None:
        """Advance one millisecond: motors, pose, collision, goal, lidar, scripted situations."""
        dt = self.dt
        self.t += dt
        if self.outcome:
            if not self.auto_restart:
                return
            if self.t >= self._restart_at:
                self._restart()
        a = dt / self.motor_tau_s
        self._wl += (self._cl * self._gain_l - self._wl) * a
        self._wr += (self._cr * self._gain_r - self._wr) * a
        v = 0.5 * (self._wl + self._wr)
        w = (self._wr - self._wl) / WHEEL_BASE
        mid = self._th + 0.5 * w * dt
        nx = self._x + v * math.cos(mid) * dt
        ny = self._y + v * math.sin(mid) * dt
        self._th = (self._th + w * dt + math.pi) % (2.0 * math.pi) - math.pi
        if self._collides(nx, ny):
            # Refuse the move: contact stops the robot where it is, outside the obstacle.
            self._wl = self._wr = 0.0
            self.collisions += 1
            self._finish("collision")
        else:
            self.path_length += math.hypot(nx - self._x, ny - self._y)
            self._x, self._y = nx, ny
        self.episode_time += dt
        self._step_no += 1
        self._check_outcome()
        self._goal_now()
        if self._step_no % self.lidar_every == 0:
            self._situations()
            self._scan_now()

    def _collides(self, x: float, y: float) -> bool:
        """True if the robot's disc at (x, y) would overlap a wall or an obstacle."""
        px, py, pr = self._popup_xyr
        if math.hypot(x - px, y - py) - pr < ROBOT_RADIUS:
            return True
        gx = min(max(int(x / _GRID), 0), self._grid_max[0])
        gy = min(max(int(y / _GRID), 0), self._grid_max[1])
        if self._grid[gx, gy] - _GRID_SLACK > ROBOT_RADIUS:
            return False
        # Near a surface: exact test, in plain floats (a handful of shapes beats numpy calls).
        if min(x, self.layout.width - x, y, self.layout.height - y) < ROBOT_RADIUS:
            return True
        for cx, cy, r in self._circle_list:
            if math.hypot(x - cx, y - cy) - r < ROBOT_RADIUS:
                return True
        for x0, y0, x1, y1 in self._box_list:
            dx = max(x0 - x, 0.0, x - x1)
            dy = max(y0 - y, 0.0, y - y1)
            if dx * dx + dy * dy < ROBOT_RADIUS * ROBOT_RADIUS:
                return True
        return False

    def _check_outcome(self) -> None:
        if self.outcome:
            return
        if math.hypot(self._gx - self._x, self._gy - self._y) <= GOAL_RADIUS:
            self.goals_reached += 1
            self._finish("success")
            return
        ax, ay, at = self._anchor
        if math.hypot(self._x - ax, self._y - ay) > 0.2:
            self._anchor = (self._x, self._y, self.episode_time)
        elif self.episode_time - at > self.stuck_after_s:
            self.timeouts += 1
            self._finish("timeout")
            return
        if self.episode_time > self.time_limit_s:
            self.timeouts += 1
            self._finish("timeout")

    def _finish(self, outcome: str) -> None:
        self.outcome = outcome
        # A robot at its goal dwells there (as a delivery stop would) before the next goal.
        self._restart_at = self.t + (self.goal_dwell_s if outcome == "success" else 0.0)

    def _restart(self) -> None:
        if self.outcome == "success":
            self._new_goal()
        else:
            self._new_room()

    def _situations(self) -> None:
        """Pop-up obstacles and lidar dropouts, drawn as Poisson arrivals (demo only)."""
        if self.t >= self._next_popup:
            self._next_popup = self.t + self.popup_duration_s + self._exp(self.popup_interval_s)
            self._spawn_popup()
        elif self._popup_until and self.t >= self._popup_until:
            self._circles[-1, :2] = FAR_AWAY
            self._popup_xyr = (FAR_AWAY, FAR_AWAY, 0.1)
            self._popup_until = 0.0
        if self.t >= self._next_dropout:
            lo, hi = self.dropout_duration_s
            self._dropout_until = self.t + float(self._rng.uniform(lo, hi))
            self._dropout_nan = bool(self._rng.random() < 0.5)
            self._next_dropout = self._dropout_until + self._exp(self.dropout_interval_s)
            self.dropouts += 1

    def _spawn_popup(self) -> None:
        """Someone steps in front of the robot, 0.7-1.1 m ahead, if there is room for them."""
        ahead = float(self._rng.uniform(0.7, 1.1))
        side = float(self._rng.uniform(-0.2, 0.2))
        r = float(self._rng.uniform(0.15, 0.25))
        c, s = math.cos(self._th), math.sin(self._th)
        px = self._x + ahead * c - side * s
        py = self._y + ahead * s + side * c
        clear = float(distance(self.layout, np.array(px), np.array(py))) - r
        from_goal = math.hypot(px - self._gx, py - self._gy) - r
        from_robot = math.hypot(px - self._x, py - self._y) - r
        if clear > 0.05 and from_goal > GOAL_RADIUS + 0.3 and from_robot > 0.45:
            self._circles[-1] = (px, py, r)
            self._popup_xyr = (px, py, r)
            self._popup_until = self.t + self.popup_duration_s
            self.popups += 1

    def _goal_now(self) -> None:
        """The goal sensor's reading for the current pose: computed by the stepping thread, as a
        real localisation stack would, so a read is one copy inside the plugin's tick."""
        dx, dy = self._gx - self._x, self._gy - self._y
        bearing = math.atan2(dy, dx) - self._th
        reading = (math.hypot(dx, dy), math.cos(bearing), math.sin(bearing))
        # A new array, never written in place: a reader on another thread sees one reading.
        self._goal_reading = np.array(reading, np.float32)

    def _scan_now(self) -> None:
        ranges = raycast(
            self.layout, self._x, self._y, RAY_ANGLES + self._th, LIDAR_RANGE, self._circles
        )
        if self.lidar_noise_m > 0:
            ranges += self._rng.normal(0.0, self.lidar_noise_m, N_RAYS)
        # Swap the reference, never write in place: a reader on another thread sees one scan.
        self._scan = np.clip(ranges, 0.0, LIDAR_RANGE).astype(np.float32)

    # -- devices --------------------------------------------------------------------------

    def read(self, sensor: str, out: npt.NDArray[np.float32]) -> bool:
        """Copy a reading; the lidar reports False (stale) or NaN rays during a dropout."""
        if sensor == "lidar":
            if self.t < self._dropout_until:
                if self._dropout_nan:
                    out.fill(np.nan)
                    return True
                return False
            out[...] = self._scan  # a third of np.copyto's cost: this runs inside the tick
            return True
        if sensor == "goal":
            out[...] = self._goal_reading
            return True
        if sensor == "pose":
            out[0], out[1], out[2] = self._x, self._y, self._th
            return True
        raise KeyError(sensor)

    def actuate(self, actuator: str, value: npt.NDArray[np.float32]) -> None:
        """Set the wheel speed commands (m/s), clipped to the motors' limit; NaN means stop."""
        if actuator != "wheels":
            raise KeyError(actuator)
        # item() and comparisons, not float(value[i]) and min/max: this runs inside the tick.
        self._cl = _motor_command(value.item(0))
        self._cr = _motor_command(value.item(1))


def _motor_command(speed: float) -> float:
    """A wheel speed command as the motor takes it: within its limit, and NaN as stop."""
    if speed != speed:
        return 0.0
    if speed < -MAX_WHEEL_SPEED:
        return -MAX_WHEEL_SPEED
    return MAX_WHEEL_SPEED if speed > MAX_WHEEL_SPEED else speed
