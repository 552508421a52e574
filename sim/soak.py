"""Soak run: one real agent with all plugins and sync for minutes, its broker restarted every 30 s.

    python -m sim.soak [--duration 600] [--warmup 60] [--restart-every 30] [--down 3] --json

Measured from outside, as an operator would: resident memory from /proc, loop tick time and
lateness per window from the agent's Prometheus histograms (bucket increases, as
`histogram_quantile` does), sync counters from the same scrape, and every event the agent sent,
received by a separate MQTT client with a persistent session. At the end the broker stays up until
the outbox is empty, the agent is stopped with SIGTERM and every event sequence number must have
arrived.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from sim.agentproc import AgentProcess, agent_config
from sim.broker import Broker, free_port, mosquitto_path, operator_client

RATES_HZ = {"smart_home": 10.0, "energy": 50.0, "robot": 500.0}
DEVICE_ID = "soak-1"


class EventLedger:
    """A persistent-session MQTT client that records every event seq and counts telemetry."""

    def __init__(self, host: str, port: int, device_id: str) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self._base = f"edge/{device_id}"
        self.seqs: dict[str, set[int]] = defaultdict(set)
        self.duplicates = 0
        self.telemetry = 0
        self.connects = 0
        self._lock = threading.Lock()
        self.client = operator_client("soak-ledger")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        # The broker restarts under us: come back fast, and keep the session (and what it queued
        # for us while we were away) across the restart.
        self.client.reconnect_delay_set(1, 2)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.connect(host, port, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connects += 1
        client.subscribe(f"{self._base}/events/+", qos=1)
        client.subscribe(f"{self._base}/telemetry/+", qos=0)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if "/events/" in msg.topic:
            event = json.loads(msg.payload)
            with self._lock:
                seen = self.seqs[event["plugin"]]
                if event["seq"] in seen:
                    self.duplicates += 1
                seen.add(event["seq"])
        else:
            self.telemetry += 1

    def received(self) -> int:
        """Distinct events received."""
        with self._lock:
            return sum(len(s) for s in self.seqs.values())

    def missing(self) -> dict[str, int]:
        """Per plugin: seqs between 1 and the highest received that never arrived."""
        with self._lock:
            return {p: max(s) - len(s) for p, s in self.seqs.items() if s}

    def close(self) -> None:
        """Disconnect."""
        self.client.loop_stop()
        self.client.disconnect()


def scrape(port: int) -> dict[str, Any]:
    """The agent's Prometheus text, parsed: cumulative buckets per histogram and plugin, gauges."""
    from prometheus_client.parser import text_string_to_metric_families

    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, Any] = {"buckets": defaultdict(list), "values": {}}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            if s.name.endswith("_bucket"):
                key = (fam.name, s.labels["plugin"])
                out["buckets"][key].append((float(s.labels["le"]), s.value))
            elif not s.labels or set(s.labels) == {"plugin"}:
                out["values"][(s.name, s.labels.get("plugin", ""))] = s.value
    return out


def window_quantile(
    before: list[tuple[float, float]], after: list[tuple[float, float]], q: float
) -> float:
    """The q-quantile of what was recorded between two cumulative bucket lists (seconds),
    interpolated inside the bucket as Prometheus's histogram_quantile does."""
    increase = [(le, a - b) for (le, a), (_, b) in zip(after, before, strict=True)]
    total = increase[-1][1]
    if total <= 0:
        return 0.0
    rank = q * total
    low_le, low_n = 0.0, 0.0
    for le, n in increase:
        if n >= rank:
            if le == float("inf"):
                return low_le
            return low_le + (le - low_le) * (rank - low_n) / max(n - low_n, 1e-9)
        low_le, low_n = le, n
    return low_le


def run_soak(
    duration: float = 600.0,
    *,
    warmup: float = 60.0,
    restart_every: float = 30.0,
    down_s: float = 3.0,
    window_s: float = 30.0,
    work: Path | None = None,
) -> dict[str, Any]:
    """Run the soak and return its figures (what `--json` prints)."""
    binary = mosquitto_path()
    if binary is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
    with tempfile.TemporaryDirectory(prefix="edge-soak-") as tmp:
        work = work or Path(tmp)
        (work / "broker").mkdir(parents=True, exist_ok=True)
        broker = Broker(binary=binary, workdir=work / "broker", port=free_port())
        broker.start()
        prom = free_port()
        config = work / "soak.toml"
        config.write_text(
            agent_config(
                state_dir=work / "state",
                host=broker.host,
                port=broker.port,
                device_id=DEVICE_ID,
                prometheus_port=prom,
            )
        )
        agent = AgentProcess(config, log_path=work / "agent.log")
        ledger = EventLedger(broker.host, broker.port, DEVICE_ID)
        try:
            agent.start()
            agent.wait_ready()
            return _soak(
                agent, broker, ledger, prom, duration, warmup, restart_every, down_s, window_s
            )
        finally:
            ledger.close()
            agent.stop()
            broker.stop()


