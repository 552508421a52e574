"""`edge-agent service install`: write (or print) the systemd unit and the agent config."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add the `service` command group."""
    svc = sub.add_parser("service", help="run as a systemd service")
    svc_sub = svc.add_subparsers(dest="service_command", required=True)
    inst = svc_sub.add_parser("install", help="write the unit and config (root)")
    inst.add_argument("--config", type=Path, default=None, help="config to install (validated)")
    inst.add_argument("--dry-run", action="store_true", help="print what would be written")
    inst.add_argument("--unit-dir", type=Path, default=Path("/etc/systemd/system"))
    inst.add_argument("--config-dir", type=Path, default=Path("/etc/edge-agent"))
    inst.set_defaults(handler=_install)


def _install(args: argparse.Namespace) -> int:
    from agent.config import ConfigError, load_config
    from agent.service.unit import DEFAULT_EXEC, render_unit

    config = None
    if args.config is not None:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
    exec_path = shutil.which("edge-agent") or DEFAULT_EXEC
    config_path = args.config_dir / "agent.toml"
    unit = render_unit(config, exec_path=exec_path, config_path=config_path)
    unit_path = args.unit_dir / "edge-agent.service"
    if args.dry_run:
        print(f"# {unit_path}\n{unit}")
        if args.config is not None:
            print(f"# {config_path}\n{args.config.read_text()}")
        return 0
    args.unit_dir.mkdir(parents=True, exist_ok=True)
    unit_path.write_text(unit)
    print(f"wrote {unit_path}")
    if args.config is not None:
        args.config_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.config, config_path)
        print(f"wrote {config_path}")
    print("next: systemctl daemon-reload && systemctl enable --now edge-agent")
    return 0
