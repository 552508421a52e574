"""Hostile command traffic against a real agent and Mosquitto (issue 13, defects 6 and 12).

A reply used to go wherever the request's MQTT 5 response topic said, with the agent's own
credentials: onto its own events or status, an OTA manifest topic, another device's commands.
A 30,000-deep JSON request got `internal` and a traceback instead of `bad_json`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.sync.service import SyncService
from tests.support import acl
from tests.support.sync import FakeEngine, agent_config


class Agent:
    """A running SyncService + FakeEngine with a probe."""

    def __init__(self, service: SyncService, probe: Any) -> None:
        self.service = service
        self.probe = probe
        self.base = service.topics.base
        self.device = service.config.device.id


@pytest.fixture(scope="module")
def agent(
    shared_broker: Any, tmp_path_factory: pytest.TempPathFactory, probe_class: Any
) -> Iterator[Agent]:
    device = f"hostile-{uuid.uuid4().hex[:8]}"
    cfg = agent_config(shared_broker.port, device, tmp_path_factory.mktemp("h") / "state")
    engine = FakeEngine()
    service = SyncService(cfg, engine)
    service.start()
    probe = probe_class(shared_broker.host, shared_broker.port)
    probe.subscribe(f"edge/{device}/status")
    probe.wait_payload(f"edge/{device}/status", lambda p: p["state"] == "online")
    yield Agent(service, probe)
    probe.close()
    service.stop(1.0)
    engine.close()


def send(
    agent: Agent,
    name: str,
    body: bytes,
    *,
    response_topic: str | None = None,
    requester: str | None = None,
) -> bytes:
    """Publish a command with MQTT 5 properties; its correlation data."""
    corr = uuid.uuid4().hex.encode()
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.CorrelationData = corr
    if response_topic is not None:
        props.ResponseTopic = response_topic
    if requester is not None:
        props.UserProperty = ("requester", requester)
    agent.probe.client.publish(
        f"{agent.base}/cmd/{name}", body, qos=1, properties=props
    ).wait_for_publish(10)
    return corr


def reply_on(agent: Agent, topic: str, corr: bytes) -> Callable[[], Any]:
    def find() -> Any:
        for t, payload, _, props in agent.probe.messages:
            if t == topic and getattr(props, "CorrelationData", None) == corr:
                return json.loads(payload)
        return None

    return find


HARMFUL = [
    ("{base}/events/gen", "under edge/ must be under"),
    ("{base}/status", "under edge/ must be under"),
    ("{base}/ota/robot/manifest", "'cmd' or 'ota' level"),
    ("edge/other-device/cmd/plugin.stop", "'cmd' or 'ota' level"),
    ("edge/all/cmd/ping", "'cmd' or 'ota' level"),
    ("fleet/x/ota/m/chunk/0", "'cmd' or 'ota' level"),
    ("homeassistant/sensor/x/config", "under homeassistant/"),
    ("$SYS/broker/x", "broker ($) topic"),
]


@pytest.mark.parametrize(("target", "why"), HARMFUL, ids=[t for t, _ in HARMFUL])
def test_a_response_topic_pointing_somewhere_harmful_is_refused(
    agent: Agent, target: str, why: str
) -> None:
    target = target.format(base=agent.base)
    default = f"{agent.base}/reply/ping"
    if not target.startswith("$"):
        agent.probe.subscribe(target)
    agent.probe.subscribe(default)
    corr = send(agent, "ping", b'{"id": "x"}', response_topic=target)
    find = reply_on(agent, default, corr)
    assert agent.probe.wait_for(lambda: find() is not None)
    reply = find()
    assert reply["ok"] is False and reply["error"]["code"] == "bad_response_topic", reply
    assert why in reply["error"]["message"]
    # The refusal went out after anything the request could have caused: nothing reached it.
    assert reply_on(agent, target, corr)() is None


@pytest.mark.parametrize("target", ["ops/alice/replies", "edge/replies/ops-1", "{base}/reply/x"])
def test_a_response_topic_outside_the_agents_topics_is_used(agent: Agent, target: str) -> None:
    if acl.ENABLED and target.startswith("ops/"):
        pytest.skip("the agent allows it; the shipped ACL lets a device reply under edge/ only")
    target = target.format(base=agent.base)
    agent.probe.subscribe(target)
    corr = send(agent, "ping", b'{"id": "y"}', response_topic=target)
    find = reply_on(agent, target, corr)
    assert agent.probe.wait_for(lambda: find() is not None)
    assert find()["ok"] is True


def test_a_30000_deep_request_is_bad_json_not_internal(agent: Agent) -> None:
    target = f"edge/replies/{uuid.uuid4().hex}"
    agent.probe.subscribe(target)
    for body in (
        b"[" * 30000 + b"]" * 30000,
        b'{"id": 1, "args": {"a": ' + b"[" * 40 + b"]" * 40 + b"}}",
    ):
        corr = send(agent, "ping", body, response_topic=target)
        find = reply_on(agent, target, corr)
        assert agent.probe.wait_for(lambda f=find: f() is not None)
        reply = find()
        assert reply["error"]["code"] == "bad_json", reply
        assert "nested too deeply" in reply["error"]["message"]


def test_plugin_control_is_logged_with_the_claimed_requester(
    agent: Agent, caplog: pytest.LogCaptureFixture
) -> None:
    target = f"edge/replies/{uuid.uuid4().hex}"
    agent.probe.subscribe(target)
    with caplog.at_level(logging.WARNING, logger="agent.sync.command_host"):
        body = json.dumps({"id": "s", "args": {"name": "gen"}}).encode()
        corr = send(agent, "plugin.stop", body, response_topic=target, requester="alice@ops")
        find = reply_on(agent, target, corr)
        assert agent.probe.wait_for(lambda: find() is not None)
    lines = [r.getMessage() for r in caplog.records if "plugin.stop" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "requester 'alice@ops' (claimed)" in lines[0] and corr.hex()[:32] in lines[0]
    assert lines[0].endswith(": ok")
