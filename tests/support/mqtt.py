"""The test-side MQTT client (records what it receives per topic, sends commands) and a recorder
of every message with its receive time, for tests that measure windows."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any


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

            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
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

            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation:
                props.CorrelationData = correlation
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        info.wait_for_publish(10)

    def publish_until(
        self, topic: str, payload: bytes | str, done: Callable[[], bool], timeout: float = 10.0
    ) -> bool:
        """Publish `payload` (QoS 0) every 0.1 s until `done()` holds; False on timeout.

        Another client's SUBACK is invisible here: this is how a test knows that client's
        subscription is in place, instead of sleeping a guess before the first publish."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                return False
            self.client.publish(topic, payload, qos=0)
            with self._cond:
                self._cond.wait(0.1)
        return True

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
        # Where operators ask replies to go (mqtt.reply_prefix): the one place outside its own
        # topics that the shipped ACL lets a device write to.
        reply_topic = f"edge/replies/{self.client_id}"
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


class Recorder:
    """Every message of one device, with the test's monotonic receive time."""

    def __init__(self, forward: Callable[[Any, Any, Any], None]) -> None:
        self.rows: list[tuple[float, str, Any]] = []
        self._lock = threading.Lock()
        self._forward = forward

    def on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        """paho callback: keep (receive time, topic, JSON payload), then pass it on."""
        self._forward(client, userdata, msg)
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            payload = None
        with self._lock:
            self.rows.append((time.monotonic(), msg.topic, payload))

    def between(self, start: float, end: float, suffix: str) -> list[Any]:
        """Payloads received in [start, end) on topics ending with `suffix`."""
        with self._lock:
            rows = list(self.rows)
        return [p for t, topic, p in rows if start <= t < end and topic.endswith(suffix)]

    def all(self, part: str) -> list[tuple[str, Any]]:
        """(topic, payload) of every message whose topic contains `part`."""
        with self._lock:
            return [(topic, p) for _, topic, p in self.rows if part in topic]
