"""Analytic controllers on the policy's own observation: the expert the model imitates, and a
naive baseline that drives straight at the goal.

Both map a batch of observations, (B, 35) rows of 32 lidar ranges (m) then the goal sensor
(distance m, cos and sin of the bearing), to an action: a heading to steer to (rad, robot frame)
and a forward speed (m/s). The plugin turns an action into wheel speeds with one fixed law
(`wheels`), so the policy network learns the action: the heading as logits over 72 bins of 5
degrees (so where going left and going right are both fine it picks one instead of averaging
them into the obstacle) and the speed as a number, in one output row (`as_output`).

The expert is a free-space follower: for the goal bearing and the 72 bin headings it measures
how far a corridor as wide as the robot plus 10 cm runs free in the scan (required) and a wider
one (preferred, for clearance), then takes the cheapest heading: closest to the goal, penalised
for missing room. Speed falls with the heading error, the room straight ahead and near the goal.
It needs no map and no memory, so a memoryless network can imitate it from the same 35 numbers.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from sim.robot.world import (
    GOAL_RADIUS,
    LIDAR_RANGE,
    MAX_WHEEL_SPEED,
    N_RAYS,
    RAY_ANGLES,
    WHEEL_BASE,
)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

OBS_SIZE = N_RAYS + 3
CORRIDOR = 0.28  # half-width (m): robot radius 0.18 plus a 10 cm margin
WIDE_CORRIDOR = 0.45  # headings with this much clearance are preferred, not required
WIDE_WEIGHT = 0.6  # rad of detour worth one full lookahead of wide clearance
LOOKAHEAD = 1.5  # a heading is admissible when this much (or the goal) is free along it
CRUISE = 0.8  # m/s, leaves wheel headroom for turning
TURN_GAIN = 3.0  # rad/s of turn per rad of heading error
MAX_TURN = 2.5  # rad/s
LEFT_BIAS = 0.03  # rad of cost that breaks left/right ties the same way every time
N_BINS = 72
BIN_WIDTH = 2.0 * np.pi / N_BINS
#: Bin k is the heading k * 5 degrees CCW of straight ahead, wrapped to (-pi, pi].
BIN_ANGLES = np.angle(np.exp(1j * np.arange(N_BINS) * BIN_WIDTH))
LABEL_SIGMA = 1.0  # bins: width of the Gaussian a heading is spread over as a training target
#: The policy's one output row: 72 heading logits, then the speed in units of 0.1 m/s. One
#: tensor, because converters reorder several outputs; scaled, because int8 output quantization
#: is per tensor and the logits span tens of units.
ACTION_SIZE = N_BINS + 1
SPEED_SCALE = 10.0

_CAND = BIN_ANGLES
_REL = RAY_ANGLES[None, :] - _CAND[:, None]
_COS_REL = np.cos(_REL)  # (candidates, rays)
_ABS_SIN_REL = np.abs(np.sin(_REL))
_RAY_COS = np.cos(RAY_ANGLES)
_RAY_SIN = np.sin(RAY_ANGLES)


def _corridor_free(r: F64, cos_rel: F64, abs_sin_rel: F64, half_width: float) -> F64:
    """Free length (m) of a corridor of `half_width` along each heading, given the scan `r`.

    A return blocks a heading when it lies ahead along it and within `half_width` of its axis;
    the corridor is then free up to where its edge meets that return.
    """
    lat = r * abs_sin_rel
    room = half_width * half_width - lat * lat
    blocks = (room > 0.0) & (cos_rel > 0.0) & (r < LIDAR_RANGE - 0.05)
    depth = r * cos_rel - np.sqrt(np.maximum(room, 0.0))
    free: F64 = np.maximum(np.where(blocks, depth, LIDAR_RANGE).min(axis=-1), 0.0)
    return free


def _heading_cost(off: F64, narrow: F64, wide: F64, need: F64) -> F64:
    """Angle off the goal, plus penalties for headings without enough free room ahead."""
    short_narrow = np.maximum(need - narrow, 0.0) / need
    short_wide = np.maximum(need - wide, 0.0) / need
    cost: F64 = np.abs(off) + LEFT_BIAS * (off < 0) + 10.0 * short_narrow + WIDE_WEIGHT * short_wide
    return cost


def wheels(heading: npt.ArrayLike, speed: npt.ArrayLike) -> F32:
    """Wheel speeds (B, 2) for an action: turn toward `heading` (rad), drive at up to `speed`.

    The same law as the plugin's (plugins/robot/plugin.py): turning has priority within the
    wheels' limit.
    """
    turn = np.clip(TURN_GAIN * np.asarray(heading, np.float64), -MAX_TURN, MAX_TURN)
    half = 0.5 * WHEEL_BASE * turn
    v = np.clip(np.asarray(speed, np.float64), -MAX_WHEEL_SPEED, MAX_WHEEL_SPEED)
    v = np.clip(v, -(MAX_WHEEL_SPEED - np.abs(half)), MAX_WHEEL_SPEED - np.abs(half))
    return np.stack([v - half, v + half], axis=-1).astype(np.float32)


def _approach(distance: F64) -> F64:
    slow: F64 = np.clip(distance / 0.8, 0.35, 1.0)
    return slow


def _split(obs: npt.ArrayLike) -> tuple[F64, F64, F64, F64]:
    x = np.atleast_2d(np.asarray(obs, np.float64))
    r = np.minimum(x[:, :N_RAYS], LIDAR_RANGE)
    return r, x[:, N_RAYS], x[:, N_RAYS + 1], x[:, N_RAYS + 2]


def expert_action(obs: npt.ArrayLike) -> tuple[F64, F64]:
    """The expert's (heading rad, speed m/s) for a batch of observations."""
    r, d, gc, gs = _split(obs)
    bearing = np.arctan2(gs, gc)
    need = np.minimum(np.maximum(d - 0.5 * GOAL_RADIUS, 0.05), LOOKAHEAD)

    rays = (r[:, None, :], _COS_REL[None], _ABS_SIN_REL[None])
    narrow = _corridor_free(*rays, CORRIDOR)  # (B, 72)
    wide = _corridor_free(*rays, WIDE_CORRIDOR)
    goal_cos = _RAY_COS[None, :] * gc[:, None] + _RAY_SIN[None, :] * gs[:, None]
    goal_sin = np.abs(_RAY_SIN[None, :] * gc[:, None] - _RAY_COS[None, :] * gs[:, None])
    goal_cost = _heading_cost(
        np.zeros_like(d),
        _corridor_free(r, goal_cos, goal_sin, CORRIDOR),
        _corridor_free(r, goal_cos, goal_sin, WIDE_CORRIDOR),
        need,
    )
    off = np.angle(np.exp(1j * (_CAND[None, :] - bearing[:, None])))
    cost = _heading_cost(off, narrow, wide, need[:, None])
    best = np.argmin(cost, axis=1)
    rows = np.arange(len(r))
    heading = np.where(goal_cost <= cost[rows, best], bearing, _CAND[best])

    align = np.maximum(np.cos(heading), 0.0) ** 2
    room = np.clip((narrow[:, 0] - 0.05) / 0.6, 0.0, 1.0)
    return heading, CRUISE * align * room * _approach(d)


