"""Fault: the state directory fills up (issue 7). A real tmpfs as state_dir, filled to ENOSPC.

While full, outbox writes fail and are reported (status, counters, one log line, the systemd
STATUS line), every loop keeps its rate, events wait in the bounded backlog and, past it, are
dropped and counted at the plugin rings. Once space is freed the backlog is stored and delivered
with contiguous per-plugin seq numbers: nothing is lost that was not counted. An agent that
starts on a full state_dir runs its loops, reports the error and opens the outbox it left once
space is back.

Needs root (or CAP_SYS_ADMIN) for `mount -t tmpfs`; skipped with that reason otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import Field

from agent.config.sections import AgentConfig
from agent.engine.report import rss_mb
from agent.plugin.base import Plugin, PluginContext, PluginParams
from agent.plugin.registry import PluginRegistry
from agent.service.app import AgentApp
from agent.service.compose import build_agent, status_line
from agent.sync.outbox import Message, MessageClass, Outbox
from agent.sync.service import SyncService
from sim.broker import Broker
from tests.support.soak import GENERIC, all_plugins_config

pytestmark = pytest.mark.soak

BURST_HZ = 200.0
BURST_PER_TICK = 10  # 2,000 events/s: past the 20,000-event backlog in about 10 s


# -- a real, small file system ------------------------------------------------------------------


class SmallDisk:
    """A tmpfs of a few MiB mounted at `path`, filled to ENOSPC by one filler file on demand."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        self.size = size
        self.filler = path / "filler"

    def mount(self) -> None:
        """Mount (skips the test when this process may not mount)."""
        self.path.mkdir(parents=True, exist_ok=True)
        mount = shutil.which("mount")
        if mount is None:
            pytest.skip("needs the `mount` command to put a small tmpfs under state_dir")
        done = subprocess.run(
            [mount, "-t", "tmpfs", "-o", f"size={self.size},mode=0700", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(
                "needs root or CAP_SYS_ADMIN to mount a small tmpfs as the full state_dir "
                f"(mount said: {done.stderr.strip() or done.returncode})"
            )

    def unmount(self) -> None:
        """Unmount; lazily if something still holds a file open (never left mounted)."""
        umount = shutil.which("umount") or "umount"
        if subprocess.run([umount, str(self.path)], capture_output=True).returncode != 0:
            subprocess.run([umount, "-l", str(self.path)], capture_output=True, check=True)

    def fill(self) -> int:
        """Write the filler until the file system refuses; returns the bytes written."""
        written = 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
                block = b"\0" * chunk
                try:
                    while True:
                        written += os.write(fd, block)
                except OSError as exc:
                    if exc.errno != 28:  # ENOSPC: what we want; anything else is a real error
                        raise
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        """Delete the filler."""
        self.filler.unlink()

    def free_bytes(self) -> int:
        """Bytes an unprivileged writer could still use."""
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], SmallDisk]]:
    """`small_disk(size)`: a mounted tmpfs at tmp_path/state; unmounted after the test."""
    mounted: list[SmallDisk] = []

    def make(size: str) -> SmallDisk:
        disk = SmallDisk(tmp_path / "state", size)
        disk.mount()
        mounted.append(disk)
        return disk

    yield make
    for disk in mounted:
        disk.unmount()


# -- an event source fast enough to fill the backlog within the test -------------------------------


class BurstParams(PluginParams):
    """Params of BurstPlugin."""

    per_tick: int = Field(0, ge=0, le=100, description="Events raised per tick")


class BurstPlugin(Plugin):
    """Raises `per_tick` numbered events per tick; counts what its ring accepted and refused."""

    Params = BurstParams
    default_rate_hz = BURST_HZ
    raised: ClassVar[int] = 0
    refused: ClassVar[int] = 0

    def setup(self, ctx: PluginContext) -> None:
        """Keep the channel and params."""
        self.out = ctx.out
        self.per_tick = ctx.params.per_tick  # type: ignore[attr-defined]
        type(self).raised = type(self).refused = 0

    def tick(self, now_ns: int) -> None:
        """Raise this tick's events, each numbered `n` in the order raised."""
        cls = type(self)
        for _ in range(self.per_tick):
            if not self.out.event(now_ns, "burst", 1.0, n=cls.raised):
                cls.refused += 1
            cls.raised += 1

    def apply_params(self, params: PluginParams) -> None:
        """Take the new rate of events."""
        self.per_tick = params.per_tick  # type: ignore[attr-defined]


# -- an MQTT subscriber in its own process ------------------------------------------------------


