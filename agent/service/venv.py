"""Where the service's code comes from: the running venv reused, or a venv in /opt made from it.

The unit hides /home, /root, /tmp and /var/tmp (ProtectHome=, PrivateTmp=), so a venv there, an
editable checkout there or a Python built there (pyenv, conda in a home folder) cannot run the
service. Then /opt/edge-agent is made with a Python outside them and the same edge-agent version
installed into it, its dependencies pinned to the versions running now.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote

VENV_DIR = Path("/opt/edge-agent")
MARKER = ".edge-agent-service"
"""File in a venv that `service install` made, so `uninstall` removes only what it made."""
DIST = "edge-agent"


class InstallRefused(Exception):
    """The service cannot be installed as asked; the message says why and what to do."""


@dataclass(frozen=True)
class RunningCode:
    """The interpreter and edge-agent distribution running this command."""

    prefix: Path
    base_python: Path
    version: str
    source: str | None
    editable_dir: Path | None

    @classmethod
    def current(cls) -> RunningCode:
        """Describe this process: its venv (or system prefix), base Python and package origin."""
        dist = metadata.distribution(DIST)
        source, editable = _origin(dist)
        base = Path(os.path.realpath(sys.executable))
        return cls(Path(sys.prefix), base, dist.version, source, editable)


@dataclass(frozen=True)
class CodePlan:
    """The console script the unit runs, and the commands that make it exist (none to reuse)."""

    exec_path: Path
    venv: Path
    commands: list[list[str]]
    note: str

    @property
    def creates(self) -> bool:
        """Whether a new venv is made (and `uninstall` may remove it)."""
        return bool(self.commands)


def plan_code(
    running: RunningCode,
    hidden: dict[Path, str],
    *,
    root: Path = Path("/"),
    system_python: Path = Path("/usr/bin/python3"),
) -> CodePlan:
    """Reuse the running venv when the service can see it, else plan /opt/edge-agent."""
    blocked = [
        (what, path, why)
        for what, path in (
            ("the running venv", running.prefix),
            ("its Python", running.base_python),
            ("the editable checkout", running.editable_dir),
        )
        if path is not None and (why := hidden_by(path, hidden))
    ]
    if not blocked:
        script = running.prefix / "bin" / "edge-agent"
        return CodePlan(script, running.prefix, [], f"code: reusing {running.prefix}")
    what, path, why = blocked[0]
    reason = f"{what} {path} is hidden from the service ({why})"
    python = _visible_python(running, hidden, system_python)
    if python is None:
        raise InstallRefused(
            f"{reason}, and no Python outside {', '.join(map(str, hidden))} can make "
            f"{VENV_DIR}: install one (apt-get install python3-venv) or install edge-agent "
            f"into a venv under /opt and run its edge-agent"
        )
    source = running.source or f"{DIST}=={running.version}"
    target = root / VENV_DIR.relative_to("/")
    pins = target / "constraints.txt"
    commands = [
        [str(python), "-m", "venv", str(target)],
        [str(target / "bin/python"), "-m", "pip", "install", "-q", "-c", str(pins), source],
    ]
    note = f"code: {reason}; making {VENV_DIR} with {python} from {source}"
    return CodePlan(VENV_DIR / "bin" / "edge-agent", target, commands, note)


def constraints() -> str:
    """Pins of every distribution installed here but edge-agent: the new venv gets the same."""
    pins = {
        d.metadata["Name"].lower(): d.version
        for d in metadata.distributions()
        if d.metadata["Name"] and d.metadata["Name"].lower() not in (DIST, "pip", "setuptools")
    }
    return "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def hidden_by(path: Path, hidden: dict[Path, str]) -> str | None:
    """The directive that hides `path` from the service, or None when it can see it."""
    for root, directive in hidden.items():
        if path == root or root in path.parents:
            return directive
    return None


def _visible_python(running: RunningCode, hidden: dict[Path, str], fallback: Path) -> Path | None:
    for python in (running.base_python, fallback):
        if python.is_file() and hidden_by(Path(os.path.realpath(python)), hidden) is None:
            return python
    return None


def _origin(dist: metadata.Distribution) -> tuple[str | None, Path | None]:
    """Where pip can get this very version again (PEP 610 direct_url.json), and an editable dir."""
    text = dist.read_text("direct_url.json")
    if not text:
        return None, None  # from an index: `edge-agent==VERSION` finds it again
    info = json.loads(text)
    url = str(info.get("url", ""))
    if not url.startswith("file://"):
        return url or None, None
    path = Path(unquote(url.removeprefix("file://")))
    editable = path if info.get("dir_info", {}).get("editable") else None
    # A wheel or source folder that is gone cannot be installed again; ask the index instead.
    return (str(path) if path.exists() else None), editable