def _soak(
    agent: AgentProcess,
    broker: Broker,
    ledger: EventLedger,
    prom: int,
    duration: float,
    warmup: float,
    restart_every: float,
    down_s: float,
    window_s: float,
) -> dict[str, Any]:
    start = time.monotonic()
    end = start + duration
    time.sleep(max(0.0, warmup - (time.monotonic() - start)))
    rss: list[float] = [agent.rss_mb()]
    windows: list[dict[str, Any]] = []
    prev = scrape(prom)
    first = prev
    next_restart = time.monotonic() + restart_every
    next_window = time.monotonic() + window_s
    restarts = 0
    while time.monotonic() < end:
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        now = time.monotonic()
        if now >= next_restart and now + down_s < end:
            broker.stop()
            time.sleep(down_s)
            broker.start()
            restarts += 1
            next_restart = time.monotonic() + restart_every
        if now >= next_window:
            cur = scrape(prom)
            windows.append(_window(prev, cur))
            rss.append(agent.rss_mb())
            prev = cur
            next_window += window_s
    drained = _wait_drained(prom, timeout=60.0)
    last = scrape(prom)
    elapsed = time.monotonic() - start - warmup
    received_before_stop = ledger.received()
    code = agent.stop()
    time.sleep(2.0)  # the last events the agent sent while stopping
    values = last["values"]
    persisted = int(values.get(("edge_agent_sync_events_persisted_total", ""), 0))
    return {
        "duration_s": round(duration, 1),
        "warmup_s": warmup,
        "windows": len(windows),
        "rss_mb": {
            "after_warmup": round(rss[0], 1),
            "end": round(rss[-1], 1),
            "max": round(max(rss), 1),
            "growth": round(rss[-1] - rss[0], 2),
        },
        "loops": {p: _loop_figures(p, windows, first, last, elapsed) for p in RATES_HZ},
        "broker": {
            "restarts": restarts,
            "down_s": down_s,
            "agent_connects": int(values.get(("edge_agent_sync_connects_total", ""), 0)),
        },
        "events": {
            "persisted": persisted,
            "received_before_stop": received_before_stop,
            "received": ledger.received(),
            "missing": sum(ledger.missing().values()),
            "duplicates": ledger.duplicates,
            "ring_dropped": int(
                values.get(("edge_agent_sync_channel_events_dropped_total", ""), 0)
            ),
            "drained_before_stop": drained,
        },
        "telemetry": {
            "batches_received": ledger.telemetry,
            "offline_dropped": int(
                values.get(("edge_agent_sync_telemetry_offline_dropped_total", ""), 0)
            ),
        },
        "exit_code": code,
    }


def _window(prev: dict[str, Any], cur: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for (family, plugin), buckets in cur["buckets"].items():
        before = prev["buckets"].get((family, plugin))
        if before is None or len(before) != len(buckets):
            continue
        key = "tick" if family.startswith("edge_agent_tick") else "late"
        out.setdefault(plugin, {})[key] = window_quantile(before, buckets, 0.99) * 1e6
    return out


def _loop_figures(
    plugin: str,
    windows: list[dict[str, Any]],
    first: dict[str, Any],
    last: dict[str, Any],
    elapsed: float,
) -> dict[str, Any]:
    ticks = last["values"].get(("edge_agent_ticks_total", plugin), 0.0) - first["values"].get(
        ("edge_agent_ticks_total", plugin), 0.0
    )
    out: dict[str, Any] = {"tick_rate_ratio": round(ticks / (RATES_HZ[plugin] * elapsed), 4)}
    for key in ("tick", "late"):
        series = [w[plugin][key] for w in windows if plugin in w and key in w[plugin]]
        third = max(1, len(series) // 3)
        head = statistics.median(series[:third]) if series else 0.0
        tail = statistics.median(series[-third:]) if series else 0.0
        out[f"{key}_p99_us"] = {
            "first_third": round(head, 1),
            "last_third": round(tail, 1),
            "drift": round(tail / head, 3) if head else None,
            "worst_window": round(max(series), 1) if series else None,
            "windows": [round(v) for v in series],
        }
    return out


def _wait_drained(prom: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = scrape(prom)["values"]
        if (
            v.get(("edge_agent_sync_connected", "")) == 1.0
            and v.get(("edge_agent_sync_outbox_depth", "")) == 0.0
            and v.get(("edge_agent_sync_events_backlog", "")) == 0.0
        ):
            return True
        time.sleep(0.5)
    return False


def main(argv: list[str] | None = None) -> int:
    """Command line of the soak run."""
    p = argparse.ArgumentParser(prog="python -m sim.soak", description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds, warm-up included")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before the baseline")
    p.add_argument("--restart-every", type=float, default=30.0, help="broker restart period")
    p.add_argument("--down", type=float, default=3.0, help="seconds the broker stays down")
    p.add_argument("--window", type=float, default=30.0, help="seconds per p99 window")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = p.parse_args(argv)
    result = run_soak(
        args.duration,
        warmup=args.warmup,
        restart_every=args.restart_every,
        down_s=args.down,
        window_s=args.window,
    )
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
