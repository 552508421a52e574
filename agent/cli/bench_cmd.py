"""`edge-agent bench --config FILE [--duration S] [--isolate PLUGIN] [--repeat N] [--json]`: tick
cost and jitter, as ratios (with --repeat, each ratio's spread over N runs).

With --json, stdout carries exactly one JSON object; without, a table with units. Progress (one
line per phase, with the expected total time) and logs go to stderr; -q silences the progress.
See agent/bench/engine.py for what each figure measures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add the `bench` command."""
    p = sub.add_parser("bench", help="measure tick cost and jitter against bare baselines")
    p.add_argument("--config", type=Path, required=True, help="agent config (TOML)")
    p.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds of agent run (the baselines add about 1.5x --floor-duration per plugin)",
    )
    p.add_argument(
        "--floor-duration",
        type=float,
        default=None,
        help="seconds of each empty-loop floor run (default: min(duration, 10))",
    )
    p.add_argument(
        "--sync",
        action="store_true",
        help="run the agent phase with MQTT sync on (as `run` does) and also measure MQTT "
        "publish and outbox throughput, agent vs bare paho",
    )
    p.add_argument(
        "--broker",
        default=None,
        metavar="HOST:PORT",
        help="broker for --sync (default: a private Mosquitto on a free port)",
    )
    p.add_argument(
        "--isolate",
        action="append",
        default=[],
        metavar="PLUGIN",
        help="run PLUGIN once more in its own process (isolate = true) after the agent phase and "
        "report its tick beside the in-process one (repeatable; adds --duration)",
    )
    p.add_argument(
        "--isolate-rounds",
        type=int,
        default=1,
        metavar="N",
        help="with --isolate: alternate in-process and isolated runs N times and report medians "
        "(on a shared machine one pair of runs says little)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run the whole bench N times and report each ratio's median, min and max "
        "(`repeat` in the JSON; the other figures are the last run's)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=bench)


def bench(args: argparse.Namespace) -> int:
    """The `bench` handler; returns the exit code."""
    from agent.bench.engine import bench_engine
    from agent.bench.repeat import summarize
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
    if args.repeat < 1:
        print(f"--repeat must be at least 1 (got {args.repeat})", file=sys.stderr)
        return 2
    reports = []
    with _sync_broker(args.sync, args.broker) as broker:
        try:
            for n in range(args.repeat):
                if args.repeat > 1 and not _quiet(args):
                    _progress(f"run {n + 1} of {args.repeat}")
                reports.append(
                    bench_engine(
                        config,
                        duration_s=args.duration,
                        floor_s=args.floor_duration,
                        progress=None if _quiet(args) else _progress,
                        isolate=args.isolate,
                        isolate_rounds=max(1, args.isolate_rounds),
                        sync_to=broker if isinstance(broker, tuple) else None,
                    )
                )
        except EdgeAgentError as exc:
            print(f"bench failed: {exc}", file=sys.stderr)
            return 1
        report = summarize(reports) if len(reports) > 1 else reports[0]
        if isinstance(broker, str):
            report["sync"] = {"error": broker}
        elif broker is not None:
            if not _quiet(args):
                _progress("sync: MQTT publish and outbox throughput, agent vs bare paho (~20 s)")
            from agent.bench.sync import bench_sync

            report["sync"] = bench_sync(*broker, seconds=8.0)
    if args.json:
        print(json.dumps(report))
    else:
        _print_table(report)
    return 0


@contextlib.contextmanager
def _sync_broker(wanted: bool, broker: str | None) -> Iterator[tuple[str, int] | str | None]:
    """With --sync, the broker the whole run syncs to: the given one, or a private Mosquitto
    started for the run; a string says why there is none; None without --sync."""
    if not wanted:
        yield None
        return
    if broker is not None:
        host, _, port = broker.rpartition(":")
        yield (host or "127.0.0.1", int(port))
        return
    import tempfile

    from agent.bench.broker import Broker, free_port, mosquitto_path

    binary = mosquitto_path()
    if binary is None:
        yield "mosquitto not installed; pass --broker HOST:PORT"
        return
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        private = Broker(binary=binary, workdir=Path(tmp), port=free_port())
        private.start()
        try:
            yield (private.host, private.port)
        finally:
            private.stop()


def _quiet(args: argparse.Namespace) -> bool:
    """-q or --log-level WARNING/ERROR asked for silence (the default WARNING level does not)."""
    return getattr(args, "log_level", None) in ("WARNING", "ERROR")


def _progress(line: str) -> None:
    # stderr: stdout carries the table or the one JSON object, nothing else.
    print(f"bench: {line}", file=sys.stderr, flush=True)


TABLE_HEAD = (
    ("plugin", "model", "accelerator", "rate Hz", "tick p50 us", "bare tight p50 us"),
    ("bare paced p50 us", "x tight", "x paced", "late p99 us", "floor late p99 us", "overruns"),
)
RATIO_NOTE = (
    "x tight / x paced: tick p50 over the model's bare call p50, in a tight loop and paced at "
    "the plugin's rate (a call after a sleep runs on a cold core: the paced ratio is the fair one)"
)


def _print_table(report: dict[str, Any]) -> None:
    print(
        f"rss {report['rss_mb']} MB (floor {report['floor_rss_mb']} MB), "
        f"ready {report['ready_ms']} ms after process start"
    )
    rows = [_row(p) for p in report["plugins"]]
    head = TABLE_HEAD[0] + TABLE_HEAD[1]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    for cells in (head, *rows):
        print("  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    print(RATIO_NOTE)
    for p in report["plugins"]:
        iso = p.get("isolated")
        if iso:
            print(
                f"{p['plugin']} isolated: tick p50 {iso['tick_us']['p50']:g} us against "
                f"{iso['in_process_tick_us']['p50']:g} us in process (x{iso['ratio_p50']}, "
                f"medians of {iso['rounds']} rounds), "
                f"late p99 {iso['lateness_us']['p99']:g} us, "
                f"overruns {iso['overruns']}/{iso['ticks']}"
            )
    repeat = report.get("repeat")
    if repeat:
        print(f"over {repeat['runs']} runs, median [min - max]:")
        for name, ratios in repeat["plugins"].items():
            spans = [f"{key} {_span(ratios[key])}" for key in ("ratio_p50", "ratio_p50_paced")]
            print(f"  {name}: " + ", ".join(spans))
        print(f"  rss_ratio {_span(repeat['rss_ratio'])}")
    if "sync" in report:
        print("sync:", json.dumps(report["sync"]))


def _span(s: dict[str, Any]) -> str:
    if s["median"] is None:
        return "-"
    return f"{s['median']:g} [{s['min']:g} - {s['max']:g}]"


def _row(p: dict[str, Any]) -> tuple[str, ...]:
    def fig(value: Any) -> str:
        return "-" if value is None else f"{value:g}"

    bare = p.get("bare_us") or {}
    paced = p.get("bare_paced_us") or {}
    return (
        p["plugin"],
        p["model"] or "-",
        p.get("accelerator") or "-",
        fig(p["rate_hz"]),
        fig(p["tick_us"]["p50"]),
        fig(bare.get("p50")),
        fig(paced.get("p50")),
        fig(p["ratio_p50"]),
        fig(p.get("ratio_p50_paced")),
        fig(p["lateness_us"]["p99"]),
        fig(p["floor_lateness_us"]["p99"]),
        f"{p['overruns']}/{p['ticks']} ({p['overrun_pct']:g} %)",
    )
