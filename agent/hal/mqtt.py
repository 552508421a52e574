"""The `mqtt` HAL backend: sensors fed by external topics, actuators that publish.

Configured per device in `hal.devices["<plugin>.<device>"]` (backend "mqtt"):
- a sensor subscribes to `topic`; the value is the JSON payload itself, or the member at the
  dotted `field` path (zigbee2mqtt `{"temperature": 21.5}` -> field "temperature"; Tasmota
  `{"ENERGY": {"Power": 12}}` -> "ENERGY.Power"; list items by index, "values.0"). Numbers,
  booleans, numeric strings and ON/OFF are accepted; a retained value counts as a reading (the
  device's last report). A sensor that has not received a value for `stale_after_s` reads as
  not fresh (`read_into` returns False) and is reported stale.
- an actuator publishes the latest value written (a number, or a list for several values;
  wrapped as `{"<field>": value}` when `field` is set) to `topic`, QoS 0, when the value changes
  and again every `REFRESH_S`, so a lost message or a rebooted device catches up. It is never
  queued for later: a stale actuator command is worse than none.

The hot path stays plain: `read_into` is one flag test and one copy from a triple buffer the
network thread fills; `write` is one copy and one flag. Parsing, publishing and staleness
checks happen on the network thread and on this backend's own watcher thread.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from typing import Any

import numpy as np

from agent.config.sections import AgentConfig, MqttDeviceConfig
from agent.errors import HalError
from agent.hal.base import Actuator, ActuatorSpec, Buffer, HalBackend, Sensor, SensorSpec
from agent.transport.base import InboundMessage, Transport

log = logging.getLogger(__name__)

REFRESH_S = 30.0
"""An actuator's unchanged value is published again after this long."""
PUBLISH_PERIOD_S = 0.05
"""How often the watcher publishes changed actuator values (at most 20 commands/s each)."""
_WORDS = {"on": 1.0, "off": 0.0, "true": 1.0, "false": 0.0, "open": 1.0, "closed": 0.0}


def extract_field(payload: bytes, path: str | None) -> Any:
    """The value at dotted `path` in a JSON payload (the whole payload when `path` is None).

    A payload that is not JSON is taken as a bare word or number (Tasmota's plain "ON", "21.5").
    Raises ValueError naming what is missing.
    """
    text = payload.decode("utf-8", errors="strict").strip()
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = text
    if not path:
        return value
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif (
            isinstance(value, list)
            and part.lstrip("-").isdigit()
            and -len(value) <= int(part) < len(value)
        ):
            value = value[int(part)]
        else:
            raise ValueError(f"no {part!r} in the payload at {path!r}")
    return value


