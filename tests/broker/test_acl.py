"""The shipped per-device ACL against a real Mosquitto: a device cannot speak for another or give
orders, and commands and OTA still work through it (issue 13, "lock the broker down")."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config.sections import AgentConfig
from agent.ota import Bundle
from agent.ota.mqtt import frame_chunk
from agent.ota.publisher import BrokerOptions, Publisher, Target
from agent.sync.service import SyncService
from tests.broker.conftest import OPERATOR, Fleet
from tests.support.ota import NAME, V1_1, Agent, agent_config, pack
from tests.support.sync import FakeEngine
from tests.support.sync import agent_config as sync_config


def logged_in(cfg: AgentConfig, fleet: Fleet, user: str) -> AgentConfig:
    """`cfg` with the device's broker account."""
    mqtt = {**cfg.mqtt.model_dump(), "username": user, "password_file": fleet.password_files[user]}
    return AgentConfig.model_validate({**cfg.model_dump(), "mqtt": mqtt})


def test_a_device_cannot_publish_for_another_nor_give_orders(
    fleet: Fleet, probe_factory: Callable[..., Any]
) -> None:
    ops = fleet.probe(probe_factory, OPERATOR)
    ops.subscribe("edge/#")
    ops.subscribe("homeassistant/#")
    dev_a = fleet.probe(probe_factory, fleet.a)
    b, a = fleet.b, fleet.a
    forged = [
        f"edge/{b}/status",
        f"edge/{b}/events/gen",
        f"edge/{b}/ota/{NAME}/chunk/0",
        f"edge/{b}/ota/{NAME}/manifest",
        f"edge/{b}/ota/{NAME}/status",
        f"edge/{b}/cmd/plugin.stop",
        f"edge/group/{fleet.group}/cmd/plugin.stop",
        "edge/all/cmd/plugin.stop",
        f"edge/{a}/cmd/plugin.stop",  # not even to itself
        f"edge/{a}/ota/{NAME}/manifest",
        f"homeassistant/sensor/{b}/x/config",
        "homeassistant/status",
    ]
    for topic in forged:
        dev_a.publish(topic, b"forged")
    dev_a.publish(f"edge/{a}/status", b'{"state": "online"}')  # allowed, and sent last
    assert ops.wait_for(lambda: ops.count(f"edge/{a}/status") == 1)
    assert [t for t, *_ in ops.messages] == [f"edge/{a}/status"]


def test_a_device_reads_its_own_group_and_fleet_orders_only(
    fleet: Fleet, probe_factory: Callable[..., Any]
) -> None:
    dev_a = fleet.probe(probe_factory, fleet.a)
    dev_a.subscribe("edge/#")
    ops = fleet.probe(probe_factory, OPERATOR)
    sent = [
        f"edge/{fleet.b}/cmd/ping",  # another device's: not delivered
        f"edge/{fleet.b}/ota/{NAME}/chunk/0",
        "edge/group/other/cmd/ping",
        f"edge/group/{fleet.group}/cmd/ping",
        "edge/all/cmd/ping",
        f"edge/{fleet.a}/cmd/ping",
    ]
    for topic in sent:
        ops.publish(topic, b"{}")
    assert dev_a.wait_for(lambda: dev_a.count(f"edge/{fleet.a}/cmd/ping") == 1)
    assert [t for t, *_ in dev_a.messages] == sent[3:]


def command(ops: Any, base: str, name: str, args: dict[str, Any], reply_to: str) -> Any:
    """A command as an operator tool sends it: reply prefix topic, correlation, requester."""
    corr = uuid.uuid4().hex.encode()
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = reply_to
    props.CorrelationData = corr
    props.UserProperty = ("requester", OPERATOR)
    body = json.dumps({"id": corr.decode(), "args": args})
    ops.client.publish(f"{base}/cmd/{name}", body, qos=1, properties=props).wait_for_publish(10)
    found: list[Any] = []

    def check() -> bool:
        for topic, payload, _, p in ops.messages:
            if topic == reply_to and getattr(p, "CorrelationData", None) == corr:
                found.append(json.loads(payload))
                return True
        return False

    assert ops.wait_for(check), f"no reply to {name}"
    return found[0]


def test_commands_events_and_discovery_pass_the_acl(
    fleet: Fleet, probe_factory: Callable[..., Any], tmp_path: Path
) -> None:
    cfg = logged_in(sync_config(fleet.broker.port, fleet.a, tmp_path / "state"), fleet, fleet.a)
    cfg = AgentConfig.model_validate(
        {**cfg.model_dump(), "device": {"id": fleet.a, "group": fleet.group}}
    )
    ops = fleet.probe(probe_factory, OPERATOR)
    base = f"edge/{fleet.a}"
    reply_to = f"edge/replies/{OPERATOR}/{uuid.uuid4().hex[:6]}"
    for topic in (f"{base}/#", f"homeassistant/+/{fleet.a}/+/config", "edge/replies/#"):
        ops.subscribe(topic)
    engine = FakeEngine()
    service = SyncService(cfg, engine)
    service.start()
    try:
        assert ops.wait_for(
            lambda: any(p.get("state") == "online" for p in ops.payloads(f"{base}/status"))
        )
        assert command(ops, base, "ping", {}, reply_to)["ok"] is True
        reply = command(ops, base, "plugin.set", {"name": "gen", "params": {"gain": 2.0}}, reply_to)
        assert reply["ok"] is True, reply
        for group_base in (f"edge/group/{fleet.group}", "edge/all"):
            assert command(ops, group_base, "ping", {}, reply_to)["ok"] is True
        engine.produce(5, 500.0).join()
        assert ops.wait_for(lambda: ops.count(f"{base}/events/gen") >= 5)
        assert ops.wait_for(lambda: ops.count(f"homeassistant/+/{fleet.a}/+/config") >= 3)
    finally:
        service.stop(1.0)
        engine.close()


def test_an_update_reaches_the_device_and_forged_chunks_do_not(
    fleet: Fleet, probe_factory: Callable[..., Any], tmp_path: Path, keys: Path
) -> None:
    cfg = agent_config(tmp_path, fleet.broker.port, fleet.b, fleet.group, [keys / "public.pem"])
    device = Agent(logged_in(cfg, fleet, fleet.b))
    try:
        end = time.monotonic() + 20
        while not device.sync.link.connected:
            assert time.monotonic() < end, "the device did not connect"
            time.sleep(0.05)
        time.sleep(0.3)  # the OTA subscriptions follow the connection
        body = pack(V1_1, keys, tmp_path / "b.tar", chunk_size=4096)
        # Device A answers every chunk of B's update first, with zeros: the broker drops them.
        dev_a = fleet.probe(probe_factory, fleet.a)
        with Bundle(tmp_path / "b.tar") as b:
            for n in range(body.chunks):
                zeros = bytes(len(b.chunk(n)))
                dev_a.publish(
                    f"edge/{fleet.b}/ota/{NAME}/chunk/{n}", frame_chunk(body.serial, zeros)
                )
            options = BrokerOptions(
                "127.0.0.1",
                fleet.broker.port,
                username=OPERATOR,
                password=fleet.passwords[OPERATOR],
            )
            devices = Publisher(b, options, Target("device", fleet.b), timeout_s=120).run()
        assert devices[fleet.b].state == "active", devices[fleet.b]
        assert device.version == "1.1.0"
    finally:
        device.stop()
