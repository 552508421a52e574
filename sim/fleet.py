"""Fleet simulator: N real agent processes against one broker, measured from the operator's side.

    python -m sim.fleet --agents 8 [--broker HOST:PORT] [--duration 30] --json
    python -m sim.fleet --light 1000 [--procs 4] [--broker HOST:PORT] [--protocol 3.1.1] --json

Each agent is a real `edge-agent run` process with its own device id, group and state folder
(env overrides on one shared config). The simulator then measures, from a separate MQTT client:
messages per second through the broker, the round trip of `edge/all/cmd/ping` across the fleet,
a signed OTA rollout to one group, and the resident memory of each agent.

`--light N` runs N light devices instead: the agent without its plugin loops, hundreds per
process (see sim/lightfleet.py), measured the same way plus broker and operator CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from agent.engine.report import rss_mb
from sim.broker import Broker, free_port, mosquitto_path, operator_client

ROOT = Path(__file__).resolve().parents[1]
ROLLOUT_MODEL = "energy_anomaly"

FLEET_CONFIG = """\
# Written by sim.fleet: one light plugin per agent, so dozens fit on two cores.
state_dir = "{state}"
models_dir = "{models}"

[device]
board = "generic-x86"

[mqtt]
host = "{host}"
port = {port}

[scheduler]
metrics_s = 2.0
telemetry_flush_s = 1.0

[ota]
trusted_keys = ["{public_key}"]
health_window_s = 2.0

[[plugins]]
name = "energy"
rate_hz = {rate}
model = "{model}"
"""


class FleetObserver:
    """An operator-side MQTT client: counts traffic, collects replies and statuses.

    `topics` are what it counts (all of `edge/#` by default; the light fleet counts status, state
    and metrics only, not OTA chunks). Over MQTT 5 ping replies come to its response topic; over
    3.1.1 (no response topics) to each device's `reply/ping`, matched by the request id.
    """

    def __init__(
        self, host: str, port: int, *, protocol: str = "5", topics: tuple[str, ...] = ("edge/#",)
    ) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self._Properties: Any = Properties
        self._PacketTypes = PacketTypes
        self.v5 = protocol == "5"
        self.client = operator_client("fleet-observer", protocol=protocol)
        self.messages = 0
        self.online: set[str] = set()
        self.replies: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.client.on_connect = lambda *a: self._connected.set()
        self.client.on_message = self._on_message
        # Nagle on the operator's socket adds ~40 ms to a ping (MEASURED.md): off, as the agent.
        self.client.on_socket_open = lambda c, u, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise ConnectionError(f"broker {host}:{port} did not accept the observer")
        self.reply_topic = f"fleet/replies/{uuid.uuid4().hex[:8]}"
        for t in topics:
            self.client.subscribe(t, qos=0)
        self.client.subscribe(self.reply_topic if self.v5 else "edge/+/reply/ping", qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.perf_counter()
        with self._lock:
            parts = msg.topic.split("/")
            if msg.topic == self.reply_topic or parts[-2:] == ["reply", "ping"]:
                doc = json.loads(msg.payload)
                corr = msg.properties.CorrelationData.decode() if self.v5 else str(doc.get("id"))
                self.replies.setdefault(corr, {})[doc.get("device", "?")] = now
                return
            self.messages += 1
            if len(parts) == 3 and parts[2] == "status" and msg.payload:
                state = json.loads(msg.payload).get("state")
                (self.online.add if state == "online" else self.online.discard)(parts[1])

    def wait_online(self, n: int, timeout: float) -> int:
        """Wait until `n` agents report online; returns how many did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.online) < n:
            time.sleep(0.1)
        return len(self.online)

    def rate(self, seconds: float) -> float:
        """Messages per second seen on edge/# over `seconds`."""
        start_n, start_t = self.messages, time.perf_counter()
        time.sleep(seconds)
        return (self.messages - start_n) / (time.perf_counter() - start_t)

    def ping_all(self, n: int, *, rounds: int, timeout: float = 5.0) -> list[float]:
        """Round trips in ms of edge/all/cmd/ping to every one of `n` agents, `rounds` times."""
        rtts: list[float] = []
        for _ in range(rounds):
            corr = uuid.uuid4().hex
            props = None
            if self.v5:
                props = self._Properties(self._PacketTypes.PUBLISH)
                props.ResponseTopic = self.reply_topic
                props.CorrelationData = corr.encode()
            sent = time.perf_counter()
            payload = json.dumps({"id": corr, "args": {}})
            self.client.publish("edge/all/cmd/ping", payload, qos=1, properties=props)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and len(self.replies.get(corr, {})) < n:
                time.sleep(0.005)
            with self._lock:
                rtts.extend((t - sent) * 1e3 for t in self.replies.get(corr, {}).values())
            time.sleep(0.05)
        return rtts

    def close(self) -> None:
        """Disconnect."""
        self.client.loop_stop()
        self.client.disconnect()


