"""The MQTT link on a connection that stops draining: QoS 0 is dropped and counted, not queued
in paho's memory for as long as the connection lives."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from agent.transport.link import MqttLink
from sim.throttle import Throttle

BLOCK = b"x" * (256 * 1024)


def test_qos0_is_dropped_and_counted_while_the_socket_does_not_drain(
    broker: Any, make_config: Callable[..., Any], until: Callable[..., bool]
) -> None:
    with Throttle(broker.host, broker.port) as relay:
        link = MqttLink(make_config(relay, mqtt={"keepalive": 60}))
        link.qos0_stall_s = 0.3
        link.start()
        try:
            assert until(lambda: link.connected, 10)
            assert link.publish("stall/q0", b"fine", qos=0) is not None
            relay.pause()
            # The kernel buffers take a few MB first; then paho holds what the socket refuses,
            # and 0.3 s later QoS 0 is refused at the door.
            taken = 0
            for _ in range(400):
                if link.publish("stall/q0", BLOCK, qos=0) is None:
                    break
                taken += 1
                time.sleep(0.005)  # paced: the 0.3 s stall timer runs while the blocks pile up
            assert link.qos0_dropped == 1, f"never dropped after {taken} blocks"
            assert link.publish("stall/q0", BLOCK, qos=0) is None
            assert link.qos0_dropped == 2
            # QoS 1 is not the link's to drop: the outbox window bounds it upstream.
            assert link.publish("stall/q1", b"kept", qos=1) is not None
            assert link.connected  # nothing errored: the peer just stopped reading

            relay.resume()
            assert until(lambda: link.publish("stall/q0", b"again", qos=0) is not None, 20)
        finally:
            link.stop()


def test_the_command_and_update_subscriptions_are_renewed_while_connected(
    broker_factory: Callable[..., Any],
    make_config: Callable[..., Any],
    start_service: Callable[..., Any],
    until: Callable[..., bool],
) -> None:
    """A clustered broker may drop a subscription without a word (NATS, tests/brokers): the agent
    subscribes again every `mqtt.resubscribe_s`, its own filters only (HA's retained birth is
    not sent again)."""
    broker = broker_factory(extra_lines=["log_type subscribe"])
    cfg = make_config(broker, mqtt={"resubscribe_s": 0.3})
    service, _ = start_service(cfg)
    mine = f"edge/{cfg.device.id}/cmd/+"

    def subscribed(topic: str) -> int:
        return sum(1 for line in broker.log().splitlines() if line.endswith(f" {topic}"))

    assert until(lambda: subscribed(mine) >= 3, 15), broker.log()[-2000:]
    assert service.link.connects == 1  # renewed on the same connection, not by reconnecting
    assert subscribed("homeassistant/status") == 1
