"""One real `edge-agent run` process for soak and fault tests: config written, log captured.

The process is started exactly as systemd would start it (a fresh interpreter running the CLI), so
what is measured from outside (RSS, what reaches the broker, how it reacts to signals) is what an
operator would see. `prefix` runs it under a wrapper such as `faketime`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from agent.engine.report import rss_mb

ROOT = Path(__file__).resolve().parents[1]

ALL_PLUGINS = """\
[[plugins]]
name = "smart_home"
rate_hz = 10
model = "smart_home_comfort"

[[plugins]]
name = "energy"
rate_hz = 50
model = "energy_anomaly"

[[plugins]]
name = "robot"
rate_hz = 500
model = "robot_policy"
"""


def agent_config(
    *,
    state_dir: Path,
    host: str,
    port: int,
    device_id: str,
    metrics_s: float = 5.0,
    telemetry_flush_s: float = 1.0,
    prometheus_port: int | None = None,
    plugins: str = ALL_PLUGINS,
    extra: str = "",
) -> str:
    """The TOML of an agent with all three plugins on the simulated HAL, syncing to host:port."""
    service = f"\n[service]\nprometheus_port = {prometheus_port}\n" if prometheus_port else ""
    return f"""\
# Written by sim.agentproc for a soak or fault run.
state_dir = "{state_dir}"
models_dir = "{ROOT / "models"}"

[device]
id = "{device_id}"
board = "generic-x86"

[runtime]
accelerator = "cpu"

[mqtt]
host = "{host}"
port = {port}

[hal]
backend = "sim"
sim_seed = 0

[scheduler]
metrics_s = {metrics_s}
telemetry_flush_s = {telemetry_flush_s}
{service}
{extra}
{plugins}"""


class AgentProcess:
    """An `edge-agent run --config FILE` child process, its stderr in `log_path`."""

    def __init__(
        self,
        config: Path,
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.prefix = list(prefix)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process (returns at once; see `wait_log` for readiness)."""
        cmd = [*self.prefix, sys.executable, "-m", "agent.cli.main", "run"]
        cmd += ["--config", str(self.config), "--summary-every", "3600"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=log
            )

    @property
    def pid(self) -> int:
        """The process id (after `start`)."""
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        """True while the process lives."""
        return self.proc is not None and self.proc.poll() is None

    def rss_mb(self) -> float:
        """Resident memory now, in MB (0.0 once it exited)."""
        return rss_mb(self.pid) if self.running else 0.0

    def signal(self, signum: int) -> None:
        """Send a signal (SIGHUP to reload, SIGTERM to stop, ...)."""
        assert self.proc is not None, "not started"
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(5)

    def log(self) -> str:
        """Everything the agent logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, pattern: str, timeout: float = 30.0, *, after: int = 0) -> re.Match[str]:
        """Wait for a log line matching `pattern` (searched from character `after`)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = rx.search(self.log(), after)
            if match:
                return match
            if not self.running:
                raise RuntimeError(
                    f"agent exited ({self.proc and self.proc.returncode}):\n{self.log()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"no log line /{pattern}/ in {timeout} s:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the agent logged that all loops tick."""
        self.wait_log(r"ready: all loops ticking", timeout)
