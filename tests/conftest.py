"""Shared fixtures: a real Mosquitto per test (or per session) on a free loopback port, and an MQTT
test client that records what it receives and sends commands.

The broker runs from its own config file in a temporary folder, so a test can stop, kill and
restart it on the same port. Every test uses its own device ids and topics.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sim.broker import MOSQUITTO_CANDIDATES, Broker, free_port, mosquitto_path

__all__ = ["MOSQUITTO_CANDIDATES", "Broker", "free_port", "mosquitto_path"]


@pytest.fixture(scope="session")
def mosquitto_bin() -> str:
    """The mosquitto binary; a missing one fails the test (`make test` installs it)."""
    path = mosquitto_path()
    if path is None:
        pytest.fail("mosquitto is not installed: run `make test` or apt-get install mosquitto")
    return path


@pytest.fixture
def broker_factory(
    mosquitto_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Broker]]:
    """Start brokers with extra listener/config lines; all are stopped after the test."""
    started: list[Broker] = []

    def make(
        *,
        listener_lines: list[str] | None = None,
        extra_lines: list[str] | None = None,
        anonymous: bool = True,
        start: bool = True,
    ) -> Broker:
        b = Broker(
            binary=mosquitto_bin,
            workdir=tmp_path_factory.mktemp("mosquitto"),
            port=free_port(),
            listener_lines=list(listener_lines or []),
            extra_lines=list(extra_lines or []),
            anonymous=anonymous,
        )
        started.append(b)
        if start:
            b.start()
        return b

    yield make
    for b in started:
        b.kill()


@pytest.fixture
def broker(broker_factory: Callable[..., Broker]) -> Broker:
    """A broker of this test's own, free to stop and restart."""
    return broker_factory()


@pytest.fixture(scope="session")
def shared_broker(mosquitto_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for tests that only connect (each uses its own device id and topics)."""
    b = Broker(
        binary=mosquitto_bin, workdir=tmp_path_factory.mktemp("mosquitto-shared"), port=free_port()
    )
    b.start()
    yield b
    b.kill()


class MqttProbe:
    """A test-side MQTT 5 client: records messages per topic and sends commands."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        clean: bool = True,
        protocol: str = "5",
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool, Any]] = []
        self._parsed: list[tuple[str, Any]] = []
        self._per_topic: dict[str, int] = {}
        self._cond = threading.Condition()
        self.connected = threading.Event()
        self._subs: list[tuple[str, int]] = []
        self.client_id = client_id or f"probe-{uuid.uuid4().hex[:8]}"
        self.v5 = protocol == "5"
        kwargs: dict[str, Any] = {} if self.v5 else {"clean_session": clean}
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            **kwargs,
        )
        self.client.reconnect_delay_set(0.05, 0.2)  # type: ignore[arg-type]
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        if self.v5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            if not clean:
                props.SessionExpiryInterval = 3600
            self.client.connect(host, port, 30, clean_start=clean, properties=props)
        else:
            self.client.connect(host, port, 30)
        self.client.loop_start()
        assert self.connected.wait(10), "probe could not connect"

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self._subs and not flags.session_present:
            client.subscribe(self._subs)
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            parsed = json.loads(msg.payload)
        except ValueError:
            parsed = None
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain), msg.properties))
            self._parsed.append((msg.topic, parsed))
            self._per_topic[msg.topic] = self._per_topic.get(msg.topic, 0) + 1
            self._cond.notify_all()

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Subscribe and wait for the SUBACK."""
        self._subs.append((topic_filter, qos))
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe(topic_filter, qos)
        assert done.wait(10), f"no SUBACK for {topic_filter}"

    def payloads(self, topic_filter: str) -> list[Any]:
        """JSON payloads received so far on topics matching `topic_filter`."""
        import paho.mqtt.client as mqtt

        with self._cond:
            msgs = list(self._parsed)
        return [p for t, p in msgs if mqtt.topic_matches_sub(topic_filter, t)]

    def count(self, topic_filter: str) -> int:
        """Messages received so far on topics matching `topic_filter`."""
        import paho.mqtt.client as mqtt

        with self._cond:
            per_topic = list(self._per_topic.items())
        return sum(n for t, n in per_topic if mqtt.topic_matches_sub(topic_filter, t))

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Wait until `predicate()` holds (re-checked on every message and every 0.1 s)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def wait_payload(
        self,
        topic_filter: str,
        match: Callable[[Any], bool] = lambda p: True,
        timeout: float = 10.0,
    ) -> Any:
        """The first JSON payload on `topic_filter` for which `match` holds; fails on timeout."""
        found: list[Any] = []

        def check() -> bool:
            found[:] = [p for p in self.payloads(topic_filter) if match(p)]
            return bool(found)

        assert self.wait_for(check, timeout), f"nothing matching on {topic_filter}"
        return found[0]

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        response_topic: str | None = None,
        correlation: bytes | None = None,
    ) -> None:
        """Publish and wait until it is acknowledged."""
        props = None
        if self.v5 and (response_topic or correlation):
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.PUBLISH)
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation:
                props.CorrelationData = correlation
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        info.wait_for_publish(10)

    def command(
        self,
        base: str,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        raw: bytes | None = None,
        timeout: float = 15.0,
    ) -> Any:
        """Send command `name` to `<base>/cmd/<name>` and wait for the reply, matched by its
        MQTT 5 correlation data on this probe's response topic."""
        reply_topic = f"probe/{self.client_id}/reply"
        if reply_topic not in (f for f, _ in self._subs):
            self.subscribe(reply_topic)
        corr = uuid.uuid4().hex.encode()
        body = raw if raw is not None else json.dumps({"id": corr.decode(), "args": args or {}})
        self.publish(f"{base}/cmd/{name}", body, response_topic=reply_topic, correlation=corr)
        found: list[Any] = []

        def check() -> bool:
            for topic, payload, _, props in self.messages:
                if topic == reply_topic and getattr(props, "CorrelationData", None) == corr:
                    found.append(json.loads(payload))
                    return True
            return False

        assert self.wait_for(check, timeout), f"no reply to {name} within {timeout}s"
        return found[0]

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="session")
def probe_class() -> type[MqttProbe]:
    """The MqttProbe class, for module-scoped fixtures that make their own probes."""
    return MqttProbe


@pytest.fixture
def probe_factory() -> Iterator[Callable[..., MqttProbe]]:
    """Make test MQTT clients (`probe_factory(broker)`); all closed after the test."""
    made: list[MqttProbe] = []

    def make(b: Broker, **kwargs: Any) -> MqttProbe:
        p = MqttProbe(b.host, b.port, **kwargs)
        made.append(p)
        return p

    yield make
    for p in made:
        with contextlib.suppress(Exception):
            p.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    """Poll `predicate` until it holds or `timeout` passes; its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


@pytest.fixture(scope="session")
def until() -> Callable[..., bool]:
    """`until(predicate, timeout=10)`: poll until it holds; False on timeout."""
    return wait_until


@pytest.fixture
def unique_id() -> str:
    """A device id no other test uses."""
    return f"t{os.getpid()}-{uuid.uuid4().hex[:8]}"
