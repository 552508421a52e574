"""A corrupt outbox (issue 13, defect 2): moved aside, replaced, the loss reported, seqs continued.

The attacks: the root page of the `seq` table overwritten (the agent used to exit 1 at every
start with `database disk image is malformed`), and the `seq` index broken (every write failed
and was retried as a full disk, forever).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.sync.outbox import Message, MessageClass, Outbox
from agent.sync.outbox_recovery import seq_file

Until = Callable[..., bool]


def smash_page(db_path: Path, name: str) -> None:
    """Overwrite the root page of table or index `name` with junk, as a bad sector would."""
    db = sqlite3.connect(db_path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()
    finally:
        db.close()
    assert root, name
    with db_path.open("r+b") as f:
        f.seek((root[0] - 1) * page_size)
        f.write(bytes([0xA5, 0x13, 0x07, 0xFF]) * (page_size // 4))


def event(plugin: str, seq: int) -> Message:
    topic = f"edge/d/events/{plugin}"
    return Message(MessageClass.EVENT, topic, json.dumps({"seq": seq}).encode())


def test_a_smashed_seq_table_is_moved_aside_and_seqs_continue(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    ob = Outbox(path, max_bytes=1 << 20)
    ob.add([event("gen", 1), event("gen", 2)], seqs={"gen": 2})
    ob.close()
    seq_file(path).unlink()  # only the rows themselves can tell the seqs now
    smash_page(path, "seq")
    ob = Outbox(path, max_bytes=1 << 20)
    assert ob.seqs() == {"gen": 2}  # read back from the stored event payloads
    assert ob.stores_lost == 1 and ob.rows_lost == 2
    [loss] = ob.take_losses()
    assert loss.aside.name.startswith("outbox.db.corrupt-") and loss.aside.exists()
    assert ob.take_losses() == []  # reported once
    ob.add([event("gen", 3)], seqs={"gen": 3})
    assert [r.payload for r in ob.after(0, 10)] == [b'{"seq": 3}']
    ob.close()


def test_the_side_file_keeps_seqs_when_every_row_was_delivered(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    ob = Outbox(path, max_bytes=1 << 20)
    ob.add([event("gen", 41)], seqs={"gen": 41})
    ob.ack([r.id for r in ob.after(0, 10)])
    ob.close()
    smash_page(path, "seq")
    ob = Outbox(path, max_bytes=1 << 20)
    assert ob.seqs() == {"gen": 41} and ob.rows_lost == 0
    ob.close()


def test_a_broken_index_found_while_running_replaces_the_store_and_the_write_succeeds(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    ob = Outbox(path, max_bytes=1 << 20)
    ob.add([event("gen", 1)], seqs={"gen": 1})
    sent = ob.after(0, 10)
    ob.compact()  # checkpointed: the file holds every page
    smash_page(path, "sqlite_autoindex_seq_1")
    ob._db.execute("PRAGMA shrink_memory")  # drop the page cache, as a long run would
    assert ob.add([event("gen", 2)], seqs={"gen": 2}) == 1
    assert ob.stores_lost == 1 and ob.errors == 0
    assert ob.seqs() == {"gen": 2}
    rows = ob.after(0, 10)
    assert [r.payload for r in rows] == [b'{"seq": 2}']
    assert rows[0].id > sent[-1].id  # the sender's cursor never skips a new row
    ob.close()
    assert Outbox(path, max_bytes=1 << 20).seqs() == {"gen": 2}


def test_a_store_that_is_not_a_database_counts_as_lost(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(b"not sqlite" * 500)
    ob = Outbox(path, max_bytes=1 << 20)
    assert ob.stores_lost == 1 and ob.depth == 0
    ob.close()


def test_an_agent_whose_seq_table_was_smashed_starts_reports_and_continues(
    broker: Any,
    make_config: Any,
    start_service: Any,
    probe_factory: Any,
) -> None:
    from tests.support.sync import FakeEngine

    cfg = make_config(broker)
    base = f"edge/{cfg.device.id}"
    probe = probe_factory(broker)
    probe.subscribe(f"{base}/events/+")
    svc, eng = start_service(cfg)
    eng.produce(30, 1000.0).join()
    assert probe.wait_for(lambda: probe.count(f"{base}/events/gen") >= 30)
    svc.stop(2.0)
    eng.close()
    smash_page(cfg.state_dir / "outbox.db", "seq")

    svc2, eng2 = start_service(cfg, FakeEngine())  # used to raise DatabaseError here
    lost = probe.wait_payload(f"{base}/events/agent", lambda p: p["kind"] == "outbox_lost")
    assert lost["data"]["rows_lost"] == 0 and "corrupt" in lost["data"]["moved_to"]
    eng2.produce(5, 1000.0).join()
    assert probe.wait_for(lambda: probe.count(f"{base}/events/gen") >= 35)
    seqs = sorted(p["seq"] for p in probe.payloads(f"{base}/events/gen"))
    assert seqs == list(range(1, 36))
    assert svc2.documents.counters()["outbox_stores_lost"] == 1
