"""Light devices share a few threads per process (agent/sync/lanes.py, sim/workpool.py): each
device's work still runs in order, one item at a time, and the process's thread count does not
grow with its devices."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.sync.lanes import Lane
from sim.workpool import SharedThreads


def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_lanes_on_shared_threads_keep_each_lanes_order_and_run_one_item_at_a_time() -> None:
    pool = SharedThreads(4, "test-work")
    done: dict[int, list[int]] = {k: [] for k in range(6)}
    running: dict[int, int] = dict.fromkeys(range(6), 0)
    overlaps = []
    lock = threading.Lock()

    def runner(k: int) -> Callable[[int], None]:
        def run(item: int) -> None:
            with lock:
                running[k] += 1
                if running[k] > 1:
                    overlaps.append(k)
            time.sleep(0.0005)  # long enough for another shared thread to try the same lane
            with lock:
                running[k] -= 1
                done[k].append(item)

        return run

    lanes = [Lane(pool, runner(k), capacity=1000, name=f"lane{k}") for k in range(6)]
    try:
        for item in range(50):
            for lane in lanes:
                assert lane.submit(item)
        assert _until(lambda: all(len(v) == 50 for v in done.values()))
        assert all(v == list(range(50)) for v in done.values())
        assert overlaps == []
    finally:
        pool.shutdown(wait=True)


def test_a_full_lane_refuses_and_a_stopped_lane_finishes_or_drops_what_waits() -> None:
    pool = SharedThreads(1, "test-work")
    gate = threading.Event()
    ran: list[int] = []

    def run(item: int) -> None:
        gate.wait(10)
        ran.append(item)

    try:
        lane = Lane(pool, run, capacity=2, name="full")
        assert lane.submit(0)
        assert _until(lambda: not lane._items)  # 0 is running, held at the gate
        assert lane.submit(1) and lane.submit(2)
        assert not lane.submit(3)  # two wait already: refused, as the agent's queues answer busy
        gate.set()
        assert lane.stop(10.0)
        assert ran == [0, 1, 2]
        assert not lane.submit(4)

        gate.clear()
        dropping = Lane(pool, run, capacity=10, name="dropping")
        for item in (10, 11, 12):
            dropping.submit(item)
        assert _until(lambda: len(dropping._items) == 2)
        gate.set()
        assert dropping.stop(10.0, finish=False)
        assert ran == [0, 1, 2, 10]
    finally:
        gate.set()
        pool.shutdown(wait=True)


def test_a_timer_repeats_until_cancelled() -> None:
    pool = SharedThreads(1, "test-work")
    calls: list[int] = []
    try:
        cancel = pool.every(0.01, lambda: calls.append(1))
        assert _until(lambda: len(calls) >= 3)
        cancel()
        time.sleep(0.05)
        settled = len(calls)
        time.sleep(0.1)
        assert len(calls) == settled
        pool.every(0.01, lambda: calls.append(2))
    finally:
        pool.shutdown(wait=True)
    assert _until(lambda: not any(t.name == "test-work-timers" for t in threading.enumerate()))


def _light_devices(n: int, broker: Any, state: Path, keys: Path) -> list[Any]:
    from agent.config.sections import AgentConfig
    from agent.service.compose import build_agent
    from sim.lightfleet import device_config

    apps = []
    for i in range(n):
        cfg = device_config(
            f"{state.name}-{i}",
            "g0",
            host=broker.host,
            port=broker.port,
            protocol="5",
            state=state,
            public_key=str(keys / "public.pem"),
        )
        app = build_agent(AgentConfig.model_validate(cfg))
        app.start()
        app.host._supervisor.stop()
        apps.append(app)
    return apps


def _all_connected(apps: list[Any]) -> Callable[[], bool]:
    return lambda: all(a.sync.link.connected for a in apps)


def test_light_devices_answer_commands_on_a_few_threads_however_many_they_are(
    broker: Any, probe_factory: Any, tmp_path: Path
) -> None:
    from agent.cli.main import main as edge_agent
    from agent.ota.sandbox import MAX_CHILDREN
    from sim.lightfleet import TICK_S
    from sim.workpool import WORK_THREADS, shared_threads

    keys = tmp_path / "keys"
    assert edge_agent(["ota", "keygen", "--out", str(keys)]) == 0
    probe = probe_factory(broker)
    threads = {}
    with shared_threads(TICK_S):
        before = threading.active_count()
        for n in (4, 16):
            apps = _light_devices(n, broker, tmp_path / f"fleet{n}", keys)
            try:
                assert _until(_all_connected(apps), 30.0)
                for i in range(n):
                    reply = probe.command(f"edge/fleet{n}-{i}", "ping")
                    assert reply["ok"] and reply["device"] == f"fleet{n}-{i}", reply
                threads[n] = threading.active_count() - before
            finally:
                for app in apps:
                    app.stop(timeout=1.0)
    # The shared threads and their timer (the network thread was there before): none per
    # device, where each device used to keep four (sync, commands, OTA worker and watch).
    assert max(threads.values()) <= WORK_THREADS + 1 + MAX_CHILDREN, threads
