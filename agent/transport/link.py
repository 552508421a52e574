"""One paho-mqtt 2 client and its network thread, plus: TLS and password from config, a retained
will, TCP_NODELAY (Nagle: ~9 ms per small publish on loopback), jittered reconnect and failover
over `mqtt.hosts`, subscriptions renewed, callbacks that never kill the network thread, PUBACKs by
message id (paho's `is_published()` raises for messages queued offline), bounded QoS 0 backlog."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from agent.backoff import Backoff
from agent.config.sections import AgentConfig
from agent.transport.base import InboundMessage, MessageHandler, NetworkDriver, Qos, user_properties
from agent.transport.security import read_password, tls_context

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

INFLIGHT = 20
"""QoS 1 messages on the wire without PUBACK (paho's window, not the outbox's)."""
QOS0_STALL_S = 5.0
"""QoS 0 messages are dropped (and counted) once paho has held unwritten data this long: paho
queues them without a bound, so on a slow link that queue grew as long as the connection lived."""


def client_id_for(config: AgentConfig) -> str:
    """The configured client id, else `edge-agent-<device id>` (distinct per device)."""
    return config.mqtt.client_id or f"edge-agent-{config.device.id}"


class MqttLink:
    """A reconnecting MQTT client: publish from any thread, handlers per topic filter; the
    callbacks `on_connected`, `on_disconnected`, `on_ack(mid, ok)` run on the network thread."""

    driver: ClassVar[NetworkDriver | None] = None
    """Drives every link's I/O in this process (sim.lightfleet); None: a `loop_start()` thread."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        client_id: str | None = None,
        will: tuple[str, bytes] | None = None,
    ) -> None:
        self.config = config
        self.client_id = client_id or client_id_for(config)
        self.connected = False
        self.connects = 0
        self.disconnects = 0
        self.connect_failures = 0
        self._stopping = False
        self.last_connect_ts = 0.0
        self.last_error = ""
        self.qos0_dropped = 0
        """QoS 0 messages dropped because the socket had not drained for `QOS0_STALL_S`."""
        self.qos0_stall_s = QOS0_STALL_S
        self._stalled_since: float | None = None
        self._drop_logged = False
        self.on_connected: Callable[[], None] | None = None
        self.on_disconnected: Callable[[], None] | None = None
        self.on_ack: Callable[[int, bool], None] | None = None
        self._will = will
        # Jittered: a fleet reconnecting after a broker restart spreads out instead of herding.
        self._backoff = Backoff(
            config.mqtt.reconnect_min_s, config.mqtt.reconnect_max_s, jitter=True
        )
        self._handlers: dict[str, list[tuple[MessageHandler, int]]] = {}
        self._handlers_lock = threading.Lock()
        self._client: mqtt.Client | None = None
        self._endpoints = config.mqtt.endpoints()
        self._at = 0
        """Index in `_endpoints` of the broker being used or tried."""
        self.failovers = 0
        """Moves to another broker of `mqtt.hosts` after losing or failing to reach one."""
        self._connect_props: Any = None

    @property
    def v5(self) -> bool:
        """True when speaking MQTT 5."""
        return self.config.mqtt.protocol == "5"

    @property
    def broker(self) -> str:
        """host:port of the broker in use (or being tried)."""
        host, port = self._endpoints[self._at]
        return f"{host}:{port}"

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting in the background (returns at once; retries until `stop`)."""
        client = self._build()
        self._client = client
        if self.v5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
            self._connect_props = props
        self._at = 0
        self._aim(client)
        if self.driver is None:
            client.loop_start()
        else:
            self.driver.attach(client)

    def _aim(self, client: mqtt.Client) -> None:
        """Point paho's next (re)connect at the current endpoint."""
        host, port = self._endpoints[self._at]
        keepalive = self.config.mqtt.keepalive
        if self.v5:
            client.connect_async(
                host, port, keepalive, clean_start=True, properties=self._connect_props
            )
        else:
            client.connect_async(host, port, keepalive)

    def _fail_over(self, client: mqtt.Client) -> None:
        """Aim the next attempt at the next broker of `mqtt.hosts` (a no-op with one broker)."""
        # Called on the network thread between attempts: connect_async only records where to
        # go; paho's loop makes the attempt after the back-off delay set beside this call.
        if len(self._endpoints) < 2 or self._stopping:
            return
        self._at = (self._at + 1) % len(self._endpoints)
        self.failovers += 1
        self._aim(client)

    def stop(self, *, timeout: float = 1.0) -> None:
        """Disconnect cleanly (no last will) and end the network thread."""
        client = self._client
        if client is None:
            return
        self._stopping = True
        client.disconnect()
        deadline = time.monotonic() + timeout
        while self.connected and time.monotonic() < deadline:
            time.sleep(0.005)
        if self.driver is None:
            client.loop_stop()
        else:
            self.driver.detach(client)
        self.connected = False
        self._client = None
        self._stopping = False

    def _build(self) -> mqtt.Client:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        m = self.config.mqtt
        proto = mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311
        kwargs: dict[str, Any] = {} if self.v5 else {"clean_session": True}
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=proto,
            reconnect_on_failure=True,
            **kwargs,
        )
        try:
            ctx = tls_context(m)
        except (OSError, ssl.SSLError) as exc:
            from agent.errors import ConfigError

            raise ConfigError([("mqtt.tls", f"unusable TLS files: {exc}", str(m.tls))]) from None
        if ctx is not None:
            client.tls_set_context(ctx)
        if m.username is not None:
            client.username_pw_set(m.username, read_password(m))
        if self._will is not None:
            client.will_set(self._will[0], self._will[1], qos=1, retain=True)
        client.max_queued_messages_set(0)  # the outbox bounds what is handed to paho
        # paho cannot follow the broker's Receive Maximum once connected; 20 (paho's default
        # and Mosquitto's) is what every broker we target accepts.
        client.max_inflight_messages_set(INFLIGHT)
        self._set_delay(client, self._backoff.next())
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        return client

    @staticmethod
    def _set_delay(client: mqtt.Client, delay: float) -> None:
        # paho doubles its own delay without jitter; pinning min = max = our jittered value
        # makes its next wait exactly that (it accepts floats despite the int annotation).
        client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]

    # -- publishing and subscribing ---------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: Qos = 0,
        retain: bool = False,
        correlation_data: bytes | None = None,
    ) -> int | None:
        """Hand a message to paho; its mid (acked later through `on_ack`), None if not taken."""
        client = self._client
        if client is None:
            return None
        props = None
        if correlation_data is not None and self.v5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = correlation_data
        import paho.mqtt.client as mqtt

        if not qos and self._stalled(client):
            if not self._drop_logged:
                self._drop_logged = True  # once per stall: a slow link must not flood the journal
                log.warning(
                    "MQTT %s has not taken data for %.0f s: dropping QoS 0 messages until it "
                    "drains (%d dropped so far)",
                    self.broker,
                    self.qos0_stall_s,
                    self.qos0_dropped,
                )
            self.qos0_dropped += 1
            return None
        info = client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        # Offline, paho keeps QoS 1 messages (sent after reconnect) and drops QoS 0 ones.
        if info.rc == mqtt.MQTT_ERR_SUCCESS or (qos and info.rc == mqtt.MQTT_ERR_NO_CONN):
            return info.mid
        return None

    def _stalled(self, client: mqtt.Client) -> bool:
        """True when paho has held data the socket would not take for `qos0_stall_s`."""
        # want_write() is paho's "packets not yet written to the socket". Callers race on
        # `_stalled_since` harmlessly: the worst case restarts the stall clock once.
        if not client.want_write():
            self._stalled_since = None
            self._drop_logged = False
            return False
        now = time.monotonic()
        since = self._stalled_since
        if since is None:
            self._stalled_since = now
            return False
        return now - since >= self.qos0_stall_s

    def subscribe(self, topic_filter: str, handler: MessageHandler, *, qos: Qos = 1) -> None:
        """Deliver matching messages to `handler`; subscriptions are renewed on every connect."""
        with self._handlers_lock:
            self._handlers.setdefault(topic_filter, []).append((handler, qos))
            connected = self.connected
        client = self._client
        if client is not None and connected:
            client.subscribe(topic_filter, qos=qos)

    def renew_subscriptions(self, client: mqtt.Client | None = None, under: str = "") -> None:
        """Subscribe again to the filters under `under` (a broker may lose one silently)."""
        with self._handlers_lock:
            subs = [(f, max(q for _, q in hs)) for f, hs in self._handlers.items() if hs]
        subs = [(f, q) for f, q in subs if f.startswith(under)]
        client = client or self._client
        if subs and client is not None and self.connected:
            client.subscribe(subs)

    def unsubscribe(self, topic_filter: str, handler: MessageHandler) -> None:
        """Remove `handler`; the broker subscription goes when no handler is left."""
        with self._handlers_lock:
            entries = [e for e in self._handlers.get(topic_filter, []) if e[0] is not handler]
            if entries:
                self._handlers[topic_filter] = entries
                return
            self._handlers.pop(topic_filter, None)
        client = self._client
        if client is not None and self.connected:
            client.unsubscribe(topic_filter)

    # -- paho callbacks (network thread; never raise) -------------------------------------------

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError) as exc:
            log.debug("TCP_NODELAY not set: %s", exc)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        try:
            self._connected(client, reason)
        except Exception:
            log.exception("MQTT on_connect failed")

    def _connected(self, client: mqtt.Client, reason: Any) -> None:
        if reason.is_failure:
            self.last_error = f"connection refused: {reason}"
            log.warning("MQTT %s refused the connection: %s", self.broker, reason)
            return
        self._backoff.reset()
        self._set_delay(client, self._backoff.next())
        # Flag, then snapshot: a concurrent subscribe() sees `connected` or lands in the snapshot.
        with self._handlers_lock:
            self.connected = True
        self.renew_subscriptions(client)
        self.connects += 1
        self.last_connect_ts = time.time()
        self.last_error = ""
        self.connect_failures = 0
        log.info("MQTT connected to %s as %s", self.broker, self.client_id)
        self._call(self.on_connected)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        delay = self._backoff.next()
        self._set_delay(client, delay)
        self.last_error = f"cannot reach {self.broker}"
        failed = self.broker
        self._fail_over(client)
        self.connect_failures += 1
        # Say it once clearly, then only now and again: a dead broker must not flood the journal.
        n = self.connect_failures
        level = logging.WARNING if n & (n - 1) == 0 else logging.DEBUG
        log.log(
            level,
            "MQTT broker %s unreachable (attempt %d); outputs wait in the outbox; "
            "retrying %s in %.2f s",
            failed,
            n,
            self.broker,
            delay,
        )

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        was = self.connected
        self.connected = False
        self._set_delay(client, self._backoff.next())
        if was:
            self.disconnects += 1
            self.last_error = f"disconnected: {reason}"
            # Our own clean disconnect at shutdown is not worth a warning in the journal.
            level = logging.INFO if self._stopping else logging.WARNING
            log.log(level, "MQTT disconnected from %s: %s", self.broker, reason)
            self._call(self.on_disconnected)
        self._fail_over(client)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        cb = self.on_ack
        if cb is not None:
            try:
                cb(mid, not reason.is_failure)
            except Exception:
                log.exception("ack handler failed")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        import paho.mqtt.client as mqtt

        props = msg.properties
        inbound = InboundMessage(
            topic=msg.topic,
            payload=bytes(msg.payload),
            qos=msg.qos,
            retain=bool(msg.retain),
            response_topic=getattr(props, "ResponseTopic", None) if props is not None else None,
            correlation_data=(
                getattr(props, "CorrelationData", None) if props is not None else None
            ),
            user_properties=user_properties(props),
        )
        with self._handlers_lock:
            matched = [
                h
                for f, hs in self._handlers.items()
                if mqtt.topic_matches_sub(f, msg.topic)
                for h, _ in hs
            ]
        for handler in matched:
            try:
                handler(inbound)
            except Exception:
                log.exception("handler for %s failed", msg.topic)

    @staticmethod
    def _call(cb: Callable[[], None] | None) -> None:
        if cb is not None:
            try:
                cb()
            except Exception:
                log.exception("connection callback failed")
