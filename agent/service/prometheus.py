"""Prometheus text endpoint on localhost: loop histograms and sync figures, read at scrape time.

Figures that only grow are counters (exported with `_total`), the others gauges.

Collected on demand from the host's statistics, so the loops pay nothing for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from agent.engine.histogram import HistogramSnapshot, bucket_index
from agent.errors import ConfigError
from agent.service.app import AgentApp


class AgentCollector:
    """A prometheus_client collector over a running agent."""

    def __init__(self, app: AgentApp) -> None:
        self._app = app

    def collect(self) -> Iterator[Any]:
        """Yield one metric family per figure, labelled by plugin."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self._app.host.stats()
        ticks = CounterMetricFamily("edge_agent_ticks", "Loop ticks done", labels=["plugin"])
        overruns = CounterMetricFamily(
            "edge_agent_overruns", "Ticks that overran their period", labels=["plugin"]
        )
        tick_us = GaugeMetricFamily(
            "edge_agent_tick_us", "Tick compute time (us)", labels=["plugin", "quantile"]
        )
        late_us = GaugeMetricFamily(
            "edge_agent_lateness_us",
            "Lateness against the deadline (us)",
            labels=["plugin", "quantile"],
        )
        restarts = CounterMetricFamily(
            "edge_agent_plugin_restarts", "Restarts after a failure", labels=["plugin"]
        )
        crashes = CounterMetricFamily(
            "edge_agent_plugin_crashes", "Failed ticks or setups", labels=["plugin"]
        )
        up = GaugeMetricFamily(
            "edge_agent_plugin_running", "1 while the plugin's loop runs", labels=["plugin"]
        )
        for name, s in stats.items():
            ticks.add_metric([name], s.get("ticks", 0))
            overruns.add_metric([name], s.get("overruns", 0))
            restarts.add_metric([name], s.get("restarts", 0))
            crashes.add_metric([name], s.get("crashes", 0))
            up.add_metric([name], 1.0 if s.get("state") == "running" else 0.0)
            for q in ("p50", "p99", "p999", "max"):
                tick_us.add_metric([name, q], s["tick_us"].get(q, 0.0))
                late_us.add_metric([name, q], s["lateness_us"].get(q, 0.0))
        yield from (ticks, overruns, restarts, crashes, up, tick_us, late_us)
        yield from _histograms(self._app)
        sync = self._app.sync
        if sync is not None:
            yield from _sync_families(sync.counters())


def _sync_families(counters: dict[str, float]) -> Iterator[Any]:
    """Sync figures: those that only grow as counters (`..._total`), the others as gauges."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    from agent.sync.documents import COUNTERS

    for key, value in counters.items():
        name = f"edge_agent_sync_{key}"
        if key in COUNTERS:  # exposed as `<name>_total`, as Prometheus names counters
            yield CounterMetricFamily(name, f"sync counter {key}", value=value)
        else:
            yield GaugeMetricFamily(name, f"sync gauge {key}", value=value)


BUCKETS_US = (*(m * 10**e for e in range(5) for m in (10, 15, 20, 30, 50, 70)), 1_000_000)
"""Upper bounds exported (us), 10 us to 1 s in six steps a decade: fine enough that a windowed
p99 from `histogram_quantile` is within a bucket (<= 50 %) of the agent's own 3 % buckets."""


def _histograms(app: AgentApp) -> Iterator[Any]:
    """Tick time and lateness as Prometheus histograms: windowed quantiles need the buckets."""
    from prometheus_client.core import HistogramMetricFamily

    families = (
        HistogramMetricFamily(
            "edge_agent_tick_seconds", "Tick compute time", labels=["plugin"], unit="seconds"
        ),
        HistogramMetricFamily(
            "edge_agent_lateness_seconds",
            "Lateness against the deadline",
            labels=["plugin"],
            unit="seconds",
        ),
    )
    for name, snapshots in app.host.histograms().items():
        for family, snap in zip(families, snapshots, strict=True):
            family.add_metric([name], buckets=_buckets(snap), sum_value=snap.total_ns / 1e9)
    yield from families


def _buckets(snap: HistogramSnapshot) -> list[tuple[str, float]]:
    """Cumulative counts at `BUCKETS_US` (each bound rounded to its fine bucket, 3 % wide)."""
    cumulative = snap.counts.cumsum()
    out = [(repr(le / 1e6), float(cumulative[bucket_index(le * 1000)])) for le in BUCKETS_US]
    out.append(("+Inf", float(snap.count)))
    return out


class PrometheusEndpoint:
    """Serves /metrics on 127.0.0.1:`port` while the agent runs."""

    def __init__(self, app: AgentApp, port: int) -> None:
        try:
            from prometheus_client import CollectorRegistry
        except ImportError:
            raise ConfigError(
                [
                    (
                        "service.prometheus_port",
                        "needs prometheus-client: pip install 'edge-agent[prometheus]'",
                        port,
                    )
                ]
            ) from None
        self.registry = CollectorRegistry()
        self.registry.register(AgentCollector(app))
        self.port = port
        self._server: Any = None

    def start(self) -> None:
        """Listen on localhost only: metrics are for a local scraper or an SSH tunnel."""
        from prometheus_client import start_http_server

        self._server, _ = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
