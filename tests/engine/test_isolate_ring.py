"""An isolated plugin's telemetry rows cross in a shared-memory ring: they reach the host's drain
in order with their stamps, a full ring counts what it refuses, a killed child loses nothing it
wrote and leaves no torn row, and the block goes when the plugin does."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from agent.engine.host import PluginHost
from agent.engine.isolate_ring import (
    FencedTelemetryRing,
    RowsBlock,
    SharedTelemetryChannel,
    TelemetryRing,
)
from agent.errors import PluginError
from agent.plugin.channel import OutputChannel
from tests.engine import ring_kit as rk
from tests.support import engine as kit
from tests.support.waiting import until

KINDS = pytest.mark.parametrize(
    "kind", [TelemetryRing, FencedTelemetryRing], ids=["plain", "fenced"]
)


def start_host(
    hosts: list[PluginHost], tmp_path: Path, plugins: list[dict[str, Any]]
) -> PluginHost:
    config = kit.make_config(plugins, state_dir=str(tmp_path), engine={"restart_backoff_s": 0.05})
    host = rk.make_host(config)
    hosts.append(host)
    host.start()
    assert host.wait_ready(20.0)
    return host


def channel_of(host: PluginHost, name: str) -> OutputChannel:
    return next(ch for ch in host.channels() if ch.plugin == name)


def info(host: PluginHost, name: str) -> dict[str, Any]:
    return next(p for p in host.plugins() if p["name"] == name)


def restarted(host: PluginHost, times: int) -> bool:
    """`rows` has been restarted `times` times and ticks again."""
    return bool(info(host, "rows")["restarts"] == times and host.wait_ready(5.0))


class Drained:
    """Every row taken from a channel so far, in the order taken."""

    def __init__(self, channel: OutputChannel) -> None:
        self.channel = channel
        self.stamps: npt.NDArray[np.int64] = np.zeros(0, np.int64)
        self.rows: npt.NDArray[np.float64] = np.zeros((0, len(channel.fields)), np.float64)

    def take(self) -> Drained:
        stamps, rows = self.channel.drain_telemetry()
        self.stamps = np.concatenate([self.stamps, stamps])
        self.rows = np.concatenate([self.rows, rows])
        return self

    def of(self, pid: int) -> npt.NDArray[np.float64]:
        rows: npt.NDArray[np.float64] = self.rows[self.rows[:, rk.PID] == pid]
        return rows

    def pids(self) -> list[int]:
        """Children in the order their rows came."""
        seen = self.rows[:, rk.PID].astype(np.int64)
        return [int(p) for p in seen[np.sort(np.unique(seen, return_index=True)[1])]]


# --- the ring itself ---------------------------------------------------------------------------


@KINDS
def test_rows_come_out_in_order_with_their_stamps_and_a_restart_goes_on(
    kind: type[TelemetryRing],
) -> None:
    block = RowsBlock.create(8, 3, kind=kind)
    try:
        producer = RowsBlock.attach(block.name, kind=kind).ring  # the child's side
        consumer = block.ring
        for k in range(1, 6):
            assert producer.put(k * 1_000, [k, k, k])
        assert consumer.pending == 5
        stamps, rows = consumer.take()
        assert stamps.tolist() == [1_000, 2_000, 3_000, 4_000, 5_000]
        assert rows[:, 0].tolist() == [1, 2, 3, 4, 5] and rk.whole_rows(rows)
        # A second producer (a restarted child) starts at the head it finds, across the wrap.
        for k in (6, 7):
            assert producer.put(k * 1_000, [k, k, k])
        restarted = RowsBlock.attach(block.name, kind=kind).ring
        for k in range(8, 14):
            assert restarted.put(k * 1_000, [k, k, k])
        stamps, rows = consumer.take()
        assert rk.counts_up(rows[:, 0], 6) and (stamps // 1_000).tolist() == rows[:, 0].tolist()
        assert consumer.pending == 0 and consumer.dropped == 0
    finally:
        block.close()


@KINDS
def test_a_full_ring_counts_what_it_refuses_and_keeps_what_it_holds(
    kind: type[TelemetryRing],
) -> None:
    block = RowsBlock.create(4, 2, kind=kind)
    try:
        producer, consumer = RowsBlock.attach(block.name, kind=kind).ring, block.ring
        results = [producer.put(k, [k, k]) for k in range(1, 8)]
        assert results == [True] * 4 + [False] * 3
        assert consumer.dropped == 3 and consumer.pending == 4
        stamps, rows = consumer.take()
        assert stamps.tolist() == [1, 2, 3, 4] and rows[:, 0].tolist() == [1, 2, 3, 4]
        assert producer.put(8, [8, 8])  # room again once the consumer took the rows
        assert consumer.take()[1][:, 0].tolist() == [8] and consumer.dropped == 3
    finally:
        block.close()


@KINDS
@pytest.mark.parametrize("head", [2**62, -5, 9])
def test_words_a_scribbling_child_left_give_no_rows_and_an_empty_ring(
    kind: type[TelemetryRing], head: int, caplog: pytest.LogCaptureFixture
) -> None:
    block = RowsBlock.create(8, 2, kind=kind)
    try:
        producer, consumer = RowsBlock.attach(block.name, kind=kind).ring, block.ring
        assert producer.put(1, [1, 1])
        # What a native crash may do before the child dies: any value in the head word.
        buf = block.shm.buf
        assert buf is not None
        buf[:8] = head.to_bytes(8, "little", signed=True)
        assert consumer.pending == 8  # out of range: report a full ring, so sync drains it
        stamps, rows = consumer.take()  # never an arange of 2**62 slots
        assert len(stamps) == 0 and rows.shape == (0, 2) and consumer.resets == 1
        assert "cannot be" in caplog.text
        # A new child attaches to an empty ring and its rows flow again.
        child = RowsBlock.attach(block.name, kind=kind).ring
        assert child.put(2, [2, 2]) and consumer.take()[1][:, 0].tolist() == [2]
    finally:
        block.close()


@KINDS
def test_a_writer_killed_mid_row_leaves_no_torn_row_and_the_next_goes_on(
    kind: type[TelemetryRing],
) -> None:
    block = RowsBlock.create(64, 512, kind=kind)  # 4 kB rows: a kill can land inside one
    spawn = mp.get_context("spawn")
    consumer = block.ring
    stamps: list[npt.NDArray[np.int64]] = []
    rows: list[npt.NDArray[np.float64]] = []

    def take() -> int:
        s, r = consumer.take()
        stamps.append(s)
        rows.append(r)
        return sum(len(s) for s in stamps)

    try:
        writer = spawn.Process(target=rk.write_rows, args=(block.name, kind, 1, None), daemon=True)
        writer.start()
        # Taken as fast as it comes, so the writer is mostly writing when the kill lands.
        assert until(lambda: take() >= 5_000, timeout=30.0, step=0.0)
        os.kill(writer.pid or 0, signal.SIGKILL)
        writer.join(5.0)
        assert writer.exitcode == -signal.SIGKILL
        first = take()
        successor = spawn.Process(
            target=rk.write_rows, args=(block.name, kind, first + 1, 500), daemon=True
        )
        successor.start()
        assert until(lambda: take() >= first + 500, timeout=30.0, step=0.0)  # it waits for room
        successor.join(5.0)
        assert successor.exitcode == 0 and take() == first + 500
        all_stamps, all_rows = np.concatenate(stamps), np.concatenate(rows)
        # Every row the first writer completed, then the successor's, none torn or repeated.
        assert rk.counts_up(all_rows[:, 0]) and len(all_rows) == first + 500
        assert rk.whole_rows(all_rows) and np.array_equal(all_stamps, all_rows[:, 0])
        assert consumer.dropped == 0
    finally:
        block.close()


@KINDS
def test_the_hosts_channel_stamps_the_childs_rows_on_its_wall_clock(
    kind: type[TelemetryRing],
) -> None:
    block = RowsBlock.create(16, 1, kind=kind)
    try:
        host = SharedTelemetryChannel("p", ("x",), block.ring)
        child = SharedTelemetryChannel(
            "p", ("x",), RowsBlock.attach(block.name, kind=kind).ring, wall_offset_ns=0
        )
        now = time.perf_counter_ns()
        offset = host.wall_ns(0)  # the host's, as of its last drain
        assert child.telemetry(now, [1.0])
        assert host.pending == (1, 0) and child.pending[0] == 1
        (stamp,), _ = host.drain_telemetry()
        assert stamp == now + offset and abs(stamp - time.time_ns()) < 10**9
        with pytest.raises(PluginError, match="2 telemetry fields, the ring holds 1"):
            SharedTelemetryChannel("p", ("x", "y"), block.ring)
    finally:
        block.close()


# --- an isolated plugin's rows ------------------------------------------------------------------


def test_rows_written_in_the_child_reach_the_host_in_order_with_their_stamps(
    hosts: list[PluginHost], tmp_path: Path
) -> None:
    host = start_host(hosts, tmp_path, [{"name": "rows", "rate_hz": 500, "isolate": True}])
    channel = channel_of(host, "rows")
    got = Drained(channel)
    assert until(lambda: len(got.take().rows) >= 300)
    rows, stamps = got.rows, got.stamps
    assert rk.counts_up(rows[:, rk.N]) and rk.whole_rows(rows, skip=(rk.PID, rk.PERF))
    assert set(rows[:, rk.PID].tolist()) == {info(host, "rows")["pid"]} != {os.getpid()}
    # Each stamp is the tick's own time on the host's wall clock.
    assert (np.diff(stamps) > 0).all()
    offsets = stamps - rows[:, rk.PERF].astype(np.int64)
    assert np.abs(offsets - channel.wall_ns(0)).max() < 1_000_000
    assert abs(int(stamps[-1]) - time.time_ns()) < 60 * 10**9
    assert channel.telemetry_dropped == 0


def test_a_full_ring_counts_the_childs_drops_and_keeps_the_rows_it_holds(
    hosts: list[PluginHost], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent.engine.isolate.ROWS_CAPACITY", 64)
    host = start_host(hosts, tmp_path, [{"name": "rows", "rate_hz": 500, "isolate": True}])
    channel = channel_of(host, "rows")
    assert until(lambda: channel.telemetry_dropped > 10)  # nobody drains: the ring fills
    assert channel.pending[0] == 64
    # What status and metrics add up (agent/sync/documents.py) counts the child's drops.
    assert sum(c.telemetry_dropped for c in host.channels()) == channel.telemetry_dropped
    got = Drained(channel)
    got.take()
    assert rk.counts_up(got.rows[:, rk.N])  # the first 64, none lost to the ones refused
    assert until(lambda: len(got.take().rows) > 64)
    assert (np.diff(got.rows[:, rk.N]) > 0).all() and got.rows[64, rk.N] > 64 + 10


def test_rows_a_killed_child_wrote_are_drained_and_its_restart_goes_on_in_the_same_ring(
    hosts: list[PluginHost], tmp_path: Path
) -> None:
    flag = tmp_path / "killed"
    params = {"kill_at": 600, "flag": str(flag)}
    host = start_host(
        hosts, tmp_path, [{"name": "rows", "rate_hz": 500, "isolate": True, "params": params}]
    )
    first = info(host, "rows")["pid"]
    first_blocks = rk.shm_mapped(first)
    got = Drained(channel_of(host, "rows"))
    assert until(lambda: len(got.take().pids()) == 2 and len(got.of(got.pids()[1])) > 200)
    assert info(host, "rows")["restarts"] == 1 and "SIGKILL" in info(host, "rows")["last_error"]
    second = got.pids()[1]
    # The restarted child writes into the block the first one wrote into.
    assert rk.shm_mapped(second) == first_blocks
    # Every row the first child wrote before it died, then the second child's, none twice.
    assert got.pids() == [first, second]
    assert rk.counts_up(got.of(first)[:, rk.N]) and len(got.of(first)) == 600
    assert rk.counts_up(got.of(second)[:, rk.N])
    assert rk.whole_rows(got.rows, skip=(rk.PID, rk.PERF)) and (np.diff(got.stamps) > 0).all()


def test_children_killed_at_any_moment_never_leave_a_torn_or_repeated_row(
    hosts: list[PluginHost], tmp_path: Path
) -> None:
    host = start_host(hosts, tmp_path, [{"name": "rows", "rate_hz": 1000, "isolate": True}])
    got = Drained(channel_of(host, "rows"))
    for restarts in range(1, 4):
        pid = info(host, "rows")["pid"]
        time.sleep(random.uniform(0.05, 0.2))  # not a wait: picks where in a tick the kill lands
        os.kill(pid, signal.SIGKILL)
        assert until(partial(restarted, host, restarts))
        got.take()
    assert until(lambda: len(got.take().pids()) == 4)
    for pid in got.pids():
        assert rk.counts_up(got.of(pid)[:, rk.N]), f"child {pid}: a row missing or repeated"
    assert rk.whole_rows(got.rows, skip=(rk.PID, rk.PERF)) and (np.diff(got.stamps) > 0).all()


def test_the_blocks_outlive_restarts_and_go_when_the_plugin_is_removed_or_stopped(
    hosts: list[PluginHost], tmp_path: Path
) -> None:
    plugins = [
        {"name": "rows", "rate_hz": 200, "isolate": True, "params": {"kill_at": 40}},
        {"name": "rows2", "rate_hz": 200, "isolate": True},
    ]
    host = start_host(hosts, tmp_path, plugins)
    kept = rk.shm_mapped(info(host, "rows")["pid"])
    removed = rk.shm_mapped(info(host, "rows2")["pid"])
    assert len(kept) == len(removed) == 2  # the device block and the ring, each
    # `rows` dies every 40 ticks: each restart attaches to the same two blocks, makes none.
    assert until(lambda: info(host, "rows")["restarts"] >= 3, timeout=20.0)
    assert until(lambda: (pid := info(host, "rows")["pid"]) and rk.shm_mapped(pid) == kept)
    assert kept | removed <= rk.shm_mapped(os.getpid())
    host.reload(host.config.model_copy(update={"plugins": host.config.plugins[:1]}))
    assert not any(Path("/dev/shm", name).exists() for name in removed)
    assert all(Path("/dev/shm", name).exists() for name in kept)
    hosts.remove(host)
    kit.stop_host(host)
    assert not any(Path("/dev/shm", name).exists() for name in kept)
