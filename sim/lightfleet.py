"""Light devices: hundreds of simulated agents per process, each the real agent minus its loops.

    python -m sim.fleet --light 1000 [--procs 4] [--broker HOST:PORT] [--protocol 3.1.1] --json
    python -m sim.fleet --light 100 --broker nats-cluster --json

`--broker nats-cluster` starts a private three-node NATS cluster (sim/brokers.py, MQTT 3.1.1 on
every node) and spreads the devices over its nodes (`mqtt.hosts` in a different order per
device); the operator and the observer connect to the first node.

A light device is what `edge-agent run` builds (`build_agent`: sync service, command registry and
built-in commands, documents, durable SQLite outbox in its own state folder, OTA service and its
MQTT adapter) with no plugins configured. What differs is process-wide (sim/workpool.py): every
link's socket is driven by one `NetLoop` thread instead of a paho thread per device; every
device's sync turns, commands and OTA messages run in order on lanes of `WORK_THREADS` shared
threads instead of four threads per device, and OTA pipelines on as many threads as sandbox
children may run; the sync turn's idle wake-up is `TICK_S` instead of 5 ms (PUBACKs and durable
messages still wake it at once; with no plugin there are no events to drain). A worker process
has about 8 threads whatever its number of devices.

The parent (`run_light_fleet`) starts the broker (unless given one), the worker processes and an
operator-side observer, then measures: time until all are online, message rate at rest, ping
round trips over the whole fleet, a signed rollout to all devices, and the CPU and memory of the
broker, the operator and the devices.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.engine.report import rss_mb
from sim.broker import Broker, free_port, mosquitto_path

ROOT = Path(__file__).resolve().parents[1]
TICK_S = 1.0
"""The sync thread's idle wake-up in a light device (see the module docstring)."""
SETTLE_S = 12.0
"""Seconds from start before the rest window opens (metrics go out every 10 s by default)."""
PER_PROC = 250
"""Devices per worker process when `procs` is not given. 1,000 devices in 4 workers of 250 or 8
of 125 behaved alike (docs/fleet.md), the 4 taking 260 MB less. Before the threads were shared,
250 per worker (about 1,250 threads) thrashed on the GIL: the network thread, which gives the
GIL up at every syscall, waited seconds to get it back and links missed their keepalive."""


# -- the worker process ---------------------------------------------------------------------------


def device_config(
    dev: str,
    group: str,
    *,
    host: str,
    port: int,
    protocol: str,
    state: Path,
    public_key: str,
    hosts: list[str] | None = None,
) -> dict[str, Any]:
    """The config of one light device: the agent's defaults, no plugins, no watchdog; with
    `hosts` (a cluster, in this device's order) instead of `host` and `port`."""
    mqtt: dict[str, Any] = {"host": host, "port": port, "protocol": protocol}
    if hosts:
        mqtt = {"hosts": hosts, "protocol": protocol}
    return {
        "state_dir": str(state / dev),
        "device": {"id": dev, "group": group, "board": "generic-x86"},
        "runtime": {"accelerator": "cpu"},
        "mqtt": mqtt,
        "ota": {"trusted_keys": [public_key], "health_window_s": 2.0},
        "service": {"watchdog": False},
    }


def _worker(spec: dict[str, Any]) -> None:
    """Build and start `spec["devices"]` light agents, report, run until stdin closes."""
    from sim.workpool import shared_threads

    with shared_threads(TICK_S):
        _host_devices(spec)


def _set_ota_stall(app: Any, seconds: float) -> None:
    """An experiment (`--ota-stall-s`), not the agent as shipped: how long a pulling device
    waits for the chunks it asked for before asking again (OtaMqttAdapter.stall_s, 2 s). It
    used to be also how long a device waited for a group broadcast, which 1,000 devices on two
    cores outlasted (docs/fleet.md); that patience now follows the broadcast's own pace
    (agent/ota/patience.py)."""
    for service in app.services:
        adapter = getattr(service, "_adapter", None)
        if adapter is not None and hasattr(adapter, "stall_s"):
            adapter.stall_s = seconds


