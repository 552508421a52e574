"""The installed service's life under a real systemd (PID 1 in a container), judged from outside:
systemctl's properties, PID 1's own journal lines, and what reaches the broker.

The tests share one container and one service and run in file order (start, watchdog, faults,
reload, signals, sandbox, stop, OTA and reboot); each starts the service itself when a previous
one left it stopped. PID 1 logs at debug level for the session, so the journal shows every
notification it received (READY=1, WATCHDOG=1, STOPPING=1) in order with its state changes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sim.broker import Broker
from tests.support.systemd import (
    MQTT_USER,
    UNIT,
    Service,
    assert_no_seq_lost,
    fault_seqs,
    figures,
    index_of,
    mono_s,
    n_status,
    restart_figures,
    wait_status,
)
from tests.support.waiting import until

pytestmark = pytest.mark.systemd

WATCHDOG_S = 10.0
"""The unit's WatchdogSec= (checked by the first test)."""


@pytest.fixture(scope="module")
def probe(service: Service, sd_broker: Broker, probe_class: Any) -> Iterator[Any]:
    """An operator's client on every topic of the device, subscribed before the first start
    (so event seqs are seen from 1)."""
    p = probe_class(sd_broker.host, sd_broker.port)
    p.subscribe(f"{service.base}/#")
    service.box.run("systemctl", "log-level", "debug")
    yield p
    p.close()


def test_enable_now_goes_active_only_after_ready(service: Service, probe: Any) -> None:
    cursor = service.cursor()
    t0 = time.monotonic()
    service.box.run("systemctl", "enable", "--now", UNIT)
    enable_s = time.monotonic() - t0
    props = service.wait_running()
    lines = service.messages(cursor)
    ready = index_of(lines, r"Got notification message.*READY=1")
    running = index_of(lines, r"Changed start -> running")
    # PID 1's own lines, in the order it did things: READY=1 first, then running.
    assert ready >= 0 and running > ready, "\n".join(lines[-40:])
    # The agent's line comes through its stdout stream, which journald may read later.
    agent_ready = index_of(lines, r"ready: all loops ticking (\d+) ms")
    assert agent_ready >= 0, "the agent's own log is not in the journal"
    ready_ms = int(re.search(r"ticking (\d+) ms", lines[agent_ready]).group(1))  # type: ignore[union-attr]
    online = wait_status(probe, service.base, 0, "online")
    # Nothing in the hardening the service trips over: no complaint from PID 1, no warning of
    # the agent's (a missing device or /proc file would show here).
    entries, _ = service.journal(cursor)
    complaints = [
        e.get("MESSAGE")
        for e in entries
        if int(e.get("PRIORITY", 6)) <= 4 or str(e.get("MESSAGE")).startswith(("WARNING", "ERROR"))
    ]
    assert not complaints, complaints
    figures(
        "enable_now",
        enable_now_s=round(enable_s, 2),
        time_to_active_s=round(
            mono_s(props, "ActiveEnterTimestampMonotonic")
            - mono_s(props, "InactiveExitTimestampMonotonic"),
            3,
        ),
        agent_ready_ms=ready_ms,
        online_payload=online,
        status_text=props["StatusText"],
    )
    assert props["WatchdogUSec"] == f"{WATCHDOG_S:.0f}s", props


def test_sigstop_gets_killed_and_restarted_by_the_watchdog(service: Service, probe: Any) -> None:
    before = service.ensure_running()
    last_seq = max(fault_seqs(probe, service.base), default=0)
    cursor, seen = service.cursor(), n_status(probe, service.base)
    t0 = time.monotonic()
    service.box.sh(f"kill -STOP {before['MainPID']}")
    got = restart_figures(service, before, t0)
    assert got["restarted_after_s"] <= 2 * WATCHDOG_S, got
    lines = service.messages(cursor)
    assert index_of(lines, r"Watchdog timeout") >= 0, "\n".join(lines[-30:])
    wait_status(probe, service.base, seen, "online")
    seqs = assert_no_seq_lost(probe, service.base, last_seq)
    got.pop("props")
    figures("watchdog_sigstop", watchdog_sec=WATCHDOG_S, **got, **seqs)


