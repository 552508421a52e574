"""The systemd unit: rendered from one template for `service install` and the shipped file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agent.config.sections import AgentConfig

DEFAULT_EXEC = "/usr/local/bin/edge-agent"
DEFAULT_CONFIG = Path("/etc/edge-agent/agent.toml")

TEMPLATE = """\
# edge-agent as a hardened systemd service. `edge-agent service install` writes this file with
# ExecStart pointing at the installed console script and the chosen config.
[Unit]
Description=edge-agent on-device inference agent
Documentation={docs}
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_path} run --config {config_path}
# `systemctl reload`: re-read the config file; a bad one is logged and changes nothing. The
# shell's own kill: /bin/kill comes with procps, which a minimal image does not have.
ExecReload=/bin/sh -c "kill -HUP ${{MAINPID}}"
# The agent pings only while every loop ticks: a stuck loop gets the process restarted.
WatchdogSec=10s
Restart=on-failure
RestartSec=2s
TimeoutStopSec=5s
DynamicUser=yes
StateDirectory=edge-agent
StateDirectoryMode=0750
ConfigurationDirectory=edge-agent
{credentials}# Hardening: nothing on the file system is writable but StateDirectory.
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateMounts=yes
# Other processes are invisible in /proc; the agent reads only /proc/self.
ProtectProc=invisible
# /dev holds the pseudo devices only, plus the accelerator nodes a board has ("-": skipped where
# missing): Coral PCIe (apex) and USB, the i.MX 8M Plus NPU (galcore), Jetson's GPU (nvhost,
# nvmap). HAL devices come through the simulator or MQTT, never through /dev.
PrivateDevices=yes
BindPaths=-/dev/apex_0 -/dev/bus/usb -/dev/galcore -/dev/nvmap -/dev/nvhost-ctrl-gpu
BindPaths=-/dev/nvhost-gpu -/dev/nvhost-as-gpu -/dev/nvhost-prof-gpu -/dev/nvgpu
DeviceAllow=char-apex rw
DeviceAllow=char-usb_device rw
DeviceAllow=char-galcore rw
DeviceAllow=char-nvhost* rw
DeviceAllow=char-nvmap rw
DeviceAllow=char-nvgpu* rw
NoNewPrivileges=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=no
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=no
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
# A library probing a call outside the filter gets EPERM, instead of the agent dying of SIGSYS.
SystemCallErrorNumber=EPERM
# Empty capability set; `service install` adds CAP_SYS_NICE only when a plugin asks for
# realtime_priority in the config. (LimitRTPRIO= would need no capability, but systemd can only
# raise that limit where it holds CAP_SYS_RESOURCE, which a container's systemd often lacks.)
CapabilityBoundingSet={caps}
AmbientCapabilities={caps}
UMask=0077

[Install]
WantedBy=multi-user.target
"""


def render_unit(
    config: AgentConfig | None = None,
    *,
    exec_path: str = DEFAULT_EXEC,
    config_path: Path = DEFAULT_CONFIG,
    credentials: Sequence[tuple[str, Path]] = (),
) -> str:
    """The unit text for this config: CAP_SYS_NICE only when a plugin wants real-time priority,
    one LoadCredential= per (name, source file) the config reads from $CREDENTIALS_DIRECTORY."""
    plugins = config.plugins if config is not None else []
    caps = "CAP_SYS_NICE" if any(p.realtime_priority for p in plugins) else ""
    # The docs install beside the code (data files of the wheel): <venv>/share/doc/edge-agent.
    docs = Path(exec_path).parent.parent / "share" / "doc" / "edge-agent"
    return TEMPLATE.format(
        exec_path=exec_path,
        config_path=config_path,
        caps=caps,
        docs=f"file:{docs / 'deploy.md'} file:{docs / 'mqtt.md'}",
        credentials="".join(f"LoadCredential={name}:{src}\n" for name, src in credentials),
    )


def hidden_paths(unit: str) -> dict[Path, str]:
    """Folders the unit's hardening hides from the service, each with the directive that does."""
    hidden: dict[Path, str] = {}
    for line in unit.splitlines():
        key, _, value = line.partition("=")
        if key == "ProtectHome" and value in ("yes", "tmpfs"):
            hidden |= dict.fromkeys(map(Path, ("/home", "/root", "/run/user")), line)
        elif key == "PrivateTmp" and value == "yes":
            hidden |= dict.fromkeys(map(Path, ("/tmp", "/var/tmp")), line)
        elif key == "InaccessiblePaths":
            hidden |= {Path(v.lstrip("-")): line for v in value.split()}
    return hidden
