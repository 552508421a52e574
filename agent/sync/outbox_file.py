"""The outbox file: the state_dir lock, the schema, and the corruption check."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from pathlib import Path

from agent.errors import EdgeAgentError

SCHEMA_VERSION = 1
LOW_SPACE_BYTES = 1 << 20
"""Below this much free space in state_dir an error message says the directory is full."""
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


class OutboxError(EdgeAgentError):
    """The outbox cannot be opened or written (state_dir missing, read-only, full, locked)."""


class OutboxInUse(OutboxError):
    """Another agent holds the state_dir: a configuration mistake, never retried."""


class OutboxCorrupt(OutboxError):
    """The file is not a database or is malformed: it is moved aside, never retried in place."""


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


def lock_state(path: Path) -> int:
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
        raise OutboxInUse(
            f"{path} is in use by another agent: give each agent its own state_dir"
        ) from None
    return fd


def open_db(path: Path) -> sqlite3.Connection:
    """Open (creating) the database; OutboxCorrupt if the file is not one or is malformed.

    Any other failure (disk full, I/O error, permissions) raises plain OutboxError and leaves
    the file where it is: it is readable again once the cause is fixed, and replayed then.
    """
    try:
        db = _connect(path)
    except sqlite3.DatabaseError as exc:
        if is_corrupt(exc):
            raise OutboxCorrupt(f"{exc}") from exc
        raise OutboxError(f"cannot open the outbox {path}: {exc}{space_note(path.parent)}") from exc
    problem = check(db)
    if problem:
        db.close()
        raise OutboxCorrupt(problem)
    return db


def check(db: sqlite3.Connection) -> str:
    """'' when `PRAGMA quick_check` and a read of every table pass, else what is wrong.

    quick_check walks every page of every table and index (milliseconds for a few MB); the
    reads catch what it may miss. Errors other than corruption (I/O, locked) raise.
    """
    try:
        found = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
        if found != ["ok"]:
            return "; ".join(str(f) for f in found)
        db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
        db.execute("SELECT plugin, value FROM seq").fetchall()
    except sqlite3.DatabaseError as exc:
        if is_corrupt(exc):
            return str(exc)
        raise
    return ""


def is_corrupt(exc: sqlite3.Error) -> bool:
    """True when SQLite says the file is not a database or is malformed (not full, not I/O)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    # Older Pythons: both map to DatabaseError itself; full, I/O, locked are OperationalError.
    return type(exc) is sqlite3.DatabaseError


def move_aside(path: Path) -> Path:
    """Rename the database and its WAL files to `<name>.corrupt-<unix time>`; the new name."""
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    n = 1
    while aside.exists():  # two recoveries within one second keep both files
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}-{n}")
        n += 1
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            src.rename(Path(f"{aside}{suffix}"))
    return aside


def space_note(folder: Path) -> str:
    """'; state_dir X is full (N bytes free)' when it nearly is, else ''."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return ""
    free = st.f_bavail * st.f_frsize
    if free >= LOW_SPACE_BYTES:
        return ""
    return f"; state_dir {folder} is full ({free} bytes free)"


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions only where `with db:` opens one explicitly below.
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only effective on a new, empty file
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(_SCHEMA)
        # Written only when it differs: an open that writes nothing works on a full disk too.
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("SELECT COUNT(*) FROM outbox").fetchone()
    except sqlite3.Error:
        db.close()
        raise
    # Back to the default mode so `with db:` wraps each batch in one transaction.
    db.isolation_level = "DEFERRED"
    return db