def test_a_hung_tick_gets_the_service_restarted(service: Service, probe: Any) -> None:
    before = service.ensure_running()
    wait_status(probe, service.base, 0, "online")
    last_seq = max(fault_seqs(probe, service.base), default=0)
    cursor, seen = service.cursor(), n_status(probe, service.base)
    t0 = time.monotonic()
    reply = probe.command(service.base, "plugin.set", {"name": "fault", "params": {"mode": "hang"}})
    assert reply["ok"], reply
    got = restart_figures(service, before, t0)
    assert got["restarted_after_s"] <= 2 * WATCHDOG_S, got
    lines = service.messages(cursor)
    assert index_of(lines, r"watchdog withheld: loops not ticking: fault") >= 0
    assert index_of(lines, r"Watchdog timeout") >= 0
    wait_status(probe, service.base, seen, "online")
    seqs = assert_no_seq_lost(probe, service.base, last_seq)
    got.pop("props")
    figures("watchdog_hung_tick", **got, **seqs)


def test_a_crash_storming_plugin_does_not_restart_the_service(service: Service, probe: Any) -> None:
    before = service.ensure_running()
    wait_status(probe, service.base, 0, "online")
    t0 = time.monotonic()
    reply = probe.command(
        service.base, "plugin.set", {"name": "fault", "params": {"mode": "crash"}}
    )
    assert reply["ok"], reply

    def crashes() -> int:
        fault = [
            m["plugins"]["fault"]
            for m in probe.payloads(f"{service.base}/metrics")
            if isinstance(m, dict) and "fault" in m.get("plugins", {})
        ]
        return int(fault[-1].get("crashes", 0)) if fault else 0

    # Longer than systemd would wait for a withheld ping, twice over.
    assert probe.wait_for(lambda: time.monotonic() - t0 > 2 * WATCHDOG_S and crashes() >= 5, 60)
    props = service.show()
    assert props["MainPID"] == before["MainPID"], props
    assert props["NRestarts"] == before["NRestarts"], props
    assert props["ActiveState"] == "active", props
    storm = crashes()
    reply = probe.command(service.base, "plugin.set", {"name": "fault", "params": {"mode": "calm"}})
    assert reply["ok"], reply
    assert probe.wait_for(lambda: _state(probe, service.base, "fault") == "running", 30)
    figures(
        "crash_storm",
        storm_s=round(time.monotonic() - t0, 1),
        plugin_crashes=storm,
        service_restarts=int(props["NRestarts"]) - int(before["NRestarts"]),
    )


def _state(probe: Any, base: str, plugin: str) -> str | None:
    """The plugin's state in the latest metrics payload."""
    for m in reversed(probe.payloads(f"{base}/metrics")):
        if isinstance(m, dict) and plugin in m.get("plugins", {}):
            return str(m["plugins"][plugin].get("state"))
    return None


def test_reload_applies_a_valid_edit_and_survives_a_broken_one(
    service: Service, probe: Any, until: Callable[..., bool]
) -> None:
    before = service.ensure_running()
    good = service.read_config()
    edited = good.replace("rate_hz = 20.0", "rate_hz = 25.0", 1)
    assert edited != good, "the fault plugin's rate is not in the installed config"
    cursor = service.cursor()
    service.write_config(edited)
    service.box.run("systemctl", "reload", UNIT)
    assert until(lambda: _rate(probe, service.base) == 25.0, 30)
    assert until(lambda: index_of(service.messages(cursor), r"config reloaded") >= 0, 30)

    cursor = service.cursor()
    service.write_config(edited.replace("rate_hz = 25.0", "rate_hz = -1.0", 1))
    service.box.run("systemctl", "reload", UNIT)
    assert service.box.run("systemctl", "is-active", UNIT).stdout.strip() == "active"
    failed: list[str] = []

    def logged() -> bool:
        failed[:] = [m for m in service.messages(cursor) if "config reload failed" in m]
        return bool(failed)

    assert until(logged, 30)
    assert "rate_hz" in failed[0], failed
    props = service.show()
    assert props["MainPID"] == before["MainPID"] and props["ActiveState"] == "active", props
    assert _rate(probe, service.base) == 25.0
    service.write_config(good)
    service.box.run("systemctl", "reload", UNIT)
    assert until(lambda: _rate(probe, service.base) == 20.0, 30)
    figures("reload", broken_edit_error=failed[0])