class EventSink:
    """Every message on some topics, as `topic payload` lines in a file, from another process.

    An in-process client would share the agent's GIL and heap: receiving 20,000 events it
    tripled the RSS figure and halved the robot's tick ratio while the backlog drained.
    """

    def __init__(self, broker: Broker, filters: list[str], out: Path) -> None:
        self.out = out
        self._file = out.open("wb")
        args = [sys.executable, __file__, broker.host, str(broker.port), *filters]
        self.proc = subprocess.Popen(args, stdout=self._file, stderr=subprocess.PIPE)

    def wait_subscribed(self, timeout: float = 15.0) -> None:
        """Return once the subscriptions are acknowledged (the first line says READY)."""
        deadline = time.monotonic() + timeout
        while not self.out.read_bytes().startswith(b"READY\n"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"event sink did not subscribe: {err}")
            time.sleep(0.05)

    def count(self) -> int:
        """Messages received so far."""
        return self.out.read_bytes().count(b"\n") - 1

    def payloads(self) -> list[Any]:
        """JSON payloads received so far, in arrival order."""
        lines = self.out.read_bytes().split(b"\n")[1:]
        return [json.loads(line.split(b" ", 1)[1]) for line in lines if line]

    def close(self) -> None:
        """Stop the process."""
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()
        self._file.close()


@pytest.fixture
def event_sink(tmp_path: Path) -> Iterator[Callable[[Broker, list[str]], EventSink]]:
    """`event_sink(broker, filters)`: a subscribed out-of-process sink; stopped after the test."""
    made: list[EventSink] = []

    def make(broker: Broker, filters: list[str]) -> EventSink:
        sink = EventSink(broker, filters, tmp_path / f"sink-{len(made)}.txt")
        made.append(sink)
        sink.wait_subscribed()
        return sink

    yield make
    for sink in made:
        sink.close()


