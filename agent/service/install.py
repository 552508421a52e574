"""`edge-agent service install | uninstall`: the code, config and unit of a hardened service.

Layout (every path below is rooted under `prefix` when one is given, for tests and packagers;
the files written name the final paths):
  /opt/edge-agent/                     the code: a venv made here, or the running venv reused
  /etc/edge-agent/agent.toml           the config, absolute paths only, state under /var/lib
  /etc/edge-agent/credentials/NAME     secrets handed over by LoadCredential= (root only)
  /etc/systemd/system/edge-agent.service
  /var/lib/edge-agent/                 StateDirectory=: outbox and OTA versions
Models are read from the package itself (`agent.runtime.shipped`), never copied.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent.config import AgentConfig, format_config, load_config
from agent.runtime.shipped import board_file, shipped_models_dir
from agent.service.unit import hidden_paths, render_unit
from agent.service.venv import (
    CONSTRAINTS,
    MARKER,
    CodePlan,
    RunningCode,
    constraints,
    hidden_by,
    plan_code,
)

ETC_DIR = Path("/etc/edge-agent")
CONFIG_PATH = ETC_DIR / "agent.toml"
CREDENTIALS_DIR = ETC_DIR / "credentials"
UNIT_PATH = Path("/etc/systemd/system/edge-agent.service")
STATE_DIR = Path("/var/lib/edge-agent")
"""The unit's StateDirectory=edge-agent: the only folder the service may write."""
PASSWORD_CREDENTIAL = "mqtt-password"
CHECKSUM = "# checksum: sha256:"
"""Last header line of a written config: the sha256 of what follows, to spot operator edits."""


@dataclass
class Install:
    """What `service install` writes, worked out before anything is written."""

    source: str
    config_text: str
    unit_text: str
    code: CodePlan
    credentials: list[tuple[str, Path]]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def plan_install(
    *,
    board: str | None = None,
    config: Path | None = None,
    root: Path = Path("/"),
    check_files: bool = True,
    running: RunningCode | None = None,
) -> Install:
    """Load the board or config file and work out every file and command of the install.

    Raises ConfigError (bad config, or a missing file the service reads) or InstallRefused.
    """
    path = board_file(board) if board is not None else config
    if path is None:
        raise ValueError("give a board or a config file")
    source = f"board {board}" if board is not None else str(path.absolute())
    # The machine's EDGE_AGENT__ variables are not the service's: leave them out of the file.
    cfg = load_config(path, env={}, check_files=check_files)
    cfg, credentials, notes = _for_service(cfg)
    running = running or RunningCode.current()
    # Hidden folders follow the unit's own hardening lines, whoever edits them.
    hidden = hidden_paths(render_unit(cfg))
    code = plan_code(running, hidden, root=root)
    unit = render_unit(
        cfg, exec_path=str(code.exec_path), config_path=CONFIG_PATH, credentials=credentials
    )
    plan = Install(source, render_config(cfg, source, running.version), unit, code, credentials)
    plan.notes = [code.note, *notes]
    # The shipped models move with the code (a new venv in /opt), so they are no concern here.
    shipped = cfg.models_dir == shipped_models_dir()
    plan.warnings = [
        f"{key} = {value}: hidden from the service by {why}"
        for key, value in config_paths(cfg)
        if (why := hidden_by(value, hidden)) and not (shipped and key == "models_dir")
    ]
    plan.warnings += [
        f"{key} = {value}: the service's dynamic user cannot read it (mode {mode:04o})"
        for key, value in config_paths(cfg)
        if value.is_file() and not (mode := value.stat().st_mode & 0o7777) & 0o004
    ]
    if check_files:
        _check_credentials(credentials, root)
    return plan


def _for_service(cfg: AgentConfig) -> tuple[AgentConfig, list[tuple[str, Path]], list[str]]:
    """State in StateDirectory=, the MQTT password through LoadCredential=."""
    notes = []
    if cfg.state_dir != STATE_DIR:
        notes.append(f"state_dir: {cfg.state_dir} -> {STATE_DIR} (the unit's StateDirectory=)")
    mqtt = cfg.mqtt
    credentials: list[tuple[str, Path]] = []
    if mqtt.password_file is not None:
        # The dynamic user cannot read a root-only file; systemd hands it over instead.
        credentials.append((PASSWORD_CREDENTIAL, mqtt.password_file))
        notes.append(f"mqtt.password_file {mqtt.password_file} -> LoadCredential=")
        mqtt = mqtt.model_copy(
            update={"password_file": None, "password_credential": PASSWORD_CREDENTIAL}
        )
    elif mqtt.password_credential is not None:
        name = mqtt.password_credential
        credentials.append((name, CREDENTIALS_DIR / name))
    return cfg.model_copy(update={"state_dir": STATE_DIR, "mqtt": mqtt}), credentials, notes


