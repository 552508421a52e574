"""A Debian bookworm root booted with systemd as PID 1 under systemd-nspawn, driven by nsenter.

The root is made once with debootstrap (about two minutes) and cached outside the repository
(`$EDGE_AGENT_TEST_CACHE`, default /var/cache/edge-agent-test); each session boots a fresh copy
of it, so what one run installed never leaks into the next. The container shares the host's
network, so a broker the tests start on 127.0.0.1 is reachable from the service inside.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

RELEASE = "bookworm"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv")
FALLBACK_MIRROR = "http://deb.debian.org/debian"
CACHE = Path(os.environ.get("EDGE_AGENT_TEST_CACHE", "/var/cache/edge-agent-test"))
PIP_CACHE_INSIDE = "/var/cache/edge-agent-pip"
"""Where the host's pip cache is bound into the container: a second session downloads nothing."""
CLEAN_ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LANG=C.UTF-8",
    "SYSTEMD_PAGER=",
    "SYSTEMD_COLORS=0",
)
"""The whole environment of a command inside: the host's (pip settings, a venv) stays out."""


def host_mirror(release: str = RELEASE) -> str:
    """The Debian mirror the host's apt uses for `release`, else deb.debian.org."""
    sources = Path("/etc/apt/sources.list.d")
    for path in sorted(sources.glob("*.sources")) if sources.is_dir() else []:
        for stanza in path.read_text().split("\n\n"):
            fields: dict[str, str] = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.MULTILINE))
            if (
                "deb" in fields.get("Types", "").split()
                and release in fields.get("Suites", "").split()
            ):
                return fields["URIs"].split()[0]
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        for line in legacy.read_text().splitlines():
            m = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)\s", line)
            if m and m.group(2) == release:
                return m.group(1)
    return FALLBACK_MIRROR


def cached_root(cache: Path = CACHE) -> Path:
    """The pristine bookworm root, made with debootstrap on first use (under a lock)."""
    base = cache / f"{RELEASE}-{'-'.join(p.replace('-', '') for p in PACKAGES)}"
    if base.is_dir():
        return base
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / "lock"):
        if base.is_dir():  # another session made it while we waited
            return base
        tmp = cache / f"{base.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            RELEASE,
            str(tmp),
            host_mirror(),
        ]
        log = cache / "debootstrap.log"
        with log.open("w") as out:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({proc.returncode}); see {log}")
        tmp.rename(base)  # atomic: a half-made root is never taken for a cached one
    return base


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_systemd_cgroup() -> None:
    """systemd in a container on a cgroup-v1 host needs the name=systemd hierarchy mounted."""
    mounts = Path("/proc/mounts").read_text()
    if re.search(r"^\S+ /sys/fs/cgroup cgroup2 ", mounts, re.MULTILINE):
        return  # unified hierarchy: nspawn hands the container its own subtree
    target = Path("/sys/fs/cgroup/systemd")
    if re.search(r"^\S+ /sys/fs/cgroup/systemd cgroup ", mounts, re.MULTILINE):
        return
    target.mkdir(exist_ok=True)
    subprocess.run(
        ["mount", "-t", "cgroup", "-o", "none,name=systemd", "cgroup", str(target)], check=True
    )


class Container:
    """One root directory booted (and re-booted) with systemd-nspawn."""

    def __init__(self, root: Path, *, binds: Sequence[tuple[Path, str]] = ()) -> None:
        self.root = root
        self.binds = list(binds)
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.console = root.parent / f"{root.name}.console.log"
        self.boots = 0

    def boot(self, timeout: float = 90.0) -> float:
        """Start systemd as PID 1 and wait until it reports `running`; seconds it took."""
        assert self.proc is None, "already booted"
        started = time.monotonic()
        cmd = [
            "systemd-nspawn",
            "-D",
            str(self.root),
            "--register=no",
            "--keep-unit",
            "--console=pipe",
            *(f"--bind={host}:{inside}" for host, inside in self.binds),
            "-b",
        ]
        with self.console.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        self.boots += 1
        self.pid = self._wait_init(timeout)
        state = ""
        while time.monotonic() - started < timeout:
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.1)
        if state != "running":
            failed = self.run("systemctl", "--failed", "--no-legend", check=False).stdout
            raise RuntimeError(f"container not running after boot: {state!r}; failed: {failed}")
        return time.monotonic() - started

    def _wait_init(self, timeout: float) -> int:
        """The container's PID 1 as the host sees it: the child of systemd-nspawn."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited {self.proc.returncode}: {self.tail()}")
            with contextlib.suppress(OSError):
                for pid in children.read_text().split():
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        return int(pid)
            time.sleep(0.05)
        raise RuntimeError(f"no systemd under systemd-nspawn after {timeout}s: {self.tail()}")

    def run(
        self,
        *cmd: str,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` inside (all namespaces, a clean environment); output as text."""
        assert self.pid, "not booted"
        full = ["nsenter", "-t", str(self.pid), "-a", "env", "-i", *CLEAN_ENV, *cmd]
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def sh(self, script: str, *, check: bool = True, timeout: float = 120.0) -> str:
        """Run a shell script inside; its stdout."""
        return self.run("sh", "-c", script, check=check, timeout=timeout).stdout

    def path(self, inside: str) -> Path:
        """The host path of a file inside the container."""
        return self.root / inside.lstrip("/")

    def poweroff(self, timeout: float = 60.0) -> float:
        """`systemctl poweroff` inside and wait for systemd-nspawn to exit; seconds it took."""
        if self.proc is None:
            return 0.0
        started = time.monotonic()
        # The connection may drop as PID 1 goes down: the exit code tells nothing.
        self.run("systemctl", "poweroff", check=False, timeout=timeout)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise
        finally:
            self.proc = None
            self.pid = 0
        return time.monotonic() - started

    def kill(self) -> None:
        """Stop the container the hard way (teardown after a failure)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
        self.pid = 0

    def tail(self, lines: int = 20) -> str:
        """The end of the console output (boot messages, systemd's own complaints)."""
        if not self.console.exists():
            return ""
        return "\n".join(self.console.read_text(errors="replace").splitlines()[-lines:])
