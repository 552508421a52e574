"""Moves stored messages from the outbox to the broker, in id order, and deletes them on PUBACK.

At most `window` messages are handed to paho and not yet acknowledged, so paho's in-memory
queue stays bounded while the outbox holds the rest. After a reconnect paho first re-sends what
it still holds (oldest first); new rows wait until those are acknowledged, so a consumer sees
the replay in order. A restart starts again from the oldest stored row.

Used by the sync thread only, except `on_ack`, which the network thread calls.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from agent.sync.link import MqttLink
from agent.sync.outbox import Outbox

log = logging.getLogger(__name__)

RESEND_GRACE_S = 10.0
"""How long after a reconnect to wait for paho's re-sends before sending them again ourselves."""


class OutboxSender:
    """The outbox-to-broker pump with its in-flight bookkeeping."""

    def __init__(
        self,
        outbox: Outbox,
        link: MqttLink,
        *,
        window: int = 1000,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self._outbox = outbox
        self._link = link
        self._window = window
        self._wake = wake
        self._inflight: dict[int, int] = {}  # paho mid -> outbox row id
        self._acks: deque[tuple[int, bool]] = deque()
        self._cursor = 0  # highest row id handed to paho in this process
        self._resume_since: float | None = None
        self._seen_connects = 0
        self._caught_up = False
        self._seen_version = -1
        self.sent = 0
        self.acked = 0
        self.rejected = 0
        """Messages the broker refused with a failure reason code (deleted, not retried)."""
        self.last_publish_ts = 0.0

    @property
    def inflight(self) -> int:
        """Messages handed to paho and not acknowledged yet."""
        return len(self._inflight)

    def on_ack(self, mid: int, ok: bool) -> None:
        """PUBACK (or QoS 0 write) for `mid`: queued for the sync thread (network thread)."""
        self._acks.append((mid, ok))
        # Acks are batched by the sync thread's tick; wake it early only when the window is
        # full and it is waiting for room.
        if self._wake is not None and len(self._inflight) >= self._window:
            self._wake()

    def take_acks(self) -> list[int]:
        """Row ids whose PUBACK arrived since the last call, for the caller to delete."""
        done: list[int] = []
        acks = self._acks
        inflight = self._inflight
        while acks:
            mid, ok = acks.popleft()
            # Mids are reused by paho after 65535 publishes; acks are taken before every pump,
            # so a mid cannot come round again between an ack and its processing.
            row = inflight.pop(mid, None)
            if row is None:
                continue  # a message that is not ours (status, replies, QoS 0)
            if not ok:
                self.rejected += 1
                log.warning("broker refused outbox message %d; dropped", row)
            done.append(row)
        self.acked += len(done)
        return done

    def process_acks(self) -> int:
        """Delete the rows whose PUBACK arrived; returns how many."""
        done = self.take_acks()
        if done:
            self._outbox.ack(done)
        return len(done)

    def pump(self, limit: int = 500) -> int:
        """Hand the next stored messages to paho while connected; returns how many were sent."""
        link = self._link
        if not link.connected:
            return 0
        if link.connects != self._seen_connects:
            # A (re)connection since the last pump: paho re-sends what it holds first.
            self._seen_connects = link.connects
            self._resume_since = time.monotonic() if self._inflight else None
        if self._resume_since is not None and not self._resumed():
            return 0
        room = min(limit, self._window - len(self._inflight))
        if room <= 0:
            return 0
        version = self._outbox.version
        if self._caught_up and version == self._seen_version:
            return 0  # nothing stored since the last pump found the end: skip the query
        rows = self._outbox.after(self._cursor, room)
        sent = 0
        for msg in rows:
            mid = link.publish(
                msg.topic, msg.payload, qos=1 if msg.qos else 0, retain=bool(msg.retain)
            )
            if mid is None:
                break
            if msg.qos:
                self._inflight[mid] = msg.id
            else:
                self._outbox.ack([msg.id])  # QoS 0 rows are not kept once handed over
            self._cursor = msg.id
            sent += 1
        self._caught_up = sent == len(rows) < room
        self._seen_version = version
        if sent:
            self.sent += sent
            self.last_publish_ts = time.time()
        return sent

    def _resumed(self) -> bool:
        if not self._inflight:
            self._resume_since = None
            return True
        assert self._resume_since is not None
        if time.monotonic() - self._resume_since < RESEND_GRACE_S:
            return False
        # paho did not re-send them: send those rows again from the outbox (consumers dedupe).
        log.warning("re-sending %d unacknowledged outbox messages", len(self._inflight))
        self._cursor = min(self._inflight.values()) - 1
        self._inflight.clear()
        self._caught_up = False
        self._resume_since = None
        return True