def to_numbers(value: Any, shape: tuple[int, ...]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A JSON value as float32 of `shape`; ValueError when it is not numeric or of another size."""
    if isinstance(value, bool):
        arr = np.asarray([float(value)], np.float32)
    elif isinstance(value, str):
        word = value.strip().lower()
        with np.errstate(over="ignore"):
            arr = np.asarray([_WORDS[word] if word in _WORDS else float(word)], np.float32)
    else:
        with np.errstate(over="ignore"):  # 1e39 becomes inf here, refused by the spec's check
            arr = np.asarray(value, dtype=np.float32).reshape(-1)
    size = math.prod(shape)
    if arr.size != size:
        raise ValueError(f"got {arr.size} value(s), the device has {size}")
    return arr.reshape(shape)


def _nest(path: str | None, value: Any) -> Any:
    if not path:
        return value
    for part in reversed(path.split(".")):
        value = {part: value}
    return value


class MqttSensor(Sensor):
    """A sensor whose readings arrive on an MQTT topic."""

    def __init__(self, key: str, spec: SensorSpec, cfg: MqttDeviceConfig) -> None:
        self.key = key
        self.spec = spec
        self.topic = str(cfg.topic)
        self.field = cfg.field
        self.stale_after_s = cfg.stale_after_s
        self._bufs = [np.zeros(spec.shape, np.float32) for _ in range(3)]
        self._latest = 0
        self._fresh = False
        self.last_update = 0.0  # time.monotonic() of the last good reading
        self.created = time.monotonic()
        self.updates = 0
        self.bad_payloads = 0
        """Payloads refused: unparsable, of the wrong size, not finite or out of range."""
        self.implausible = 0
        """Of those, readings not finite or outside the spec's range (each a dropout)."""
        self.stale = False
        self.last_error = ""

    def read_into(self, out: Buffer) -> bool:
        """Copy the latest reading; False while stale or before the first one."""
        if not self._fresh:
            return False
        np.copyto(out, self._bufs[self._latest])
        return True

    def on_message(self, msg: InboundMessage) -> None:
        """Parse one message into the next buffer (network thread)."""
        try:
            arr = to_numbers(extract_field(msg.payload, self.field), self.spec.shape)
            why = self.spec.implausible(arr)
        except OverflowError:  # a JSON integer beyond any float: as infinite as 1e39
            why = "not a finite number"
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
            self._refuse(msg.topic, str(exc))
            return
        if why:
            # A dropout, not the last good value: the plugin sees the sensor fail (and counts
            # it) instead of carrying on with a reading the device never made.
            self._fresh = False
            self.implausible += 1
            self._refuse(msg.topic, why)
            return
        # Three buffers: the reader copies the latest while the writer fills another.
        nxt = (self._latest + 1) % 3
        np.copyto(self._bufs[nxt], arr)
        self._latest = nxt
        self.last_update = time.monotonic()
        self.updates += 1
        self._fresh = True
        if self.stale:
            self.stale = False
            log.info("HAL %s: fresh again", self.key)

    def _refuse(self, topic: str, why: str) -> None:
        self.bad_payloads += 1
        if why != self.last_error:  # one line per kind of problem, not one per message
            log.warning("HAL %s: unusable payload on %s: %s", self.key, topic, why)
        self.last_error = why

    def check(self, now: float) -> None:
        """Mark the sensor stale when silent for `stale_after_s` (watcher thread)."""
        since = self.last_update or self.created
        if now - since > self.stale_after_s and not self.stale:
            self._fresh = False
            self.stale = True
            log.warning(
                "HAL %s: no reading on %s for %.1f s: stale", self.key, self.topic, now - since
            )


class MqttActuator(Actuator):
    """An actuator driven by publishing its value."""

    def __init__(self, key: str, spec: ActuatorSpec, cfg: MqttDeviceConfig) -> None:
        self.key = key
        self.spec = spec
        self.topic = str(cfg.topic)
        self.field = cfg.field
        self._buf = np.zeros(spec.shape, np.float32)
        self._dirty = False
        self._last: np.ndarray[Any, np.dtype[np.float32]] | None = None
        self._last_sent = 0.0
        self.published = 0

    def write(self, value: Buffer) -> None:
        """Take the value; the watcher publishes it (hot path: a copy and a flag)."""
        np.copyto(self._buf, value)
        self._dirty = True

    @property
    def pending(self) -> bool:
        """True while a written value waits for the watcher."""
        return self._dirty

    def due(self, now: float) -> bytes | None:
        """The payload to publish now, if the value changed or the refresh is due (watcher)."""
        if not self._dirty and (self._last is None or now - self._last_sent < REFRESH_S):
            return None
        self._dirty = False
        value = self._buf.copy()
        changed = self._last is None or not np.array_equal(value, self._last)
        if not changed and now - self._last_sent < REFRESH_S:
            return None
        self._last = value
        self._last_sent = now
        self.published += 1
        plain: Any = float(value.reshape(-1)[0]) if value.size == 1 else value.tolist()
        return json.dumps(_nest(self.field, plain)).encode()


class MqttHal(HalBackend):
    """Sensors and actuators over MQTT, through the sync service's connection or its own."""

    def __init__(self, config: AgentConfig, *, transport: Transport | None = None) -> None:
        self.config = config
        self._transport = transport
        self._own_link: Any = None
        self._sensors: dict[str, MqttSensor] = {}
        self._actuators: dict[str, MqttActuator] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def use_transport(self, transport: Transport) -> None:
        """Use `transport` (e.g. the SyncService) instead of an own connection; before start."""
        self._transport = transport
        for sensor in self._sensors.values():
            transport.subscribe(sensor.topic, sensor.on_message, qos=1)

    def _device(self, plugin: str, name: str) -> tuple[str, MqttDeviceConfig]:
        key = f"{plugin}.{name}"
        cfg = self.config.hal.devices.get(key)
        if not isinstance(cfg, MqttDeviceConfig):
            raise HalError(
                f"hal.devices[{key!r}].topic is required for the mqtt backend "
                "(the topic the device publishes on, or listens to)"
            )
        return key, cfg

    def sensor(self, plugin: str, name: str, spec: SensorSpec) -> Sensor:
        """A sensor reading `hal.devices["plugin.name"].topic`."""
        key, cfg = self._device(plugin, name)
        sensor = MqttSensor(key, spec, cfg)
        self._sensors[key] = sensor
        if self._transport is not None:
            self._transport.subscribe(sensor.topic, sensor.on_message, qos=1)
        elif self._own_link is not None:
            self._own_link.subscribe(sensor.topic, sensor.on_message, qos=1)
        return sensor

    def actuator(self, plugin: str, name: str, spec: ActuatorSpec) -> Actuator:
        """An actuator publishing to `hal.devices["plugin.name"].topic`."""
        key, cfg = self._device(plugin, name)
        actuator = MqttActuator(key, spec, cfg)
        self._actuators[key] = actuator
        return actuator

    @property
    def own_link_connected(self) -> bool:
        """True when the backend's own connection (used without a sync transport) is up."""
        return self._own_link is not None and bool(self._own_link.connected)

    def start(self) -> None:
        """Connect (when no transport was given) and start the watcher thread; idempotent."""
        if self._thread is not None and self._thread.is_alive():
            return
        if self._transport is None and self._own_link is None:
            from agent.transport.link import MqttLink, client_id_for

            link = MqttLink(self.config, client_id=f"{client_id_for(self.config)}-hal")
            for sensor in self._sensors.values():
                link.subscribe(sensor.topic, sensor.on_message, qos=1)
            link.start()
            self._own_link = link
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._watch, name=f"hal-mqtt-{self.config.device.id}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the watcher and the own connection, if any."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        if self._own_link is not None:
            self._own_link.stop()
            self._own_link = None

    def _publish(self, topic: str, payload: bytes) -> None:
        if self._transport is not None:
            self._transport.publish(topic, payload, qos=0, durable=False)
        elif self._own_link is not None:
            self._own_link.publish(topic, payload)

    def _watch(self) -> None:
        period = PUBLISH_PERIOD_S
        while not self._stop.wait(period):
            now = time.monotonic()
            sensors = list(self._sensors.values())
            for sensor in sensors:
                sensor.check(now)
            for actuator in list(self._actuators.values()):
                payload = actuator.due(now)
                if payload is not None:
                    try:
                        self._publish(actuator.topic, payload)
                    except Exception:
                        log.exception("HAL %s: publish failed", actuator.key)
            # Check staleness at a quarter of the shortest stale_after_s (bounded 10-50 ms).
            period = max(0.01, min([PUBLISH_PERIOD_S, *(s.stale_after_s / 4 for s in sensors)]))

    def stale(self) -> list[str]:
        """Keys of the sensors that are stale now."""
        return sorted(k for k, s in self._sensors.items() if s.stale)

    def status(self) -> dict[str, Any]:
        """Per device: topic, updates, staleness, errors (sensors) or commands sent (actuators)."""
        now = time.monotonic()
        out: dict[str, Any] = {}
        for key, s in self._sensors.items():
            out[key] = {
                "kind": "sensor",
                "topic": s.topic,
                "updates": s.updates,
                "stale": s.stale,
                "age_s": round(now - s.last_update, 3) if s.updates else None,
                "bad_payloads": s.bad_payloads,
                "implausible": s.implausible,
                "last_error": s.last_error or None,
            }
        for key, a in self._actuators.items():
            out[key] = {"kind": "actuator", "topic": a.topic, "published": a.published}
        return out
