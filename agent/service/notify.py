"""sd_notify(3) over $NOTIFY_SOCKET: READY, WATCHDOG, STATUS, STOPPING.

Twenty lines of socket code instead of a dependency: the protocol is one datagram per message.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


class Notifier:
    """Sends service-manager notifications; silently does nothing outside systemd."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        # An address starting with "@" lives in the abstract namespace.
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        self._sock: socket.socket | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        owned = not pid or pid == str(os.getpid())
        self.watchdog_s: float | None = int(usec) / 1e6 if usec.isdigit() and owned else None

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that listens."""
        return bool(self._addr)

    def send(self, **fields: str | int) -> bool:
        """Send `KEY=value` lines (e.g. READY=1, STATUS=...); False when nobody listens or the
        listener's queue is full."""
        if not self._addr:
            return False
        if self._sock is None:
            # Non-blocking: a listener that stops reading (a hung service manager, a test) must
            # cost a dropped notification, never a watchdog thread or a shutdown stuck in send.
            self._sock = socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            )
        payload = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            self._sock.sendto(payload, self._addr)
        except OSError:
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """READY=1, once every loop ticks."""
        return self.send(READY=1, STATUS=status) if status else self.send(READY=1)

    def watchdog(self) -> bool:
        """WATCHDOG=1: the agent is healthy."""
        return self.send(WATCHDOG=1)

    def status(self, text: str) -> bool:
        """STATUS=<one line>, shown by systemctl status."""
        return self.send(STATUS=text.replace("\n", " "))

    def stopping(self) -> bool:
        """STOPPING=1, at the start of a clean shutdown."""
        return self.send(STOPPING=1)

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
