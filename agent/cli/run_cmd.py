"""`edge-agent run --config FILE [--duration S]`: start everything configured, until stopped.

On a terminal a compact live view (rich, agent/cli/live_view.py) shows the broker link and the
outbox depth, per plugin its model and accelerator, rates, tick time and lateness, overruns and
state, and the last events; otherwise a `key=value` summary line per plugin is logged
periodically. SIGINT and
SIGTERM stop everything within a second, exit code 0. A bad config exits 2, a start failure 1.
SIGHUP (`systemctl reload`) re-reads the config file and applies it like the `config.reload`
command; a file that is unreadable or invalid, or that the engine refuses, changes nothing and
is logged as one error line naming the key path.
Set EDGE_AGENT_DUMP_MODULES=FILE to have the sorted list of imported modules written there at
exit (how the tests check that only the runtimes the models need were imported).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("agent.run")


def register(sub: Any) -> None:
    """Add the `run` command."""
    p = sub.add_parser("run", help="run the configured plugins until stopped")
    p.add_argument("--config", type=Path, required=True, help="agent config (TOML)")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.add_argument(
        "--summary-every", type=float, default=10.0, help="seconds between logged summaries"
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """The `run` handler; returns the exit code."""
    from agent.config import ConfigError, load_config
    from agent.errors import EdgeAgentError
    from agent.service.compose import build_agent
    from agent.service.logs import setup_logging

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    level = getattr(args, "log_level", None) or config.logging.level  # -v/-q/--log-level win
    setup_logging(config.logging.model_copy(update={"level": level}))
    stop = _stop_on_signals()
    reload = _reload_on_sighup()
    try:
        app = build_agent(config, config_path=args.config)
        app.start()
    except EdgeAgentError as exc:
        log.error("start failed: %s", exc)
        return 1
    try:
        _report_ready(app)
        _watch(app, stop, reload, args)
    finally:
        app.stop(timeout=1.0)
        _log_summary(app)
        _dump_modules()
    return 0


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _reload_on_sighup() -> threading.Event:
    # The handler only sets a flag: the reload runs on the main thread's next wake-up, never
    # inside the signal handler (which may interrupt anything, a lock holder included).
    reload = threading.Event()

    def handler(signum: int, frame: object) -> None:
        reload.set()

    signal.signal(signal.SIGHUP, handler)
    return reload


def reload_config(app: Any, path: Path) -> dict[str, Any] | None:
    """Re-read `path`, validate it and apply it as the `config.reload` command does; what
    changed, or None when anything was wrong (then the config in force stays, and the error is
    logged naming the key path)."""
    from agent.config import reload_from_file
    from agent.errors import EdgeAgentError

    log.info("reloading the config from %s", path)
    try:
        return reload_from_file(path, app.apply_config)
    except EdgeAgentError:
        return None  # logged, naming the key
    except Exception:  # a bug in applying must not end the agent: the old config still runs
        log.exception("config reload failed unexpectedly, config unchanged")
        return None


def _report_ready(app: Any) -> None:
    from agent.engine.report import process_age_s

    if app.wait_ready(5.0):
        log.info("ready: all loops ticking %.0f ms after process start", process_age_s() * 1e3)
        if app.watchdog is not None:
            app.watchdog.announce_ready()
    else:
        log.warning("not every loop ticked within 5 s of start")


def _watch(
    app: Any, stop: threading.Event, reload: threading.Event, args: argparse.Namespace
) -> None:
    end = time.monotonic() + args.duration if args.duration is not None else None
    if sys.stdout.isatty():
        _live_view(app, stop, reload, args.config, end)
        return
    next_summary = time.monotonic() + args.summary_every
    while not stop.wait(_until(end, 0.1)):
        now = time.monotonic()
        if end is not None and now >= end:
            break
        _reload_if_asked(app, reload, args.config)
        if now >= next_summary:
            _log_summary(app)
            next_summary = now + args.summary_every


def _until(end: float | None, step: float) -> float:
    if end is None:
        return step
    return max(0.0, min(step, end - time.monotonic()))


def _reload_if_asked(app: Any, reload: threading.Event, path: Path) -> None:
    if reload.is_set():
        reload.clear()  # before reading: a SIGHUP arriving meanwhile reloads once more
        reload_config(app, path)


def _live_view(
    app: Any, stop: threading.Event, reload: threading.Event, path: Path, end: float | None
) -> None:
    from agent.cli.live_view import run_live_view

    def step() -> bool:
        if end is not None and time.monotonic() >= end:
            return False
        _reload_if_asked(app, reload, path)
        return True

    run_live_view(app, stop, step)


def _log_summary(app: Any) -> None:
    from agent.engine.report import plugin_rows, summary_line

    for row in plugin_rows(app.host):
        log.info("%s", summary_line(row))


def _dump_modules() -> None:
    path = os.environ.get("EDGE_AGENT_DUMP_MODULES")
    if path:
        Path(path).write_text(json.dumps(sorted(sys.modules)))
