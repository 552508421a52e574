"""What a corrupt outbox leaves behind: the loss, the seqs salvaged, and the seq side file.

A malformed `outbox.db` is moved aside and a fresh one opened (see `Outbox`); before that, what
can still be read from the old file is read row by row, each read allowed to fail: the `seq`
table, the seqs inside stored event payloads, the highest row id. The side file
`outbox.seq.json`, rewritten at every compaction and on close, holds the seqs last known
outside the database, so numbering continues above them even when the `seq` table itself is
what broke and every event row was already delivered and deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.sync.outbox_file import OutboxError, move_aside, open_db

log = logging.getLogger(__name__)

SEQ_FILE_SUFFIX = ".seq.json"


@dataclass(frozen=True, slots=True)
class StoreLoss:
    """One outbox store found corrupt and replaced: where it went, why, what was lost."""

    aside: Path
    reason: str
    rows_lost: int
    """Stored messages that went with it (as counted, or as many as could still be read)."""
    seqs: dict[str, int] = field(default_factory=dict)
    """The per-plugin seqs the new store continues from."""


@dataclass(slots=True)
class Salvage:
    """What could still be read from a corrupt store."""

    seqs: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    last_id: int = 0


def seq_file(db_path: Path) -> Path:
    """The side file holding the last known seqs next to `db_path`."""
    return db_path.with_name(db_path.name + SEQ_FILE_SUFFIX)


def write_seq_file(db_path: Path, seqs: Mapping[str, int]) -> None:
    """Replace the side file atomically (errors ignored: the database stays the real record)."""
    target = seq_file(db_path)
    tmp = target.with_name(target.name + ".tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(dict(seqs), sort_keys=True))
        os.replace(tmp, target)


def read_seq_file(db_path: Path) -> dict[str, int]:
    """The seqs of the side file; {} when it is missing or unreadable."""
    try:
        data = json.loads(seq_file(db_path).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, int) and not isinstance(v, bool)}


SEQ_RESERVE = 1024
"""How far ahead of the seqs issued the side file is kept (one small file write per this many
events of a plugin)."""


class SeqCeiling:
    """The side file kept above every seq issued, written before a seq passes it.

    The `seq` table is the record, and the side file is only read when that table is lost. A side
    file written only at compaction would lag by every event since: after a kill -9 and a lost
    table, the agent would number from that old value again and reuse seqs its consumers have
    seen (and drop as duplicates). Kept ahead, it can only cause a gap of up to SEQ_RESERVE.
    """

    def __init__(self, db_path: Path, seqs: Mapping[str, int]) -> None:
        self._path = db_path
        self._ceiling = highest(read_seq_file(db_path), seqs)

    def cover(self, seqs: Mapping[str, int]) -> None:
        """Raise the ceiling (and write it) before any of `seqs` would pass it."""
        ceiling = self._ceiling
        if any(value > ceiling.get(plugin, 0) for plugin, value in seqs.items()):
            ahead = {plugin: value + SEQ_RESERVE for plugin, value in seqs.items()}
            self._ceiling = highest(ceiling, ahead)
            write_seq_file(self._path, self._ceiling)

    def save(self, seqs: Mapping[str, int]) -> None:
        """Write the ceiling (at compaction), never below `seqs`."""
        self._ceiling = highest(self._ceiling, seqs)
        write_seq_file(self._path, self._ceiling)

    def close(self, seqs: Mapping[str, int]) -> None:
        """Write the exact `seqs` (the last ones issued: a store closed cleanly issues no more),
        so a table lost at rest costs no gap."""
        self._ceiling = dict(seqs)
        write_seq_file(self._path, self._ceiling)


def highest(*sources: Mapping[str, int]) -> dict[str, int]:
    """Per plugin, the highest seq any source knows."""
    out: dict[str, int] = {}
    for src in sources:
        for plugin, value in src.items():
            if value > out.get(plugin, 0):
                out[plugin] = value
    return out


def salvage(path: Path) -> Salvage:
    """Read what can still be read from the corrupt store at `path` (never raises)."""
    found = Salvage()
    try:
        db = sqlite3.connect(path)
    except sqlite3.Error:
        return found
    try:
        table = {
            str(plugin): value
            for plugin, value in _rows(db, "SELECT plugin, value FROM seq")
            if isinstance(value, int)
        }
        found.seqs = highest(table, _event_seqs(db))
        for (count,) in _rows(db, "SELECT COUNT(*) FROM outbox"):
            found.rows = count if isinstance(count, int) else 0
        for (last,) in _rows(db, "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'"):
            found.last_id = last if isinstance(last, int) else 0
    finally:
        db.close()
    return found


def _event_seqs(db: sqlite3.Connection) -> dict[str, int]:
    seqs: dict[str, int] = {}
    for topic, payload in _rows(db, "SELECT topic, payload FROM outbox WHERE cls = 1"):
        if not isinstance(payload, bytes | str):
            continue
        try:
            seq = json.loads(payload).get("seq")
        except (ValueError, AttributeError, TypeError):
            continue
        plugin = str(topic).rpartition("/")[2]
        if isinstance(seq, int) and seq > seqs.get(plugin, 0):
            seqs[plugin] = seq
    return seqs


def _rows(db: sqlite3.Connection, sql: str) -> list[tuple[Any, ...]]:
    """The rows a query yields until the file's damage stops it."""
    out: list[tuple[Any, ...]] = []
    try:
        for row in db.execute(sql):
            out.append(tuple(row))
    except (sqlite3.Error, ValueError, OverflowError):
        pass
    return out


def replace_store(
    path: Path,
    reason: str,
    known_seqs: Mapping[str, int],
    last_id: int,
    rows_known: int | None,
) -> tuple[sqlite3.Connection, StoreLoss]:
    """Move the corrupt store at `path` aside; a fresh one continuing its seqs and row ids.

    `known_seqs` and `last_id` are what the running process knows (nothing at start-up); the
    salvage and the side file add what the old file still tells. OutboxError if no new store
    can be made.
    """
    try:
        aside = move_aside(path)
    except OSError as exc:
        raise OutboxError(f"cannot move the corrupt outbox {path} aside: {exc}") from exc
    found = salvage(aside)
    seqs = highest(found.seqs, read_seq_file(path), known_seqs)
    rows = found.rows if rows_known is None else rows_known
    db = open_db(path)
    try:
        with db:
            db.executemany("INSERT INTO seq (plugin, value) VALUES (?, ?)", seqs.items())
            floor = max(found.last_id, last_id)
            if floor:
                db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)", (floor,))
    except sqlite3.Error as exc:
        db.close()
        raise OutboxError(f"cannot create the outbox {path}: {exc}") from exc
    log.error(
        "outbox %s corrupt (%s): moved to %s with %d messages, continuing in a new one",
        path,
        reason,
        aside,
        rows,
    )
    return db, StoreLoss(aside, reason, rows, seqs)