def _edge_agent(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "agent.cli.main", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT, **kw)


def prepare_rollout(work: Path) -> tuple[Path, Path]:
    """A key pair and a signed bundle of the rollout model one patch version up."""
    keys = work / "keys"
    res = _edge_agent("ota", "keygen", "--out", str(keys))
    if res.returncode:
        raise RuntimeError(f"ota keygen failed: {res.stderr}")
    model = work / "rollout" / ROLLOUT_MODEL
    shutil.copytree(ROOT / "models" / ROLLOUT_MODEL, model)
    manifest = json.loads((model / "manifest.json").read_text())
    major, minor, patch = (int(x) for x in manifest["version"].split("."))
    manifest["version"] = f"{major}.{minor}.{patch + 1}"
    (model / "manifest.json").write_text(json.dumps(manifest, indent=1))
    bundle = work / "rollout.bundle"
    res = _edge_agent(
        "ota", "pack", str(model), "--key", str(keys / "private.pem"), "--out", str(bundle)
    )
    if res.returncode:
        raise RuntimeError(f"ota pack failed: {res.stderr}")
    return keys / "public.pem", bundle


@contextmanager
def _broker(spec: str | None, work: Path) -> Iterator[tuple[str, int]]:
    if spec:
        host, _, port = spec.rpartition(":")
        yield host or "127.0.0.1", int(port)
        return
    binary = mosquitto_path()
    if binary is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto) and no --broker")
    (work / "broker").mkdir()
    broker = Broker(binary=binary, workdir=work / "broker", port=free_port())
    broker.start()
    try:
        yield broker.host, broker.port
    finally:
        broker.stop()


