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

Corruption (a malformed page, a broken index): checked with `PRAGMA quick_check` at open and
on the first malformed error of a write or read; a corrupt store is moved aside as
`outbox.db.corrupt-<time>`, a fresh one opened with the seqs and the row-id floor carried over
(see outbox_recovery), the write retried once, and the loss recorded in `losses` for the event
persister to report. Every other SQLite error is an OutboxError.

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
from pathlib import Path

from agent.sync.outbox_failures import FailureView, WriteFailures
from agent.sync.outbox_file import (
    OutboxCorrupt,
    OutboxError,
    OutboxInUse,
    check,
    is_corrupt,
    lock_state,
    open_db,
)
from agent.sync.outbox_recovery import SeqCeiling, StoreLoss, replace_store
from agent.sync.outbox_rows import ROW_OVERHEAD, Message, MessageClass, StoredMessage

__all__ = ["ROW_OVERHEAD", "Message", "MessageClass", "Outbox", "OutboxError", "OutboxInUse"]
__all__ += ["StoreLoss", "StoredMessage"]

_CHUNK = 500  # ids per DELETE statement, well under SQLite's parameter limit
_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


_Counts = tuple[list[int], list[int], int, int, bool]
"""Rows and bytes per class, telemetry dropped, refused, full: restored when a write fails."""


class Outbox(FailureView):
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
        self.losses: list[StoreLoss] = []
        """Corrupt stores replaced and not reported yet (`take_losses`)."""
        self.stores_lost = 0
        self.rows_lost = 0
        """Corrupt stores replaced, and the messages that went with them, since the start."""
        self._seqs: dict[str, int] = {}  # as last committed: carried into a replacement store
        self._last_id = 0  # highest row id read: a replacement store's ids start above it
        self._checked = False  # quick_check ran after a malformed error; reset by a success
        self._lock_fd = lock_state(path)
        try:
            try:
                self._db = open_db(path)
            except OutboxCorrupt as exc:
                self._db = self._replace(str(exc), rows_known=None)
            try:
                self._load_totals()
                self._seqs = dict(self._db.execute("SELECT plugin, value FROM seq").fetchall())
                self._ceiling = SeqCeiling(path, self._seqs)
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
        if seqs:
            self._ceiling.cover(seqs)
        for attempt in (1, 2):
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
                break
            except sqlite3.Error as exc:
                self._restore_counts(saved)  # the rollback undid what the transaction counted
                if attempt == 2 or not self._recovered(exc):
                    raise self.failures.failed("write", exc) from exc
                acked = ()  # ids of the store moved aside
        if seqs:
            self._seqs.update(seqs)
        self.version += 1
        if n or deleted:
            self._ok()
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
            if self._recovered(exc):
                return 0  # the rows went with the store moved aside
            raise self.failures.failed("delete", exc) from exc
        if deleted:
            self._ok()
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
        try:
            rows = [
                StoredMessage._make(row)
                for row in self._db.execute(
                    "SELECT id, cls, topic, payload, qos, retain FROM outbox WHERE id > ? "
                    "ORDER BY id LIMIT ?",
                    (last_id, limit),
                )
            ]
        except sqlite3.Error as exc:
            if self._recovered(exc):
                return []
            raise self.failures.failed("read", exc) from exc
        if rows:
            self._last_id = max(self._last_id, rows[-1].id)
        return rows

    def seqs(self) -> dict[str, int]:
        """The last event seq stored per plugin."""
        return dict(self._seqs)

    def take_losses(self) -> list[StoreLoss]:
        """The corrupt stores replaced since the last call (to be reported once)."""
        out, self.losses = self.losses, []
        return out

    # -- corruption -----------------------------------------------------------------------------

    def _recovered(self, exc: sqlite3.Error) -> bool:
        """After a malformed error: check the store once; True if it was corrupt and replaced."""
        if not is_corrupt(exc) or self._checked:
            return False
        self._checked = True
        try:
            problem = check(self._db)
        except sqlite3.Error:
            return False  # not corruption (I/O, full): a plain failure episode
        if not problem:
            return False
        rows = self.depth
        self._db.close()
        self._db = self._replace(problem, rows_known=rows)
        self._rows, self._bytes, self.full = [0, 0, 0], [0, 0, 0], False
        self.version += 1
        return True

    def _replace(self, reason: str, *, rows_known: int | None) -> sqlite3.Connection:
        db, loss = replace_store(self.path, reason, self._seqs, self._last_id, rows_known)
        self._seqs = dict(loss.seqs)
        self.losses.append(loss)
        self.stores_lost += 1
        self.rows_lost += loss.rows_lost
        return db

    def _ok(self) -> None:
        self._checked = False
        self.failures.ok()

    # -- maintenance ----------------------------------------------------------------------------

    def compact(self) -> None:
        """Give freed pages back to the file system and truncate the WAL."""
        self._ceiling.save(self._seqs)
        try:
            self._db.execute("PRAGMA incremental_vacuum")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            if not self._recovered(exc):
                raise self.failures.failed("compaction", exc) from exc

    def _counts_snapshot(self) -> _Counts:
        return (self._rows[:], self._bytes[:], self.telemetry_dropped, self.refused, self.full)

    def _restore_counts(self, saved: _Counts) -> None:
        self._rows, self._bytes, self.telemetry_dropped, self.refused, self.full = saved

    def close(self) -> None:
        """Checkpoint and close the database, release the state_dir lock."""
        self._ceiling.close(self._seqs)
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()
        os.close(self._lock_fd)
