"""The broker matrix: one contract suite run over every broker the agent must work with.

`matrix_broker` is parametrized over Mosquitto (MQTT 5 and 3.1.1), NATS (JetStream + its MQTT
gateway, 3.1.1) and RabbitMQ (`rabbitmq_mqtt` on a private node, 3.1.1). Mosquitto runs in the
default suite; the others carry the `brokers` marker (`make brokers`): a RabbitMQ node takes
15-40 s to start, so each foreign broker is started once per session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.config.sections import AgentConfig
from sim.broker import Broker
from sim.brokers import NatsNode, RabbitMqNode, nats_path, rabbitmq_path


@dataclass(frozen=True)
class MatrixBroker:
    """One broker of the matrix: where it listens and the MQTT version agents use with it."""

    kind: str
    host: str
    port: int
    protocol: str

    @property
    def address(self) -> str:
        """host:port."""
        return f"{self.host}:{self.port}"

    @property
    def v5(self) -> bool:
        """True when agents speak MQTT 5 to it."""
        return self.protocol == "5"

    def configure(self, config: AgentConfig) -> AgentConfig:
        """`config` pointed at this broker with its protocol."""
        mqtt = config.mqtt.model_copy(
            update={"host": self.host, "port": self.port, "protocol": self.protocol}
        )
        return config.model_copy(update={"mqtt": mqtt})


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsNode]:
    """One private nats-server with JetStream and MQTT, for the session."""
    binary = nats_path()
    if binary is None:
        pytest.fail("nats-server is not installed (`make brokers` installs it)")
    node = NatsNode(binary, tmp_path_factory.mktemp("nats"))
    node.start()
    yield node
    node.kill()


@pytest.fixture(scope="session")
def rabbitmq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMqNode]:
    """One private RabbitMQ node with the MQTT plugin, for the session."""
    script = rabbitmq_path()
    if script is None:
        pytest.fail("rabbitmq-server is not installed (`make brokers` installs it)")
    node = RabbitMqNode(script, tmp_path_factory.mktemp("rabbitmq"))
    try:
        node.start()
        yield node
    finally:
        node.kill()


MATRIX = [
    pytest.param("mosquitto-5", id="mosquitto-5"),
    pytest.param("mosquitto-3.1.1", id="mosquitto-3.1.1"),
    pytest.param("nats", id="nats", marks=pytest.mark.brokers),
    pytest.param("rabbitmq", id="rabbitmq", marks=pytest.mark.brokers),
]


@pytest.fixture(params=MATRIX)
def matrix_broker(request: pytest.FixtureRequest, shared_broker: Broker) -> MatrixBroker:
    """Each broker of the matrix in turn (foreign ones started on first use)."""
    return _broker(request, shared_broker)


@pytest.fixture(params=[p for p in MATRIX if not str(p.values[0]).startswith("mosquitto")])
def v5_refusing_broker(request: pytest.FixtureRequest, shared_broker: Broker) -> MatrixBroker:
    """Each broker of the matrix that refuses MQTT 5 (Mosquitto speaks both)."""
    return _broker(request, shared_broker)


def _broker(request: pytest.FixtureRequest, shared_broker: Broker) -> MatrixBroker:
    kind: str = request.param
    if kind.startswith("mosquitto"):
        return MatrixBroker(kind, shared_broker.host, shared_broker.port, kind.split("-")[1])
    node: Any = request.getfixturevalue(f"{kind}_server")
    return MatrixBroker(kind, node.host, node.port, "3.1.1")


@pytest.fixture
def matrix_probe(matrix_broker: MatrixBroker, probe_factory: Callable[..., Any]) -> Any:
    """A test client on the matrix broker, speaking its protocol."""
    return probe_factory(matrix_broker, protocol=matrix_broker.protocol)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the operator's key pair (private.pem, public.pem)."""
    from agent.ota import generate_keypair

    folder = tmp_path_factory.mktemp("keys")
    generate_keypair(folder)
    return folder
