"""OTA over a real Mosquitto: whole agents (engine, sync, OTA adapter) and the CLI publisher."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli.main import main
from agent.ota import Bundle
from agent.ota.mqtt import frame_chunk
from agent.ota.publisher import BrokerOptions, Publisher, Target
from tests.support.mqtt import MqttProbe
from tests.support.ota import NAME, V1_1, Agent, agent_config, pack
from tests.support.waiting import until

STATUS = f"edge/+/ota/{NAME}/status"


@pytest.fixture
def agents(tmp_path: Path, broker: Any) -> Iterator[Callable[..., Agent]]:
    """`agents(device_id, group, public_keys)`: a started agent on the test broker."""
    made: list[Agent] = []

    def make(device_id: str, group: str, public_keys: list[Path], **ota: Any) -> Agent:
        agent = Agent(agent_config(tmp_path, broker.port, device_id, group, public_keys, **ota))
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.stop()


def _connected(agents: list[Agent], probe: MqttProbe, timeout: float = 20.0) -> None:
    """Wait for each agent's retained `online` status. An agent subscribes (OTA topics too)
    on the same connection before it says online, so the broker has the subscriptions then."""
    for a in agents:
        status = a.sync.topics.status
        probe.subscribe(status)
        probe.wait_payload(status, lambda p: p.get("state") == "online", timeout)


def test_group_rollout_to_several_agents(
    tmp_path: Path,
    broker: Any,
    keys: Path,
    unique_id: str,
    agents: Callable[..., Agent],
    probe_factory: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    group = f"g{unique_id}"
    fleet = [agents(f"{unique_id}-{i}", group, [keys / "public.pem"]) for i in range(3)]
    bystander = agents(f"{unique_id}-other", f"h{unique_id}", [keys / "public.pem"])
    _connected([*fleet, bystander], probe_factory(broker))
    pack(V1_1, keys, tmp_path / "b.tar", chunk_size=4096)
    argv = ["ota", "publish", str(tmp_path / "b.tar"), "--broker", f"127.0.0.1:{broker.port}"]
    code = main([*argv, "--group", group, "--expect", "3", "--timeout", "120"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert all(a.version == "1.1.0" for a in fleet)
    assert bystander.version == "1.0.0"  # another group
    for a in fleet:
        assert f"{a.config.device.id} " in out
    assert out.count("active") >= 3
    # The chunks went once to the group, not once per device.
    ratio = float(re.search(r"\(([0-9.]+) x the bundle\)", out).group(1))  # type: ignore[union-attr]
    assert ratio < 1.6, out
    assert "3 devices: 3 active" in out
    # The final state stays retained on each device's status topic.
    probe = probe_factory(broker)
    probe.subscribe(STATUS)
    assert probe.wait_for(lambda: len(probe.payloads(STATUS)) >= 3)
    retained = {p["serial"]: p for p in probe.payloads(STATUS)}
    assert {p["state"] for p in retained.values()} == {"active"}


def test_publish_fails_when_a_device_refuses(
    tmp_path: Path,
    broker: Any,
    keys: Path,
    other_keys: Path,
    unique_id: str,
    agents: Callable[..., Agent],
    probe_factory: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    group = f"g{unique_id}"
    good = agents(f"{unique_id}-good", group, [keys / "public.pem"])
    wary = agents(f"{unique_id}-wary", group, [other_keys / "public.pem"])
    _connected([good, wary], probe_factory(broker))
    pack(V1_1, keys, tmp_path / "b.tar")
    argv = ["ota", "publish", str(tmp_path / "b.tar"), "--broker", f"127.0.0.1:{broker.port}"]
    code = main([*argv, "--group", group, "--expect", "2", "--timeout", "120", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 1 and result["ok"] is False
    devices = result["devices"]
    assert devices[good.config.device.id]["state"] == "active"
    assert devices[wary.config.device.id]["state"] == "rejected"
    assert "untrusted key" in devices[wary.config.device.id]["reason"]
    assert (good.version, wary.version) == ("1.1.0", "1.0.0")


def test_publish_resumes_a_transfer_cut_halfway(
    tmp_path: Path,
    broker: Any,
    keys: Path,
    unique_id: str,
    agents: Callable[..., Agent],
    probe_factory: Callable[..., Any],
) -> None:
    device = agents(unique_id, f"g{unique_id}", [keys / "public.pem"])
    probe = probe_factory(broker)
    _connected([device], probe)
    body = pack(V1_1, keys, tmp_path / "b.tar", chunk_size=1024)
    base = f"edge/{unique_id}/ota/{NAME}"
    # A first publisher sends the manifest and half of the chunks, then dies.
    with Bundle(tmp_path / "b.tar") as b:
        probe.publish(f"{base}/manifest", b.envelope)
        for n in range(body.chunks // 2):
            probe.publish(f"{base}/chunk/{n}", frame_chunk(body.serial, b.chunk(n)))
    rx = device.ota.receiver(NAME)
    half = body.chunks // 2
    assert until(lambda: rx.receiving is not None and rx.receiving.received >= half, 20), (
        "the first half did not arrive"
    )
    # Running the publisher again sends only what the device still misses.
    with Bundle(tmp_path / "b.tar") as b:
        options = BrokerOptions("127.0.0.1", broker.port)
        devices = Publisher(b, options, Target("device", unique_id), timeout_s=120).run()
    progress = devices[unique_id]
    assert progress.state == "active", progress
    assert progress.sent_chunks == set(range(body.chunks // 2, body.chunks))
    assert device.version == "1.1.0"


def test_model_rollback_command_over_mqtt(
    tmp_path: Path,
    broker: Any,
    keys: Path,
    unique_id: str,
    agents: Callable[..., Agent],
    probe_factory: Callable[..., Any],
) -> None:
    device = agents(unique_id, f"g{unique_id}", [keys / "public.pem"])
    probe = probe_factory(broker)
    _connected([device], probe)
    pack(V1_1, keys, tmp_path / "b.tar")
    with Bundle(tmp_path / "b.tar") as b:
        devices = Publisher(
            b, BrokerOptions("127.0.0.1", broker.port), Target("device", unique_id)
        ).run()
    assert devices[unique_id].state == "active"
    reply = probe.command(f"edge/{unique_id}", "model.rollback", {"model": NAME})
    assert reply["ok"], reply
    assert reply["result"] == {
        "model": NAME,
        "from": "1.1.0",
        "to": "1.0.0",
        "state": "rolled_back",
    }
    assert device.version == "1.0.0"
    again = probe.command(f"edge/{unique_id}", "model.rollback", {"model": NAME})
    assert not again["ok"] and again["error"]["code"] == "no_previous"


def test_publish_to_a_silent_device_says_so_and_whether_it_is_offline(
    tmp_path: Path,
    broker: Any,
    keys: Path,
    unique_id: str,
    probe_factory: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    pack(V1_1, keys, tmp_path / "b.tar")
    probe = probe_factory(broker)
    offline = json.dumps({"state": "offline", "reason": "shutdown"})
    probe.publish(f"edge/{unique_id}-off/status", offline, retain=True)
    argv = ["ota", "publish", str(tmp_path / "b.tar"), "--broker", f"127.0.0.1:{broker.port}"]
    argv += ["--timeout", "3", "--notice-after", "1"]
    assert main([*argv, "--device", f"{unique_id}-typo"]) == 1
    captured = capsys.readouterr()
    assert "no device has answered" in captured.err and "has nothing" in captured.err
    assert "no device answered" in captured.out
    assert main([*argv, "--device", f"{unique_id}-off"]) == 1
    assert "says offline" in capsys.readouterr().err


def test_publish_help_shows_the_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["ota", "publish", "--help"])
    assert "default 300" in capsys.readouterr().out
