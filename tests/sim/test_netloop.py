"""One NetLoop thread driving several real MqttLinks against a real Mosquitto: messages both
ways from other threads, reconnect and resubscribe after a broker restart, clean detach."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config.sections import AgentConfig
from agent.transport.base import InboundMessage
from agent.transport.link import MqttLink
from sim.netloop import NetLoop


@pytest.fixture
def netloop(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetLoop]:
    """A NetLoop set as the process's MqttLink driver for this test."""
    net = NetLoop(name="test-netloop")
    monkeypatch.setattr(MqttLink, "driver", net)
    yield net
    net.close()


def _config(broker: Any, tmp_path: Path, device: str) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "state_dir": str(tmp_path / device),
            "device": {"id": device},
            "mqtt": {"host": broker.host, "port": broker.port, "keepalive": 5},
        }
    )


def test_links_on_one_netloop_talk_and_survive_a_broker_restart(
    broker: Any, tmp_path: Path, netloop: NetLoop, until: Callable[..., bool], unique_id: str
) -> None:
    links = [MqttLink(_config(broker, tmp_path, f"{unique_id}-{i}")) for i in range(3)]
    got: list[tuple[int, bytes]] = []
    lock = threading.Lock()
    for i, link in enumerate(links):

        def on_message(msg: InboundMessage, i: int = i) -> None:
            with lock:
                got.append((i, msg.payload))

        link.subscribe(f"{unique_id}/to/{i}", on_message)
        link.start()
    try:
        assert until(lambda: all(link.connected for link in links), 10)
        names = {t.name for t in threading.enumerate()}
        assert not any(n.startswith("paho-mqtt-client") for n in names), names

        def send_round(tag: bytes) -> None:
            # From threads other than the loop's: paho hands each write to the NetLoop.
            senders = [
                threading.Thread(
                    target=links[i].publish,
                    args=(f"{unique_id}/to/{(i + 1) % 3}", tag + bytes([i])),
                    kwargs={"qos": 1},
                )
                for i in range(3)
            ]
            for t in senders:
                t.start()
            for t in senders:
                t.join()

        def received(tag: bytes) -> set[int]:
            with lock:
                return {i for i, p in got if p.startswith(tag)}

        send_round(b"a")
        assert until(lambda: received(b"a") == {0, 1, 2}, 10), got

        broker.restart()
        assert until(lambda: all(link.connects == 2 for link in links), 20)
        send_round(b"b")
        assert until(lambda: received(b"b") == {0, 1, 2}, 10), got
    finally:
        for link in links:
            link.stop()
    assert not any(link.connected for link in links)
