"""The durable outbox: every QoS 1 message is stored in SQLite before it is sent, deleted on PUBACK.

Storage: one SQLite file `outbox.db` in state_dir, WAL journal, `synchronous=NORMAL`. In WAL mode
NORMAL makes a commit durable against a process crash (kill -9: the WAL is in the OS page cache
and is replayed on the next open) but not against a power cut, which may lose the last commits
since the previous checkpoint. FULL would fsync every commit, which costs milliseconds on SD
cards and eMMC: NORMAL is the usual trade on an edge board and what reaches the target rate.

Bound (`outbox.max_bytes`, counted as payload + topic + a small per-row overhead, not file size):
- telemetry may use `telemetry_share` of it; beyond that (or when the whole outbox is full) the
  oldest telemetry rows are dropped and counted;
- events and other durable messages are never dropped here: room is made by dropping telemetry
  first, and when even that is not enough `add` refuses and the caller keeps the messages (the
  sync service holds them in a bounded backlog and, past that, leaves them in the plugin rings,
  whose overflow is counted). `full` is reported in status and metrics.

Write failures (disk full, I/O errors, a read-only file system): a failed transaction changes
nothing, raises OutboxError and starts a failure episode: `errors` counts every failed write,
`last_error` says why until a write succeeds again, and `retry_due()` backs callers off (50 ms
doubling to 1 s) so a full disk is not hammered by a retry every sync tick. The episode is logged
when it starts, reminded at most once a minute, and closed by one line when writes work again.

Ordering: ids come from AUTOINCREMENT, so they never repeat even after the table empties, and
replay is `ORDER BY id`. The per-plugin event sequence numbers live in the same file and are
written in the same transaction as the events that use them.

One connection, used by one thread (the sync thread), after the constructor.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import IntEnum
from pathlib import Path
from typing import NamedTuple

from agent.sync.outbox_failures import WriteFailures
from agent.sync.outbox_file import OutboxError, OutboxInUse, lock_state, open_db

__all__ = ["Message", "MessageClass", "Outbox", "OutboxError", "OutboxInUse", "StoredMessage"]

ROW_OVERHEAD = 32
"""Bytes counted per row on top of payload and topic (id, class, flags, index entry)."""
_CHUNK = 500  # ids per DELETE statement, well under SQLite's parameter limit
_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


_Counts = tuple[list[int], list[int], int, int, bool]
"""Rows and bytes per class, telemetry dropped, refused, full: restored when a write fails."""


class MessageClass(IntEnum):
    """Drop policy class of a stored message."""

    TELEMETRY = 0
    """Dropped oldest first when over the telemetry share."""
    EVENT = 1
    """Never dropped; reported when the bound is reached."""
    OTHER = 2
    """Other durable messages (OTA status, ...): never dropped, like events."""


class Message:
    """A message to store: where it goes and how (its size computed once: hot on the sync path)."""

    __slots__ = ("cls", "payload", "qos", "retain", "size", "topic")

    def __init__(
        self,
        cls: MessageClass,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
    ) -> None:
        self.cls = cls
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.size = len(payload) + len(topic) + ROW_OVERHEAD
        """Bytes this message counts against the bound."""


class StoredMessage(NamedTuple):
    """A message read back from the outbox, with its id (the replay order)."""

    id: int
    cls: int
    topic: str
    payload: bytes
    qos: int
    retain: int


class Outbox:
    """SQLite-backed, size-bounded, ordered store of outgoing QoS 1 messages."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        telemetry_share: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.telemetry_cap = int(max_bytes * telemetry_share)
        self.telemetry_dropped = 0
        """Telemetry rows dropped to stay within the bound."""
        self.refused = 0
        """Durable messages `add` refused because the outbox was full (kept by the caller)."""
        self.full = False
        """True since a durable message last did not fit, until one fits again."""
        self._rows = [0, 0, 0]
        self._bytes = [0, 0, 0]
        self.version = 0
        """Incremented by every commit that stored rows: readers skip a query when unchanged."""
        self.failures = WriteFailures(path, clock)
        """Failed writes: count, reason, back-off (`retry_due`)."""
        self._lock_fd = lock_state(path)
        try:
            self._db = open_db(path)
            try:
                self._load_totals()
            except sqlite3.Error as exc:
                self._db.close()
                raise OutboxError(f"cannot read the outbox {path}: {exc}") from exc
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- accounting -----------------------------------------------------------------------------

    def _load_totals(self) -> None:
        for cls, rows, size in self._db.execute(
            "SELECT cls, COUNT(*), COALESCE(SUM(size), 0) FROM outbox GROUP BY cls"
        ):
            self._rows[cls] = rows
            self._bytes[cls] = size

    @property
    def depth(self) -> int:
        """Messages stored (sent but not acknowledged, or not sent yet)."""
        return sum(self._rows)

    @property
    def total_bytes(self) -> int:
        """Bytes stored, as counted against `max_bytes`."""
        return sum(self._bytes)

    def counts(self) -> dict[str, int]:
        """Rows and bytes per class, for status and metrics."""
        out: dict[str, int] = {}
        for cls in MessageClass:
            key = cls.name.lower()
            out[f"{key}_rows"] = self._rows[cls]
            out[f"{key}_bytes"] = self._bytes[cls]
        return out

    def room(self) -> int:
        """Bytes a durable (non-telemetry) message may still use, telemetry dropped if needed."""
        durable = self._bytes[MessageClass.EVENT] + self._bytes[MessageClass.OTHER]
        return max(0, self.max_bytes - durable)

    # -- writing --------------------------------------------------------------------------------

    def add(
        self,
        messages: Sequence[Message],
        *,
        seqs: Mapping[str, int] | None = None,
        acked: Sequence[int] = (),
    ) -> int:
        """Store `messages` (and the event seq counters) in one transaction; returns how many.

        `acked` rows are deleted in the same transaction first (one commit per sync step
        instead of two: commits, not rows, dominate the cost). Telemetry that does not fit drops
        older telemetry. Durable messages are stored in order while they fit; the first that
        does not stops the batch (the rest is the caller's to keep) and sets `full`. On an
        SQLite error (disk full, ...) nothing changes, the failure is recorded (see
        `last_error`, `retry_due`) and OutboxError is raised.
        """
        saved = self._counts_snapshot()
        try:
            with self._db:
                deleted = self._ack_in_txn(acked)
                n = self._add_in_txn(messages)
                if seqs:
                    self._db.executemany(
                        "INSERT INTO seq (plugin, value) VALUES (?, ?) "
                        "ON CONFLICT (plugin) DO UPDATE SET value = excluded.value",
                        seqs.items(),
                    )
        except sqlite3.Error as exc:
            self._restore_counts(saved)  # the rollback undid whatever the transaction counted
            raise self.failures.failed("write", exc) from exc
        self.version += 1
        if n or deleted:
            self.failures.ok()
        return n

    def _add_in_txn(self, messages: Sequence[Message]) -> int:
        rows: list[tuple[int, str, bytes, int, int, int]] = []
        tel = MessageClass.TELEMETRY
        for n, msg in enumerate(messages):
            size = msg.size
            if msg.cls is tel:
                if size > self.telemetry_cap or size > self.room():
                    self.telemetry_dropped += 1
                    continue
                need = max(
                    self._bytes[tel] + size - self.telemetry_cap,
                    self.total_bytes + size - self.max_bytes,
                )
            else:
                if size > self.room():
                    self.full = True
                    self.refused += len(messages) - n
                    self._insert(rows)
                    return n
                need = self.total_bytes + size - self.max_bytes
            if need > 0:
                # Rows of this batch must be in the table before older telemetry is chosen.
                self._insert(rows)
                rows.clear()
                self._drop_telemetry(need)
            rows.append((int(msg.cls), msg.topic, msg.payload, msg.qos, int(msg.retain), size))
            self._rows[msg.cls] += 1
            self._bytes[msg.cls] += size
        if any(m.cls is not tel for m in messages):
            self.full = False
        self._insert(rows)
        return len(messages)

    def _insert(self, rows: list[tuple[int, str, bytes, int, int, int]]) -> None:
        if rows:
            self._db.executemany(
                "INSERT INTO outbox (cls, topic, payload, qos, retain, size) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    def _drop_telemetry(self, need: int) -> None:
        # Oldest first, a page at a time; rows counted before the INSERTs of this transaction.
        while need > 0 and self._rows[MessageClass.TELEMETRY]:
            victims = self._db.execute(
                # `cls = 0` literal: a bound parameter would not use the partial index.
                "SELECT id, size FROM outbox WHERE cls = 0 ORDER BY id LIMIT 256"
            ).fetchall()
            if not victims:
                break
            taken: list[int] = []
            for row_id, size in victims:
                taken.append(row_id)
                need -= size
                self._rows[MessageClass.TELEMETRY] -= 1
                self._bytes[MessageClass.TELEMETRY] -= size
                self.telemetry_dropped += 1
                if need <= 0:
                    break
            self._delete(taken)

    def _delete(self, ids: Sequence[int]) -> None:
        for i in range(0, len(ids), _CHUNK):
            part = ids[i : i + _CHUNK]
            marks = ",".join("?" * len(part))
            self._db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", part)

    def ack(self, ids: Iterable[int]) -> int:
        """Delete acknowledged messages (unknown ids ignored); returns how many were deleted."""
        id_list = list(ids)
        if not id_list:
            return 0
        saved = self._counts_snapshot()
        try:
            with self._db:
                deleted = self._ack_in_txn(id_list)
        except sqlite3.Error as exc:
            self._restore_counts(saved)
            raise self.failures.failed("delete", exc) from exc
        if deleted:
            self.failures.ok()
        return deleted

    def _ack_in_txn(self, ids: Sequence[int]) -> int:
        deleted = 0
        for i in range(0, len(ids), _CHUNK):
            for cls, size in self._delete_returning(ids[i : i + _CHUNK]):
                self._rows[cls] -= 1
                self._bytes[cls] -= size
                deleted += 1
        return deleted

    def _delete_returning(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """Delete rows by id; (class, size) of each row that existed (ids may be gone already)."""
        marks = ",".join("?" * len(ids))
        if _HAS_RETURNING:
            return self._db.execute(
                f"DELETE FROM outbox WHERE id IN ({marks}) RETURNING cls, size", ids
            ).fetchall()
        rows = self._db.execute(
            f"SELECT cls, size FROM outbox WHERE id IN ({marks})", ids
        ).fetchall()
        self._db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", ids)
        return rows

    # -- reading --------------------------------------------------------------------------------

    def after(self, last_id: int, limit: int) -> list[StoredMessage]:
        """Up to `limit` stored messages with id > `last_id`, oldest first (the replay order)."""
        return [
            StoredMessage._make(row)
            for row in self._db.execute(
                "SELECT id, cls, topic, payload, qos, retain FROM outbox WHERE id > ? "
                "ORDER BY id LIMIT ?",
                (last_id, limit),
            )
        ]

    def seqs(self) -> dict[str, int]:
        """The last event seq stored per plugin."""
        return dict(self._db.execute("SELECT plugin, value FROM seq").fetchall())

    # -- maintenance ----------------------------------------------------------------------------

    def compact(self) -> None:
        """Give freed pages back to the file system and truncate the WAL."""
        try:
            self._db.execute("PRAGMA incremental_vacuum")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise self.failures.failed("compaction", exc) from exc

    # -- write failures -------------------------------------------------------------------------

    @property
    def errors(self) -> int:
        """Writes that failed with an SQLite error since the start."""
        return self.failures.errors

    @property
    def last_error(self) -> str:
        """Why writes are failing (the latest error); empty while they succeed."""
        return self.failures.last_error

    @property
    def failing_since(self) -> float | None:
        """Wall-clock time the current failure episode started (None: writes succeed)."""
        return self.failures.failing_since

    def retry_due(self) -> bool:
        """False while writes fail and the back-off since the last failure has not passed yet."""
        return self.failures.retry_due()

    def retry_now(self) -> None:
        """Let the next write be tried at once (the last chance at shutdown)."""
        self.failures.retry_now()

    def _counts_snapshot(self) -> _Counts:
        return (self._rows[:], self._bytes[:], self.telemetry_dropped, self.refused, self.full)

    def _restore_counts(self, saved: _Counts) -> None:
        self._rows, self._bytes, self.telemetry_dropped, self.refused, self.full = saved

    def close(self) -> None:
        """Checkpoint and close the database, release the state_dir lock."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()
        os.close(self._lock_fd)
