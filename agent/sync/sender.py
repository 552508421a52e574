"""Moves stored messages from the outbox to the broker, in id order, and deletes them on PUBACK.

What is handed to paho and not yet acknowledged is bounded twice: at most `window` messages, and
at most the bytes the link was last seen to deliver in `TARGET_DRAIN_S` (the byte window, kept
between `MIN_WINDOW_BYTES` and `MAX_WINDOW_BYTES`). paho sends strictly in order, so everything
it holds goes out before a command reply or a status published after it; on a link slower than
the agent produces, a window of messages alone filled paho with ~1000 telemetry batches (many
minutes of the link) that the outbox had meanwhile dropped to stay in its bound, and replies
and new events waited behind them. The rest waits in the outbox, where the bound and the
drop-oldest-telemetry policy apply.

The link's delivery rate is sampled per acknowledged message, as the bytes acknowledged while
it was in flight over the time it was in flight: on a slow link that is the link's rate; on a
fast one it is large and the byte window opens to `MAX_WINDOW_BYTES` within a few round trips.
A message still in flight after `OVERDUE_S` lowers the estimate at once: when the link slows
down, the next acknowledgement may be seconds away.

After a reconnect paho first re-sends what it still holds (oldest first); new rows wait until
those are acknowledged, so a consumer sees the replay in order. A restart starts again from the
oldest stored row.

Used by the sync thread only, except `on_ack`, which the network thread calls.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from agent.sync.outbox import Outbox
from agent.transport.link import MqttLink

log = logging.getLogger(__name__)

RESEND_GRACE_S = 10.0
"""How long after a reconnect to wait for paho's re-sends before sending them again ourselves."""
TARGET_DRAIN_S = 2.0
"""Seconds of the link's measured delivery rate that may be handed to paho unacknowledged."""
OVERDUE_S = TARGET_DRAIN_S / 2
"""A message unacknowledged this long says the link is slower than the rate estimate."""
MIN_WINDOW_BYTES = 2048
"""The byte window never shrinks below this (one message is always allowed, whatever its size)."""
MAX_WINDOW_BYTES = 1 << 20
"""The byte window never grows above this: the bound on outbox bytes held in paho's memory."""
_MIN_FLIGHT_S = 0.001  # a shorter flight is below the clock's useful resolution for a rate
_MIN_ROW_BYTES = 64  # rows fetched per pump are at most byte room / this (no 500-row reads)