def run_fleet(
    agents: int,
    *,
    broker: str | None = None,
    duration: float = 20.0,
    rate_hz: float = 10.0,
    groups: int = 2,
    ping_rounds: int = 10,
) -> dict[str, Any]:
    """Start the fleet, measure it, stop it; returns the figures printed by `--json`."""
    with tempfile.TemporaryDirectory(prefix="edge-fleet-") as tmp:
        work = Path(tmp)
        public_key, bundle = prepare_rollout(work)
        with _broker(broker, work) as (host, port):
            config = work / "fleet.toml"
            config.write_text(
                FLEET_CONFIG.format(
                    state=work / "state",
                    models=ROOT / "models",
                    host=host,
                    port=port,
                    public_key=public_key,
                    rate=rate_hz,
                    model=ROLLOUT_MODEL,
                )
            )
            observer = FleetObserver(host, port)
            procs = []
            ids = [f"fleet-{i:03d}" for i in range(agents)]
            try:
                for i, dev in enumerate(ids):
                    env = {
                        **os.environ,
                        "EDGE_AGENT__DEVICE__ID": dev,
                        "EDGE_AGENT__DEVICE__GROUP": f"g{i % groups}",
                        "EDGE_AGENT__STATE_DIR": str(work / "state" / dev),
                    }
                    procs.append(
                        subprocess.Popen(
                            [
                                sys.executable,
                                "-m",
                                "agent.cli.main",
                                "run",
                                "--config",
                                str(config),
                                "--duration",
                                str(duration + 120),
                            ],
                            env=env,
                            cwd=ROOT,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    )
                online = observer.wait_online(agents, timeout=30 + agents)
                msgs_per_s = observer.rate(min(5.0, duration / 2))
                rtts = observer.ping_all(online, rounds=ping_rounds)
                group = "g0"
                members = len(ids[::groups])
                started = time.perf_counter()
                res = _edge_agent(
                    "ota",
                    "publish",
                    str(bundle),
                    "--broker",
                    f"{host}:{port}",
                    "--group",
                    group,
                    "--expect",
                    str(members),
                    "--timeout",
                    "120",
                    "--json",
                )
                seconds = time.perf_counter() - started
                outcome = json.loads(res.stdout.strip().splitlines()[-1]) if res.stdout else {}
                succeeded = sum(
                    1 for d in outcome.get("devices", {}).values() if d.get("state") == "active"
                )
                rss = [rss_mb(p.pid) for p in procs if p.poll() is None]
                remaining = duration - (time.perf_counter() - started)
                if remaining > 0:
                    time.sleep(remaining)
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    try:
                        p.wait(10)
                    except subprocess.TimeoutExpired:
                        p.kill()
                observer.close()
    arr = np.array(rtts) if rtts else np.array([float("nan")])
    return {
        "agents": agents,
        "online": online,
        "msgs_per_s": round(msgs_per_s, 1),
        "ping_rtt_ms": {
            "p50": round(float(np.percentile(arr, 50)), 2),
            "p99": round(float(np.percentile(arr, 99)), 2),
            "replies": len(rtts),
            "expected": online * ping_rounds,
        },
        "rollout": {
            "seconds": round(seconds, 2),
            "succeeded": succeeded,
            "group": group,
            "members": members,
        },
        "rss_mb_per_agent": round(sum(rss) / len(rss), 1) if rss else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line of the fleet simulator."""
    parser = argparse.ArgumentParser(prog="python -m sim.fleet", description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--agents", type=int, help="how many full agent processes to start")
    size.add_argument(
        "--light",
        type=int,
        metavar="N",
        help="how many light devices to start (sim.lightfleet: hundreds per process)",
    )
    parser.add_argument(
        "--broker",
        default=None,
        metavar="HOST:PORT",
        help="an existing broker; light mode also `nats-cluster`: a private three-node NATS "
        "cluster, devices spread over its nodes (MQTT 3.1.1); a private Mosquitto otherwise",
    )
    parser.add_argument(
        "--protocol", choices=("5", "3.1.1"), default="5", help="MQTT version (light mode)"
    )
    parser.add_argument("--procs", type=int, default=None, help="light mode: worker processes")
    parser.add_argument(
        "--ota-stall-s",
        type=float,
        default=None,
        metavar="S",
        help="light mode, an experiment: a pulling device asks again for chunks not received "
        "within S s (not 2); its patience with a group broadcast follows the broadcast's pace",
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds to keep it running")
    parser.add_argument("--rate", type=float, default=10.0, help="energy plugin rate per agent")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.broker == "nats-cluster" and args.light is None:
        parser.error("--broker nats-cluster is for light devices (--light N)")
    if args.light is not None:
        from sim.lightfleet import run_light_fleet

        if args.light < 1 or (args.procs is not None and args.procs < 1):
            parser.error(f"--light and --procs must be at least 1 (got {args.light}, {args.procs})")
        result = run_light_fleet(
            args.light,
            procs=args.procs,
            broker=args.broker,
            protocol=args.protocol,
            ota_stall_s=args.ota_stall_s,
        )
        ok = result["online"] == args.light and (
            result["rollout"]["succeeded"] == result["rollout"]["expected"]
        )
    else:
        result = run_fleet(
            args.agents, broker=args.broker, duration=args.duration, rate_hz=args.rate
        )
        ok = (
            result["online"] == args.agents
            and result["rollout"]["succeeded"] == result["rollout"]["members"]
        )
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
