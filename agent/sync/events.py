"""Plugin events into the outbox: ids, per-plugin sequence numbers, and the bounded backlog.

The seq of a plugin's event is persisted in the same transaction as the event, so after any
restart numbering continues from the last event that reached the outbox. Events that do not fit
(outbox at its bound, or SQLite failing, e.g. a full disk) wait in a backlog of `backlog_max`
events; while it is full the plugin rings are not drained, and their own overflow is counted by
the channel (`events_dropped`). Every one of these states is visible in status and metrics.

While writes fail, attempts follow the outbox's back-off (`Outbox.retry_due`): each attempt
serializes up to BATCH events, too much work to repeat every sync tick. Acknowledged row ids
whose delete failed are kept and deleted with the next write, so a delivered row is not left
behind to be sent again after a restart.

A corrupt outbox replaced by a fresh one (see `Outbox`) is reported once, as an event of the
agent itself (plugin `agent`, kind `outbox_lost`) stored in the new outbox.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence

from agent.events import Event
from agent.plugin.channel import OutputChannel
from agent.sync.outbox import Message, MessageClass, Outbox, OutboxError, StoreLoss
from agent.sync.payloads import event_payload

BATCH = 2000
"""Events persisted per transaction at most."""
AGENT = "agent"
"""The plugin name of the agent's own events (a corrupt outbox replaced)."""


class EventPersister:
    """Drains plugin event rings into the outbox (sync thread only)."""

    def __init__(
        self,
        outbox: Outbox,
        topic_for: Callable[[str], str],
        *,
        backlog_max: int = 20000,
    ) -> None:
        self._outbox = outbox
        self._topic_for = topic_for
        self._topics: dict[str, str] = {}
        self._backlog: deque[Event] = deque()
        self.backlog_max = backlog_max
        self._seq = outbox.seqs()
        self._id_prefix = secrets.token_hex(6)  # unique per run: ids never repeat after restarts
        self._next_id = 0
        self._unacked: list[int] = []  # delivered rows whose delete failed: retried
        self.persisted = 0
        self._report_losses()

    def _report_losses(self) -> None:
        """Queue one `outbox_lost` event per corrupt store replaced, ahead of the backlog."""
        for loss in reversed(self._outbox.take_losses()):
            self._backlog.appendleft(_loss_event(loss))

    @property
    def backlog(self) -> int:
        """Events drained from the rings but not yet in the outbox."""
        return len(self._backlog)

    def last_seq(self, plugin: str) -> int:
        """The seq of the last event of `plugin` stored in the outbox (0 if none)."""
        return self._seq.get(plugin, 0)

    def collect(self, channels: Sequence[OutputChannel], acked: Sequence[int] = ()) -> int:
        """Drain rings (while the backlog has room) and persist, deleting `acked` rows in the
        same transaction; returns events persisted."""
        if len(self._backlog) < self.backlog_max:
            for ch in channels:
                if ch.pending[1]:
                    self._backlog.extend(ch.drain_events())
        return self.persist(acked)

    @property
    def unacked(self) -> int:
        """Delivered row ids waiting for their delete to succeed."""
        return len(self._unacked)

    def persist(self, acked: Sequence[int] = ()) -> int:
        """Store as much of the backlog as fits, in one transaction; returns how many."""
        if self._outbox.losses:
            self._report_losses()
            self._seq = self._outbox.seqs()  # the new store continues from these
        if self._unacked:
            acked = [*self._unacked, *acked]
            self._unacked = []
        if not self._outbox.retry_due():
            self._unacked.extend(acked)
            return 0
        if not self._backlog:
            self._ack(acked)
            return 0
        batch = [self._backlog[i] for i in range(min(BATCH, len(self._backlog)))]
        seq = dict(self._seq)
        room = self._outbox.room()
        messages: list[Message] = []
        topics = self._topics
        prefix = self._id_prefix
        for ev in batch:
            plugin = ev.plugin
            n = seq.get(plugin, 0) + 1
            self._next_id += 1
            payload = event_payload(ev, event_id=f"{prefix}-{self._next_id}", seq=n)
            topic = topics.get(plugin)
            if topic is None:
                topic = topics[plugin] = self._topic_for(plugin)
            msg = Message(MessageClass.EVENT, topic, payload)
            if msg.size > room:
                self._outbox.full = True
                break
            room -= msg.size
            seq[ev.plugin] = n
            messages.append(msg)
        if not messages:
            self._ack(acked)
            return 0
        changed = {p: v for p, v in seq.items() if self._seq.get(p) != v}
        try:
            stored = self._outbox.add(messages, seqs=changed, acked=acked)
        except OutboxError:
            # Counted and logged (rate-limited) by the outbox; the events stay in the backlog.
            self._unacked.extend(acked)
            return 0
        self._seq = seq
        for _ in range(stored):
            self._backlog.popleft()
        self.persisted += stored
        return stored

    def _ack(self, acked: Sequence[int]) -> None:
        if not acked:
            return
        try:
            self._outbox.ack(acked)
        except OutboxError:
            # Kept for the next write: deleted then, not sent again after a restart.
            self._unacked.extend(acked)


def _loss_event(loss: StoreLoss) -> Event:
    return Event(
        AGENT,
        "outbox_lost",
        time.time_ns(),
        1.0,
        {"rows_lost": loss.rows_lost, "reason": loss.reason, "moved_to": loss.aside.name},
    )
