"""`mqtt.hosts`: the configured brokers of a cluster, tried in order; the link fails over when
its broker goes away (two private Mosquittos here; a NATS cluster in test_cluster.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config.loader import load_config
from agent.errors import ConfigError
from agent.transport.link import MqttLink
from tests.support.sync import agent_config


def _errors(tmp_path: Path, toml: str) -> dict[str, tuple[str, Any]]:
    path = tmp_path / "agent.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    return {key: (msg, value) for key, msg, value in caught.value.errors}


def test_hosts_are_the_endpoints_in_order(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[mqtt]\nhosts = ["a.lan:1883", "10.0.0.2:1884", "[::1]:1885"]\n')
    config = load_config(path, env={})
    assert config.mqtt.endpoints() == [("a.lan", 1883), ("10.0.0.2", 1884), ("::1", 1885)]
    path.write_text('[mqtt]\nhost = "b.lan"\nport = 8883\n')
    assert load_config(path, env={}).mqtt.endpoints() == [("b.lan", 8883)]


@pytest.mark.parametrize(
    ("value", "key", "message"),
    [
        ('"b:1"', "mqtt.hosts", "list"),
        ('["b"]', "mqtt.hosts[0]", "must be HOST:PORT"),
        ('["a:1", "b:99999"]', "mqtt.hosts[1]", "port must be a number from 1 to 65535"),
        ('["a:1", ":1883"]', "mqtt.hosts[1]", "must be HOST:PORT"),
        ('["a b:1"]', "mqtt.hosts[0]", "must be HOST:PORT"),
        ("[]", "mqtt.hosts", "at least 1"),
    ],
)
def test_bad_hosts_name_the_entry(tmp_path: Path, value: str, key: str, message: str) -> None:
    errors = _errors(tmp_path, f"[mqtt]\nhosts = {value}\n")
    assert key in errors, errors
    assert message in errors[key][0]


def test_hosts_and_host_together_are_refused(tmp_path: Path) -> None:
    errors = _errors(tmp_path, '[mqtt]\nhost = "a"\nhosts = ["b:1883"]\n')
    assert errors["mqtt"][0].startswith("give hosts, or host and port, not both")


def test_the_link_fails_over_to_the_next_broker_and_back(
    broker_factory: Callable[..., Any], tmp_path: Path, unique_id: str, until: Callable[..., bool]
) -> None:
    first, second = broker_factory(), broker_factory()
    config = agent_config(first.port, unique_id, tmp_path / "s")
    hosts = [f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"]
    config = config.model_copy(update={"mqtt": config.mqtt.model_copy(update={"hosts": hosts})})
    got: list[bytes] = []
    link = MqttLink(config)
    link.subscribe(f"t/{unique_id}", lambda m: got.append(m.payload))
    link.start()
    try:
        assert until(lambda: link.connected, 10)
        assert link.broker == hosts[0]
        first.kill()
        assert until(lambda: link.connected and link.broker == hosts[1], 10), link.last_error
        assert link.failovers == 1
        # Subscriptions follow the link to the new broker.
        link.publish(f"t/{unique_id}", b"on the second", qos=1)
        assert until(lambda: got == [b"on the second"], 10)
        # Back round the list when the second goes too, skipping nothing that is down.
        first.start()
        second.kill()
        assert until(lambda: link.connected and link.broker == hosts[0], 10), link.last_error
    finally:
        link.stop()


def test_a_down_first_host_is_skipped_at_start(
    broker_factory: Callable[..., Any], tmp_path: Path, unique_id: str, until: Callable[..., bool]
) -> None:
    down, up = broker_factory(start=False), broker_factory()
    config = agent_config(up.port, unique_id, tmp_path / "s")
    hosts = [f"127.0.0.1:{down.port}", f"127.0.0.1:{up.port}"]
    config = config.model_copy(update={"mqtt": config.mqtt.model_copy(update={"hosts": hosts})})
    link = MqttLink(config)
    link.start()
    try:
        assert until(lambda: link.connected, 10), link.last_error
        assert link.broker == hosts[1] and link.failovers >= 1
    finally:
        link.stop()