def _rate(probe: Any, base: str) -> float | None:
    """The fault plugin's rate as the agent reports it now (plugins.list)."""
    reply = probe.command(base, "plugins.list")
    for plugin in reply.get("result", []):
        if plugin["name"] == "fault":
            return float(plugin["rate_hz"])
    return None


def test_kill_9_is_followed_by_a_restart(service: Service, probe: Any) -> None:
    before = service.ensure_running()
    last_seq = max(fault_seqs(probe, service.base), default=0)
    seen = n_status(probe, service.base)
    t0 = time.monotonic()
    service.box.sh(f"kill -9 {before['MainPID']}")
    got = restart_figures(service, before, t0)
    # The broker's last will says offline (no reason), then the new process says online.
    will = wait_status(probe, service.base, seen, "offline")
    assert "reason" not in will, will
    wait_status(probe, service.base, seen, "online")
    seqs = assert_no_seq_lost(probe, service.base, last_seq)
    got.pop("props")
    figures("kill_9", **got, **seqs)


def test_dynamic_user_writes_only_its_state_and_gets_the_password_as_a_credential(
    service: Service, sd_broker: Broker
) -> None:
    props = service.ensure_running()
    box, pid = service.box, props["MainPID"]
    ids = box.sh(f"awk '/^Uid:|^Gid:/ {{print $2}}' /proc/{pid}/status").split()
    uid, gid = int(ids[0]), int(ids[1])
    assert 61184 <= uid <= 65519, f"not a dynamic user: uid {uid}"

    def as_service(script: str) -> subprocess.CompletedProcess[str]:
        # In the service's own mount namespace, as its user: what the agent could do.
        return box.run(
            "nsenter",
            "-t",
            pid,
            "-m",
            "-S",
            str(uid),
            "-G",
            str(gid),
            "sh",
            "-c",
            script,
            check=False,
        )

    writable = {}
    for path in ("/var/lib/edge-agent", "/usr", "/etc", "/etc/edge-agent", "/home", "/root"):
        probe_file = f"{path}/.sd-probe"
        writable[path] = as_service(f"touch {probe_file} && rm -f {probe_file}").returncode == 0
    assert writable == {
        "/var/lib/edge-agent": True,
        "/usr": False,
        "/etc": False,
        "/etc/edge-agent": False,
        "/home": False,
        "/root": False,
    }, writable
    outbox = as_service("ls -ln /var/lib/edge-agent/outbox.db").stdout.split()
    assert outbox and int(outbox[2]) == uid, outbox

    env = box.sh(f"tr '\\0' '\\n' < /proc/{pid}/environ")
    creds_dir = re.search(r"^CREDENTIALS_DIRECTORY=(.*)$", env, re.MULTILINE)
    assert creds_dir, env
    secret = as_service(f"cat {creds_dir.group(1)}/mqtt-password")
    assert secret.returncode == 0 and secret.stdout.strip(), secret
    # The root-only source file stays unreadable to the service; the config holds no secret.
    assert as_service("cat /etc/edge-agent/credentials/mqtt-password").returncode != 0
    assert secret.stdout.strip() not in service.read_config()
    assert "password_credential" in service.read_config()
    log = sd_broker.log()
    assert re.search(rf"u'{MQTT_USER}'", log), "the agent never logged in as its user"
    assert "not authorised" not in log
    figures("sandbox", uid=uid, writable=writable, credentials_directory=creds_dir.group(1))


def test_the_robot_loop_runs_at_sched_fifo_with_cap_sys_nice_only(service: Service) -> None:
    """generic-x86 isolates the robot at realtime_priority 50; the unit grants CAP_SYS_NICE and
    nothing else, and exactly the child's loop thread runs SCHED_FIFO."""
    service.ensure_running()
    # Every thread whose cgroup is the unit's, whatever the cgroup hierarchy of the box.
    script = (
        "for t in /proc/[0-9]*/task/[0-9]*; do "
        f"grep -qs '/{UNIT}$' $t/cgroup && chrt -p ${{t##*/}}; done; true"
    )

    def fifo_threads() -> list[str]:
        out = service.box.sh(script)
        return re.findall(r"pid (\d+)'s current scheduling policy: SCHED_FIFO\n.*priority: 50", out)

    until(fifo_threads, 30.0, step=0.5)  # the child starts after the host
    threads = fifo_threads()
    caps = service.box.sh(f"systemctl show -p CapabilityBoundingSet --value {UNIT}").strip()
    figures("realtime", fifo_threads=len(threads), capability_bounding_set=caps)
    assert len(threads) == 1, service.box.sh(script)
    assert caps == "cap_sys_nice", caps


