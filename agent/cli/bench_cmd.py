"""`edge-agent bench --config FILE [--duration S] [--json]`: tick cost and jitter, as ratios.

With --json, stdout carries exactly one JSON object (logs go to stderr); without, a short table.
See agent/bench/engine.py for what each figure measures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add the `bench` command."""
    p = sub.add_parser("bench", help="measure tick cost and jitter against bare baselines")
    p.add_argument("--config", type=Path, required=True, help="agent config (TOML)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of agent run")
    p.add_argument(
        "--floor-duration",
        type=float,
        default=None,
        help="seconds of each empty-loop floor run (default: min(duration, 10))",
    )
    p.add_argument(
        "--sync",
        action="store_true",
        help="also measure MQTT publish and outbox throughput, agent vs bare paho",
    )
    p.add_argument(
        "--broker",
        default=None,
        metavar="HOST:PORT",
        help="broker for --sync (default: a private Mosquitto on a free port)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=bench)


def bench(args: argparse.Namespace) -> int:
    """The `bench` handler; returns the exit code."""
    from agent.bench.engine import bench_engine
    from agent.config import ConfigError, load_config
    from agent.errors import EdgeAgentError
    from agent.service.logs import setup_logging

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    level = getattr(args, "log_level", None) or "WARNING"  # the agent's INFO lines are noise here
    setup_logging(config.logging.model_copy(update={"level": level}), stream=sys.stderr)
    try:
        report = bench_engine(config, duration_s=args.duration, floor_s=args.floor_duration)
    except EdgeAgentError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    if args.sync:
        report["sync"] = _bench_sync(args.broker)
    if args.json:
        print(json.dumps(report))
    else:
        _print_table(report)
    return 0


def _bench_sync(broker: str | None) -> dict[str, Any]:
    """Sync figures against the given broker, or a private Mosquitto started for the run."""
    import tempfile

    from agent.bench.broker import Broker, free_port, mosquitto_path
    from agent.bench.sync import bench_sync

    if broker is not None:
        host, _, port = broker.rpartition(":")
        return bench_sync(host or "127.0.0.1", int(port), seconds=8.0)
    binary = mosquitto_path()
    if binary is None:
        return {"error": "mosquitto not installed; pass --broker HOST:PORT"}
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        private = Broker(binary=binary, workdir=Path(tmp), port=free_port())
        private.start()
        try:
            return bench_sync(private.host, private.port, seconds=8.0)
        finally:
            private.stop()


def _print_table(report: dict[str, Any]) -> None:
    print(
        f"rss {report['rss_mb']} MB (floor {report['floor_rss_mb']} MB), "
        f"ready {report['ready_ms']} ms"
    )
    head = ("plugin", "Hz", "bare p50", "tick p50", "ratio", "late p99", "floor p99", "overruns")
    print("  ".join(f"{h:>10}" for h in head))
    for p in report["plugins"]:
        bare = p["bare_us"]["p50"] if p["bare_us"] else "-"
        cells = (
            p["plugin"],
            p["rate_hz"],
            bare,
            p["tick_us"]["p50"],
            p["ratio_p50"] if p["ratio_p50"] is not None else "-",
            p["lateness_us"]["p99"],
            p["floor_lateness_us"]["p99"],
            f"{p['overruns']}/{p['ticks']}",
        )
        print("  ".join(f"{c!s:>10}" for c in cells))
    if "sync" in report:
        print("sync:", json.dumps(report["sync"]))
