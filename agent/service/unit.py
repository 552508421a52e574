"""The systemd unit: rendered from one template for `service install` and the shipped file."""

from __future__ import annotations

from pathlib import Path

from agent.config.sections import AgentConfig

DEFAULT_EXEC = "/usr/local/bin/edge-agent"
DEFAULT_CONFIG = Path("/etc/edge-agent/agent.toml")

TEMPLATE = """\
# edge-agent as a hardened systemd service. `edge-agent service install` writes this file with
# ExecStart pointing at the installed console script and the chosen config.
[Unit]
Description=edge-agent on-device inference agent
Documentation=https://example.invalid/edge-agent
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_path} run --config {config_path}
# `systemctl reload`: re-read the config file; a bad one is logged and changes nothing.
ExecReload=/bin/kill -HUP $MAINPID
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
PrivateDevices=no
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
# Empty capability set; `service install` adds CAP_SYS_NICE only when a plugin asks for
# realtime_priority in the config.
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
) -> str:
    """The unit text for this config: CAP_SYS_NICE only when a plugin wants real-time priority."""
    plugins = config.plugins if config is not None else []
    caps = "CAP_SYS_NICE" if any(p.realtime_priority for p in plugins) else ""
    credentials = [
        "LoadCredential=mqtt-password:/etc/edge-agent/credentials/mqtt-password",
        "LoadCredential=ota-public.pem:/etc/edge-agent/credentials/ota-public.pem",
    ]
    return TEMPLATE.format(
        exec_path=exec_path,
        config_path=config_path,
        caps=caps,
        credentials="".join(line + "\n" for line in credentials),
    )