def test_security_exposure(service: Service) -> None:
    service.ensure_running()
    out = service.box.run("systemd-analyze", "security", "--no-pager", UNIT).stdout
    m = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", out)
    assert m, out
    exposure = float(m.group(1))
    open_items = [
        line.split()[1]
        for line in out.splitlines()
        if line.startswith("✗") and len(line.split()) > 1
    ]
    figures("security", exposure=exposure, rating=m.group(2), open=open_items)
    # 1.5 with no capability; generic-x86's robot loop asks for SCHED_FIFO, so the unit holds
    # CAP_SYS_NICE, which systemd-analyze scores 0.1 more.
    assert exposure <= 1.6, out


def test_stop_exits_0_and_says_offline_itself(service: Service, probe: Any) -> None:
    service.ensure_running()
    cursor, seen = service.cursor(), n_status(probe, service.base)
    t0 = time.monotonic()
    proc = service.box.run("systemctl", "stop", UNIT, check=False)
    stop_s = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    props = service.show()
    assert props["ActiveState"] == "inactive", props
    assert props["Result"] == "success" and props["ExecMainStatus"] == "0", props
    lines = service.messages(cursor)
    assert index_of(lines, r"Got notification message.*STOPPING=1") >= 0, "\n".join(lines)
    offline = wait_status(probe, service.base, seen, "offline")
    assert offline.get("reason") == "shutdown", offline  # its own, not the broker's last will
    figures("stop", stop_s=round(stop_s, 2), offline_payload=offline)


def test_an_ota_model_survives_a_reboot(
    service: Service, probe: Any, sd_broker: Broker, ota_keys: Path, tmp_path: Path
) -> None:
    service.ensure_running()
    wait_status(probe, service.base, 0, "online")
    model = tmp_path / "energy_anomaly"
    shutil.copytree(_shipped_model("energy_anomaly"), model)
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["version"] = "1.0.1"
    (model / "manifest.json").write_text(json.dumps(manifest, indent=1))
    bundle = tmp_path / "energy_anomaly.bundle"
    cli = [sys.executable, "-m", "agent.cli.main", "ota"]
    key = ota_keys / "private.pem"
    subprocess.run(
        [*cli, "pack", str(model), "--key", str(key), "--out", str(bundle)],
        check=True,
        capture_output=True,
    )
    t0 = time.monotonic()
    published = subprocess.run(
        [
            *cli,
            "publish",
            str(bundle),
            "--broker",
            f"127.0.0.1:{sd_broker.port}",
            "--device",
            service.device_id,
            "--json",
            "--timeout",
            "60",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
    )
    assert published.returncode == 0, published.stdout + published.stderr
    probe.wait_payload(
        f"{service.base}/ota/energy_anomaly/status",
        lambda p: p.get("state") == "active" and p.get("version") == "1.0.1",
        timeout=60,
    )
    ota_s = time.monotonic() - t0
    assert _model_version(probe, service.base, "energy") == "1.0.1"

    off_s = service.box.poweroff()
    seen = n_status(probe, service.base)
    t1 = time.monotonic()
    boot_s = service.box.boot()
    props = service.wait_running()
    wait_status(probe, service.base, seen, "online")
    assert _model_version(probe, service.base, "energy") == "1.0.1"
    figures(
        "ota_reboot",
        ota_to_active_s=round(ota_s, 1),
        poweroff_s=round(off_s, 1),
        boot_s=round(boot_s, 1),
        boot_to_service_active_s=round(mono_s(props, "ActiveEnterTimestampMonotonic") - t1, 1),
    )


def _shipped_model(name: str) -> Path:
    from agent.shipped import shipped_models_dir

    return shipped_models_dir() / name


def _model_version(probe: Any, base: str, plugin: str) -> str | None:
    reply = probe.command(base, "plugins.list")
    for p in reply.get("result", []):
        if p["name"] == plugin:
            version = p.get("model_version")
            return None if version is None else str(version)
    return None
