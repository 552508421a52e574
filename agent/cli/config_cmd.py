"""`edge-agent config check FILE`: validate a configuration and print it as the agent sees it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_INVALID = 2


def register(sub: Any) -> None:
    """Add the `config` group and its `check` command."""
    parser = sub.add_parser("config", help="Check configuration files")
    commands = parser.add_subparsers(dest="config_command", required=True)
    check = commands.add_parser(
        "check",
        help="Validate FILE (with EDGE_AGENT__* overrides) and print the effective config",
        description=(
            "Validate FILE with the EDGE_AGENT__SECTION__KEY environment overrides applied, "
            "and that the plugins it names are installed, its models_dir exists and holds the "
            "models it names, and its schedules parse. "
            "Prints the effective configuration and exits 0, or prints every error as "
            "`key.path: message (got VALUE)` on stderr and exits 2."
        ),
    )
    check.add_argument("file", type=Path, metavar="FILE", help="TOML configuration file")
    check.add_argument(
        "--no-file-check",
        dest="check_files",
        action="store_false",
        help="Do not require TLS, password and key files, models_dir and the models it names "
        "to exist (checking a board's file away from the board)",
    )
    check.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    """Print the effective config (exit 0) or every error (exit 2)."""
    from agent.cli.config_refs import check_references
    from agent.config.errors import error_lines
    from agent.config.loader import format_config, load_config
    from agent.errors import ConfigError

    try:
        config = load_config(args.file, check_files=args.check_files)
    except ConfigError as exc:
        for line in error_lines(_hint_board_files(exc)):
            print(line, file=sys.stderr)
        return EXIT_INVALID
    errors: list[tuple[str, str, object]] = []
    for check in (_check_schedules, check_references):
        try:
            check(config, check_files=args.check_files)
        except ConfigError as exc:
            errors += exc.errors
    if errors:
        for line in error_lines(ConfigError(errors)):
            print(line, file=sys.stderr)
        return EXIT_INVALID
    print(f"# effective configuration of {args.file} (defaults < file < EDGE_AGENT__* environment)")
    sys.stdout.write(format_config(config))
    return 0


def _hint_board_files(exc: Any) -> Any:
    """`exc` with the way out named on every file that was not found: a board's own file
    (a TLS key, a trusted OTA key) is checked here with --no-file-check."""
    from agent.cli.config_refs import BOARD_ONLY_HINT
    from agent.errors import ConfigError

    missing = ("file not found", "not a regular file")
    errors = [
        (path, f"{msg}; {BOARD_ONLY_HINT}" if msg in missing else msg, value)
        for path, msg, value in exc.errors
    ]
    return ConfigError(errors, source=exc.source)


def _check_schedules(config: Any, *, check_files: bool = True) -> None:
    """What the section models cannot see: cron syntax, command names and their arguments."""
    if not config.schedule:
        return  # no need to import APScheduler and the command table
    from agent.scheduler.check import check_schedules
    from agent.sync.builtins import builtin_command_args

    check_schedules(config, builtin_command_args())
