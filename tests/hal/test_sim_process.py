"""`hal.sim_process`: simulators stepped by a process of their own, devices in shared memory;
a simulator that dies takes nothing with it but a sensor outage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.config.sections import HalConfig
from agent.errors import HalError
from agent.hal.base import Actuator, Sensor
from agent.hal.router import Hal
from agent.hal.sim_process import SimProcessHal
from tests.support.sims import CRASH, EchoSim
from tests.support.waiting import until

ECHO = "tests.support.sims:EchoSim"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def hal() -> Iterator[Hal]:
    made = Hal(HalConfig(sim_process=True, sim_speed=2.0))
    try:
        yield made
    finally:
        made.stop()


def _echo_devices(hal: Hal, plugin: str = "p") -> tuple[Sensor, Sensor, Actuator]:
    sensors, actuators = hal.devices_for(
        plugin,
        simulator=ECHO,
        sensors={"echo": EchoSim.sensors["echo"], "steps": EchoSim.sensors["steps"]},
        actuators=EchoSim.actuators,
    )
    return sensors["echo"], sensors["steps"], actuators["command"]


def _backend(hal: Hal) -> SimProcessHal:
    backend = hal.backend("sim")
    assert isinstance(backend, SimProcessHal)
    return backend


def _reads(sensor: Sensor, want: float) -> bool:
    out = np.zeros(1, np.float32)
    return sensor.read_into(out) and out[0] == want


def test_the_simulator_steps_in_another_process_in_real_time(hal: Hal) -> None:
    echo, steps, command = _echo_devices(hal)
    hal.start()
    backend = _backend(hal)
    assert backend.pid is not None and backend.pid != os.getpid()
    # Bound while running: stepped from then on, at sim_speed 2.
    _echo_devices(hal, "late")
    t0, s0 = time.perf_counter(), backend.sim_time("p")
    time.sleep(0.5)  # the span the simulated time is measured against
    rate = (backend.sim_time("p") - s0) / (time.perf_counter() - t0)
    assert rate == pytest.approx(2.0, rel=0.25)
    assert until(lambda: backend.sim_time("late") > 0.5)
    command.write(np.full(1, 7.0, np.float32))
    assert until(lambda: _reads(echo, 7.0))
    out = np.zeros(1, np.float32)
    assert steps.read_into(out) and out[0] > 500


def test_a_simulator_that_dies_is_an_outage_then_a_new_process(
    hal: Hal, caplog: pytest.LogCaptureFixture
) -> None:
    echo, _, command = _echo_devices(hal)
    hal.start()
    backend = _backend(hal)
    command.write(np.full(1, 3.0, np.float32))
    assert until(lambda: _reads(echo, 3.0))
    first = backend.pid
    command.write(np.full(1, CRASH, np.float32))  # a native crash inside the simulator
    out = np.zeros(1, np.float32)
    # Never a reading frozen in place: stale until the new process publishes again.
    assert until(lambda: not echo.read_into(out), 5.0)
    assert "killed by SIGSEGV" in caplog.text
    assert until(lambda: backend.restarts == 1 and echo.read_into(out), 10.0)
    assert backend.pid != first
    # The new simulator starts from its seed, then takes the next command as before.
    command.write(np.full(1, 4.0, np.float32))
    assert until(lambda: _reads(echo, 4.0))


def test_a_simulator_that_cannot_start_is_a_hal_error_naming_it(hal: Hal) -> None:
    hal.start()
    with pytest.raises(
        HalError,
        match=r"x: simulator 'tests.support.sims:BrokenSim' failed.*"
        r"FileNotFoundError: room layouts not found",
    ):
        hal.devices_for(
            "x", simulator="tests.support.sims:BrokenSim", sensors=EchoSim.sensors, actuators={}
        )
    with pytest.raises(HalError, match=r"'tests\.support\.sims:Nowhere' not found"):
        hal.devices_for(
            "y", simulator="tests.support.sims:Nowhere", sensors=EchoSim.sensors, actuators={}
        )
    # The failures cost the others nothing.
    echo, _, command = _echo_devices(hal)
    command.write(np.full(1, 5.0, np.float32))
    assert until(lambda: _reads(echo, 5.0))


def test_stopping_ends_the_process_and_frees_the_blocks(hal: Hal) -> None:
    _echo_devices(hal)
    hal.start()
    backend = _backend(hal)
    pid = backend.pid
    names = [b.block.name for b in backend._bound.values()]
    assert all(Path("/dev/shm", n.lstrip("/")).exists() for n in names)
    hal.stop()
    assert backend.pid is None
    assert until(lambda: not _alive(pid))
    assert not any(Path("/dev/shm", n.lstrip("/")).exists() for n in names)


def test_the_simulator_process_ends_with_an_agent_that_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "host.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            from agent.config.sections import HalConfig
            from agent.hal.router import Hal
            from tests.support.sims import EchoSim
            if __name__ == "__main__":
                hal = Hal(HalConfig(sim_process=True))
                hal.devices_for("p", simulator={ECHO!r}, sensors=EchoSim.sensors, actuators={{}})
                hal.start()
                print(hal.backend("sim").pid, flush=True)
                time.sleep(60)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    agent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env)
    try:
        assert agent.stdout is not None
        sim_pid = int(agent.stdout.readline())
        assert _alive(sim_pid)
        agent.send_signal(signal.SIGKILL)
        agent.wait(5)
        assert until(lambda: not _alive(sim_pid), 10.0)
    finally:
        agent.kill()


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: its parent (the fork server) has not reaped it yet.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[1][0] != "Z"
