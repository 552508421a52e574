"""A three-node NATS cluster on loopback, MQTT on every node: agents spread over the nodes, the
node one of them uses is killed mid-stream, the agent fails over, no QoS 1 event is lost, and a
group rollout started through a third node completes.

JetStream (which holds NATS's MQTT sessions and retained messages) replicates its streams R3 only
with three nodes, and keeps its quorum (2 of 3) when one dies; hence three nodes, not two.
Run with `make brokers` (-s prints the figures).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli.main import main
from agent.config.sections import AgentConfig
from agent.sync.service import SyncService
from sim.brokers import NatsNode, nats_cluster, nats_path
from tests.support.ota import V1_1, Agent, pack
from tests.support.ota import agent_config as ota_agent_config
from tests.support.sync import FakeEngine, agent_config

pytestmark = pytest.mark.brokers
EVENTS = 600
RESUBSCRIBE_S = 10.0
"""The agents' `mqtt.resubscribe_s` here (300 s by default: a test does not wait that long)."""
Until = Callable[..., bool]


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NatsNode]]:
    """Three routed NATS nodes with JetStream and MQTT listeners."""
    binary = nats_path()
    if binary is None:
        pytest.fail("nats-server is not installed: `make brokers` installs it")
    nodes = nats_cluster(binary, tmp_path_factory.mktemp("cluster"))
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.kill()


def _on(config: AgentConfig, nodes: list[NatsNode], first: int) -> AgentConfig:
    """`config` with every node in `mqtt.hosts`, starting at node `first` (spreads a fleet)."""
    order = nodes[first:] + nodes[:first]
    mqtt = config.mqtt.model_copy(
        # keepalive 30 s (the tests' usual 5 s): a loaded 2-core machine stalls NATS's read
        # loop for seconds while it creates JetStream consumers, and a 5 s keepalive then
        # turns every stall into a reconnect storm.
        update={
            "hosts": [n.address for n in order],
            "protocol": "3.1.1",
            "keepalive": 30,
            # NATS loses the subscriptions whose JetStream consumers lived on a dead node and
            # does not tell their clients: only subscribing again brings them back.
            "resubscribe_s": RESUBSCRIBE_S,
        }
    )
    return config.model_copy(update={"mqtt": mqtt})


def _probe(node: NatsNode, probe_factory: Callable[..., Any], until: Until) -> Any:
    # Until JetStream has elected its leaders the MQTT gateway refuses sessions: retry.
    made: list[Any] = []

    def attempt() -> bool:
        try:
            made.append(probe_factory(node, protocol="3.1.1"))
        except AssertionError:
            return False
        return True

    assert until(attempt, 60, 0.5), f"no MQTT session on {node.name}"
    return made[0]


def test_an_agent_fails_over_without_losing_events_and_a_rollout_completes(
    cluster: list[NatsNode],
    tmp_path: Path,
    keys: Path,
    unique_id: str,
    probe_factory: Callable[..., Any],
    until: Until,
    capsys: pytest.CaptureFixture[str],
) -> None:
    n1, n2, n3 = cluster
    # Every node takes MQTT sessions before the agents start, so each lands on its first host.
    watcher, *_ = [_probe(n, probe_factory, until) for n in (n2, n1, n3)]
    victim_id = f"{unique_id}-ev"
    events_topic = f"edge/{victim_id}/events/gen"
    watcher.subscribe(events_topic, qos=1)

    # The event producer on n1 (the node to kill); three OTA devices, one per node.
    cfg = _on(agent_config(n1.port, victim_id, tmp_path / "ev"), cluster, 0)
    engine = FakeEngine()
    sync = SyncService(cfg, engine)
    sync.start()
    group = f"g{unique_id}"
    fleet = [
        Agent(
            _on(
                ota_agent_config(
                    tmp_path, n1.port, f"{unique_id}-{i}", group, [keys / "public.pem"]
                ),
                cluster,
                i,
            )
        )
        for i in range(3)
    ]
    try:
        links = [sync.link, *(a.sync.link for a in fleet)]
        assert until(lambda: all(lk.connected for lk in links), 60), [lk.last_error for lk in links]
        assert [lk.broker for lk in links] == [n1.address, n1.address, n2.address, n3.address]

        engine.produce(EVENTS, 100.0)  # 6 s of events; the node dies a third of the way in
        assert watcher.wait_for(lambda: watcher.count(events_topic) >= EVENTS // 3, 30), (
            watcher.count("#"),
            sync.link.connected,
            sync.link.last_error,
            [t for t, *_ in watcher.messages[:5]],
        )
        on_n1 = [lk for lk in links if lk.broker == n1.address]
        killed = time.monotonic()
        n1.kill()
        assert until(lambda: all(lk.connected and lk.broker != n1.address for lk in on_n1), 60)
        failover_s = time.monotonic() - killed

        def seen() -> set[int]:
            return {p["seq"] for p in watcher.payloads(events_topic)}

        assert watcher.wait_for(lambda: len(seen()) >= EVENTS, 60), (
            f"lost seqs: {sorted(set(range(1, EVENTS + 1)) - seen())[:20]}"
        )
        received = watcher.count(events_topic)

        time.sleep(2 * RESUBSCRIBE_S)  # every device has subscribed again since the kill
        # The rollout goes through the third node; every device answers from wherever it is.
        pack(V1_1, keys, tmp_path / "b.tar", chunk_size=8192)
        started = time.monotonic()
        argv = ["ota", "publish", str(tmp_path / "b.tar"), "--broker", n3.address]
        code = main([*argv, "--group", group, "--expect", "3", "--timeout", "120", "--json"])
        rollout_s = time.monotonic() - started
        result = json.loads(capsys.readouterr().out)
        updated = [a.config.device.id for a in fleet if a.version == "1.1.0"]
        with capsys.disabled():
            print(
                f"\nNATS cluster failover: {len(on_n1)} agents moved off the killed node in "
                f"{failover_s:.2f} s (kill to connected); events {EVENTS} sent, "
                f"{len(seen())} distinct received on another node ({received - len(seen())} "
                f"duplicates), 0 lost; failovers per link {[lk.failovers for lk in links]}; "
                f"group rollout through a third node: {len(updated)} of 3 active in "
                f"{rollout_s:.1f} s (exit {code})"
            )
        # Devices that never lost their node lost their group subscription with the dead node's
        # JetStream consumers (NATS 2.9, found by this test); their periodic resubscribe brings
        # it back, so every device updates.
        assert code == 0 and len(updated) == 3, (result, updated)
    finally:
        engine.close()
        sync.stop(1.0)
        for a in fleet:
            a.stop()
