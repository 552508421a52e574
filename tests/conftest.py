"""Shared fixtures: a real Mosquitto per test (or per session) on a free loopback port, and an MQTT
test client that records what it receives and sends commands.

The broker runs from its own config file in a temporary folder, so a test can stop, kill and
restart it on the same port. Every test uses its own device ids and topics.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sim.broker import Broker, free_port, mosquitto_path
from tests.support import acl
from tests.support.mqtt import MqttProbe
from tests.support.waiting import until as until_fn

BROKER_FIXTURE = "mosquitto_bin"
"""Every fixture that starts a broker depends on this one, so it names the tests that need one."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test that starts a private Mosquitto `mosquitto` (`-m "not mosquitto"`
    runs the rest on a machine without one)."""
    for item in items:
        if BROKER_FIXTURE in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.mosquitto)


@pytest.fixture(scope="session")
def mosquitto_bin() -> str:
    """The mosquitto binary; a missing one fails the test (`make test` installs it)."""
    path = mosquitto_path()
    if path is None:
        pytest.fail("mosquitto is not installed: run `make test` or apt-get install mosquitto")
    return path


@pytest.fixture
def broker_factory(
    mosquitto_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Broker]]:
    """Start brokers with extra listener/config lines; all are stopped after the test."""
    started: list[Broker] = []

    def make(
        *,
        listener_lines: list[str] | None = None,
        extra_lines: list[str] | None = None,
        anonymous: bool = True,
        start: bool = True,
    ) -> Broker:
        b = Broker(
            binary=mosquitto_bin,
            workdir=tmp_path_factory.mktemp("mosquitto"),
            port=free_port(),
            listener_lines=list(listener_lines or []),
            extra_lines=list(extra_lines or []),
            anonymous=anonymous,
        )
        if acl.ENABLED and anonymous:  # a test that sets its own accounts keeps them
            b.extra_lines += acl.lock_down(b)
        started.append(b)
        if start:
            b.start()
        return b

    yield make
    for b in started:
        b.kill()


@pytest.fixture
def broker(broker_factory: Callable[..., Broker]) -> Broker:
    """A broker of this test's own, free to stop and restart."""
    return broker_factory()


@pytest.fixture(scope="session")
def shared_broker(mosquitto_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for tests that only connect (each uses its own device id and topics)."""
    b = Broker(
        binary=mosquitto_bin, workdir=tmp_path_factory.mktemp("mosquitto-shared"), port=free_port()
    )
    if acl.ENABLED:
        b.extra_lines += acl.lock_down(b)
    b.start()
    yield b
    b.kill()


@pytest.fixture(scope="session")
def probe_class() -> type[MqttProbe]:
    """The MqttProbe class, for module-scoped fixtures that make their own probes."""
    return MqttProbe


@pytest.fixture
def probe_factory() -> Iterator[Callable[..., MqttProbe]]:
    """Make test MQTT clients (`probe_factory(broker)`); all closed after the test."""
    made: list[MqttProbe] = []

    def make(b: Broker, **kwargs: Any) -> MqttProbe:
        p = MqttProbe(b.host, b.port, **kwargs)
        made.append(p)
        return p

    yield make
    for p in made:
        with contextlib.suppress(Exception):
            p.close()


@pytest.fixture(scope="session")
def until() -> Callable[..., bool]:
    """`until(predicate, timeout=10)`: poll until it holds; False on timeout."""
    return until_fn


@pytest.fixture
def unique_id() -> str:
    """A device id no other test uses."""
    return f"t{os.getpid()}-{uuid.uuid4().hex[:8]}"
