"""Sync benchmark: publish throughput and end-to-end latency, QoS 0 and 1, through the agent's
sync path versus bare paho in the same run, and outbox events/s.

- bare paho: one client publishing 100-byte payloads (TCP_NODELAY set, as the agent does);
- agent QoS 1: events raised on a plugin output channel, drained by the sync thread, stored in
  the outbox, published, deleted on PUBACK (the whole durable path);
- agent QoS 0: `SyncService.publish(qos=0)` (the non-durable path: metrics, replies, actuators);
- outbox: the SQLite store alone (insert in batches, read back, delete), events/s.

The subscriber runs in its own process (a consumer is never inside the agent, and sharing the
GIL with it would slow both sides). Latency is measured at a fixed rate (`LATENCY_RATE` msg/s)
from the publishing call (for events: the `channel.event()` call on the loop side) to the
subscriber's on_message, both on CLOCK_MONOTONIC (`time.monotonic_ns`, system-wide on Linux).
Throughput is messages received per second while publishing flat out; QoS 1 publishers are
held at most `WINDOW` unacknowledged messages ahead, so a phase measures a steady flow rather
than a queue draining.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.bench.receiver import Receiver, nodelay
from agent.config.sections import AgentConfig
from agent.errors import PluginError
from agent.plugin.base import PluginParams
from agent.plugin.channel import OutputChannel
from agent.runtime.base import Model
from agent.runtime.slot import ModelSlot

PAYLOAD_BYTES = 100
LATENCY_RATE = 1000.0
WINDOW = 2000


class _Engine:
    """The smallest EngineControl: one plugin `bench` with its output channel."""

    def __init__(self) -> None:
        self.channel = OutputChannel("bench", ("x",), capacity=1024, events=1 << 15)

    def plugins(self) -> list[dict[str, Any]]:
        return [{"name": "bench", "state": "running", "rate_hz": 1000.0, "model": None}]

    def start_plugin(self, name: str) -> None:
        """Nothing to start."""

    def stop_plugin(self, name: str) -> None:
        """Nothing to stop."""

    def restart_plugin(self, name: str) -> None:
        """Nothing to restart."""

    def set_params(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        return params

    def params(self, name: str) -> PluginParams:
        return PluginParams()

    def stats(self) -> dict[str, dict[str, Any]]:
        return {}

    def channels(self) -> list[OutputChannel]:
        return [self.channel]

    def model_slots(self) -> dict[str, ModelSlot]:
        return {}

    def swap_model(self, name: str, model: Model, *, timeout: float = 2.0) -> Model:
        raise PluginError("the bench plugin has no model")

    def swap_model_folder(self, name: str, folder: Path | None, *, timeout: float = 30.0) -> str:
        raise PluginError(f"plugin {name!r} is not isolated")

    def reload(self, config: AgentConfig) -> dict[str, Any]:
        return {}

    def tick_counters(self) -> dict[str, int]:
        return {"bench": 0}


# -- phases ------------------------------------------------------------------------------------


def _stamp_payload(t_ns: int) -> bytes:
    return str(t_ns).encode().ljust(PAYLOAD_BYTES, b" ")


def _throughput(
    rx: Receiver,
    topic: str,
    publish: Callable[[], object],
    seconds: float,
    *,
    unacked: Callable[[int], int] | None = None,
) -> float:
    """Publish flat out for `seconds`; messages per second the subscriber received.

    `unacked(sent)` (QoS 1) says how many are not acknowledged yet: at most WINDOW are.
    """
    t0 = time.monotonic_ns()
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if unacked is not None and unacked(sent) > WINDOW:
            time.sleep(0.0005)
            continue
        for _ in range(50):
            publish()
        sent += 50
    res = rx.result(topic, sent)
    if not res["count"]:
        return 0.0
    count: int = res["count"]
    last_ns: int = res["last_ns"]
    return round(count / ((last_ns - t0) / 1e9), 1)


def _latency(
    rx: Receiver, topic: str, publish: Callable[[int], object], seconds: float
) -> dict[str, float | None]:
    """Publish at LATENCY_RATE for `seconds`; p50/p99 of send-to-receive in ms."""
    n = int(seconds * LATENCY_RATE)
    period = 1e9 / LATENCY_RATE
    start = time.monotonic_ns()
    for i in range(n):
        target = start + int(i * period)
        while time.monotonic_ns() < target:
            time.sleep(0.0002)
        publish(time.monotonic_ns())
    latency: dict[str, float | None] = rx.result(topic, n, latency=True)["latency_ms"]
    return latency


def _bare(host: str, port: int, rx: Receiver, root: str, qos: int, seconds: float) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_socket_open = nodelay
    client.max_queued_messages_set(0)
    connected = threading.Event()
    acked = [0]
    client.on_connect = lambda *a: connected.set()
    client.on_publish = lambda *a: acked.__setitem__(0, acked[0] + 1)
    client.connect(host, port)
    client.loop_start()
    if not connected.wait(10):
        raise RuntimeError(f"bench publisher could not connect to {host}:{port}")
    try:
        body = _stamp_payload(0)
        t_topic, l_topic = f"{root}/bare{qos}/t", f"{root}/bare{qos}/l"
        # Latency first, on an idle pipe: a throughput phase leaves paho's queue full.
        lat = _latency(
            rx, l_topic, lambda t: client.publish(l_topic, _stamp_payload(t), qos=qos), seconds
        )
        base = acked[0]
        rate = _throughput(
            rx,
            t_topic,
            lambda: client.publish(t_topic, body, qos=qos),
            seconds,
            unacked=(lambda sent: sent - (acked[0] - base)) if qos else None,
        )
    finally:
        client.disconnect()
        client.loop_stop()
    return {"msgs_per_s": rate, "latency_ms": lat}


def _agent_config(host: str, port: int, state_dir: Path, device: str) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "device": {"id": device},
            "mqtt": {"host": host, "port": port, "home_assistant": False},
            "state_dir": str(state_dir),
        }
    )


def _agent(
    host: str, port: int, rx: Receiver, root: str, device: str, seconds: float
) -> dict[str, Any]:
    from agent.sync.service import SyncService

    engine = _Engine()
    ch = engine.channel
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        svc = SyncService(_agent_config(host, port, Path(tmp), device), engine)
        svc.start()
        try:
            deadline = time.monotonic() + 10
            while not svc.link.connected and time.monotonic() < deadline:
                time.sleep(0.01)
            events = svc.topics.events("bench")

            def raise_event() -> None:
                while not ch.event(time.monotonic_ns(), "bench", 1.0, t=0, pad="x" * 8):
                    time.sleep(0.0005)  # ring full: wait for the sync thread

            def timed_event(t_ns: int) -> None:
                ch.event(t_ns, "bench", 1.0, t=t_ns)

            # Latency first, on an idle pipe: a throughput phase leaves queues behind it.
            lat1 = _latency(rx, events, timed_event, seconds)
            svc.wait_drained(30)
            acked0 = svc.counters()["outbox_acked"]
            t0 = time.monotonic()
            rate1 = _throughput(
                rx,
                events,
                raise_event,
                seconds,
                unacked=lambda sent: sent - int(svc.counters()["outbox_acked"] - acked0),
            )
            svc.wait_drained(30)
            e2e = (svc.counters()["outbox_acked"] - acked0) / (time.monotonic() - t0)
            t_topic, l_topic = f"{root}/agent0/t", f"{root}/agent0/l"
            body = _stamp_payload(0)
            lat0 = _latency(rx, l_topic, lambda t: svc.publish(l_topic, _stamp_payload(t)), seconds)
            rate0 = _throughput(rx, t_topic, lambda: svc.publish(t_topic, body, qos=0), seconds)
        finally:
            svc.stop(2.0)
    return {
        "qos0": {"msgs_per_s": rate0, "latency_ms": lat0, "path": "SyncService.publish(qos=0)"},
        "qos1": {
            "msgs_per_s": rate1,
            "latency_ms": lat1,
            "path": "channel event -> outbox -> broker -> PUBACK",
        },
        "events_persisted_and_drained_per_s": round(e2e, 1),
    }


def bench_outbox(n: int = 50000, batch: int = 50) -> dict[str, float]:
    """The SQLite outbox alone: events stored per second, then read back and deleted per second."""
    from agent.sync.outbox import Message, MessageClass, Outbox

    payload = (
        b'{"id":"0123456789ab-1","seq":1,"ts":1795877651.149361,"plugin":"bench",'
        b'"kind":"tick","score":1.0,"data":{"i":1}}'
    )
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        ob = Outbox(Path(tmp) / "outbox.db", max_bytes=1 << 30)
        msgs = [Message(MessageClass.EVENT, "edge/bench/events/bench", payload)] * batch
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            ob.add(msgs, seqs={"bench": i + batch})
        t1 = time.perf_counter()
        cursor = 0
        while rows := ob.after(cursor, 500):
            cursor = rows[-1].id
            for j in range(0, len(rows), batch):
                ob.ack([r.id for r in rows[j : j + batch]])
        t2 = time.perf_counter()
        ob.close()
    return {
        "store_per_s": round(n / (t1 - t0), 1),
        "ack_per_s": round(n / (t2 - t1), 1),
        "cycle_per_s": round(n / (t2 - t0), 1),
    }


def bench_sync(broker_host: str, port: int, *, seconds: float = 8.0) -> dict[str, Any]:
    """Every figure of the sync benchmark in one run against the broker at host:port.

    `seconds` is split over the eight throughput and latency phases.
    """
    phase = max(0.25, seconds / 8.0)
    run = f"{time.monotonic_ns() % 10**9}"
    root, device = f"bench/{run}", f"bench-{run}"
    previous = sys.getswitchinterval()
    rx = Receiver(broker_host, port, [f"{root}/#", f"edge/{device}/events/#"])
    # The agent runs with engine.switch_interval_us (100 us by default): measure under the same
    # GIL hand-over, for the bare client too, or both would wait up to 5 ms for the GIL.
    sys.setswitchinterval(100e-6)
    try:
        agent = _agent(broker_host, port, rx, root, device, phase)
        bare = {
            q: _bare(broker_host, port, rx, root, n, phase) for n, q in enumerate(("qos0", "qos1"))
        }
        outbox = bench_outbox(n=max(5000, int(seconds * 5000)))
    finally:
        sys.setswitchinterval(previous)
        rx.close()
    return {
        "broker": f"{broker_host}:{port}",
        "payload_bytes": PAYLOAD_BYTES,
        "latency_rate_per_s": LATENCY_RATE,
        "phase_s": phase,
        "bare_paho": bare,
        "agent": {"qos0": agent["qos0"], "qos1": agent["qos1"]},
        "agent_vs_bare_throughput": {
            q: round(agent[q]["msgs_per_s"] / bare[q]["msgs_per_s"], 2)
            if bare[q]["msgs_per_s"]
            else None
            for q in ("qos0", "qos1")
        },
        "outbox": {
            **outbox,
            "events_persisted_and_drained_per_s": agent["events_persisted_and_drained_per_s"],
        },
    }
