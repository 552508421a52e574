"""The simulator process: every plugin's simulator, stepped in real time outside the agent.

A simulator stands in for hardware, and hardware costs the agent's interpreter nothing; a
simulator stepped by a thread of the agent does: its Python (a robot's 1 kHz physics, a new
room's layout) takes turns on the interpreter lock with the plugin loops and sets their
lateness tail. Here it runs in a process of its own and meets the agent only in shared memory,
one `DeviceBlock` per plugin (agent/hal/shm.py): after each batch of steps this
process publishes every sensor reading, and before it applies every command the agent wrote
since. The block's clock word carries the simulator's time (ns), so the agent can see it step.

The pipe from the agent carries `bind`, `unbind` and `stop`; its end closing (the agent died)
ends this process too.
"""

from __future__ import annotations

import signal
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from agent.hal.shm import CommandFeed, DeviceBlock, Layout
from agent.hal.simulator import Simulator, load_simulator

MAX_STEPS_PER_BATCH = 2000
"""Catch-up cap: after a long pause a simulator resumes instead of freezing for seconds."""


class _World:
    """One simulator and its shared devices."""

    def __init__(self, sim: Simulator, block: DeviceBlock, speed: float) -> None:
        self.sim = sim
        self.block = block
        self._origin = sim.t
        self._started = time.perf_counter()
        self._rate = speed * sim.realtime_speed
        self._sensors = [
            (name, shared, np.zeros(shared.values.shape, np.float32))
            for name, shared in block.sensors.items()
        ]
        # Commands from now on only: one pending when an earlier process died may be what
        # killed it, and the plugin's next tick writes a fresh one anyway.
        self._commands = CommandFeed(block.actuators, since_now=True)
        self.publish()

    def advance(self, now: float) -> None:
        """Apply new commands, step up to wall-clock time, publish the readings."""
        sim = self.sim
        self._commands.pass_on(sim.actuate)
        target = (now - self._started) * self._rate
        budget = MAX_STEPS_PER_BATCH
        while sim.t - self._origin < target and budget:
            sim.step()
            budget -= 1
        self.publish()

    def publish(self) -> None:
        """Every sensor's reading (or its dropout) and the simulated time into the block."""
        sim = self.sim
        for name, shared, buf in self._sensors:
            fresh = sim.read(name, buf)
            shared.write(buf, fresh)
        self.block.clock[0] = int(sim.t * 1e9)


def sim_main(conn: Connection, speed: float, batch_s: float) -> None:
    """Serve the agent's pipe and step every bound simulator every `batch_s`, until `stop`."""
    # The agent's Ctrl-C reaches its whole process group: the agent stops us through the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worlds: dict[str, _World] = {}
    next_batch = time.perf_counter()
    while True:
        try:
            while conn.poll(max(0.0, next_batch - time.perf_counter())):
                if not _handle(conn, conn.recv(), worlds, speed):
                    return
        except (EOFError, OSError):  # the agent is gone
            return
        now = time.perf_counter()
        for world in worlds.values():
            world.advance(now)
        # Fixed steps, not "batch_s from now": a slow batch does not stretch the next one.
        next_batch = max(next_batch + batch_s, now)


def _handle(
    conn: Connection, msg: tuple[Any, ...], worlds: dict[str, _World], speed: float
) -> bool:
    kind = msg[0]
    if kind == "bind":
        _, plugin, ref, seed, shm_name = msg
        try:
            sim = load_simulator(ref, seed)
            block = DeviceBlock.attach(shm_name, Layout.of(sim.sensors, sim.actuators))
            worlds[plugin] = _World(sim, block, speed)
        except Exception as exc:  # reported to the agent, which raises it as a HalError
            conn.send(("bound", plugin, f"{type(exc).__name__}: {exc}"))
        else:
            conn.send(("bound", plugin, None))
    elif kind == "unbind":
        world = worlds.pop(msg[1], None)
        if world is not None:
            world.block.close()
    elif kind == "stop":
        return False
    return True
