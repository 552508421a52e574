"""The composed agent talks to systemd (READY, WATCHDOG, STOPPING) and serves Prometheus text."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

from agent.plugin.registry import PluginRegistry
from agent.service.compose import build_agent
from agent.service.notify import Notifier
from sim.broker import free_port
from tests.support import engine as kit


def test_ready_watchdog_stopping_and_metrics(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(5.0)
    port = free_port()
    config = kit.make_config(
        [{"name": "counter", "rate_hz": 200.0}],
        state_dir=str(tmp_path / "state"),
        service={"watchdog": True, "prometheus_port": port},
    )
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    app = build_agent(config, notifier=notifier, registry=PluginRegistry(extra=kit.PLUGINS))
    app.start()
    try:
        assert app.wait_ready(10)
        app.watchdog.announce_ready()
        messages = [listener.recv(4096) for _ in range(4)]
        assert any(m.startswith(b"READY=1") for m in messages)
        assert b"WATCHDOG=1" in messages
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b'edge_agent_ticks_total{plugin="counter"}' in body
        assert b'edge_agent_lateness_us{plugin="counter",quantile="p99"}' in body
        assert b'edge_agent_plugin_running{plugin="counter"} 1.0' in body
        assert b'edge_agent_plugin_crashes_total{plugin="counter"} 0.0' in body
        # Buckets, so a scraper can compute quantiles over a window (histogram_quantile).
        buckets = _buckets(body.decode(), "edge_agent_tick_seconds")
        assert [le for le, _ in buckets][-1] == float("inf")
        counts = [n for _, n in buckets]
        assert counts == sorted(counts) and counts[-1] > 0
    finally:
        app.stop(timeout=2.0)
    tail = []
    listener.settimeout(0.5)
    try:
        while True:
            tail.append(listener.recv(4096))
    except TimeoutError:
        pass
    assert b"STOPPING=1" in tail
    listener.close()


def _buckets(text: str, family: str) -> list[tuple[float, float]]:
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        if fam.name == family:
            return [
                (float(s.labels["le"]), s.value)
                for s in fam.samples
                if s.name.endswith("_bucket") and s.labels["plugin"] == "counter"
            ]
    raise AssertionError(f"no {family} in the scrape")