def naive_action(obs: npt.ArrayLike) -> tuple[F64, F64]:
    """Baseline: turn toward the goal and drive straight at it, blind to obstacles."""
    _, d, gc, gs = _split(obs)
    bearing = np.arctan2(gs, gc)
    return bearing, CRUISE * np.maximum(np.cos(bearing), 0.0) ** 2 * _approach(d)


def expert_wheels(obs: npt.ArrayLike) -> F32:
    """The expert's wheel speeds (B, 2)."""
    return wheels(*expert_action(obs))


def naive_wheels(obs: npt.ArrayLike) -> F32:
    """The naive baseline's wheel speeds (B, 2)."""
    return wheels(*naive_action(obs))


def heading_logits(heading: npt.ArrayLike, sigma: float = LABEL_SIGMA) -> F32:
    """(B, 72) log-weights of a Gaussian over the bins centred on each heading (rad).

    Log-Gaussian logits are what the plugin decodes exactly (argmax, then a parabola through
    the peak and its neighbours), so an analytic controller can drive through the plugin too.
    """
    h = np.atleast_1d(np.asarray(heading, np.float64))
    off = np.angle(np.exp(1j * (BIN_ANGLES[None, :] - h[:, None]))) / BIN_WIDTH
    logits: F32 = (-0.5 * (off / sigma) ** 2).astype(np.float32)
    return logits


def heading_targets(heading: npt.ArrayLike) -> F32:
    """(B, 72) soft class targets for training the heading head (rows sum to 1)."""
    logits = heading_logits(heading)
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    targets: F32 = (w / w.sum(axis=1, keepdims=True)).astype(np.float32)
    return targets


def as_output(action: tuple[F64, F64]) -> F32:
    """An action as the policy's output rows (B, 73): heading logits, then scaled speed."""
    heading, speed = action
    scaled = SPEED_SCALE * np.asarray(speed, np.float32).reshape(-1, 1)
    row: F32 = np.concatenate([heading_logits(heading), scaled], axis=1)
    return row
