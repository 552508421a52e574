"""Operator side of OTA over MQTT: send a bundle to a device, a group or the fleet, answer the
devices' chunk requests until each reports its final state (`edge-agent ota publish`).

See agent/ota/mqtt.py for the device side. To one device: the signed manifest, then only what
the device asks for, on its chunk topic. To a group or all: the manifest, then every chunk once
on the shared chunk topic as soon as the devices say they are receiving, then only what each
device still lacks, on its own topic. So the operator sends about one bundle whatever the fleet
size; a device that was offline, or that lost a transfer, just asks again; and running the same
command again resumes instead of starting over.

Only live answers count: a status the broker hands over as retained is from an earlier run, so
a rejected transfer from yesterday does not end today's publish before it started.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.ota.bundle import Bundle
from agent.ota.mqtt import expand, frame_chunk

log = logging.getLogger(__name__)

TERMINAL = ("active", "rejected", "rolled_back")
TargetKind = Literal["device", "group", "all"]


@dataclass(frozen=True, slots=True)
class Target:
    """Who gets the update: one device, a group, or every device."""

    kind: TargetKind
    name: str = ""

    def manifest_topic(self, root: str, model: str) -> str:
        """Where the manifest goes."""
        if self.kind == "device":
            return f"{root}/{self.name}/ota/{model}/manifest"
        if self.kind == "group":
            return f"{root}/group/{self.name}/ota/{model}/manifest"
        return f"{root}/all/ota/{model}/manifest"

    def __str__(self) -> str:
        return f"{self.kind} {self.name}" if self.name else "all devices"

    def chunk_topic(self, root: str, model: str, n: int) -> str:
        """Where a broadcast chunk goes (group and all only)."""
        return self.manifest_topic(root, model).removesuffix("manifest") + f"chunk/{n}"

    def device_filter(self) -> str:
        """The device level of the reply topics to listen to."""
        return self.name if self.kind == "device" else "+"


@dataclass
class DeviceProgress:
    """What one device said about this update so far."""

    device: str
    chunks: int
    state: str = "waiting"
    received: int = 0
    sent: int = 0
    """Chunk messages sent, repeats included (a device asks again for what it did not get)."""
    sent_chunks: set[int] = field(default_factory=set)
    """Which chunks were sent at least once."""
    version: str | None = None
    reason: str = ""
    code: str | None = None

    @property
    def done(self) -> bool:
        """The device reached a final state."""
        return self.state in TERMINAL

    def line(self) -> str:
        """One line of progress for the terminal."""
        pct = 100.0 * self.received / self.chunks if self.chunks else 100.0
        tail = f" - {self.reason}" if self.reason else ""
        return (
            f"{self.device:<24} {self.state:<12} {self.received:>6}/{self.chunks} chunks "
            f"({pct:5.1f} %){tail}"
        )


@dataclass
class BrokerOptions:
    """How to reach the broker."""

    host: str
    port: int = 1883
    root: str = "edge"
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    client_id: str = field(default_factory=lambda: f"edge-ota-publisher-{time.time_ns() % 10**9}")


class Publisher:
    """Publishes one bundle and serves chunk requests until every target device is done."""

    def __init__(
        self,
        bundle: Bundle,
        broker: BrokerOptions,
        target: Target,
        *,
        expect: int | None = None,
        timeout_s: float = 300.0,
        resend_s: float = 5.0,
        settle_s: float = 5.0,
        quiet_s: float = 5.0,
        broadcast_wait_s: float = 2.0,
        on_progress: Callable[[DeviceProgress], None] | None = None,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        self.bundle = bundle
        self.broker = broker
        self.target = target
        self.expect = 1 if target.kind == "device" else expect
        self.timeout_s = timeout_s
        self.resend_s = resend_s
        self.settle_s = settle_s
        self.quiet_s = quiet_s
        self.broadcast_wait_s = broadcast_wait_s
        self.on_progress = on_progress
        self.on_notice = on_notice
        body = bundle.body
        self.model, self.serial = body.model, body.serial
        self.devices: dict[str, DeviceProgress] = {}
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._sends: queue.Queue[tuple[str, int] | None] = queue.Queue()
        self._client: Any = None
        self._invited = False
        """Set once the manifest is out: an answer before that belongs to an earlier run."""
        self.bytes_sent = 0
        """Payload bytes of every manifest and chunk published."""
        self.broadcast_at: float | None = None
        self.presence: str | None = None
        """The target device's own retained status (`online`/`offline`), if it has one."""

    # --- running ---------------------------------------------------------------------------

    def run(self) -> dict[str, DeviceProgress]:
        """Publish, serve, wait; return every device heard from with its final progress."""
        client = self._connect()
        sender = threading.Thread(target=self._send_loop, name="ota-publish", daemon=True)
        sender.start()
        try:
            self._serve()
        finally:
            self._sends.put(None)
            sender.join(5.0)
            client.loop_stop()
            client.disconnect()
        return dict(self.devices)

    def _serve(self) -> None:
        start = time.monotonic()
        last_new = start
        next_manifest = start
        known = 0
        noticed = False
        while True:
            now = time.monotonic()
            with self._lock:
                devices = list(self.devices.values())
            if len(devices) != known:
                known, last_new = len(devices), now
            if self._finished(devices, now, last_new) or now - start > self.timeout_s:
                return
            if now >= next_manifest and self._need_manifest(devices):
                self._publish_manifest()
                next_manifest = now + self.resend_s
            if self._should_broadcast(devices, now - start):
                self._broadcast()
            if not devices and not noticed and now - start >= self.quiet_s:
                noticed = True
                self._notice(self._silence(now - start))
            self._changed.wait(0.2)
            self._changed.clear()

    def _should_broadcast(self, devices: list[DeviceProgress], elapsed: float) -> bool:
        """Group/all: once, when the expected devices (or, without --expect, those that answered
        within broadcast_wait_s) are receiving."""
        if self.target.kind == "device" or self.broadcast_at is not None:
            return False
        receiving = sum(1 for d in devices if d.state == "receiving")
        if self.expect is not None and receiving >= self.expect:
            return True
        return receiving > 0 and elapsed >= self.broadcast_wait_s

    def _broadcast(self) -> None:
        self.broadcast_at = time.monotonic()
        for n in range(self.bundle.body.chunks):
            self._sends.put(("", n))

    def _silence(self, waited: float) -> str:
        where = f"after {waited:.0f} s no device has answered"
        if self.target.kind != "device":
            return f"{where} in {self.target} (still waiting up to {self.timeout_s:g} s)"
        presence = {
            None: "its status topic has nothing: is the id right, has it ever connected?",
            "online": "its status topic says online: does it run OTA and trust this key?",
            "offline": "its status topic says offline: it will get the update when it is back",
        }.get(self.presence, f"its status topic says {self.presence}")
        return f"{where}: {self.target}: {presence} (still waiting up to {self.timeout_s:g} s)"

    def _notice(self, text: str) -> None:
        if self.on_notice is not None:
            self.on_notice(text)
        else:
            log.warning("%s", text)

    def _finished(self, devices: list[DeviceProgress], now: float, last_new: float) -> bool:
        if not devices or not all(d.done for d in devices):
            return False
        if self.expect is not None:
            return len(devices) >= self.expect
        return now - last_new >= self.settle_s  # no new device for a while: the group answered

    def _need_manifest(self, devices: list[DeviceProgress]) -> bool:
        if self.expect is None:
            return True  # keep inviting group members that may come online
        return len(devices) < self.expect

    # --- MQTT ------------------------------------------------------------------------------

    def _connect(self) -> Any:
        from agent.transport.operator import OperatorBroker, connect_operator

        b = self.broker
        dev = self.target.device_filter()
        subs = [
            (f"{b.root}/{dev}/ota/{self.model}/{kind}", 1)
            for kind in ("request", "status", "refused")
        ]
        if self.target.kind == "device":
            subs.append((f"{b.root}/{dev}/status", 1))  # online or offline, for the notice
        opts = OperatorBroker(
            b.host, b.port, b.protocol, b.username, b.password, b.ca_file, b.cert_file, b.key_file
        )
        client = connect_operator(
            opts,
            client_id=b.client_id,
            on_connect=lambda c: c.subscribe(subs),
            on_message=self._on_message,
            max_inflight=64,
        )
        self._client = client
        return client

    def _publish_manifest(self) -> None:
        topic = self.target.manifest_topic(self.broker.root, self.model)
        self._client.publish(topic, self.bundle.envelope, qos=1)
        with self._lock:
            self.bytes_sent += len(self.bundle.envelope)
            self._invited = True

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(payload, dict):
            return
        parts = msg.topic.split("/")
        if msg.topic == f"{self.broker.root}/{self.target.name}/status":
            self.presence = str(payload.get("state"))  # the device's own online/offline
            return
        if len(parts) < 5 or msg.retain or payload.get("serial") != self.serial:
            return  # an old retained answer, another update's, or not ours at all
        if not self._invited:
            return  # live, but sent before this run asked anything: an earlier run's last word
        device, kind = parts[-4], parts[-1]
        if kind == "request":
            self._on_request(device, payload)
        elif kind in ("status", "refused"):
            self._on_status(device, payload)
        self._changed.set()

    def _progress(self, device: str) -> DeviceProgress:
        p = self.devices.get(device)
        if p is None:
            p = DeviceProgress(device, self.bundle.body.chunks)
            self.devices[device] = p
        return p

    def _on_request(self, device: str, payload: dict[str, Any]) -> None:
        try:
            wanted = expand(payload.get("missing", []), self.bundle.body.chunks)
        except (TypeError, ValueError, IndexError):
            return
        with self._lock:
            p = self._progress(device)
            p.received = int(payload.get("received", p.received))
            if p.state == "waiting":
                p.state = "receiving"
        for n in wanted:
            self._sends.put((device, n))
        self._report(p)

    def _on_status(self, device: str, payload: dict[str, Any]) -> None:
        with self._lock:
            p = self._progress(device)
            p.state = str(payload.get("state", p.state))
            p.version = payload.get("version")
            p.reason = str(payload.get("reason") or "")
            p.code = payload.get("code")
            if p.state != "receiving":
                p.received = p.chunks if p.state not in ("rejected",) else p.received
        self._report(p)

    def _report(self, p: DeviceProgress) -> None:
        if self.on_progress is not None:
            self.on_progress(p)

    def _send_loop(self) -> None:
        root, model = self.broker.root, self.model
        while True:
            item = self._sends.get()
            if item is None:
                return
            device, n = item  # device "": the broadcast
            payload = frame_chunk(self.serial, self.bundle.chunk(n))
            if device:
                topic = f"{root}/{device}/ota/{model}/chunk/{n}"
            else:
                topic = self.target.chunk_topic(root, model, n)
            info = self._client.publish(topic, payload, qos=1)
            if info.rc != 0:
                log.warning("publishing chunk %d to %s failed (rc %s)", n, topic, info.rc)
            with self._lock:
                self.bytes_sent += len(payload)
                if device:
                    self.devices[device].sent += 1
                    self.devices[device].sent_chunks.add(n)
