"""A private Mosquitto on a free loopback port: for `edge-agent bench --sync` without --broker,
and for the fleet simulator and the tests (through sim/broker.py).

The broker runs from its own config file in a work folder, so a caller can stop, kill and restart
it on the same port.
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def mosquitto_path() -> str | None:
    """The mosquitto binary, or None when it is not installed."""
    for candidate in MOSQUITTO_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes] | None, *, grace_s: float = 5.0) -> None:
    """SIGTERM `proc`, then SIGKILL it if it has not exited within `grace_s`."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace_s)


@dataclass
class Broker:
    """A Mosquitto process with its own config, data and log in `workdir`."""

    binary: str
    workdir: Path
    port: int
    listener_lines: list[str] = field(default_factory=list)
    extra_lines: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    anonymous: bool = True
    proc: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        """The config file."""
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        """The broker's log file."""
        return self.workdir / "mosquitto.log"

    def write_conf(self) -> None:
        """(Re)write the config file from the fields."""
        lines = [
            "per_listener_settings false",
            f"listener {self.port} {self.host}",
            *self.listener_lines,
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "max_queued_messages 1000000",
            "max_inflight_messages 100",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            # Only effective when started as root: stay root so the tmp folder stays writable.
            f"user {getpass.getuser()}",
            *self.extra_lines,
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        """Start it and wait until the port accepts connections."""
        self.write_conf()
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited: {err}{self.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.2),
            ):
                return
            time.sleep(0.02)
        raise RuntimeError(f"mosquitto not listening on {self.port} after {timeout}s")

    def stop(self) -> None:
        """Stop it cleanly (SIGTERM): sessions and retained messages are saved."""
        stop_process(self.proc)
        self._close()

    def kill(self) -> None:
        """Kill it (SIGKILL): what it did not save is lost."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._close()

    def restart(self) -> None:
        """Stop, then start on the same port."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        """True while the process lives."""
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        """The broker's log so far."""
        return self.log_path.read_text() if self.log_path.exists() else ""

    def _close(self) -> None:
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None
