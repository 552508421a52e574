"""`isolate = true`: a plugin in its own process ticks, reports and is supervised like one in
process; a native crash there costs that plugin a restart and nothing else."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.engine.host import PluginHost
from agent.errors import PluginError
from agent.events import Event
from agent.hal.base import SensorSpec
from agent.hal.shm import DeviceBlock, FencedSeqBuffer, Layout, SeqBuffer
from agent.hal.sim import SimHal
from agent.service.watchdog import loops_ticking
from tests.support import engine as kit
from tests.support.waiting import until


def start_host(
    hosts: list[PluginHost], tmp_path: Path, plugins: list[dict[str, Any]]
) -> PluginHost:
    config = kit.make_config(plugins, state_dir=str(tmp_path), engine={"restart_backoff_s": 0.05})
    host = kit.make_host(config)
    hosts.append(host)
    host.start()
    assert host.wait_ready(20.0)
    return host


def row(host: PluginHost, name: str) -> dict[str, Any]:
    return next(p for p in host.plugins() if p["name"] == name)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("kind", [SeqBuffer, FencedSeqBuffer], ids=["plain", "fenced"])
def test_a_shared_device_buffer_hands_over_readings_and_dropouts(kind: type[SeqBuffer]) -> None:
    block = DeviceBlock.create(Layout.of({"signal": SensorSpec((3,))}, {}))
    try:
        buf = block.shm.buf
        assert buf is not None
        offset, shape = block.layout.sensors["signal"]
        writer, reader = kind(buf, offset, shape), kind(buf, offset, shape)  # the two sides
        out = np.full(3, -1.0, np.float32)
        assert not reader.read(out)  # nothing published yet: a dropout, not zeros
        writer.write(np.array([1.0, 2.0, 3.0], np.float32))
        assert reader.read(out) and out.tolist() == [1.0, 2.0, 3.0]
        seq = reader.seq
        writer.write(out, fresh=False)  # the host's sensor had no fresh reading
        assert not reader.read(out)
        assert reader.seq == seq + 2  # even again: a complete write
    finally:
        block.close()


def test_a_reader_never_keeps_a_torn_copy_of_a_buffer_written_by_another_process() -> None:
    layout = Layout.of({"signal": SensorSpec((256,))}, {})
    block = DeviceBlock.create(layout)
    writes = 20_000
    writer = mp.get_context("spawn").Process(
        target=kit.write_counting, args=(block.name, layout, writes), daemon=True
    )
    try:
        writer.start()
        out = np.zeros(256, np.float32)
        seen = kept = 0
        while True:
            writing = writer.is_alive()
            if block.sensors["signal"].read(out):
                # Every element of one copy comes from the same write, and writes only advance.
                assert out.min() == out.max() >= seen
                seen, kept = int(out[0]), kept + 1
            if not writing:  # one more read after the writer ended: it sees the last write
                break
        assert writer.exitcode == 0 and seen == writes and kept > 1
    finally:
        block.close()


@pytest.mark.parametrize("isolate", [False, True], ids=["in-process", "isolated"])
def test_outputs_devices_and_changes_work_the_same_in_either_place(
    hosts: list[PluginHost], tmp_path: Path, isolate: bool
) -> None:
    host = start_host(
        hosts,
        tmp_path,
        [
            {"name": "beacon", "rate_hz": 200, "params": {"every": 10}, "isolate": isolate},
            {"name": "wave", "rate_hz": 200, "isolate": isolate},
        ],
    )
    channels = {ch.plugin: ch for ch in host.channels()}
    events: list[Event] = []
    rows: list[int] = []

    def drained(n_events: int, n_rows: int) -> bool:
        events.extend(channels["beacon"].drain_events())
        rows.append(len(channels["wave"].drain_telemetry()[0]))
        return len(events) >= n_events and sum(rows) >= n_rows

    assert until(lambda: drained(5, 3))
    beats = [e for e in events if e.kind == "beat"]
    assert [e.data["n"] for e in beats[:3]] == [10, 20, 30]
    assert all(e.plugin == "beacon" for e in beats)
    # Stamped on the host's wall clock, in either place.
    assert all(abs(e.ts_ns - time.time_ns()) < 60e9 for e in beats)
    assert (beats[0].data["pid"] != os.getpid()) is isolate
    # The model ran on real sensor readings and its answers reached the simulator's actuator.
    sim = host.hal.backend("sim")
    assert isinstance(sim, SimHal)
    wave_sim = sim.simulator("wave")
    assert isinstance(wave_sim, kit.WaveSim)
    writes = wave_sim.writes
    assert until(lambda: wave_sim.writes > writes)
    assert row(host, "wave")["model_version"] is not None
    # A params change and a rate change reach the plugin between its ticks.
    host.set_params("beacon", {"every": 3})
    host.runner("beacon").apply(rate_hz=100.0)
    events.clear()
    assert until(lambda: drained(4, 0))
    n = [e.data["n"] for e in events if e.kind == "beat"]
    assert {b - a for a, b in zip(n[-3:-1], n[-2:], strict=True)} == {3}
    assert row(host, "beacon")["rate_hz"] == 100.0
    stats = host.stats()["beacon"]
    assert stats["ticks"] > 0 and stats["tick_us"]["p50"] > 0


def test_an_isolated_plugin_reads_sensors_copied_just_before_its_tick(
    hosts: list[PluginHost], tmp_path: Path
) -> None:
    # The host copies sensor readings into shared memory just before the child's deadline (not
    # at a rate of its own, which would leave them up to a period old): at 200 Hz a reading
    # is 0.2 ms old at the tick, plus the host thread's wake-up, against a 5 ms period.
    host = start_host(hosts, tmp_path, [{"name": "age", "rate_hz": 200, "isolate": True}])
    channel = host.runner("age").res.channel
    ages: list[float] = []

    def collected() -> bool:
        ages.extend(channel.drain_telemetry()[1][:, 0].tolist())
        return len(ages) >= 400

    assert until(collected)
    period_us = 1e6 / 200
    assert float(np.median(ages[100:])) < 0.25 * period_us  # after the lock has settled


def start_beside_a_counter(hosts: list[PluginHost], tmp_path: Path, **params: Any) -> PluginHost:
    """An isolated `segfault` plugin with `params`, beside an in-process `counter`, at 200 Hz."""
    crasher = {"name": "segfault", "rate_hz": 200, "isolate": True, "params": params}
    return start_host(hosts, tmp_path, [{"name": "counter", "rate_hz": 200}, crasher])


def test_a_segfault_in_an_isolated_plugin_restarts_it_and_nothing_else(
    hosts: list[PluginHost], tmp_path: Path
) -> None:
    flag = tmp_path / "crashed-once"
    host = start_beside_a_counter(hosts, tmp_path, crash_at=40, flag=str(flag))
    failed = host.runner("segfault").res.channel
    first_pid = row(host, "segfault")["pid"]
    watchdog = loops_ticking(host.tick_counters)  # the check that feeds systemd's watchdog
    assert watchdog() is None
    before, t0 = host.stats()["counter"], time.perf_counter()
    assert until(flag.exists)  # the child has read address 0
    assert until(lambda: row(host, "segfault")["restarts"] == 1)
    # The new child ticks on; windows of a second or more keep the comparison below fair.
    assert until(lambda: row(host, "segfault")["ticks"] > 300)
    after, elapsed = host.stats()["counter"], time.perf_counter() - t0
    time.sleep(elapsed)  # a window as long, with nothing crashing: the control
    control, control_s = host.stats()["counter"], time.perf_counter() - t0 - elapsed

    crashed = row(host, "segfault")
    assert crashed["state"] == "running" and crashed["crashes"] == 1
    assert crashed["pid"] != first_pid and gone(first_pid)
    assert "SIGSEGV" in crashed["last_error"]
    events = [e for e in failed.drain_events() if e.kind == "plugin_failed"]
    assert len(events) == 1
    assert events[0].plugin == "segfault" and "SIGSEGV" in events[0].data["error"]
    assert events[0].data["phase"] == "tick"
    # The host process lived through it, and its in-process loop kept its deadline grid and
    # ticked through the crash at the rate it ticks without one (a machine loaded by other
    # work skips ticks in both windows alike).
    counter = row(host, "counter")
    assert counter["state"] == "running" and counter["restarts"] == 0
    deadlines = (after["ticks"] + after["skipped"]) - (before["ticks"] + before["skipped"])
    assert deadlines == pytest.approx(200 * elapsed, rel=0.05)
    during = (after["ticks"] - before["ticks"]) / elapsed
    calm = (control["ticks"] - after["ticks"]) / control_s
    assert during >= 0.8 * calm
    assert host.tick_counters().keys() == {"counter", "segfault"}
    assert watchdog() is None  # every loop moved on: the pings never stopped


def test_an_isolated_plugin_stuck_in_a_tick_is_killed_and_restarted(
    hosts: list[PluginHost], tmp_path: Path
) -> None:
    flag = tmp_path / "stuck-once"
    host = start_beside_a_counter(hosts, tmp_path, crash_at=20, flag=str(flag), hang=True)
    channel = host.runner("segfault").res.channel
    first = row(host, "segfault")["pid"]
    assert until(lambda: row(host, "segfault")["restarts"] == 1)
    stuck = row(host, "segfault")
    assert "stuck in a tick" in stuck["last_error"] and gone(first)
    events = [e for e in channel.drain_events() if e.kind == "plugin_failed"]
    assert len(events) == 1 and "stuck in a tick" in events[0].data["error"]
    ticks = stuck["ticks"]
    assert until(lambda: row(host, "segfault")["ticks"] > ticks)  # the new child ticks on
    assert row(host, "counter")["restarts"] == 0


def test_a_native_crash_in_setup_is_a_setup_failure_of_that_plugin_only(
    hosts: list[PluginHost], tmp_path: Path
) -> None:
    flag = tmp_path / "crashed-once"
    params = {"in_setup": True, "flag": str(flag)}
    host = start_host(
        hosts,
        tmp_path,
        [
            {"name": "counter", "rate_hz": 200},
            {"name": "segfault", "enabled": False, "isolate": True, "params": params},
        ],
    )
    with pytest.raises(PluginError, match=r"segfault.*setup failed.*SIGSEGV"):
        host.start_plugin("segfault")  # the way a model that crashes the runtime on load ends
    assert flag.exists() and row(host, "counter")["state"] == "running"
    host.start_plugin("segfault")  # the second child finds the flag and comes up
    assert until(lambda: row(host, "segfault")["ticks"] > 0)
    ticks = row(host, "counter")["ticks"]
    assert until(lambda: row(host, "counter")["ticks"] > ticks)


def test_stop_ends_the_child_and_leaves_no_process(hosts: list[PluginHost], tmp_path: Path) -> None:
    host = start_host(
        hosts,
        tmp_path,
        [
            {"name": "beacon", "rate_hz": 200, "isolate": True},
            # The 5th tick runs for 30 s: only a process can be ended in the middle of one.
            {
                "name": "slow",
                "rate_hz": 100,
                "isolate": True,
                "params": {"every": 5, "periods": 3000},
            },
        ],
    )
    beacon = host.runner("beacon")
    slow = host.runner("slow")
    assert until(lambda: row(host, "slow")["ticks"] == 4)  # in the long tick now
    pids = {name: row(host, name)["pid"] for name in ("beacon", "slow")}
    processes = {name: r._child.process for name, r in (("beacon", beacon), ("slow", slow))}  # type: ignore[attr-defined]
    host.stop(timeout=0.5)
    assert all(gone(pid) for pid in pids.values())
    assert processes["beacon"].exitcode == 0  # it ended itself, between two ticks
    assert processes["slow"].exitcode == -9  # stuck in a tick: killed
    assert row(host, "beacon")["state"] == row(host, "slow")["state"] == "stopped"
    assert row(host, "beacon")["pid"] is None


def test_a_python_error_in_an_isolated_tick_is_reported_with_its_message(
    hosts: list[PluginHost], tmp_path: Path
) -> None:
    host = start_host(
        hosts,
        tmp_path,
        [{"name": "crashy", "rate_hz": 200, "isolate": True, "params": {"crash_at": 5}}],
    )
    channel = host.runner("crashy").res.channel
    assert until(lambda: row(host, "crashy")["restarts"] >= 1)
    assert "RuntimeError: boom 1" in row(host, "crashy")["last_error"]
    events = [e for e in channel.drain_events() if e.kind == "plugin_failed"]
    assert events and "RuntimeError: boom 1" in events[0].data["error"]


def test_reload_adds_and_rerates_an_isolated_plugin_and_names_a_flip_as_restart_required(
    hosts: list[PluginHost], tmp_path: Path
) -> None:
    host = start_host(hosts, tmp_path, [{"name": "counter", "rate_hz": 200}])
    plugins: list[dict[str, Any]] = [
        {"name": "counter", "rate_hz": 200},
        {"name": "beacon", "rate_hz": 200, "isolate": True},
    ]
    host.reload(kit.make_config(plugins, state_dir=str(tmp_path)))
    assert until(lambda: row(host, "beacon")["ticks"] > 0)
    assert row(host, "beacon")["pid"] not in (None, os.getpid())
    plugins[1]["rate_hz"] = 50
    host.reload(kit.make_config(plugins, state_dir=str(tmp_path)))
    assert row(host, "beacon")["rate_hz"] == 50.0
    plugins[0]["isolate"] = True
    plugins[1]["model"] = "robot_policy"  # its child loaded the default: no slot to swap into
    result = host.reload(kit.make_config(plugins, state_dir=str(tmp_path)))
    assert result["restart_required"] == ["plugins[counter].isolate", "plugins[beacon].model"]
    assert row(host, "counter").get("pid") is None  # still in process until the next start


def test_restart_stop_and_start_of_an_isolated_plugin_each_use_a_fresh_child(
    hosts: list[PluginHost], tmp_path: Path
) -> None:
    host = start_host(hosts, tmp_path, [{"name": "beacon", "rate_hz": 200, "isolate": True}])
    first = row(host, "beacon")["pid"]
    ticks = row(host, "beacon")["ticks"]
    host.restart_plugin("beacon")
    second = row(host, "beacon")["pid"]
    assert second != first and gone(first)
    assert until(lambda: row(host, "beacon")["ticks"] > ticks)  # counted on from before
    host.stop_plugin("beacon")
    assert row(host, "beacon")["state"] == "stopped" and gone(second)
    host.set_params("beacon", {"every": 7})  # kept for the next child
    channel = host.runner("beacon").res.channel
    channel.drain_events()
    host.start_plugin("beacon")
    events: list[Event] = []

    def beats() -> list[int]:
        events.extend(channel.drain_events())
        return [e.data["n"] for e in events if e.kind == "beat"]

    assert until(lambda: len(beats()) >= 2)
    assert beats()[:2] == [7, 14]
    assert row(host, "beacon")["pid"] not in (first, second)
