"""Call one part of the robot's tick N times, for an instruction counter to measure.

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python -m sim.tickcount tick 20000

prints callgrind's instruction total; the same command with N = 0 gives what start-up costs, and
the difference over N is one call's count (PYTHONHASHSEED=0: two runs hash alike). Wall
time on a shared VM moves by 2x between runs, instruction counts by well under 1 %
(docs/realtime.md has the robot's table). The plugin runs on the shipped policy and the
robot simulator, as the host wires it (agent.testing.rig), warmed by 500 ticks first.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from agent.config.sections import RuntimeConfig
from agent.runtime.loader import load_model
from agent.shipped import shipped_models_dir
from agent.testing.rig import build_rig
from plugins.robot.config import RobotParams
from plugins.robot.plugin import RobotPlugin
from sim.robot.world import RobotWorld

MODEL = "robot_policy"


def parts() -> dict[str, Callable[[], object]]:
    """Each measurable part of a robot tick, as a call with no arguments."""
    model = load_model(shipped_models_dir() / MODEL, RuntimeConfig())
    world = RobotWorld()
    world.reset(1)
    rig = build_rig(RobotPlugin, RobotParams(), model, rate_hz=500, sim=world, constant=0.0)
    rig.run(500)
    p = rig.plugin
    assert isinstance(p, RobotPlugin) and rig.ctx.model is not None
    row = rig.ctx.model.inputs[0][0]
    scan, goal, good = row[:32], row[32:], row.copy()[32:]
    lidar, goal_sensor = rig.ctx.sensors["lidar"], rig.ctx.sensors["goal"]
    wheels, cmd = rig.ctx.actuators["wheels"], rig.actuators["wheels"].last.copy()
    slot_run = rig.ctx.model.run

    def bare() -> Callable[[], object]:
        from agent.bench.bare import bare_call

        call, _ = bare_call("tflite", str(shipped_models_dir() / MODEL / "model.tflite"))
        return call

    return {
        "empty": lambda: None,
        "tick": lambda: p.tick(0),
        "run": slot_run,
        # The plugin's private step on purpose: run + decoding, the decoding being its minus run.
        "policy": p._policy,
        "bare": bare(),
        "read_lidar": lambda: lidar.read_into(scan),
        "read_goal": lambda: goal_sensor.read_into(goal),
        "row_check": lambda: row.dot(row),
        "nearest": lambda: scan.item(scan.argmin()),
        "keep_goal": lambda: good.__setitem__(Ellipsis, goal),
        "write": lambda: wheels.write(cmd),
    }


def main(argv: list[str] | None = None) -> None:
    """`python -m sim.tickcount PART N`: call PART N times (PART as in `parts()`)."""
    ap = argparse.ArgumentParser(prog="python -m sim.tickcount", description=__doc__)
    ap.add_argument("part", help="tick, run, bare, read_lidar, read_goal, row_check, ...")
    ap.add_argument("n", type=int, help="how many calls")
    args = ap.parse_args(argv)
    table = parts()
    if args.part not in table:
        ap.error(f"unknown part {args.part!r}: one of {', '.join(table)}")
    call = table[args.part]
    for _ in range(args.n):
        call()


if __name__ == "__main__":
    main()
