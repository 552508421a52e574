"""Group rollouts whose cost does not grow with the fleet: light devices (OtaDevice over a bare
MQTT link, the agent's real receiver, pipeline and protocol) against a real Mosquitto.

The default run checks that the operator sends about one bundle to a group of five; the `fleet`
run prints bytes and time for 1, 10 and 100 devices:

    .venv/bin/python -m pytest -m fleet tests/ota/test_ota_rollout_scale.py -s
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.config.sections import AgentConfig
from agent.ota import Bundle
from agent.ota.device import LinkTransport, OtaDevice
from agent.ota.publisher import BrokerOptions, Publisher, Target
from agent.transport.link import MqttLink
from tests.support.ota import MODELS, NAME, V1_1, pack


@contextmanager
def light_fleet(
    tmp: Path, port: int, group: str, n: int, public_key: Path
) -> Iterator[list[OtaDevice]]:
    """`n` connected light devices of `group`, each with its own state_dir and MQTT link."""
    links: list[MqttLink] = []
    devices: list[OtaDevice] = []
    try:
        for i in range(n):
            cfg = AgentConfig.model_validate(
                {
                    "device": {"id": f"{group}-{i}", "group": group},
                    "mqtt": {"host": "127.0.0.1", "port": port, "home_assistant": False},
                    "state_dir": str(tmp / f"{group}-{i}"),
                    "models_dir": str(MODELS),
                    "ota": {"trusted_keys": [str(public_key)]},
                }
            )
            link = MqttLink(cfg)
            link.start()
            links.append(link)
            device = OtaDevice(cfg, LinkTransport(link))
            device.start()
            devices.append(device)
        end = time.monotonic() + 60 + n
        while not all(link.connected for link in links):
            assert time.monotonic() < end, "light devices did not connect"
            time.sleep(0.05)
        time.sleep(0.5)  # the subscriptions follow the connection
        yield devices
    finally:
        for device in devices:
            device.stop()
        for link in links:
            link.stop()


def rollout(tmp: Path, broker: Any, keys: Path, n: int, group: str) -> dict[str, Any]:
    """Publish 1.1.0 to a light fleet of `n`; bytes sent, seconds, outcome."""
    body = pack(V1_1, keys, tmp / f"{group}.tar", chunk_size=1024)
    with light_fleet(tmp, broker.port, group, n, keys / "public.pem") as devices:
        with Bundle(tmp / f"{group}.tar") as b:
            publisher = Publisher(
                b,
                BrokerOptions("127.0.0.1", broker.port),
                Target("group", group),
                expect=n,
                timeout_s=120 + 2 * n,
            )
            started = time.monotonic()
            result = publisher.run()
            seconds = time.monotonic() - started
        active = sum(1 for p in result.values() if p.state == "active")
        installed = sum(1 for d in devices if d.status(NAME)["active"] == "1.1.0")
    resent = sum(p.sent for p in result.values())
    return {
        "n": n,
        "bundle": body.size,
        "sent": publisher.bytes_sent,
        "ratio": publisher.bytes_sent / body.size,
        "resent_chunks": resent,
        "seconds": seconds,
        "active": active,
        "installed": installed,
    }


def test_a_group_rollout_sends_the_bundle_about_once(
    tmp_path: Path, broker: Any, keys: Path, unique_id: str
) -> None:
    r = rollout(tmp_path, broker, keys, 5, f"g{unique_id}")
    assert (r["active"], r["installed"]) == (5, 5), r
    # Framing (8 bytes a chunk), the manifest and a few re-requests on top of one bundle; the old
    # protocol sent 5 bundles.
    assert r["ratio"] < 1.6, r


@pytest.mark.fleet
def test_rollout_cost_for_1_10_100_devices(
    tmp_path: Path, broker: Any, keys: Path, unique_id: str
) -> None:
    rows = [rollout(tmp_path, broker, keys, n, f"s{n}{unique_id}") for n in (1, 10, 100)]
    print("\n| devices | bundle bytes | operator bytes | x bundle | re-sent chunks | seconds |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['n']} | {r['bundle']} | {r['sent']} | {r['ratio']:.2f} | "
            f"{r['resent_chunks']} | {r['seconds']:.1f} |"
        )
    for r in rows:
        assert r["active"] == r["n"] == r["installed"], r
