"""Private NATS and RabbitMQ brokers with an MQTT listener, on free loopback ports.

Beside the Mosquitto launcher (sim/broker.py): the broker matrix and the cluster failover tests
run the agent against each. Every process runs from its own work folder and never touches the
machine's own service instances (their ports, data, cookies or epmd).

Both offer MQTT 3.1.1 only: NATS 2.9 answers an MQTT 5 CONNECT with "unsupported protocol
version" and RabbitMQ 3.10's plugin closes the socket.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.bench.broker import free_port, stop_process

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
"""The server script itself: /usr/sbin/rabbitmq-server switches to the rabbitmq user, which
cannot write a root-owned temporary folder."""


def nats_path() -> str | None:
    """The nats-server binary, or None."""
    return shutil.which("nats-server") or shutil.which("/usr/sbin/nats-server")


def rabbitmq_path() -> str | None:
    """The RabbitMQ server script, or None."""
    return RABBITMQ_SERVER if os.access(RABBITMQ_SERVER, os.X_OK) else None


def _wait_port(proc: subprocess.Popen[bytes], port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not listening on {port} after {timeout:.0f} s")


@dataclass
class NatsNode:
    """One nats-server with JetStream and an MQTT listener; optionally one node of a cluster."""

    binary: str
    workdir: Path
    name: str = "n1"
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    """The MQTT port (what agents connect to)."""
    client_port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    routes: list[int] = field(default_factory=list)
    """Cluster ports of the other nodes; empty for a single server."""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """host:port of the MQTT listener."""
        return f"{self.host}:{self.port}"

    def write_conf(self) -> Path:
        """Write the node's config file; its path."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"server_name: {self.name}",
            f"listen: {self.host}:{self.client_port}",
            f'jetstream {{ store_dir: "{self.workdir / "js"}" }}',
            # The MQTT gateway keeps sessions and retained messages in JetStream streams.
            f"mqtt {{ listen: {self.host}:{self.port} }}",
        ]
        if self.routes:
            # R3 streams: sessions and retained messages survive one node's loss (left to
            # itself the gateway took the replica count from the nodes it saw first: 2).
            # Consumers (one per QoS 1 subscription) R3 in memory: with R1 a subscriber whose
            # consumer sat on the killed node silently received nothing more.
            lines[-1] = (
                f"mqtt {{ listen: {self.host}:{self.port}, stream_replicas: 3, "
                "consumer_replicas: 3, consumer_memory_storage: true }"
            )
        if self.routes:
            routes = ", ".join(f"nats-route://{self.host}:{p}" for p in self.routes)
            lines.append(
                f"cluster {{ name: edge, listen: {self.host}:{self.cluster_port}, "
                f"routes: [{routes}] }}"
            )
        conf = self.workdir / "nats.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout: float = 20.0) -> None:
        """Start it and wait until the MQTT port accepts connections."""
        conf = self.write_conf()
        log = (self.workdir / "nats.log").open("ab")
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        _wait_port(self.proc, self.port, timeout, f"nats-server {self.name}")

    def kill(self) -> None:
        """SIGKILL: the node is gone without a goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        stop_process(self.proc)
        self.proc = None

    @property
    def running(self) -> bool:
        """True while the process lives."""
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        """The server's log so far."""
        path = self.workdir / "nats.log"
        return path.read_text(errors="replace") if path.exists() else ""


def nats_cluster(binary: str, workdir: Path, size: int = 3) -> list[NatsNode]:
    """`size` NATS nodes routed to each other (not started). JetStream replicates its MQTT
    streams R3 only with three nodes or more; with fewer, it keeps one replica."""
    nodes = [NatsNode(binary, workdir / f"n{i + 1}", name=f"n{i + 1}") for i in range(size)]
    for node in nodes:
        node.routes = [o.cluster_port for o in nodes if o is not node]
    return nodes


@dataclass
class RabbitMqNode:
    """A private RabbitMQ node with `rabbitmq_mqtt`: its own node name, ports, epmd, cookie.

    Starting one takes 15-40 s on a 2-core machine (the Erlang VM, Mnesia, the plugin), so the
    tests start it once per session.
    """

    script: str
    workdir: Path
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    """The MQTT port."""
    amqp_port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    epmd_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """host:port of the MQTT listener."""
        return f"{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment that keeps every file, port and name of this node private."""
        w = self.workdir
        return {
            **os.environ,
            "HOME": str(w / "home"),  # the .erlang.cookie goes here
            "RABBITMQ_NODENAME": f"edge{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": self.host,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            # A private epmd: the machine's (port 4369) knows the machine's own node.
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": self.host,
            "RABBITMQ_MNESIA_BASE": str(w / "mnesia"),
            "RABBITMQ_LOG_BASE": str(w / "log"),
            "RABBITMQ_CONFIG_FILE": str(w / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(w / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(w / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(w / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(w / "plugins-expand"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(w / "feature_flags"),
            "RABBITMQ_PID_FILE": str(w / "pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def start(self, timeout: float = 120.0) -> None:
        """Start the node and wait until its MQTT listener accepts connections."""
        w = self.workdir
        for sub in ("home", "mnesia", "log"):
            (w / sub).mkdir(parents=True, exist_ok=True)
        (w / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        (w / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {self.host}:{self.amqp_port}\n"
            f"mqtt.listeners.tcp.default = {self.host}:{self.port}\n"
            "mqtt.allow_anonymous = true\n"
            "loopback_users = none\n"
        )
        log = (w / "server.out").open("ab")
        # Its own session: the script starts epmd and beam children, all ended together.
        self.proc = subprocess.Popen(
            [self.script], env=self.env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        _wait_port(self.proc, self.port, timeout, "rabbitmq-server")

    def kill(self) -> None:
        """End the node and its private epmd (its whole process group)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
        # epmd daemonizes out of the group: find it by its private port's pid file-less way.
        _kill_epmd(self.epmd_port)

    stop = kill


def _kill_epmd(port: int) -> None:
    """Kill the epmd that listens on our private `port` (never the machine's 4369)."""
    if port == 4369:
        return
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmdline = (pid_dir / "cmdline").read_bytes().split(b"\0")
            environ = (pid_dir / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"epmd") and f"ERL_EPMD_PORT={port}".encode() in environ:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_dir.name), signal.SIGKILL)
