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
CONSTRAINTS = "constraints.txt"
"""In a venv `service install` made: the versions it pinned, those of the venv it ran from."""


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
    script: Path | None = None
    """The edge-agent console script when not `prefix/bin` (Debian's pip uses /usr/local/bin)."""

    @classmethod
    def current(cls) -> RunningCode:
        """Describe this process: its venv (or system prefix), base Python and package origin."""
        dist = metadata.distribution(DIST)
        source, editable = _origin(dist)
        base = Path(os.path.realpath(sys.executable))
        scripts = [f for f in dist.files or [] if f.parent.name == "bin" and f.name == "edge-agent"]
        script = Path(os.path.normpath(str(dist.locate_file(scripts[0])))) if scripts else None
        return cls(Path(sys.prefix), base, dist.version, source, editable, script)


@dataclass(frozen=True)
class CodePlan:
    """The console script the unit runs, and what must be done first for it to exist."""

    exec_path: Path
    venv: Path
    note: str
    make_with: Path | None = None
    """The Python that makes the venv; None when it exists (reused, or made before)."""
    install: str | None = None
    """What pip installs there (a wheel, a source folder, `edge-agent==V`); None: nothing."""

    def commands(self) -> list[list[str]]:
        """The commands `write_install` runs, in order."""
        out = []
        if self.make_with is not None:
            out.append([str(self.make_with), "-m", "venv", str(self.venv)])
        if self.install is not None:
            pins = str(self.venv / CONSTRAINTS)
            pip = [str(self.venv / "bin" / "python"), "-m", "pip", "install", "-q"]
            out.append([*pip, "-c", pins, self.install])
        return out


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
            ("the edge-agent script", running.script),
            ("its Python", running.base_python),
            ("the editable checkout", running.editable_dir),
        )
        if path is not None and (why := hidden_by(path, hidden))
    ]
    if not blocked:
        script = running.script or running.prefix / "bin" / "edge-agent"
        return CodePlan(script, running.prefix, f"code: reusing {running.prefix} ({script})")
    what, path, why = blocked[0]
    reason = f"{what} {path} is hidden from the service ({why})"
    target = root / VENV_DIR.relative_to("/")
    exec_path = VENV_DIR / "bin" / "edge-agent"
    made = (target / MARKER).is_file()
    if target.exists() and not made:
        raise InstallRefused(
            f"{reason}, and {VENV_DIR} exists but was not made by `service install`: "
            f"run {exec_path} service install, or move that folder away"
        )
    if made and _version_in(target) == running.version:
        note = f"code: {reason}; {VENV_DIR} already holds edge-agent {running.version}"
        return CodePlan(exec_path, target, note)
    python = None if made else _visible_python(running, hidden, system_python)
    if python is None and not made:
        raise InstallRefused(
            f"{reason}, and no Python outside {', '.join(map(str, hidden))} can make "
            f"{VENV_DIR}: install one (apt-get install python3-venv) or install edge-agent "
            f"into a venv under /opt and run its edge-agent"
        )
    source = running.source or f"{DIST}=={running.version}"
    how = f"installing into {VENV_DIR}" if made else f"making {VENV_DIR} with {python}"
    return CodePlan(exec_path, target, f"code: {reason}; {how} from {source}", python, source)


def _version_in(venv: Path) -> str | None:
    """The edge-agent version installed in `venv`, None when there is none."""
    for info in venv.glob("lib/python3*/site-packages/edge_agent-*.dist-info"):
        return info.name.removeprefix("edge_agent-").removesuffix(".dist-info")
    return None


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
