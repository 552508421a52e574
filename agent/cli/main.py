"""The `edge-agent` command: one sub-command module per concern, imported lazily."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module defines `register(subparsers)`; heavy imports stay inside the handlers so that
# `edge-agent run` imports only the runtimes its models need.
COMMAND_MODULES = (
    "agent.cli.config_cmd",
    "agent.cli.models_cmd",
    "agent.cli.run_cmd",
    "agent.cli.bench_cmd",
    "agent.cli.sim_cmd",
    "agent.cli.ota_cmd",
    "agent.cli.fleet_cmd",
    "agent.cli.service_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(prog="edge-agent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
