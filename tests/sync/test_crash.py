"""kill -9 of an agent process: the last will says offline, and nothing that reached the outbox is
lost (replayed after restart, seq numbering continues)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config.sections import AgentConfig
from tests.support.paths import child_env

Until = Callable[..., bool]


class AgentProcess:
    """An agent subprocess (SyncService + FakeEngine) run as `python -m tests.support.sync`."""

    def __init__(self, config: AgentConfig, tmp: Path, *, events: int = 0, rate: float = 1000):
        cfg_file = tmp / f"agent-{time.monotonic_ns()}.json"
        cfg_file.write_text(config.model_dump_json())
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.sync",
                str(cfg_file),
                "--events",
                str(events),
                "--rate",
                str(rate),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "READY", line + (self.proc.stderr.read() if self.proc.stderr else "")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    made: list[AgentProcess] = []

    def make(config: AgentConfig, **kw: Any) -> AgentProcess:
        p = AgentProcess(config, tmp_path, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.terminate()


def stored_seq(state_dir: Path) -> int:
    """The last event seq committed to the outbox file (read by another process, WAL)."""
    db = sqlite3.connect(f"file:{state_dir / 'outbox.db'}?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute("SELECT value FROM seq WHERE plugin = 'gen'").fetchone()
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()
    return int(row[0]) if row else 0


def stored_rows(state_dir: Path) -> int:
    """Messages still in the outbox file (read by another process, WAL)."""
    db = sqlite3.connect(f"file:{state_dir / 'outbox.db'}?mode=ro", uri=True, timeout=5)
    try:
        return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
    finally:
        db.close()


def seqs_by_id(probe: Any, topic: str) -> set[int]:
    return {p["seq"] for p in {p["id"]: p for p in probe.payloads(topic)}.values()}


def test_last_will_says_offline_on_kill9(
    shared_broker: Any, make_config: Any, probe_factory: Any, spawn: Any
) -> None:
    cfg = make_config(shared_broker)
    probe = probe_factory(shared_broker)
    topic = f"edge/{cfg.device.id}/status"
    probe.subscribe(topic)
    agent = spawn(cfg)
    probe.wait_payload(topic, lambda p: p["state"] == "online")
    agent.kill9()
    will = probe.wait_payload(topic, lambda p: p["state"] == "offline", timeout=15)
    assert will == {"state": "offline"}  # the will itself, not a clean shutdown's message
    late = probe_factory(shared_broker)
    late.subscribe(topic)
    assert late.wait_payload(topic)["state"] == "offline"  # retained


@pytest.mark.parametrize("broker_up", [False, True], ids=["broker-down", "broker-up"])
def test_kill9_loses_nothing_that_reached_the_outbox(
    broker: Any,
    make_config: Any,
    probe_factory: Any,
    spawn: Any,
    until: Until,
    broker_up: bool,
) -> None:
    cfg = make_config(broker)
    topic = f"edge/{cfg.device.id}/events/gen"
    consumer = probe_factory(broker, client_id=f"crash-{cfg.device.id}", clean=False)
    consumer.subscribe(topic)
    if not broker_up:
        broker.stop()
    agent = spawn(cfg, events=20000, rate=2000.0)
    assert until(lambda: stored_seq(cfg.state_dir) >= 1500, 20)
    agent.kill9()
    persisted = stored_seq(cfg.state_dir)
    assert persisted < 20000  # killed in the middle of the run
    if not broker_up:
        broker.start()
    restarted = spawn(cfg, events=5, rate=100.0)
    assert consumer.wait_for(
        lambda: (
            consumer.count(topic) >= persisted + 5
            and len(seqs_by_id(consumer, topic)) >= persisted + 5
        ),
        60,
    )
    got = seqs_by_id(consumer, topic)
    assert set(range(1, persisted + 1)) <= got
    assert set(range(persisted + 1, persisted + 6)) <= got  # numbering continued
    restarted.terminate()


def test_kill9_then_a_smashed_seq_table_never_reuses_a_seq(
    broker: Any, make_config: Any, probe_factory: Any, spawn: Any, until: Until
) -> None:
    """Killed between two compactions (the side file of seqs not rewritten since the start)
    with every event delivered (no row left to salvage a seq from), then the `seq` table's
    page lost: the restarted agent still numbers above every seq it
    had published, so a consumer that de-duplicates by seq drops nothing new."""
    from tests.sync.test_outbox_corrupt import smash_page

    cfg = make_config(broker, scheduler={"outbox_compaction_s": 3600.0})
    topic = f"edge/{cfg.device.id}/events/gen"
    consumer = probe_factory(broker)
    consumer.subscribe(topic)
    agent = spawn(cfg, events=1500, rate=2000.0)
    assert consumer.wait_for(lambda: consumer.count(topic) >= 1500, 30)
    assert until(lambda: stored_rows(cfg.state_dir) == 0, 20)  # every row delivered and acked
    agent.kill9()
    before = {p["id"]: p["seq"] for p in consumer.payloads(topic)}
    smash_page(cfg.state_dir / "outbox.db", "seq")
    restarted = spawn(cfg, events=5, rate=100.0)

    def after() -> list[int]:
        return [p["seq"] for p in consumer.payloads(topic) if p["id"] not in before]

    assert consumer.wait_for(lambda: len(after()) >= 5, 60)
    assert min(after()) > max(before.values()), (max(before.values()), sorted(after())[:5])
    restarted.terminate()