class _Flight(NamedTuple):
    """An outbox row handed to paho: what to delete on PUBACK and what to time its flight by."""

    row: int
    size: int
    sent_at: float
    delivered_at_send: int


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
        self._inflight: dict[int, _Flight] = {}  # paho mid -> the row in flight
        self._inflight_bytes = 0
        self._delivered = 0  # bytes of our messages acknowledged in this process
        self.rate = MIN_WINDOW_BYTES / TARGET_DRAIN_S
        """Delivery rate of the link in bytes/s: the last sample, or less if one is overdue."""
        self._acks: deque[tuple[int, bool, float]] = deque()
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

    @property
    def inflight_bytes(self) -> int:
        """Bytes (payload and topic) handed to paho and not acknowledged yet."""
        return self._inflight_bytes

    @property
    def window_bytes(self) -> int:
        """Bytes that may be in flight now: the measured rate times `TARGET_DRAIN_S`, clamped."""
        return int(min(MAX_WINDOW_BYTES, max(MIN_WINDOW_BYTES, self.rate * TARGET_DRAIN_S)))

    def on_ack(self, mid: int, ok: bool) -> None:
        """PUBACK (or QoS 0 write) for `mid`: queued for the sync thread (network thread)."""
        self._acks.append((mid, ok, time.monotonic()))
        # Acks are batched by the sync thread's tick; wake it early only when a window is
        # full and it is waiting for room.
        if self._wake is not None and (
            len(self._inflight) >= self._window or self._inflight_bytes >= self.window_bytes
        ):
            self._wake()

    def take_acks(self) -> list[int]:
        """Row ids whose PUBACK arrived since the last call, for the caller to delete."""
        done: list[int] = []
        acks = self._acks
        inflight = self._inflight
        while acks:
            mid, ok, acked_at = acks.popleft()
            # Mids are reused by paho after 65535 publishes; acks are taken before every pump,
            # so a mid cannot come round again between an ack and its processing.
            flight = inflight.pop(mid, None)
            if flight is None:
                continue  # a message that is not ours (status, replies, QoS 0)
            self._inflight_bytes -= flight.size
            self._delivered += flight.size
            # Bytes delivered while this one was in flight, over its flight time: the link's
            # rate when it was busy, and no less than this message's own rate when it was idle.
            took = max(_MIN_FLIGHT_S, acked_at - flight.sent_at)
            self.rate = (self._delivered - flight.delivered_at_send) / took
            if not ok:
                self.rejected += 1
                log.warning("broker refused outbox message %d; dropped", flight.row)
            done.append(flight.row)
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
            self._restart_flights()
        if self._resume_since is not None and not self._resumed():
            return 0
        now = time.monotonic()
        self._check_oldest(now)
        room = min(limit, self._window - len(self._inflight))
        window_bytes = self.window_bytes
        byte_room = window_bytes - self._inflight_bytes
        if room <= 0 or byte_room <= 0:
            return 0
        version = self._outbox.version
        if self._caught_up and version == self._seen_version:
            return 0  # nothing stored since the last pump found the end: skip the query
        want = min(room, 1 + max(0, byte_room) // _MIN_ROW_BYTES)
        rows = self._outbox.after(self._cursor, want)
        sent = 0
        for msg in rows:
            size = len(msg.payload) + len(msg.topic)
            if self._inflight and self._inflight_bytes + size > window_bytes:
                break  # the byte window is full; one message always goes, however large
            mid = link.publish(
                msg.topic, msg.payload, qos=1 if msg.qos else 0, retain=bool(msg.retain)
            )
            if mid is None:
                break
            if msg.qos:
                self._inflight[mid] = _Flight(msg.id, size, now, self._delivered)
                self._inflight_bytes += size
            else:
                self._outbox.ack([msg.id])  # QoS 0 rows are not kept once handed over
            self._cursor = msg.id
            sent += 1
        self._caught_up = sent == len(rows) < want
        self._seen_version = version
        if sent:
            self.sent += sent
            self.last_publish_ts = time.time()
        return sent

    def _check_oldest(self, now: float) -> None:
        """Lower the rate at once when the oldest message in flight is overdue.

        When the link slows down, the next acknowledgement (the next rate sample) may be many
        seconds away, and until then the window sized for the old rate keeps filling paho.
        What was delivered since the oldest message was handed over, over its age, bounds the
        rate meanwhile. On a healthy link no message is that old, and the bound is not looked at.
        """
        if not self._inflight:
            return
        oldest = next(iter(self._inflight.values()))  # dicts keep insertion (= send) order
        age = now - oldest.sent_at
        if age > OVERDUE_S:
            delivered = self._delivered - oldest.delivered_at_send + oldest.size
            self.rate = min(self.rate, delivered / age)

    def _restart_flights(self) -> None:
        """Time the messages paho re-sends after a reconnect from now: the time spent offline
        is not the link's rate."""
        now, delivered = time.monotonic(), self._delivered
        for mid, flight in self._inflight.items():
            self._inflight[mid] = flight._replace(sent_at=now, delivered_at_send=delivered)

    def _resumed(self) -> bool:
        if not self._inflight:
            self._resume_since = None
            return True
        assert self._resume_since is not None
        if time.monotonic() - self._resume_since < RESEND_GRACE_S:
            return False
        # paho did not re-send them: send those rows again from the outbox (consumers dedupe).
        log.warning("re-sending %d unacknowledged outbox messages", len(self._inflight))
        self._cursor = min(f.row for f in self._inflight.values()) - 1
        self._inflight.clear()
        self._inflight_bytes = 0
        self._caught_up = False
        self._resume_since = None
        return True
