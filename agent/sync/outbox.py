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

Ordering: ids come from AUTOINCREMENT, so they never repeat even after the table empties, and
replay is `ORDER BY id`. The per-plugin event sequence numbers live in the same file and are
written in the same transaction as the events that use them.

One connection, used by one thread (the sync thread), after the constructor.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from enum import IntEnum
from pathlib import Path
from typing import NamedTuple

from agent.errors import EdgeAgentError

log = logging.getLogger(__name__)

ROW_OVERHEAD = 32
"""Bytes counted per row on top of payload and topic (id, class, flags, index entry)."""
SCHEMA_VERSION = 1
_CHUNK = 500  # ids per DELETE statement, well under SQLite's parameter limit
_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


class OutboxError(EdgeAgentError):
    """The outbox cannot be opened or written (state_dir missing, read-only, full, locked)."""


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


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cls INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    size INTEGER NOT NULL
);
-- Partial: only telemetry (the class dropped oldest first) pays for an index.
CREATE INDEX IF NOT EXISTS outbox_telemetry ON outbox (id) WHERE cls = 0;
CREATE TABLE IF NOT EXISTS seq (plugin TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Outbox:
    """SQLite-backed, size-bounded, ordered store of outgoing QoS 1 messages."""

    def __init__(self, path: Path, *, max_bytes: int, telemetry_share: float = 0.5) -> None:
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
        self._lock_fd = _lock_state(path)
        try:
            self._db = _open(path)
            self._load_totals()
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
        SQLite error nothing changes and OutboxError is raised.
        """
        try:
            with self._db:
                self._ack_in_txn(acked)
                n = self._add_in_txn(messages)
                self.version += 1
                if seqs:
                    self._db.executemany(
                        "INSERT INTO seq (plugin, value) VALUES (?, ?) "
                        "ON CONFLICT (plugin) DO UPDATE SET value = excluded.value",
                        seqs.items(),
                    )
        except sqlite3.Error as exc:
            self._load_totals()  # the rollback undid whatever the transaction counted
            raise OutboxError(f"outbox write failed ({self.path}): {exc}") from exc
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
        try:
            with self._db:
                return self._ack_in_txn(id_list)
        except sqlite3.Error as exc:
            self._load_totals()
            raise OutboxError(f"outbox delete failed ({self.path}): {exc}") from exc

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
            raise OutboxError(f"outbox compaction failed ({self.path}): {exc}") from exc

    def close(self) -> None:
        """Checkpoint and close the database, release the state_dir lock."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()
        os.close(self._lock_fd)


def _lock_state(path: Path) -> int:
    """Take an exclusive lock next to the database: two agents on one state_dir would corrupt it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise OutboxError(f"cannot create the outbox in {path.parent}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise OutboxError(
            f"{path} is in use by another agent: give each agent its own state_dir"
        ) from None
    return fd


def _open(path: Path) -> sqlite3.Connection:
    """Open (creating) the database; a file that is not a database is moved aside, not fatal."""
    try:
        return _connect(path)
    except sqlite3.DatabaseError as exc:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        log.error("outbox %s unreadable (%s): moved to %s, starting empty", path, exc, aside)
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{path}{suffix}")
            if src.exists():
                src.rename(Path(f"{aside}{suffix}"))
        try:
            return _connect(path)
        except sqlite3.Error as exc2:
            raise OutboxError(f"cannot create the outbox {path}: {exc2}") from exc2


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions only where `with db:` opens one explicitly below.
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only effective on a new, empty file
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("SELECT COUNT(*) FROM outbox").fetchone()
    except sqlite3.Error:
        db.close()
        raise
    # Back to the default mode so `with db:` wraps each batch in one transaction.
    db.isolation_level = "DEFERRED"
    return db
