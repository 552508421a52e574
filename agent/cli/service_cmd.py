"""`edge-agent service install | uninstall`: lay out the agent as a hardened systemd service."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

NEXT = "next: systemctl daemon-reload && systemctl enable --now edge-agent"


def register(sub: Any) -> None:
    """Add the `service` command group."""
    svc = sub.add_parser("service", help="run as a systemd service")
    svc_sub = svc.add_subparsers(dest="service_command", required=True)
    inst = svc_sub.add_parser(
        "install", help="write the code, config and unit of the service (root; see docs/deploy.md)"
    )
    what = inst.add_mutually_exclusive_group(required=True)
    what.add_argument("--board", help="a shipped board file, e.g. generic-x86 or raspberry-pi-5")
    what.add_argument("--config", type=Path, help="a config file of your own")
    _prefix(inst)
    inst.add_argument(
        "--no-file-check",
        action="store_true",
        help="do not require the files the config names (TLS, keys, credentials) to exist yet",
    )
    inst.add_argument("--dry-run", action="store_true", help="print what would be written")
    inst.set_defaults(handler=_install)
    rm = svc_sub.add_parser("uninstall", help="remove the unit and a venv that install made")
    _prefix(rm)
    rm.add_argument(
        "--purge", action="store_true", help="also remove /etc/edge-agent and the state directory"
    )
    rm.set_defaults(handler=_uninstall)


def _prefix(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prefix",
        type=Path,
        default=Path("/"),
        help="root every written path here (tests, packagers); files still name the final paths",
    )


def _install(args: argparse.Namespace) -> int:
    from agent.errors import ConfigError
    from agent.runtime.shipped import ShippedError
    from agent.service.install import plan_install, write_install
    from agent.service.venv import InstallRefused

    try:
        plan = plan_install(
            board=args.board,
            config=args.config,
            root=args.prefix,
            check_files=not args.no_file_check,
        )
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        print("(files that exist only on the board: --no-file-check)", file=sys.stderr)
        return 2
    except (ShippedError, InstallRefused) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Warnings before anything is written, so the operator sees them even if a write fails.
    for line in plan.warnings:
        print(f"warning: {line}", file=sys.stderr)
    for line in plan.notes:
        print(line)
    if args.dry_run:
        for command in plan.code.commands():
            print("would run:", " ".join(command))
        print(f"# {args.prefix / 'etc/edge-agent/agent.toml'}\n{plan.config_text}")
        print(f"# {args.prefix / 'etc/systemd/system/edge-agent.service'}\n{plan.unit_text}")
        return 0
    try:
        for line in write_install(plan, args.prefix):
            print(line)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, src in plan.credentials:
        print(f"credential {name}: systemd reads {src} (root, mode 0600)")
    print(NEXT)
    return 0


def _uninstall(args: argparse.Namespace) -> int:
    from agent.service.install import uninstall

    print("first: systemctl disable --now edge-agent")
    try:
        for line in uninstall(args.prefix, purge=args.purge):
            print(line)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