def _host_devices(spec: dict[str, Any]) -> None:
    """The worker's body, with the threads shared."""
    from agent.config.sections import AgentConfig
    from agent.service.compose import build_agent

    built: list[tuple[str, Any]] = []
    base = 0.0
    failed: list[str] = []
    # Build every device before starting any: building holds the GIL for seconds, and threads
    # of devices already started then queue for it, each waking every switch interval; with
    # a few hundred of them the network thread starved and links missed their keepalive.
    nodes = spec.get("hosts") or []
    for dev, group, first in spec["devices"]:
        cfg = device_config(
            dev,
            group,
            host=spec["host"],
            port=spec["port"],
            protocol=spec["protocol"],
            state=Path(spec["state"]),
            public_key=spec["public_key"],
            hosts=nodes[first:] + nodes[:first],  # spread over the cluster's nodes
        )
        try:
            built.append((dev, build_agent(AgentConfig.model_validate(cfg))))
        except Exception as exc:  # reported to the parent: a fleet run counts its failures
            failed.append(f"{dev}: {type(exc).__name__}: {exc}")
        if len(built) == 1:
            base = rss_mb(os.getpid())  # imports and caches: per process, not per device
    apps: list[Any] = []
    for dev, app in built:
        try:
            app.start()
        except Exception as exc:
            failed.append(f"{dev}: {type(exc).__name__}: {exc}")
            continue
        # No loops to supervise, and its 50 ms wake-up, times hundreds of devices in one
        # process, was the largest idle cost of a light device (PluginHost starts it anyway).
        app.host._supervisor.stop()
        if spec.get("ota_stall_s"):
            _set_ota_stall(app, spec["ota_stall_s"])
        apps.append(app)
    report = {
        "pid": os.getpid(),
        "started": len(apps),
        "failed": failed[:5],
        "rss_base_mb": base,
        "rss_mb": rss_mb(os.getpid()),
        "threads": threading.active_count(),
    }
    print(json.dumps(report), flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    # No orderly stop: the broker publishes each device's last will, which is what a fleet
    # losing power looks like; the parent deletes the state folders.
    os._exit(0)


# -- the parent -----------------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (0.0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> float:
    """CPU seconds every core of the machine has spent busy since boot (any process)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def raise_fd_limit() -> int:
    """Raise this process's open-files limit to its hard limit (children inherit it); the new
    soft limit. A broker holds one descriptor per device, a worker about four."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class BrokerHandle:
    """Where the fleet connects, and the broker's pid when we started it (for CPU and RSS)."""

    host: str
    port: int
    pid: int | None
    nodes: list[str] = field(default_factory=list)
    """HOST:PORT of every node of a cluster we started (the devices spread over them)."""
    node_pids: list[int] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        """Every broker process we started (none for a broker given by address)."""
        return self.node_pids or ([self.pid] if self.pid else [])

    def cpu_s(self) -> float | None:
        """CPU seconds of every broker process we started; None for a broker given by address."""
        return sum(cpu_s(p) for p in self.pids) if self.pids else None

    def rss_mb(self) -> float | None:
        """Resident memory of every broker process we started; None when we started none."""
        return sum(rss_mb(p) for p in self.pids) if self.pids else None


@contextlib.contextmanager
def nats_fleet_cluster(work: Path) -> Iterator[BrokerHandle]:
    """A private three-node NATS cluster, MQTT on every node (as tests/brokers/test_cluster.py)."""
    from sim.brokers import nats_cluster, nats_path

    binary = nats_path()
    if binary is None:
        raise SystemExit("nats-server is not installed (`make brokers` installs it)")
    nodes = nats_cluster(binary, work / "nats")
    try:
        for node in nodes:
            node.start()
        first = nodes[0]
        pids = [n.proc.pid for n in nodes if n.proc is not None]
        yield BrokerHandle(first.host, first.port, None, [n.address for n in nodes], pids)
    finally:
        for node in nodes:
            node.stop()


@contextlib.contextmanager
def fleet_broker(spec: str | None, work: Path) -> Iterator[BrokerHandle]:
    """`spec` (HOST:PORT) as given, a private NATS cluster (`nats-cluster`), or a private
    Mosquitto with no connection limit."""
    if spec == "nats-cluster":
        with nats_fleet_cluster(work) as handle:
            yield handle
        return
    if spec:
        host, _, port = spec.rpartition(":")
        yield BrokerHandle(host or "127.0.0.1", int(port), None)
        return
    binary = mosquitto_path()
    if binary is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto) and no --broker")
    (work / "broker").mkdir()
    # Mosquitto's own default is already unlimited; said here so that a changed default shows.
    broker = Broker(
        binary=binary,
        workdir=work / "broker",
        port=free_port(),
        # Mosquitto Nagles its sends by default: a fleet's replies then wait ~40 ms for the
        # operator's delayed ACK (MEASURED.md's 44 ms). A production broker is set up like this.
        extra_lines=["max_connections -1", "set_tcp_nodelay true"],
    )
    broker.start()
    try:
        assert broker.proc is not None
        yield BrokerHandle(broker.host, broker.port, broker.proc.pid)
    finally:
        broker.stop()


