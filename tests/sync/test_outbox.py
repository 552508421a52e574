"""The SQLite outbox on its own: order, durability across reopen, the bound and its policy,
and what happens while writes fail (reporting, back-off, the event backlog)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.plugin.channel import OutputChannel
from agent.sync.events import EventPersister
from agent.sync.outbox import ROW_OVERHEAD, Message, MessageClass, Outbox, OutboxError

TOPIC = "edge/d/events/p"


def event(i: int, size: int = 100) -> Message:
    return Message(MessageClass.EVENT, TOPIC, str(i).encode().ljust(size, b" "))


def telemetry(i: int, size: int = 100) -> Message:
    return Message(MessageClass.TELEMETRY, "edge/d/telemetry/p", str(i).encode().ljust(size, b" "))


def ids_payloads(ob: Outbox) -> list[int]:
    return [int(m.payload) for m in ob.after(0, 1_000_000)]


def test_rows_come_back_in_insert_order_and_ack_deletes(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_bytes=1 << 20)
    assert ob.add([event(i) for i in range(10)]) == 10
    rows = ob.after(0, 100)
    assert [int(r.payload) for r in rows] == list(range(10))
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    assert ob.after(rows[4].id, 100)[0].id == rows[5].id
    assert ob.ack([r.id for r in rows[:4]]) == 4
    assert ob.ack([rows[0].id]) == 0  # unknown ids are ignored
    assert ids_payloads(ob) == list(range(4, 10))
    assert ob.depth == 6
    assert ob.total_bytes == 6 * (100 + len(TOPIC) + ROW_OVERHEAD)
    ob.close()


def test_messages_and_seqs_survive_reopen_and_ids_never_repeat(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = Outbox(path, max_bytes=1 << 20)
    ob.add([event(i) for i in range(5)], seqs={"p": 5, "q": 2})
    last = ob.after(0, 10)[-1].id
    ob.ack([r.id for r in ob.after(0, 10)])  # empty again
    ob.add([event(99)])
    ob.close()
    again = Outbox(path, max_bytes=1 << 20)
    rows = again.after(0, 10)
    assert [int(r.payload) for r in rows] == [99]
    assert rows[0].id > last  # AUTOINCREMENT: a replay cursor is never fooled by reuse
    assert again.seqs() == {"p": 5, "q": 2}
    assert again.depth == 1
    again.close()


def test_telemetry_over_its_share_drops_oldest_and_counts(tmp_path: Path) -> None:
    row = 1000 + len("edge/d/telemetry/p") + ROW_OVERHEAD
    ob = Outbox(tmp_path / "o.db", max_bytes=64 * 1024, telemetry_share=0.25)
    cap_rows = (64 * 1024 // 4) // row
    ob.add([telemetry(i, 1000) for i in range(cap_rows + 5)])
    kept = ids_payloads(ob)
    assert kept == list(range(5, cap_rows + 5))
    assert ob.telemetry_dropped == 5
    assert ob.counts()["telemetry_bytes"] <= ob.telemetry_cap


def test_events_are_never_dropped_and_the_bound_is_reported(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_bytes=64 * 1024, telemetry_share=0.5)
    ob.add([telemetry(i, 1000) for i in range(20)])
    size = event(0, 1000).size
    n = 64 * 1024 // size + 10
    stored = ob.add([event(i, 1000) for i in range(n)])
    assert stored < n
    assert ob.full
    assert ob.refused == n - stored
    # Telemetry made room first: all of it went before any event was refused.
    assert ob.counts()["telemetry_rows"] == 0
    assert ob.telemetry_dropped == 20
    assert ids_payloads(ob) == list(range(stored))
    # Room again after acks: the caller's kept events are accepted, and `full` clears.
    ob.ack([r.id for r in ob.after(0, 5)])
    assert ob.add([event(stored, 1000)]) == 1
    assert not ob.full


def test_a_second_agent_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_bytes=1 << 20)
    with pytest.raises(OutboxError, match="in use by another agent"):
        Outbox(tmp_path / "o.db", max_bytes=1 << 20)
    ob.close()
    Outbox(tmp_path / "o.db", max_bytes=1 << 20).close()


def test_a_corrupt_file_is_moved_aside_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not an sqlite database" * 100)
    ob = Outbox(path, max_bytes=1 << 20)
    assert ob.depth == 0
    ob.add([event(1)])
    assert ids_payloads(ob) == [1]
    assert any(p.name.startswith("o.db.corrupt-") for p in tmp_path.iterdir())
    ob.close()


def test_an_unwritable_state_dir_names_the_folder(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    with _read_only(ro), pytest.raises(OutboxError, match=str(ro)):
        Outbox(ro / "o.db", max_bytes=1 << 20)


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """Make `folder` unwritable: by permissions for a user; root ignores those, so for root a
    read-only tmpfs is mounted over it (a real EROFS, as on a board whose card went read-only)."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o700)
        return
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"root without CAP_SYS_ADMIN cannot mount a read-only tmpfs: {done.stderr}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_write_failure_raises_outbox_error_and_keeps_counts(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_bytes=1 << 20)
    ob.add([event(1)])
    # Simulate a failing disk: the table goes read-only for this connection.
    ob._db.execute("PRAGMA query_only = ON")
    with pytest.raises(OutboxError, match="outbox write failed"):
        ob.add([event(2)], seqs={"p": 2})
    assert ob.depth == 1
    ob._db.execute("PRAGMA query_only = OFF")
    assert ob.add([event(2)]) == 1
    assert ids_payloads(ob) == [1, 2]


