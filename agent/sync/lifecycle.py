"""The outbox's life on the sync thread: opened (and retried), fed, pumped, compacted, finished.

A state_dir that cannot hold the outbox now (a full disk, an I/O error) does not stop the agent:
the loops must keep running, so the outbox is retried with back-off while events wait unnumbered
in the plugin rings (their overflow counted) and the error shows in status and the systemd
STATUS line. Seqs are only given as events are stored, so none is reused.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence

from agent.backoff import Backoff
from agent.config.sections import AgentConfig
from agent.plugin.channel import OutputChannel
from agent.sync.events import EventPersister
from agent.sync.outbox import Message, MessageClass, Outbox, OutboxError, OutboxInUse
from agent.sync.payloads import telemetry_payloads
from agent.sync.sender import OutboxSender
from agent.sync.uplink import Uplink

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.db"
OPEN_RETRY_MIN_S = 1.0
OPEN_RETRY_MAX_S = 30.0
"""An outbox that could not be opened (full disk) is retried after 1 s, doubling up to 30 s."""


class OutboxLifecycle:
    """Owns the outbox, its sender and its event persister; used by the sync thread only."""

    def __init__(self, config: AgentConfig, uplink: Uplink) -> None:
        self._config = config
        self._uplink = uplink
        self.outbox: Outbox | None = None
        self.sender: OutboxSender | None = None
        self.events: EventPersister | None = None
        self.open_error = ""
        """Why the outbox could not be opened (empty once it is open)."""
        self._open_backoff = Backoff(OPEN_RETRY_MIN_S, OPEN_RETRY_MAX_S)
        self._open_retry_at = 0.0
        self.telemetry_batches = 0
        self.telemetry_offline_dropped = 0
        self.telemetry_error_dropped = 0
        """QoS 1 telemetry rows dropped because the outbox could not be written (disk full)."""

    def open(self, *, first: bool) -> None:
        """Open the outbox; on failure schedule a retry (OutboxInUse at the `first` try raises)."""
        cfg = self._config
        try:
            outbox = Outbox(
                cfg.state_dir / OUTBOX_FILE,
                max_bytes=cfg.outbox.max_bytes,
                telemetry_share=cfg.outbox.telemetry_share,
            )
        except OutboxError as exc:
            if isinstance(exc, OutboxInUse) and first:
                raise
            if not self.open_error:
                log.error(
                    "%s; the loops keep running, their events wait in the plugin rings "
                    "(overflow counted); retrying with back-off",
                    exc,
                )
            self.open_error = str(exc)
            self._open_retry_at = time.monotonic() + self._open_backoff.next()
            return
        if self.open_error:
            log.warning("outbox open after all (%d messages): events flow again", outbox.depth)
        self.open_error = ""
        link = self._uplink.link
        self.sender = OutboxSender(outbox, link, wake=self._uplink.wake.set)
        self._uplink.on_ack = self.sender.on_ack
        self.events = EventPersister(outbox, self._uplink.topics.events)
        self.outbox = outbox  # last: other threads take a non-None outbox as ready

    def close(self) -> None:
        """Close the outbox (the sync thread has ended)."""
        if self.outbox is not None:
            self.outbox.close()
        self.outbox = self.sender = self.events = None

    def step(self, channels: Sequence[OutputChannel]) -> bool:
        """Store events and durable messages, send what the window allows; True if busy."""
        if self.outbox is None and time.monotonic() >= self._open_retry_at:
            self.open(first=False)
        if self.sender is None or self.events is None:
            return False  # no outbox yet: the rings hold the events (their overflow counted)
        acked = self.sender.take_acks()
        stored = self.events.collect(channels, acked)
        self.store_durable()
        sent = self.sender.pump()
        return sent >= 500 or (stored > 0 and self.events.backlog > 0)

    def store_durable(self) -> None:
        """Move the uplink's durable messages into the outbox (kept in memory while it fails)."""
        durable = self._uplink.durable
        if self.outbox is None or not durable or not self.outbox.retry_due():
            return
        try:
            n = self.outbox.add(list(durable))
        except OutboxError:
            return  # counted and logged (rate-limited) by the outbox; kept in memory
        for _ in range(n):
            durable.popleft()

    def flush_telemetry(self, channels: Sequence[OutputChannel]) -> None:
        """Publish the batched telemetry: QoS 1 through the outbox, QoS 0 directly."""
        qos = self._config.mqtt.telemetry_qos
        link = self._uplink.link
        connected = link.connected
        stored: list[Message] = []
        stored_rows = 0
        for ch in channels:
            if not ch.pending[0]:
                continue
            ts, rows = ch.drain_telemetry()
            topic = self._uplink.topics.telemetry(ch.plugin)
            payloads = telemetry_payloads(ch.fields, ts, rows, dropped=ch.telemetry_dropped)
            if qos == 1:
                stored.extend(Message(MessageClass.TELEMETRY, topic, p) for p in payloads)
                stored_rows += len(ts)
            elif connected:
                for p in payloads:
                    link.publish(topic, p, qos=0)
                self._uplink.last_direct_publish_ts = time.time()
            else:
                self.telemetry_offline_dropped += len(ts)
                continue
            self.telemetry_batches += len(payloads)
        if stored:
            self._store_telemetry(stored, stored_rows)

    def _store_telemetry(self, stored: list[Message], rows: int) -> None:
        # Telemetry is not kept in memory while writes fail: dropped and counted (the failure
        # itself is logged, rate-limited, by the outbox).
        if self.outbox is None or not self.outbox.retry_due():
            self.telemetry_error_dropped += rows
            return
        try:
            self.outbox.add(stored)
        except OutboxError:
            self.telemetry_error_dropped += rows

    def compact(self) -> None:
        """Give freed pages back to the file system."""
        if self.outbox is not None:
            with contextlib.suppress(OutboxError):  # counted and logged by the outbox
                self.outbox.compact()

    def set_config(self, config: AgentConfig) -> None:
        """Follow a reloaded config (telemetry QoS; the outbox section needs a restart)."""
        self._config = config

    def finish(self, channels: Sequence[OutputChannel], finish_by: float) -> None:
        """Last round on stop: store every pending event, flush telemetry, deliver briefly."""
        sender, events = self.sender, self.events
        if sender is None or events is None or self.outbox is None:
            self.report_unstored(channels)  # the outbox never opened
            return
        link = self._uplink.link
        try:
            self.outbox.retry_now()  # the last chance: no back-off
            for _ in range(50):
                events.collect(channels)
                if not events.backlog:
                    break
            self.store_durable()
            self.flush_telemetry(channels)
            self.report_unstored(channels)
            while link.connected and time.monotonic() < finish_by:
                sender.process_acks()
                sender.pump()
                if not sender.inflight and not self.outbox.depth:
                    break
                time.sleep(0.005)
            sender.process_acks()
        except OutboxError:
            pass  # counted and logged by the outbox; undeleted rows are sent again next start
        except Exception:
            log.exception("sync shutdown step failed")

    def report_unstored(self, channels: Sequence[OutputChannel]) -> None:
        """Say what a failing outbox makes the shutdown lose (events and messages in memory)."""
        events = self.events.backlog if self.events else 0
        events += sum(c.pending[1] for c in channels)
        durable = len(self._uplink.durable)
        if events or durable:
            ob = self.outbox
            reason = ob.last_error if ob else self.open_error
            if not reason:
                reason = "outbox at its size bound" if ob and ob.full else "not stored in time"
            log.error(
                "stopping with %d events and %d durable messages not stored: lost (%s)",
                events,
                durable,
                reason,
            )

    def drained(self, channels: Sequence[OutputChannel]) -> bool:
        """True when every event drained so far is stored and acknowledged."""
        ob, ev = self.outbox, self.events
        pending = any(c.pending[1] for c in channels)
        return bool(
            ob
            and ev
            and not pending
            and not ev.backlog
            and not self._uplink.durable
            and not ob.depth
        )
