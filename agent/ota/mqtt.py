"""OTA over MQTT: topics, chunk framing and the adapter between a Transport and the OtaService.

Topics (`<root>` is mqtt.topic_root, `edge` by default):

    <root>/<device>/ota/<model>/manifest       in   the signed manifest (envelope.json bytes);
    <root>/group/<group>/ota/<model>/manifest  in   also accepted for the device's group,
    <root>/all/ota/<model>/manifest            in   and for the whole fleet
    <root>/<device>/ota/<model>/chunk/<n>      in   8-byte big-endian serial, then chunk n's bytes
    <root>/group/<group>/ota/<model>/chunk/<n> in   the same, broadcast once to a group
    <root>/all/ota/<model>/chunk/<n>           in   or to the fleet
    <root>/<device>/ota/<model>/request        out  {"serial", "missing": [[first, end), ...],
                                                     "received", "chunks"}: please send these
    <root>/<device>/ota/<model>/status         out  retained {"state", "version", "reason",
                                                     "serial", "active", ...}
    <root>/<device>/ota/<model>/refused        out  not retained: a manifest refused without
                                                     changing the update's state (bad signature,
                                                     replay, busy, ...), same fields

Every chunk is checked against its sha256 in the signed manifest; one that does not match is
dropped and asked for again, so a stranger on the chunk topics cannot break a transfer.

A manifest sent to this device is pulled: the device requests a window of chunks, asks for more
as they arrive, and asks again for any not received within `stall_s`. A manifest sent to a group
or to all announces a broadcast: the device waits for the chunks on the shared topic and, once
the broadcast has ended (its last chunk came) or gone quiet for longer than its pace so far
warrants (agent/ota/patience.py: 10 to 30 s, more for a slower broadcast, plus a per-device
jitter), requests only the chunks it lacks (answered on its own topic, and from then on as a
pull). Either way a publisher that restarts, or a device that reconnects, resumes where the
transfer stopped. A transfer without progress for `give_up_s` (counted from the device's first
request at the latest, so waiting on a broadcast does not use it up) is abandoned (status
`rejected`, retryable: sending the same bundle again resumes from the chunks already on disk).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from agent.errors import OtaError
from agent.ota.patience import BroadcastPatience, BroadcastWatch
from agent.ota.service import OtaService
from agent.sync.lanes import Lane, SharedWork
from agent.transport import InboundMessage, Topics, Transport

log = logging.getLogger(__name__)

SERIAL = struct.Struct(">Q")
"""Prefix of every chunk payload: the serial of the update the chunk belongs to."""


def frame_chunk(serial: int, data: bytes) -> bytes:
    """A chunk payload: the update's serial, then the bytes."""
    return SERIAL.pack(serial) + data


def unframe_chunk(payload: bytes) -> tuple[int, bytes]:
    """(serial, bytes) of a chunk payload; ValueError if it is too short."""
    if len(payload) < SERIAL.size:
        raise ValueError("chunk payload shorter than its serial prefix")
    return SERIAL.unpack_from(payload)[0], payload[SERIAL.size :]


def ranges(numbers: list[int]) -> list[list[int]]:
    """Sorted chunk numbers as [first, end) ranges: [1, 2, 3, 7] -> [[1, 4], [7, 8]]."""
    out: list[list[int]] = []
    for n in numbers:
        if out and out[-1][1] == n:
            out[-1][1] = n + 1
        else:
            out.append([n, n + 1])
    return out


def expand(spans: Any, limit: int) -> list[int]:
    """Chunk numbers of [first, end) ranges, each below `limit`; ValueError if malformed."""
    out: list[int] = []
    for span in spans:
        first, end = int(span[0]), int(span[1])
        out.extend(range(max(0, first), min(end, limit)))
    return out


@dataclass
class _Pull:
    """Chunks requested for one transfer and when."""

    serial: int
    chunks: int
    shared: bool
    """The manifest came to the group or fleet: chunks are being broadcast, wait for them."""
    watch: BroadcastWatch | None = None
    """What the device has seen of the broadcast (a shared manifest only)."""
    pulling: bool = False
    """The device has asked for chunks itself (always, for a manifest sent to it alone)."""
    pulled_at: float = 0.0
    """When it first asked: the give-up time counts from then at the latest."""
    requested: dict[int, float] = field(default_factory=dict)


