"""The outbox sender over a slow link: what it hands paho follows the link's rate, so a reply
published meanwhile waits behind seconds of traffic, not the whole outbox."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.sync.outbox import Message, MessageClass, Outbox
from agent.sync.sender import MAX_WINDOW_BYTES, MIN_WINDOW_BYTES, TARGET_DRAIN_S, OutboxSender
from agent.transport.link import MqttLink
from sim.throttle import Throttle

RATE = 40_000.0  # bytes/s of the slow link
ROWS = 300
PAYLOAD = 1000


class Pump:
    """What the sync thread does for the sender: take acks, pump, every few milliseconds."""

    def __init__(self, sender: OutboxSender, link: MqttLink) -> None:
        self.sender = sender
        self.link = link
        self.max_inflight_bytes = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.005)
            self._wake.clear()
            self.sender.process_acks()
            self.sender.pump()
            self.max_inflight_bytes = max(self.max_inflight_bytes, self.sender.inflight_bytes)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)


@pytest.fixture
def slow_link(
    broker: Any, make_config: Callable[..., Any], tmp_path: Path, until: Callable[..., bool]
) -> Iterator[tuple[Throttle, Outbox, OutboxSender, Pump]]:
    relay = Throttle(broker.host, broker.port)
    link = MqttLink(make_config(relay))
    outbox = Outbox(tmp_path / "outbox.db", max_bytes=4 << 20)
    outbox.add(
        [
            Message(MessageClass.TELEMETRY, f"slow/t/{i}", bytes([65 + i % 26]) * PAYLOAD)
            for i in range(ROWS)
        ]
    )
    pump: Pump | None = None
    try:
        link.start()
        assert until(lambda: link.connected, 10)
        relay.set_rate(RATE)
        pump_ref: list[Pump] = []
        sender = OutboxSender(outbox, link, wake=lambda: pump_ref[0]._wake.set())
        pump = Pump(sender, link)
        pump_ref.append(pump)
        link.on_ack = sender.on_ack
        pump.start()
        yield relay, outbox, sender, pump
    finally:
        if pump is not None:
            pump.stop()
        link.stop()
        relay.close()
        outbox.close()


def test_the_byte_window_follows_a_slow_link_and_a_reply_is_not_stuck_behind_the_outbox(
    slow_link: tuple[Throttle, Outbox, OutboxSender, Pump],
    broker: Any,
    probe_factory: Callable[..., Any],
    until: Callable[..., bool],
) -> None:
    relay, outbox, sender, pump = slow_link
    probe = probe_factory(broker)
    probe.subscribe("edge/replies/slow")
    # The rate estimate settles on the link's rate within a few acknowledgements.
    assert until(lambda: sender.acked >= 10, 10)
    pump.max_inflight_bytes = 0
    assert until(lambda: sender.acked >= 40, 10)
    assert 0.3 < sender.rate / RATE < 1.5, sender.rate
    # What waits in paho is about TARGET_DRAIN_S of the link, not the 300 kB of the outbox
    # (a window of messages alone had all of it in paho at once).
    bound = RATE * TARGET_DRAIN_S * 1.5 + PAYLOAD + 64
    assert pump.max_inflight_bytes <= bound, (pump.max_inflight_bytes, bound)
    assert outbox.depth > ROWS // 2  # the rest waits in the outbox, where its bound applies

    # A reply published now (directly, as command replies are) goes out after what paho
    # already holds: counted in bytes the relay delivered meanwhile, not in seconds.
    before = relay.bytes_up
    sender._link.publish("edge/replies/slow", b'{"ok": true}', qos=1)
    assert probe.wait_for(lambda: probe.count("edge/replies/slow") == 1, 15)
    ahead = relay.bytes_up - before
    assert ahead <= bound + 4096, (ahead, bound)

    # Link restored: the window opens and the outbox drains.
    relay.set_rate(None)
    assert until(lambda: outbox.depth == 0, 15)
    assert sender.window_bytes >= 8 * min(bound, MAX_WINDOW_BYTES // 8)
    assert sender.acked == ROWS and sender.inflight == 0 and sender.inflight_bytes == 0


def test_the_window_starts_small_and_stays_within_its_bounds(
    slow_link: tuple[Throttle, Outbox, OutboxSender, Pump],
) -> None:
    _, _, sender, _ = slow_link
    sender.rate = 0.0
    assert sender.window_bytes == MIN_WINDOW_BYTES
    sender.rate = 1e12
    assert sender.window_bytes == MAX_WINDOW_BYTES