def _sink_main(argv: list[str]) -> int:
    """The sink process: subscribe (QoS 1) to argv[2:] on argv[0]:argv[1], print every message."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    host, port, filters = argv[0], int(argv[1]), argv[2:]
    out = sys.stdout.buffer
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        c.subscribe([(f, 1) for f in filters])

    def on_subscribe(c: Any, userdata: Any, mid: Any, reasons: Any, props: Any) -> None:
        out.write(b"READY\n")
        out.flush()

    def on_message(c: Any, userdata: Any, msg: Any) -> None:
        out.write(msg.topic.encode() + b" " + msg.payload + b"\n")
        out.flush()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, port, 30)
    signal.signal(signal.SIGTERM, lambda *a: client.disconnect())
    client.loop_forever()
    return 0


# -- helpers ------------------------------------------------------------------------------------


def full_config(
    broker: Broker, device_id: str, state_dir: Path, *, burst: bool = True
) -> AgentConfig:
    """All plugins (and the burst plugin), QoS 1 telemetry, this broker."""
    return all_plugins_config(
        broker.port,
        device_id,
        state_dir,
        extra_plugins=[{"name": "burst", "rate_hz": BURST_HZ}] if burst else [],
        # QoS 1 telemetry goes through the outbox too: what happens to it is part of the test.
        mqtt={"telemetry_qos": 1},
        scheduler={"outbox_compaction_s": 2.0, "metrics_s": 1.0},
    )


def received_events(sink: EventSink) -> dict[str, list[dict[str, Any]]]:
    """Event payloads per plugin, one per seq (a QoS 1 redelivery counted once), seq order."""
    per_plugin: dict[str, dict[int, dict[str, Any]]] = {}
    for p in sink.payloads():
        per_plugin.setdefault(p["plugin"], {})[p["seq"]] = p
    return {name: [seqs[s] for s in sorted(seqs)] for name, seqs in per_plugin.items()}


def tick_rates(app: AgentApp, t0: float, c0: dict[str, int]) -> dict[str, float]:
    """Ticks per configured tick since (t0, c0), per plugin: 1.0 is exactly on rate."""
    elapsed = time.monotonic() - t0
    now = app.host.tick_counters()
    rates = {p["name"]: p["rate_hz"] for p in app.host.plugins()}
    return {name: (now[name] - c0[name]) / (rates[name] * elapsed) for name in c0}


def sync_records(
    caplog: pytest.LogCaptureFixture, level: int, since: int = 0
) -> list[logging.LogRecord]:
    """Log records of the sync package at `level` or above, from record number `since` on."""
    return [
        r for r in caplog.records[since:] if r.name.startswith("agent.sync") and r.levelno >= level
    ]


# -- the tests ----------------------------------------------------------------------------------


def test_a_full_state_dir_is_reported_loops_keep_rate_and_nothing_uncounted_is_lost(
    small_disk: Callable[[str], SmallDisk],
    broker: Broker,
    probe_factory: Any,
    event_sink: Callable[[Broker, list[str]], EventSink],
    unique_id: str,
    until: Callable[..., bool],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agent.sync")
    disk = small_disk("32m")
    cfg = full_config(broker, unique_id, disk.path)
    sink = event_sink(broker, [f"edge/{unique_id}/events/#"])  # before start: every seq from 1
    probe = probe_factory(broker)
    probe.subscribe(f"edge/{unique_id}/telemetry/#")
    app = build_agent(cfg, registry=PluginRegistry(extra={"burst": BurstPlugin}))
    app.start()
    try:
        sync: SyncService = app.sync
        assert app.wait_ready(20)
        assert until(lambda: sync.counters()["connected"] == 1.0, 10)
        assert until(lambda: probe.count(f"edge/{unique_id}/telemetry/+") > 0, 10)

        # Healthy baseline, in the same run as the fault.
        t0, c0 = time.monotonic(), app.host.tick_counters()
        time.sleep(2.0)
        base_rates = tick_rates(app, t0, c0)
        rss_before = rss_mb()
        assert sync.counters()["outbox_errors"] == 0

        # -- the disk fills ------------------------------------------------------------------
        filled = disk.fill()
        assert disk.free_bytes() == 0
        records_before = len(caplog.records)
        app.host.set_params("burst", {"per_tick": BURST_PER_TICK})
        assert until(lambda: sync.counters()["outbox_failing"] == 1.0, 15), sync.status()
        t_full, c_full = time.monotonic(), app.host.tick_counters()
        telemetry_at_full = probe.count(f"edge/{unique_id}/telemetry/+")
        rss_during: list[float] = []

        def backlog_overflowed() -> bool:
            rss_during.append(rss_mb())
            return sync.counters()["channel_events_dropped"] > 0

        assert until(backlog_overflowed, 40), sync.counters()
        rss_at_bound = rss_during[-1]
        time.sleep(2.0)  # past the bound for a while: memory must stay where it is
        rss_during.append(rss_mb())
        full_rates = tick_rates(app, t_full, c_full)
        app.host.set_params("burst", {"per_tick": 0})
        full_s = time.monotonic() - t_full
        time.sleep(0.2)  # the new params apply between two ticks
        counters = sync.counters()
        status = sync.status()
        line = status_line(app)

        # Reported: status, counters, the systemd STATUS line and one log line for the episode.
        assert "full" in status["outbox"]["last_error"], status["outbox"]
        assert str(disk.path) in status["outbox"]["last_error"]
        assert status["outbox"]["error_since"] is not None
        assert counters["outbox_errors"] >= 1
        assert "outbox writes failing" in line
        errors = sync_records(caplog, logging.WARNING, records_before)
        outbox_errors = [
            r
            for r in errors
            if r.name.startswith("agent.sync.outbox") and r.levelno >= logging.ERROR
        ]
        assert len(outbox_errors) == 1, [r.getMessage() for r in errors]  # not one per retry
        # A write may really succeed mid-episode (compaction truncates the WAL, freeing a few
        # pages): that recovery is logged once, and the failure after it shares the first
        # line's rate limit.
        assert len(errors) <= 2, [r.getMessage() for r in errors]
        assert not any(r.exc_info for r in errors), "a traceback instead of a report"
        # Events held in the bounded backlog, then left in the rings whose overflow is counted.
        backlog = counters["events_backlog"]
        assert 20000 <= backlog <= 20000 + 4 * 1024
        dropped = counters["channel_events_dropped"]
        assert dropped > 0 and dropped == BurstPlugin.refused
        # QoS 1 telemetry is not kept while the outbox fails: dropped and counted.
        assert counters["telemetry_error_dropped"] > 0
        # (a few batches stored just before the first failure may still go out)
        assert probe.count(f"edge/{unique_id}/telemetry/+") - telemetry_at_full <= 6
        # Every loop kept its rate (ratio to the configured rate, against the healthy baseline).
        for name, ratio in full_rates.items():
            assert ratio >= 0.8 * base_rates[name], (name, full_rates, base_rates)
        # Memory bounded: the backlog is capped, so memory stops growing once it is reached.
        assert max(rss_during) - rss_before < 50
        assert rss_during[-1] - rss_at_bound < 8

        # -- space is freed ------------------------------------------------------------------
        t_free, c_free = time.monotonic(), app.host.tick_counters()
        disk.free()
        assert until(lambda: sync.counters()["outbox_failing"] == 0.0, 10), sync.status()
        assert until(lambda: sync.wait_drained(0.1), 60), sync.counters()
        assert until(lambda: sink.count() >= sync.counters()["events_persisted"], 60, 0.25)
        drain_s = time.monotonic() - t_free
        drain_rates = tick_rates(app, t_free, c_free)
        rss_after = rss_mb()  # before this test parses 20,000 payloads in this process

        def everything_received() -> bool:
            # The three plugins keep raising events: compare at a moment both sides agree.
            got = sum(len(v) for v in received_events(sink).values())
            return sync.wait_drained(0.05) and got == sync.counters()["events_persisted"]

        assert until(everything_received, 20, 0.25), sync.counters()
        after = sync.counters()
        assert sync.status()["outbox"]["last_error"] is None
        recovered = [r.getMessage() for r in sync_records(caplog, logging.WARNING)]
        assert any("writable again" in m for m in recovered), recovered
        assert probe.wait_for(
            lambda: probe.count(f"edge/{unique_id}/telemetry/+") > telemetry_at_full + 6, 10
        )

        # Nothing lost that was not counted: contiguous seqs per plugin, every burst event
        # either received (in the order raised) or counted as dropped at its ring.
        events = received_events(sink)
        for name, got in events.items():
            assert [p["seq"] for p in got] == list(range(1, len(got) + 1)), name
        burst = [p["data"]["n"] for p in events["burst"]]
        assert burst == sorted(burst)
        assert len(burst) + after["channel_events_dropped"] == BurstPlugin.raised
        assert after["channel_events_dropped"] == dropped  # nothing dropped after recovery
        assert not any(r.exc_info for r in caplog.records if r.name.startswith("agent"))

        figures = {
            "filler_mib": filled >> 20,
            "full_s": round(full_s, 1),
            "backlog_events": backlog,
            "ring_dropped": dropped,
            "outbox_errors": counters["outbox_errors"],
            "telemetry_rows_dropped": counters["telemetry_error_dropped"],
            "tick_ratio_full": {n: round(full_rates[n] / base_rates[n], 3) for n in full_rates},
            "drained_events": len(burst),
            "drain_s": round(drain_s, 1),
            "tick_ratio_draining": {
                n: round(drain_rates[n] / base_rates[n], 3) for n in drain_rates
            },
            "rss_mib": {
                "before": rss_before,
                "at_bound": rss_at_bound,
                "2s_later": rss_during[-1],
                "after": rss_after,
            },
        }
        print("\nstate_dir full:", json.dumps(figures))
    finally:
        app.stop(timeout=3.0)


def test_starting_on_a_full_state_dir_runs_the_loops_and_opens_the_outbox_later(
    small_disk: Callable[[str], SmallDisk],
    broker: Broker,
    probe_factory: Any,
    unique_id: str,
    until: Callable[..., bool],
    tmp_path: Path,
) -> None:
    disk = small_disk("2m")
    cfg = full_config(broker, unique_id, disk.path, burst=False)
    topic = f"edge/{unique_id}/events/smart_home"
    # An outbox left by the previous run: three events still to deliver.
    previous = Outbox(disk.path / "outbox.db", max_bytes=cfg.outbox.max_bytes)
    previous.add(
        [
            Message(MessageClass.EVENT, topic, b'{"seq":%d,"plugin":"smart_home"}' % i)
            for i in (1, 2, 3)
        ],
        seqs={"smart_home": 3},
    )
    previous.close()
    disk.fill()

    # As a process: it starts, its loops run, and it says why nothing is stored.
    env = {
        **os.environ,
        "EDGE_AGENT__STATE_DIR": str(disk.path),
        "EDGE_AGENT__MQTT__PORT": str(broker.port),
        "EDGE_AGENT__DEVICE__ID": unique_id,
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli.main",
            "run",
            "--config",
            str(GENERIC),
            "--duration",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"state_dir {disk.path} is full" in done.stderr, done.stderr
    assert "ready: all loops ticking" in done.stderr, done.stderr

    # In-process: loops tick while the outbox cannot open; the error is in status; once space
    # is back the outbox opens by itself and delivers what the previous run left.
    probe = probe_factory(broker)
    probe.subscribe(f"edge/{unique_id}/events/#")
    app = build_agent(cfg)
    app.start()
    try:
        assert app.wait_ready(10)
        status = app.sync.status()
        assert f"state_dir {disk.path} is full" in status["outbox"]["last_error"]
        assert status["counters"]["outbox_failing"] == 1.0
        before = app.host.tick_counters()
        assert until(lambda: app.host.tick_counters()["robot"] > before["robot"] + 500, 10)
        assert not any(p.name.startswith("outbox.db.corrupt") for p in disk.path.iterdir())
        disk.free()
        assert probe.wait_for(lambda: len(probe.payloads(topic)) >= 3, 40)
        assert [p["seq"] for p in probe.payloads(topic)][:3] == [1, 2, 3]
        assert app.sync.status()["outbox"]["last_error"] is None
        assert app.sync.counters()["outbox_failing"] == 0.0
    finally:
        app.stop(timeout=3.0)


if __name__ == "__main__":
    sys.exit(_sink_main(sys.argv[1:]))