def render_config(cfg: AgentConfig, source: str, version: str) -> str:
    """The /etc config: every key spelled out, absolute paths, a checksum to spot edits."""
    lines = format_config(cfg).splitlines()
    if cfg.models_dir == shipped_models_dir():
        # Left out so it follows the package (a new venv, a new Python) instead of one path.
        top = next((i for i, line in enumerate(lines) if line.startswith("[")), len(lines))
        lines = [x for i, x in enumerate(lines) if i >= top or not x.startswith("models_dir = ")]
    body = "\n".join(lines) + "\n"
    header = (
        f"# Written by `edge-agent service install` (edge-agent {version}) from {source}.\n"
        "# Paths are absolute; models_dir, when absent, is the package's shipped models.\n"
        "# Edit freely: a later install keeps an edited file and writes agent.toml.new beside it.\n"
    )
    return f"{header}{CHECKSUM}{_sha256(body)}\n{body}"


def config_paths(value: Any, key: str = "") -> Iterator[tuple[str, Path]]:
    """Every (key.path, path) in the config, however deep; new path keys are found as well."""
    if isinstance(value, Path):
        yield key, value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from config_paths(getattr(value, name), f"{key}.{name}" if key else name)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from config_paths(item, f"{key}[{i}]")
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from config_paths(item, f"{key}.{name}")


def write_install(plan: Install, root: Path = Path("/")) -> list[str]:
    """Carry out the plan; returns one line per file or command, saying what happened."""
    done = []
    code = plan.code
    if code.make_with is not None:
        subprocess.run(code.commands()[0], check=True)
        (code.venv / MARKER).write_text("made by `edge-agent service install`\n")
        done.append(f"made {code.venv}")
    if code.install is not None:
        (code.venv / CONSTRAINTS).write_text(constraints())
        subprocess.run(code.commands()[-1], check=True)
        done.append(f"installed {code.install} into {code.venv}")
    done.append(_write_config(root / CONFIG_PATH.relative_to("/"), plan.config_text))
    done.append(_write_plain(root / UNIT_PATH.relative_to("/"), plan.unit_text))
    return done


def uninstall(root: Path = Path("/"), *, purge: bool = False) -> list[str]:
    """Remove the unit and a venv `install` made; with purge also the config and the state."""
    paths = [root / UNIT_PATH.relative_to("/")]
    venv = root / "opt" / "edge-agent"
    if (venv / MARKER).is_file():
        paths.append(venv)
    if purge:
        # DynamicUser= keeps the state in /var/lib/private, with /var/lib/edge-agent a link.
        private = Path("/var/lib/private/edge-agent")
        for path in (ETC_DIR, STATE_DIR, private):
            paths.append(root / path.relative_to("/"))
    done = []
    for path in paths:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            continue
        done.append(f"removed {path}")
    return done or ["nothing to remove"]


def _write_config(path: Path, text: str) -> str:
    """Write the config unless the operator edited the one there: then write agent.toml.new."""
    if path.is_file():
        current = path.read_text()
        if current == text:
            return f"unchanged {path}"
        if _edited(current):
            new = path.with_name(path.name + ".new")
            outcome = _write_plain(new, text).split(" ", 1)[0]
            return f"kept {path} (edited by hand); the new one is {new} ({outcome})"
    return _write_plain(path, text)


def _write_plain(path: Path, text: str) -> str:
    if path.is_file() and path.read_text() == text:
        return f"unchanged {path}"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    # Readable by the service's dynamic user; the config holds no secret (those are credentials).
    tmp.chmod(0o644)
    tmp.replace(path)
    return f"wrote {path}"


def _edited(text: str) -> bool:
    _, sep, body = text.partition("\n" + CHECKSUM)
    if not sep:
        return True
    digest, _, rest = body.partition("\n")
    return digest != _sha256(rest)


def _check_credentials(credentials: list[tuple[str, Path]], root: Path) -> None:
    from agent.errors import ConfigError

    missing: list[tuple[str, str, object]] = [
        (f"LoadCredential={name}", "file not found", str(src))
        for name, src in credentials
        # A password_file turned credential was checked by load_config where it lies.
        if src.parent == CREDENTIALS_DIR and not (root / src.relative_to("/")).is_file()
    ]
    if missing:
        raise ConfigError(missing)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