class OtaMqttAdapter:
    """Feeds MQTT messages to the OtaService and publishes its statuses and chunk requests.

    Incoming messages are queued to one worker thread (the network thread only enqueues), which
    keeps a manifest and its chunks in order and keeps disk writes off the network thread. Any
    `Transport` will do (the agent's sync service, or a bare MQTT link in a fleet simulator).
    With `shared` set (many devices in one process) the worker is a `Lane` of the shared threads
    and the stall watch one of their timers: no thread of its own.
    """

    shared: ClassVar[SharedWork | None] = None
    """Runs every adapter's messages and stall watch in this process; None: two threads per
    adapter (the agent)."""

    def __init__(
        self,
        sync: Transport,
        service: OtaService,
        topics: Topics | None = None,
        *,
        window: int = 32,
        stall_s: float = 2.0,
        give_up_s: float = 60.0,
        queue_size: int = 256,
        refusals_per_s: float = 1.0,
        broadcast: BroadcastPatience | None = None,
    ) -> None:
        cfg = service.config
        self.sync = sync
        self.service = service
        self.topics = topics or Topics(cfg.mqtt.topic_root, cfg.device.id, cfg.device.group)
        self.window = window
        self.stall_s = stall_s
        self.give_up_s = give_up_s
        self.broadcast = broadcast or BroadcastPatience()
        """How long to wait on a group or fleet broadcast before pulling (stall_s is for pulls)."""
        self.refusal_gap_s = 1.0 / refusals_per_s
        # Messages, model names whose stalled chunks to re-request, None to stop.
        self._inbox: queue.Queue[InboundMessage | str | None] = queue.Queue(queue_size)
        self._pulls: dict[str, _Pull] = {}
        self._last_refusal: dict[str, float] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lane: Lane | None = None
        self._cancel_watch: Callable[[], None] | None = None
        self.dropped = 0
        """Messages dropped because the inbox was full (their chunks are asked for again)."""
        self.chunks_orphaned = 0
        """Chunks for a model with no update in progress."""
        self.refusals_muted = 0
        """Refusals not published: an unknown model, or more than refusals_per_s."""

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe, start the worker and the stall watch, republish every known status."""
        self.service.add_listener(self._on_status)
        self._stop.clear()
        shared = self.shared
        if shared is not None:
            name = f"ota-mqtt-{self.topics.base}"
            self._lane = Lane(shared, self._handle_item, capacity=self._inbox.maxsize, name=name)
            self._cancel_watch = shared.every(self._watch_s, self._watch_once)
        else:
            for name, target in (("ota-mqtt", self._work), ("ota-watch", self._watch)):
                t = threading.Thread(target=target, name=name, daemon=True)
                t.start()
                self._threads.append(t)
        for f in (*self.topics.ota_manifest_filters(), *self.topics.ota_chunk_filters()):
            self.sync.subscribe(f, self._enqueue, qos=1)
        self._republish_statuses()

    def stop(self, timeout: float = 2.0) -> None:
        """Unsubscribe and stop the threads (the service itself is closed by its owner)."""
        for f in (*self.topics.ota_manifest_filters(), *self.topics.ota_chunk_filters()):
            self.sync.unsubscribe(f, self._enqueue)
        self._stop.set()
        if self._cancel_watch is not None:
            self._cancel_watch()
            self._cancel_watch = None
        if self._lane is not None:
            self._lane.stop(timeout, finish=False)
        with contextlib.suppress(queue.Full):
            self._inbox.put_nowait(None)
        for t in self._threads:
            t.join(timeout)
        self._threads = []

    # --- inbound -----------------------------------------------------------------------------

    def _enqueue(self, msg: InboundMessage) -> None:
        if not self._put(msg):
            self.dropped += 1  # a dropped chunk is requested again after stall_s

    def _put(self, item: InboundMessage | str) -> bool:
        """Queue a message, or a model name whose stalled chunks to re-request."""
        if self._lane is not None:
            return self._lane.submit(item)
        try:
            self._inbox.put_nowait(item)
        except queue.Full:
            return False
        return True

    def _work(self) -> None:
        while not self._stop.is_set():
            item = self._inbox.get()
            if item is None:
                return
            self._handle_item(item)

    def _handle_item(self, item: InboundMessage | str) -> None:
        try:
            if isinstance(item, str):
                self._request(item, stalled=True)
            else:
                self._handle(item)
        except Exception:  # one bad message must not stop OTA
            log.exception("ota: handling %r failed", getattr(item, "topic", item))

    def _handle(self, msg: InboundMessage) -> None:
        parts = msg.topic.split("/")
        shared = not msg.topic.startswith(self.topics.base + "/ota/")
        if parts[-1] == "manifest" and len(parts) >= 4:
            self._manifest(parts[-2], msg.payload, shared)
        elif len(parts) >= 5 and parts[-2] == "chunk":
            self._chunk(parts[-3], parts[-1], msg.payload)

    def _manifest(self, model: str, payload: bytes, shared: bool) -> None:
        try:
            status = self.service.offer(model, payload)
        except OtaError as exc:
            log.warning("ota: manifest ignored: %s", exc.reason)
            return
        rx = self.service.existing(model)
        t = rx.receiving if rx is not None else None
        if status.get("state") != "receiving" or t is None:
            return
        pull = self._pulls.get(model)
        now = time.monotonic()
        if pull is None or pull.serial != t.serial:
            watch = BroadcastWatch(self.broadcast, now) if shared else None
            pull = self._pulls[model] = _Pull(t.serial, len(t.have), shared, watch)
        else:
            pull.requested.clear()  # the sender restarted: ask again for what is missing
            pull.shared = pull.shared and shared
            if pull.watch is not None and shared:
                pull.watch.manifest(now)  # a repeat: the publisher is still gathering devices
        if not pull.shared:
            self._request(model, force=True)

    def _chunk(self, model: str, number: str, payload: bytes) -> None:
        rx = self.service.existing(model)
        if rx is None:
            self.chunks_orphaned += 1  # no receiver is ever made for a chunk
            return
        try:
            n = int(number)
            serial, data = unframe_chunk(payload)
        except ValueError:
            rx.chunks_ignored += 1
            return
        accepted = rx.on_chunk(n, data, serial=serial)
        pull = self._pulls.get(model)
        if pull is None or pull.serial != serial:
            return
        if accepted:
            pull.requested.pop(n, None)
            if pull.watch is not None:
                pull.watch.chunk(time.monotonic())
        if pull.pulling:
            if len(pull.requested) <= self.window // 2:
                self._request(model)
        elif n == pull.chunks - 1:
            self._request(model)  # the broadcast has ended: ask for the holes at once

    # --- requests ------------------------------------------------------------------------------

    def _request(self, model: str, *, force: bool = False, stalled: bool = False) -> None:
        """Ask for missing chunks not already asked for in the last `stall_s` (during a
        broadcast, only once it has ended or gone quiet)."""
        rx = self.service.existing(model)
        t = rx.receiving if rx is not None else None
        pull = self._pulls.get(model)
        if rx is None or t is None or pull is None or pull.serial != t.serial:
            return
        now = time.monotonic()
        if stalled and not pull.pulling and pull.watch is not None and not pull.watch.quiet(now):
            return  # the broadcast is still on its way
        missing = rx.missing(limit=len(pull.requested) + self.window)
        waiting = set(missing)
        for n in [n for n in pull.requested if n not in waiting]:
            del pull.requested[n]
        fresh = [n for n in missing if now - pull.requested.get(n, -1e9) >= self.stall_s]
        room = self.window - sum(1 for n in pull.requested if n not in fresh)
        ask = fresh[: max(0, room)]
        if not ask and not force:
            return
        if not pull.pulling:
            pull.pulling, pull.pulled_at = True, now
        for n in ask:
            pull.requested[n] = now
        payload = {
            "serial": t.serial,
            "missing": ranges(ask),
            "received": t.received,
            "chunks": len(t.have),
        }
        self.sync.publish(self.topics.ota_request(model), json.dumps(payload), qos=1, durable=False)

    @property
    def _watch_s(self) -> float:
        return min(0.5, self.stall_s / 2)

    def _watch(self) -> None:
        while not self._stop.wait(self._watch_s):
            self._watch_once()

    def _watch_once(self) -> None:
        for rx in self.service.receivers():
            t = rx.receiving
            if t is None:
                continue
            # Waiting on a broadcast never gives up: the wait is bounded (patience.py) and ends
            # in a pull, and the give-up time counts from that first request at the latest.
            pull = self._pulls.get(rx.name)
            if pull is not None and pull.serial != t.serial:
                pull = None  # another update's: it says nothing about this one
            waiting = pull is not None and pull.watch is not None and not pull.pulling
            since = max(rx.last_progress, pull.pulled_at if pull is not None else 0.0)
            if not waiting and time.monotonic() - since > self.give_up_s:
                rx.abort(f"transfer stalled: no chunk for {self.give_up_s:g} s")
                continue
            self._put(rx.name)  # the worker re-requests stalled chunks (not if its queue is full)

    # --- outbound ------------------------------------------------------------------------------

    def _on_status(self, status: dict[str, Any]) -> None:
        model = str(status.get("model"))
        if status.get("refused"):
            self._publish_refusal(model, status)
            return
        if status.get("state") != "receiving":
            self._pulls.pop(model, None)
        self.sync.publish(self.topics.ota_status(model), json.dumps(status), qos=1, retain=True)
        if status.get("state") in ("active", "rolled_back"):
            refresh = getattr(self.sync, "state_changed", None)
            if callable(refresh):
                refresh()  # the retained agent state lists active model versions

    def _publish_refusal(self, model: str, status: dict[str, Any]) -> None:
        """Answer a refused manifest, not retained, for known models only and rate-limited: a
        stranger's junk never creates topics for made-up models or floods the broker."""
        now = time.monotonic()
        if not self.service.knows(model) or now - self._last_refusal.get(model, -1e9) < (
            self.refusal_gap_s
        ):
            self.refusals_muted += 1
            return
        self._last_refusal[model] = now
        payload = json.dumps(status)
        self.sync.publish(self.topics.ota_refused(model), payload, qos=1, durable=False)

    def _republish_statuses(self) -> None:
        root = self.service.config.state_dir / "models"
        if not root.is_dir():
            return
        for d in sorted(root.iterdir()):
            try:
                status = self.service.status(d.name)
            except OtaError:
                continue
            if status.get("state") != "idle":
                self._on_status(status)