def test_wal_and_normal_sync_are_in_force(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_bytes=1 << 20)
    assert ob._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ob._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    ob.add([event(i) for i in range(100)])
    ob.ack([r.id for r in ob.after(0, 100)])
    ob.compact()
    # Another process may read the file while the agent runs (WAL).
    other = sqlite3.connect(tmp_path / "o.db")
    assert other.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
    other.close()
    ob.close()


def test_acks_and_new_rows_share_one_transaction(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_bytes=1 << 20)
    ob.add([event(i) for i in range(3)])
    first = [r.id for r in ob.after(0, 10)]
    assert ob.add([event(3), event(4)], seqs={"p": 5}, acked=first[:2]) == 2
    assert ids_payloads(ob) == [2, 3, 4]
    assert ob.depth == 3 and ob.seqs() == {"p": 5}
    # A failing transaction changes nothing: neither the acks nor the rows.
    ob._db.execute("PRAGMA query_only = ON")
    with pytest.raises(OutboxError):
        ob.add([event(5)], acked=[first[2]])
    ob._db.execute("PRAGMA query_only = OFF")
    assert ids_payloads(ob) == [2, 3, 4] and ob.depth == 3


# -- write failures: reported, backed off, logged once per episode --------------------------------


class Clock:
    """Monotonic time moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def failing(ob: Outbox, on: bool = True) -> None:
    """Make every write of `ob` fail (or work again), as a full disk does."""
    ob._db.execute(f"PRAGMA query_only = {'ON' if on else 'OFF'}")


def outbox_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name.startswith("agent.sync.outbox")
    ]


def test_a_write_failure_episode_is_reported_backed_off_and_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    ob = Outbox(tmp_path / "o.db", max_bytes=1 << 20, clock=clock)
    assert ob.retry_due() and not ob.last_error and ob.failing_since is None
    failing(ob)
    with pytest.raises(OutboxError, match="outbox write failed"):
        ob.add([event(1)])
    assert ob.errors == 1 and "readonly" in ob.last_error and ob.failing_since is not None
    # Back-off: 50 ms, doubling, capped at 1 s; a retry before it is due is the caller's to skip.
    for wait in (0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0):
        failed_at = clock.now
        clock.now = failed_at + wait - 0.001
        assert not ob.retry_due()
        clock.now = failed_at + wait
        assert ob.retry_due()
        with pytest.raises(OutboxError):
            ob.add([event(1)])
    assert ob.errors == 9
    # One error line for the nine failures; a reminder once a minute has passed.
    assert [lvl for lvl, _ in outbox_lines(caplog)] == [logging.ERROR]
    clock.now += 60.0
    with pytest.raises(OutboxError):
        ob.add([event(1)])
    lines = outbox_lines(caplog)
    assert (
        len(lines) == 2 and "still failing after 6" in lines[1][1] and "(10 failed" in lines[1][1]
    )
    # Writes work again: one line, the state clears, the back-off resets.
    failing(ob, False)
    assert ob.add([event(1)]) == 1
    lines = outbox_lines(caplog)
    assert lines[-1][0] == logging.WARNING and "writable again after" in lines[-1][1]
    assert "(10 failed writes)" in lines[-1][1]
    assert not ob.last_error and ob.failing_since is None and ob.retry_due()
    assert ob.errors == 10 and ids_payloads(ob) == [1]


def test_flapping_failures_share_one_log_line_per_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    ob = Outbox(tmp_path / "o.db", max_bytes=1 << 20, clock=clock)
    for i in range(20):  # fail, recover, fail, ... every 100 ms
        failing(ob)
        with pytest.raises(OutboxError):
            ob.add([event(i)])
        failing(ob, False)
        clock.now += 0.1
        ob.add([event(i)])
    assert ob.errors == 20
    assert [lvl for lvl, _ in outbox_lines(caplog)] == [logging.ERROR, logging.WARNING]
    clock.now += 60.0
    failing(ob)
    with pytest.raises(OutboxError):
        ob.add([event(99)])
    assert len(outbox_lines(caplog)) == 3


def test_a_failed_write_restores_every_count(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_bytes=64 * 1024, telemetry_share=0.5)
    ob.add([telemetry(i, 1000) for i in range(20)])
    before = (ob.counts(), ob.depth, ob.telemetry_dropped, ob.refused, ob.full, ob.version)
    failing(ob)
    # This batch would drop telemetry and refuse events: all of it is undone with the rollback.
    with pytest.raises(OutboxError):
        ob.add([event(i, 1000) for i in range(80)])
    # (Re-reading the totals instead left the events of the failed batch counted as stored.)
    assert (ob.counts(), ob.depth, ob.telemetry_dropped, ob.refused, ob.full, ob.version) == before
    with pytest.raises(OutboxError):
        ob.add([event(0)], acked=[r.id for r in ob.after(0, 3)])
    with pytest.raises(OutboxError, match="outbox delete failed"):
        ob.ack([r.id for r in ob.after(0, 3)])
    assert (ob.counts(), ob.depth, ob.telemetry_dropped, ob.refused, ob.full, ob.version) == before
    with pytest.raises(OutboxError, match="outbox compaction failed"):
        ob.compact()
    assert ob.errors == 4


def test_an_outbox_that_cannot_be_opened_is_left_in_place(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = Outbox(path, max_bytes=1 << 20)
    ob.add([event(1)], seqs={"p": 1})
    ob.close()
    # The WAL index cannot be created (as on a full disk): an I/O-class error, not corruption.
    (tmp_path / "o.db-shm").mkdir()
    with pytest.raises(OutboxError, match=f"cannot open the outbox {path}"):
        Outbox(path, max_bytes=1 << 20)
    assert not any(p.name.startswith("o.db.corrupt") for p in tmp_path.iterdir())
    (tmp_path / "o.db-shm").rmdir()
    again = Outbox(path, max_bytes=1 << 20)
    assert ids_payloads(again) == [1] and again.seqs() == {"p": 1}
    again.close()


# -- events while writes fail ---------------------------------------------------------------------


def test_events_wait_in_the_backlog_and_failed_acks_are_retried(tmp_path: Path) -> None:
    clock = Clock()
    ob = Outbox(tmp_path / "o.db", max_bytes=1 << 20, clock=clock)
    ch = OutputChannel("p", ("x",), events=64)
    ev = EventPersister(ob, lambda plugin: f"edge/d/events/{plugin}", backlog_max=10)
    for i in range(5):
        ch.event(i, "k", n=i)
    assert ev.collect([ch]) == 5
    delivered = [r.id for r in ob.after(0, 10)]
    failing(ob)
    for i in range(5, 30):
        ch.event(i, "k", n=i)
    assert ev.collect([ch], acked=delivered) == 0
    assert ob.errors == 1 and ev.backlog == 25 and ev.unacked == 5
    # Before the back-off has passed nothing is tried (no serializing, no error counted).
    for _ in range(100):
        assert ev.collect([ch]) == 0
    assert ob.errors == 1
    # The backlog stops draining the ring at its bound; the ring's own overflow is counted.
    for i in range(30, 100):
        ch.event(i, "k", n=i)
    clock.now += 1.0
    assert ev.collect([ch]) == 0 and ob.errors == 2
    assert ev.backlog == 25 and ch.events_dropped == 100 - 30 - 64
    failing(ob, False)
    clock.now += 1.0
    stored = 0
    while ev.backlog or ch.pending[1]:
        stored += ev.collect([ch])
    assert ev.unacked == 0 and not ob.last_error
    rows = ob.after(0, 1000)
    assert stored == len(rows) == 100 - ch.events_dropped - 5  # the delivered five are deleted
    seqs = [json.loads(r.payload)["seq"] for r in rows]
    assert seqs == list(range(6, 6 + len(rows)))
