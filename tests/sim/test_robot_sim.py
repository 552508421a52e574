"""The robot world: deterministic per seed, physically sane, and its evaluation's shape."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from sim.robot.geometry import distance, raycast
from sim.robot.world import (
    GOAL_RADIUS,
    LIDAR_RANGE,
    N_RAYS,
    RAY_ANGLES,
    ROBOT_RADIUS,
    WHEEL_BASE,
    RobotWorld,
)

QUIET: dict[str, Any] = {"auto_restart": False, "popup_interval_s": 0.0, "dropout_interval_s": 0.0}


def _drive(world: RobotWorld, steps: int, seed: int) -> list[tuple[float, float, float]]:
    """Random wheel commands held for 0.2 s each; returns the pose after every step."""
    rng = np.random.default_rng(seed)
    cmd = np.zeros(2, np.float32)
    poses = []
    for i in range(steps):
        if i % 200 == 0:
            cmd[:] = rng.uniform(-0.3, 1.0, 2)
        world.actuate("wheels", cmd)
        world.step()
        poses.append(world.pose)
    return poses


def test_same_seed_same_world_and_trajectory() -> None:
    a, b = RobotWorld(), RobotWorld()
    a.reset(123)
    b.reset(123)
    np.testing.assert_array_equal(a.layout.circles, b.layout.circles)
    np.testing.assert_array_equal(a.layout.boxes, b.layout.boxes)
    assert _drive(a, 6000, 1) == _drive(b, 6000, 1)
    la, lb = np.zeros(N_RAYS, np.float32), np.zeros(N_RAYS, np.float32)
    assert a.read("lidar", la) == b.read("lidar", lb)
    np.testing.assert_array_equal(la, lb)
    assert (a.popups, a.dropouts, a.collisions) == (b.popups, b.dropouts, b.collisions)


def test_different_seeds_differ() -> None:
    a, b = RobotWorld(), RobotWorld()
    a.reset(1)
    b.reset(2)
    assert a.layout.width != b.layout.width or a.pose != b.pose


def test_robot_never_overlaps_a_wall_or_obstacle() -> None:
    """Random driving bumps into walls, obstacles and pop-ups; no pose overlaps any of them."""
    world = RobotWorld(auto_restart=False, popup_interval_s=1.0, dropout_interval_s=0.0)
    rng = np.random.default_rng(0)
    cmd = np.zeros(2, np.float32)
    worst = math.inf
    hits = 0
    for seed in range(6):
        world.reset(seed)
        xs, ys, pops = [], [], []
        for i in range(8000):
            if world.done:
                break
            if i % 300 == 0:
                cmd[:] = rng.uniform(0.2, 1.0, 2)  # mostly forward: it will hit things
            world.actuate("wheels", cmd)
            world.step()
            x, y, _ = world.pose
            xs.append(x)
            ys.append(y)
            pops.append(world.popup or (1e6, 1e6, 0.0))
        px, py = np.array(xs), np.array(ys)
        p = np.array(pops)
        to_popup = np.hypot(px - p[:, 0], py - p[:, 1]) - p[:, 2]
        worst = min(worst, float(distance(world.layout, px, py).min()), float(to_popup.min()))
        assert world.clearance(*world.pose[:2]) >= ROBOT_RADIUS
        hits += world.collisions
    assert hits >= 3, "the test should have driven into things"
    assert worst >= ROBOT_RADIUS - 1e-9


def test_lidar_ranges_end_on_surfaces() -> None:
    world = RobotWorld(lidar_noise_m=0.0, **QUIET)
    world.reset(7)
    scan = np.zeros(N_RAYS, np.float32)
    assert world.read("lidar", scan)
    x, y, th = world.pose
    ang = RAY_ANGLES + th
    hit = scan < LIDAR_RANGE - 1e-3
    assert hit.any()
    ends = distance(world.layout, x + scan * np.cos(ang), y + scan * np.sin(ang))
    assert np.abs(ends[hit]).max() < 1e-3
    halfway = distance(world.layout, x + 0.5 * scan * np.cos(ang), y + 0.5 * scan * np.sin(ang))
    assert halfway.min() > 0.0
    np.testing.assert_allclose(raycast(world.layout, x, y, ang, LIDAR_RANGE), scan, atol=1e-5)


def test_wheels_drive_the_unicycle() -> None:
    """Equal wheels go straight at their speed; opposite wheels turn in place at 2v/base."""
    world = RobotWorld(wheel_gain_spread=0.0, **QUIET)
    world.reset(11)
    x0, y0, th0 = world.pose
    world.actuate("wheels", np.array([0.01, 0.01], np.float32))
    for _ in range(1000):
        world.step()
    x1, y1, th1 = world.pose
    assert th1 == pytest.approx(th0, abs=1e-9)
    moved = math.hypot(x1 - x0, y1 - y0)
    assert 0.005 < moved < 0.01  # motor lag eats the first ~60 ms
    assert math.atan2(y1 - y0, x1 - x0) == pytest.approx(th0, abs=1e-6)
    world.actuate("wheels", np.zeros(2, np.float32))
    for _ in range(1000):
        world.step()
    x1, y1, th1 = world.pose
    world.actuate("wheels", np.array([-0.2, 0.2], np.float32))
    for _ in range(2000):
        world.step()
    x2, y2, th2 = world.pose
    assert math.hypot(x2 - x1, y2 - y1) < 1e-6
    turned = (th2 - th1) % (2 * math.pi)
    expected = (2 * 0.2 / WHEEL_BASE * (2.0 - 0.06)) % (2 * math.pi)
    assert turned == pytest.approx(expected, abs=0.02)


def test_goal_sensor_is_the_goal_in_the_robot_frame() -> None:
    world = RobotWorld(**QUIET)
    world.reset(5)
    goal = np.zeros(3, np.float32)
    assert world.read("goal", goal)
    x, y, th = world.pose
    gx, gy = world.goal_xy
    assert goal[0] == pytest.approx(math.hypot(gx - x, gy - y), rel=1e-6)
    bearing = math.atan2(goal[2], goal[1]) + th
    assert math.cos(bearing) == pytest.approx((gx - x) / goal[0], abs=1e-5)
    assert math.sin(bearing) == pytest.approx((gy - y) / goal[0], abs=1e-5)


def test_episode_ends_at_the_goal_and_stays_done() -> None:
    world = RobotWorld(**QUIET)
    world.reset(9)
    # Put the goal right ahead: driving straight must reach it.
    x, y, th = world.pose
    world.place_goal(x + 0.5 * math.cos(th), y + 0.5 * math.sin(th))
    world.actuate("wheels", np.array([0.5, 0.5], np.float32))
    for _ in range(3000):
        world.step()
    assert world.outcome == "success" and world.done
    gx, gy = world.goal_xy
    assert math.hypot(world.pose[0] - gx, world.pose[1] - gy) <= GOAL_RADIUS
    frozen = world.pose
    world.step()
    assert world.pose == frozen and world.goals_reached == 1


def test_demo_world_restarts_and_injects_situations() -> None:
    """Live defaults: goals keep coming, and pop-ups and dropouts happen within seconds."""
    world = RobotWorld(popup_interval_s=1.0, dropout_interval_s=1.0, stuck_after_s=1.0)
    world.reset(21)
    scan = np.zeros(N_RAYS, np.float32)
    bad_reads = 0
    for i in range(10_000):
        world.step()
        if i % 10 == 0:
            ok = world.read("lidar", scan)
            bad_reads += (not ok) or bool(np.isnan(scan).any())
    assert world.dropouts >= 2 and bad_reads > 0
    assert world.popups >= 1
    assert world.episodes >= 2  # standing still times out, and a new room begins
    assert not world.done


@pytest.mark.slow
def test_evaluation_reports_every_variant() -> None:
    from sim.robot.eval import evaluate

    report = evaluate(episodes=2, seed=10_000, quick=True)
    assert report["domain"] == "robot" and report["higher_is_better"] is True
    assert set(report["results"]) == {"baseline", "expert", "float", "int8_tflite", "int8_onnx"}
    assert all(0.0 <= v <= 1.0 for v in report["results"].values())