class Workers:
    """The worker processes hosting the light devices."""

    def __init__(self, specs: list[dict[str, Any]]) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        for spec in specs:
            p = subprocess.Popen(
                [sys.executable, "-m", "sim.lightfleet", "--worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            assert p.stdin is not None
            p.stdin.write(json.dumps(spec) + "\n")
            p.stdin.flush()
            self.procs.append(p)
        self.reports: list[dict[str, Any]] = []

    def wait_started(self, timeout: float) -> list[dict[str, Any]]:
        """Each worker's start report (devices started, failures, memory, threads)."""
        deadline = time.monotonic() + timeout
        for p in self.procs:
            assert p.stdout is not None
            line = ""
            while not line and time.monotonic() < deadline and p.poll() is None:
                line = p.stdout.readline()
            if not line:
                raise RuntimeError(f"light fleet worker {p.pid} did not start its devices")
            self.reports.append(json.loads(line))
        return self.reports

    @property
    def pids(self) -> list[int]:
        """Pids of the workers."""
        return [p.pid for p in self.procs]

    def close(self) -> None:
        """Close their stdin (they exit at once) and reap them."""
        for p in self.procs:
            with contextlib.suppress(OSError):
                assert p.stdin is not None
                p.stdin.close()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def worker_specs(
    devices: int,
    procs: int,
    *,
    groups: int,
    host: str,
    port: int,
    protocol: str,
    state: Path,
    public_key: Path,
    hosts: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Devices `light-0000`... spread round-robin over groups, evenly over `procs` workers and,
    with `hosts`, round-robin over the cluster's nodes (the node each tries first)."""
    spread = len(hosts) if hosts else 1
    ids = [(f"light-{i:04d}", f"g{i % groups}", i % spread) for i in range(devices)]
    common = {
        "host": host,
        "port": port,
        "protocol": protocol,
        "state": str(state),
        "public_key": str(public_key),
        "hosts": hosts or [],
    }
    return [{**common, "devices": ids[k::procs]} for k in range(procs)]


def measure_rollout(
    bundle: Path,
    broker: BrokerHandle,
    *,
    protocol: str,
    expect: int,
    group: str | None = None,
    timeout: float = 600.0,
    workers: tuple[int, ...] | list[int] = (),
) -> dict[str, Any]:
    """Publish `bundle` to a group (or all) with `edge-agent ota publish`, wait for `expect`
    results; time to the last, how many went active, the bytes the operator sent (manifest and
    chunks, as the publisher counts them; `bytes_ratio` is that over the model's bytes), and
    the publisher's, the broker's, the `workers`' and the whole machine's CPU (the devices'
    model checks run in children of the workers' fork servers: the machine's share is theirs).

    Runs whatever chunk protocol the checkout's publisher and receiver speak."""
    cmd = [sys.executable, "-m", "agent.cli.main", "ota", "publish", str(bundle)]
    cmd += ["--broker", f"{broker.host}:{broker.port}", "--expect", str(expect)]
    cmd += ["--group", group] if group else ["--all"]
    cmd += ["--timeout", str(timeout), "--json"]
    if protocol != "5":
        cmd += ["--protocol", protocol]
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    broker_before = broker.cpu_s() or 0.0
    workers_before = sum(cpu_s(p) for p in workers)
    machine_before = machine_cpu_s()
    started = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    seconds = time.perf_counter() - started
    machine = machine_cpu_s() - machine_before
    workers_used = sum(cpu_s(p) for p in workers) - workers_before
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = res.stdout.strip().splitlines()
    outcome = json.loads(lines[-1]) if lines else {}
    devices = outcome.get("devices", {})
    active = sum(1 for d in devices.values() if d.get("state") == "active")
    return {
        "seconds": round(seconds, 2),
        "bundle_bytes": bundle.stat().st_size,
        "target": group or "all",
        "expected": expect,
        "succeeded": active,
        "bytes_sent": outcome.get("bytes_sent"),
        "bytes_ratio": (
            round(outcome["bytes_sent"] / outcome["bundle_bytes"], 3)
            if outcome.get("bundle_bytes")
            else None
        ),
        "model_bytes": outcome.get("bundle_bytes"),
        "publisher_seconds": outcome.get("seconds"),
        "exit_code": res.returncode,
        "error": res.stderr.strip().splitlines()[-1] if res.returncode and res.stderr else None,
        "publisher_cpu_s": round(
            after_children.ru_utime
            + after_children.ru_stime
            - before_children.ru_utime
            - before_children.ru_stime,
            2,
        ),
        "broker_cpu_s": (
            round((broker.cpu_s() or 0.0) - broker_before, 2) if broker.pids else None
        ),
        "workers_cpu_s": round(workers_used, 2),
        "machine_cpu_s": round(machine, 2),
        "machine_busy_pct": round(machine * 100 / (seconds * (os.cpu_count() or 1)), 1),
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    arr = np.array(values) if values else np.array([float("nan")])
    return {
        "p50": round(float(np.percentile(arr, 50)), 2),
        "p99": round(float(np.percentile(arr, 99)), 2),
    }


def run_light_fleet(
    devices: int,
    *,
    procs: int | None = None,
    broker: str | None = None,
    protocol: str = "5",
    groups: int = 2,
    ping_rounds: int = 5,
    rest_s: float = 10.0,
    online_timeout: float | None = None,
    ota_stall_s: float | None = None,
) -> dict[str, Any]:
    """Start `devices` light devices, measure them, stop them; the figures `--json` prints."""
    from sim.fleet import FleetObserver, prepare_rollout

    procs = procs or max(1, -(-devices // PER_PROC))
    if broker == "nats-cluster":
        protocol = "3.1.1"  # NATS's MQTT gateway speaks 3.1.1 only
    fd_limit = raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="edge-lightfleet-") as tmp:
        work = Path(tmp)
        public_key, bundle = prepare_rollout(work)
        with fleet_broker(broker, work) as handle:
            specs = worker_specs(
                devices,
                procs,
                groups=groups,
                host=handle.host,
                port=handle.port,
                protocol=protocol,
                state=work / "state",
                public_key=public_key,
                hosts=handle.nodes,
            )
            for spec in specs:
                spec["ota_stall_s"] = ota_stall_s
            observer = FleetObserver(
                handle.host, handle.port, protocol=protocol, topics=("edge/+/+",)
            )
            workers = Workers(specs)
            try:
                started = time.perf_counter()
                reports = workers.wait_started(timeout=60 + devices * 0.2)
                online = observer.wait_online(
                    devices, timeout=online_timeout or 30 + devices * 0.05
                )
                connect_s = time.perf_counter() - started
                # At rest means every device past its first metrics interval: before that
                # the rate counts only the devices whose first report happens to fall inside.
                time.sleep(max(0.0, started + SETTLE_S - time.perf_counter()))
                rest = _rest(observer, handle, workers.pids, rest_s)
                self_before = resource.getrusage(resource.RUSAGE_SELF)
                rtts = observer.ping_all(online, rounds=ping_rounds, timeout=10.0 + online * 0.01)
                self_after = resource.getrusage(resource.RUSAGE_SELF)
                rollout = measure_rollout(
                    bundle, handle, protocol=protocol, expect=devices, workers=workers.pids
                )
                rss = [rss_mb(pid) for pid in workers.pids]
                broker_rss = handle.rss_mb()
            finally:
                workers.close()
                observer.close()
    started_n = sum(r["started"] for r in reports)
    base = sum(r["rss_base_mb"] for r in reports)
    return {
        "mode": "light",
        "devices": devices,
        "procs": procs,
        "protocol": protocol,
        "broker": broker or "mosquitto (private)",
        "broker_nodes": handle.nodes or None,
        "ota_stall_s": ota_stall_s,
        "fd_limit": fd_limit,
        "started": started_n,
        "start_failures": [f for r in reports for f in r["failed"]],
        "online": online,
        "connect_s": round(connect_s, 2),
        "rest": rest,
        "ping_rtt_ms": {
            **_percentiles(rtts),
            "replies": len(rtts),
            "expected": online * ping_rounds,
            "observer_cpu_s": round(
                self_after.ru_utime
                + self_after.ru_stime
                - self_before.ru_utime
                - self_before.ru_stime,
                2,
            ),
        },
        "rollout": rollout,
        "memory": {
            "broker_rss_mb": broker_rss,
            "workers_rss_mb": round(sum(r["rss_mb"] for r in reports), 1),
            "worker_base_rss_mb": round(base / len(reports), 1),
            "kb_per_device": round(
                sum(r["rss_mb"] - r["rss_base_mb"] for r in reports)
                * 1024
                / max(1, started_n - len(reports)),
                1,
            ),
            "workers_rss_mb_after_rollout": round(sum(rss), 1),
            "threads_per_worker": [r["threads"] for r in reports],
        },
    }


def _rest(
    observer: Any, broker: BrokerHandle, worker_pids: list[int], seconds: float
) -> dict[str, Any]:
    """Messages per second, broker and device CPU over `seconds` of a fleet doing nothing."""
    b0 = broker.cpu_s() or 0.0
    w0 = sum(cpu_s(p) for p in worker_pids)
    t0 = time.perf_counter()
    rate = observer.rate(seconds)
    dt = time.perf_counter() - t0
    w1 = sum(cpu_s(p) for p in worker_pids)
    return {
        "seconds": round(dt, 1),
        "msgs_per_s": round(rate, 1),
        "broker_cpu_pct": (
            round(((broker.cpu_s() or 0.0) - b0) * 100 / dt, 1) if broker.pids else None
        ),
        "devices_cpu_pct": round((w1 - w0) * 100 / dt, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m sim.lightfleet --worker`: one worker process (spec as a JSON line on stdin)."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["--worker"]:
        print(
            "usage: python -m sim.lightfleet --worker  (run by sim.fleet --light)", file=sys.stderr
        )
        return 2
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    # With hundreds of threads one can be descheduled between reading the wall and the monotonic
    # clock: Periodic then reports a "clock step" that is only scheduling.
    logging.getLogger("agent.sync.periodic").setLevel(logging.ERROR)
    _worker(json.loads(sys.stdin.readline()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
