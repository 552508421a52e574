"""The contract every broker of the matrix must keep with the agent: status and state retained,
a last will, events at QoS 1 in order, command replies (MQTT 5 response topic or the
`reply/<name>` fallback), and an OTA update pushed by `edge-agent ota publish`.

Where brokers differ the test says so, and docs/mqtt.md's broker table records it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli.main import main
from agent.config.sections import AgentConfig
from agent.sync.service import SyncService
from tests.brokers.conftest import MatrixBroker
from tests.support.ota import V1_1, Agent, pack
from tests.support.ota import agent_config as ota_agent_config
from tests.support.paths import child_env
from tests.support.sync import FakeEngine, agent_config

Until = Callable[..., bool]


@pytest.fixture
def device(
    matrix_broker: MatrixBroker, tmp_path: Path, unique_id: str
) -> Iterator[tuple[SyncService, FakeEngine]]:
    """A started sync service (fake engine with plugin `gen`) on the matrix broker."""
    config = matrix_broker.configure(agent_config(matrix_broker.port, unique_id, tmp_path / "s"))
    engine = FakeEngine()
    service = SyncService(config, engine)
    service.start()
    yield service, engine
    engine.close()
    service.stop(1.0)


def _connected(service: SyncService, until: Until) -> None:
    assert until(lambda: service.link.connected, 30), service.link.last_error


def test_status_and_state_are_retained(
    matrix_broker: MatrixBroker,
    device: tuple[SyncService, FakeEngine],
    matrix_probe: Any,
    probe_factory: Callable[..., Any],
    until: Until,
) -> None:
    service, _ = device
    _connected(service, until)
    base = f"edge/{service.config.device.id}"
    # Published before anyone listened: what arrives now is retained by the broker.
    assert until(lambda: service.link.connects >= 1)
    matrix_probe.subscribe(f"{base}/status")
    matrix_probe.subscribe(f"{base}/state")
    assert matrix_probe.wait_payload(f"{base}/status", lambda p: p["state"] == "online", 15)
    assert matrix_probe.wait_payload(f"{base}/state", lambda p: "plugins" in p, 15)
    # A wildcard subscription (the fleet view's) gets retained messages too, except on
    # RabbitMQ, whose plugin only replays them to a subscription of the exact topic.
    wide = probe_factory(matrix_broker, protocol=matrix_broker.protocol)
    wide.subscribe("edge/+/status")
    got = wide.wait_for(lambda: bool(wide.payloads(f"{base}/status")), 3)
    assert got is (matrix_broker.kind != "rabbitmq")


def test_events_arrive_once_each_in_order_at_qos1(
    device: tuple[SyncService, FakeEngine], matrix_probe: Any, until: Until
) -> None:
    service, engine = device
    _connected(service, until)
    topic = f"edge/{service.config.device.id}/events/gen"
    matrix_probe.subscribe(topic, qos=1)
    engine.produce(200, 400.0)
    assert matrix_probe.wait_for(lambda: matrix_probe.count(topic) >= 200, 30)
    seqs = [p["seq"] for p in matrix_probe.payloads(topic)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 200


def test_command_reply_on_the_response_topic_or_the_reply_fallback(
    matrix_broker: MatrixBroker,
    device: tuple[SyncService, FakeEngine],
    matrix_probe: Any,
    until: Until,
) -> None:
    service, _ = device
    _connected(service, until)
    base = f"edge/{service.config.device.id}"
    if matrix_broker.v5:
        reply = matrix_probe.command(base, "ping")
    else:
        # MQTT 3.1.1 has no response topic: the agent answers on <base>/reply/<name>.
        matrix_probe.subscribe(f"{base}/reply/ping")
        matrix_probe.publish(f"{base}/cmd/ping", json.dumps({"id": "r1", "args": {}}))
        reply = matrix_probe.wait_payload(f"{base}/reply/ping", timeout=15)
    assert reply["ok"] is True and reply["id"]


def test_last_will_says_offline_when_the_agent_dies(
    matrix_broker: MatrixBroker, tmp_path: Path, unique_id: str, matrix_probe: Any
) -> None:
    config = matrix_broker.configure(agent_config(matrix_broker.port, unique_id, tmp_path / "s"))
    proc = _spawn(config, tmp_path)
    try:
        status = f"edge/{unique_id}/status"
        matrix_probe.subscribe(status)
        assert matrix_probe.wait_payload(status, lambda p: p["state"] == "online", 30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # The keepalive is 5 s; the broker sees the closed socket at once and sends the will.
        assert matrix_probe.wait_payload(status, lambda p: p == {"state": "offline"}, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_ota_publish_updates_a_device(
    matrix_broker: MatrixBroker,
    tmp_path: Path,
    keys: Path,
    unique_id: str,
    until: Until,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = ota_agent_config(tmp_path, matrix_broker.port, unique_id, "g", [keys / "public.pem"])
    agent = Agent(matrix_broker.configure(cfg))
    try:
        assert until(lambda: agent.sync.link.connected, 30), agent.sync.link.last_error
        pack(V1_1, keys, tmp_path / "b.tar", chunk_size=8192)
        # No --protocol: the publisher tries MQTT 5 and falls back to 3.1.1 on its own.
        argv = ["ota", "publish", str(tmp_path / "b.tar"), "--broker", matrix_broker.address]
        code = main([*argv, "--device", unique_id, "--timeout", "90", "--json"])
        out = capsys.readouterr()
        assert code == 0, out.out + out.err
        assert agent.version == "1.1.0"
    finally:
        agent.stop()


def test_ota_publish_with_a_protocol_the_broker_refuses_names_it(
    v5_refusing_broker: MatrixBroker,
    tmp_path: Path,
    keys: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    matrix_broker = v5_refusing_broker
    pack(V1_1, keys, tmp_path / "b.tar")
    argv = ["ota", "publish", str(tmp_path / "b.tar"), "--broker", matrix_broker.address]
    code = main([*argv, "--device", "nobody", "--protocol", "5", "--timeout", "5"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot connect to the broker at {matrix_broker.address} (MQTT 5:" in err


def _spawn(config: AgentConfig, tmp: Path) -> subprocess.Popen[str]:
    cfg_file = tmp / "agent.json"
    cfg_file.write_text(config.model_dump_json())
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.sync", str(cfg_file)],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "READY", line + (proc.stderr.read() if proc.stderr else "")
    return proc
