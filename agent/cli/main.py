"""The `edge-agent` command line: one sub-command module per concern."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from agent import __version__

DESCRIPTION = """\
Run int8 TFLite and ONNX models in real-time plugin loops on this device, report over MQTT and
take signed model updates.

First steps:
  edge-agent config check FILE     validate a config and print it as the agent sees it
  edge-agent models verify         check the shipped models (sha256, load, golden vectors)
  edge-agent run --config FILE     run every configured plugin until Ctrl-C

Every command has its own --help. Docs: README.md and docs/ (mqtt.md, ota.md, ...)."""

# Each module defines `register(subparsers)` and imports what its handler needs inside the
# handler, so `edge-agent run` imports only the runtimes its models need. Keyed by the command
# name each module registers, in the order `--help` lists them.
COMMANDS = {
    "config": "agent.cli.config_cmd",
    "models": "agent.cli.models_cmd",
    "run": "agent.cli.run_cmd",
    "bench": "agent.cli.bench_cmd",
    "sim": "agent.cli.sim_cmd",
    "ota": "agent.cli.ota_cmd",
    "fleet": "agent.cli.fleet_cmd",
    "service": "agent.cli.service_cmd",
}
COMMAND_MODULES = tuple(COMMANDS.values())
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser: with every sub-command registered, or, when `argv` names one, with
    that one alone (see `_modules_for`)."""
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _modules_for(argv):
        importlib.import_module(name).register(sub)
    _add_log_flags(parser)
    return parser


def _modules_for(argv: Sequence[str] | None) -> tuple[str, ...]:
    """The command modules that parsing `argv` needs: the named command's alone, else all.

    A long-running `edge-agent run` kept every other command's module, its handlers and what
    they import at the top (subprocess, the model importer's CLI) for its whole life: about 1 MB
    of its RSS (measured on generic-x86). Top-level help, `--version` and anything that names no
    known command get every module, so their output and errors stay as before.
    """
    if argv is None:
        return COMMAND_MODULES
    args = iter(argv)
    for arg in args:
        if _names_option(arg, "--help", "-h") or _names_option(arg, "--version"):
            return COMMAND_MODULES
        if _names_option(arg, "--log-level") and "=" not in arg:
            next(args, None)  # its value is no command
        elif not arg.startswith("-"):
            module = COMMANDS.get(arg)
            return (module,) if module is not None else COMMAND_MODULES
    return COMMAND_MODULES


def _names_option(arg: str, long: str, short: str | None = None) -> bool:
    """Whether `arg` is `long` as argparse reads it (a prefix of it; `=value` attached), or
    holds `short` in a cluster of short flags (`-vh`)."""
    if arg.startswith("--"):
        name = arg.partition("=")[0]
        return len(name) > 2 and long.startswith(name)
    return short is not None and arg.startswith("-") and short[1] in arg[1:]


def _add_log_flags(parser: argparse.ArgumentParser) -> None:
    """The log level flags on `parser` and every sub-command below it, so that both
    `edge-agent -v run ...` and `edge-agent run ... -v` work."""
    group = parser.add_argument_group("logging")
    exclusive = group.add_mutually_exclusive_group()
    # SUPPRESS: a sub-command that is not given the flag must not reset what the top level set.
    exclusive.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        type=str.upper,
        default=argparse.SUPPRESS,
        help="log level (overrides the config's logging.level)",
    )
    exclusive.add_argument(
        "-v",
        "--verbose",
        dest="log_level",
        action="store_const",
        const="DEBUG",
        default=argparse.SUPPRESS,
        help="same as --log-level DEBUG",
    )
    exclusive.add_argument(
        "-q",
        "--quiet",
        dest="log_level",
        action="store_const",
        const="WARNING",
        default=argparse.SUPPRESS,
        help="warnings and errors only (same as --log-level WARNING)",
    )
    for action in parser._actions:  # argparse offers no public walk over sub-parsers
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_log_flags(child)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    if getattr(args, "log_level", None) is not None:
        # Commands that set logging up from their config (run, bench) apply the flag again.
        logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
