"""`edge-agent fleet status`: one row per device from what the agents publish, trouble first.

Read from the broker, never from the devices: the retained `status` (online, or the last will's
offline), the retained `state` (plugins, active models) and each model's retained OTA status,
plus the periodic `metrics` (outbox depth) when one arrives while the view listens. So a device
that is off still has a row, with the last thing it said.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

EXIT_FAILED = 1
EXIT_USAGE = 2
OTA_TROUBLE = ("rejected", "rolled_back", "failed")
OTA_QUIET = ("idle", "active")


def register(sub: Any) -> None:
    """Add the `fleet` command group."""
    fleet = sub.add_parser("fleet", help="the fleet as the broker sees it")
    fleet_sub = fleet.add_subparsers(dest="fleet_command", required=True)
    st = fleet_sub.add_parser("status", help="one row per device, trouble first")
    st.add_argument("--broker", required=True, metavar="HOST:PORT", help="MQTT broker")
    st.add_argument("--group", default=None, metavar="G", help="only devices of this group")
    st.add_argument("--json", action="store_true", help="print the rows as one JSON list")
    st.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    st.add_argument("--interval", type=float, default=2.0, help="--watch: seconds between views")
    st.add_argument(
        "--wait", type=float, default=3.0, help="longest wait for retained documents (s)"
    )
    st.add_argument("--topic-root", default="edge", help="first topic level (mqtt.topic_root)")
    st.add_argument(
        "--protocol", choices=("auto", "5", "3.1.1"), default="auto",
        help="MQTT version; auto tries 5, then 3.1.1 (NATS, RabbitMQ)",
    )  # fmt: skip
    st.add_argument("--username", default=None, help="broker user name")
    st.set_defaults(handler=_status)


@dataclass
class DeviceView:
    """What the broker holds about one device."""

    device: str
    status: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    ota: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Retained OTA status per model."""

    @property
    def group(self) -> str | None:
        """The device's group, from its state or status."""
        return self.state.get("group") or self.status.get("group")

    @property
    def online(self) -> bool:
        """The retained status says online (the last will says offline)."""
        return self.status.get("state") == "online"

    def row(self) -> dict[str, Any]:
        """The device's row: the fields of the table, plain JSON."""
        plugins = [p for p in self.state.get("plugins", []) if isinstance(p, dict)]
        sync = self.metrics.get("sync", {}) if isinstance(self.metrics.get("sync"), dict) else {}
        depth = sync.get("outbox_depth")
        seen = [d.get("ts") for d in (self.status, self.state, self.metrics)]
        numbers = [t for t in seen if isinstance(t, (int, float))]
        return {
            "device": self.device,
            "group": self.group,
            "online": self.online,
            "last_seen": max(numbers) if numbers else None,
            "models": {
                str(slot): m.get("version")
                for slot, m in sorted(self.state.get("models", {}).items())
                if isinstance(m, dict)
            },
            "plugins_running": sum(p.get("state") == "running" for p in plugins),
            "plugins": len(plugins),
            "plugins_down": sorted(
                str(p.get("name")) for p in plugins if p.get("state") != "running"
            ),
            "outbox_depth": int(depth) if isinstance(depth, (int, float)) else None,
            "ota": {m: s.get("state") for m, s in sorted(self.ota.items())},
            "trouble": self.trouble(),
        }

    def trouble(self) -> str:
        """The worst thing about this device, '' when nothing is wrong."""
        if not self.status:
            return "no status"
        if not self.online:
            return "offline"
        bad = [
            f"{m} {s.get('state')}" for m, s in self.ota.items() if s.get("state") in OTA_TROUBLE
        ]
        if bad:
            return "ota " + ", ".join(sorted(bad))
        plugins = [p for p in self.state.get("plugins", []) if isinstance(p, dict)]
        down = [str(p.get("name")) for p in plugins if p.get("state") not in ("running", None)]
        if down:
            return "plugins not running: " + ", ".join(sorted(down))
        busy = [m for m, s in self.ota.items() if s.get("state") not in OTA_QUIET]
        if busy:
            return "ota in progress: " + ", ".join(sorted(busy))
        return ""


RANKS = ("no status", "offline", "ota ", "plugins", "ota in progress")


def rank(row: dict[str, Any]) -> tuple[int, str]:
    """Sort key: offline and failed updates first, healthy devices last, then by id."""
    trouble = str(row["trouble"])
    if not trouble:
        return (len(RANKS), row["device"])
    for i, prefix in enumerate(RANKS):
        if trouble.startswith(prefix) and not (prefix == "ota " and "progress" in trouble):
            return (i, row["device"])
    return (len(RANKS) - 1, row["device"])


class FleetView:
    """Collects the fleet's documents from one subscription to each kind."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.devices: dict[str, DeviceView] = {}
        self._lock = threading.Lock()
        self.last_message = time.monotonic()

    def filters(self) -> list[tuple[str, int]]:
        """What to subscribe to."""
        r = self.root
        return [(f"{r}/+/status", 1), (f"{r}/+/state", 1), (f"{r}/+/metrics", 0),
                (f"{r}/+/ota/+/status", 1)]  # fmt: skip

    def on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        """paho callback: file the document under its device."""
        parts = str(msg.topic).split("/")
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return  # not ours to judge; a hostile payload just gives no row
        if not isinstance(doc, dict) or len(parts) < 3 or parts[1] in ("group", "all"):
            return
        with self._lock:
            self.last_message = time.monotonic()
            view = self.devices.setdefault(parts[1], DeviceView(parts[1]))
            if len(parts) == 3 and parts[2] in ("status", "state", "metrics"):
                setattr(view, parts[2], doc)
            elif len(parts) == 5 and parts[2] == "ota" and parts[4] == "status":
                view.ota[parts[3]] = doc

    def rows(self, group: str | None = None) -> list[dict[str, Any]]:
        """The table, trouble first."""
        with self._lock:
            views = list(self.devices.values())
        rows = [v.row() for v in views if group is None or v.group == group]
        return sorted(rows, key=rank)


def render(rows: list[dict[str, Any]], now: float | None = None) -> str:
    """The rows as a text table."""
    now = time.time() if now is None else now
    lines = [
        f"{'DEVICE':<24} {'GROUP':<12} {'ONLINE':<7} {'SEEN':>7} {'PLUGINS':>7} {'OUTBOX':>6} "
        f"{'MODELS':<28} {'OTA':<16} TROUBLE"
    ]
    for r in rows:
        seen = "-" if r["last_seen"] is None else _ago(now - float(r["last_seen"]))
        models = ", ".join(f"{k}={v}" for k, v in r["models"].items()) or "-"
        ota = ", ".join(f"{k}:{v}" for k, v in r["ota"].items()) or "-"
        depth = "-" if r["outbox_depth"] is None else str(r["outbox_depth"])
        lines.append(
            f"{r['device']:<24} {r['group'] or '-':<12} {'yes' if r['online'] else 'NO':<7} "
            f"{seen:>7} {r['plugins_running']:>3}/{r['plugins']:<3} {depth:>6} "
            f"{models:<28} {ota:<16} {r['trouble'] or 'ok'}"
        )
    total = len(rows)
    online = sum(r["online"] for r in rows)
    trouble = sum(bool(r["trouble"]) for r in rows)
    lines.append(f"{total} devices, {online} online, {trouble} with trouble")
    return "\n".join(lines)


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def _status(args: argparse.Namespace) -> int:
    from agent.transport.operator import OperatorBroker, connect_operator, parse_address

    try:
        host, port = parse_address(args.broker)
    except ValueError as exc:
        print(f"edge-agent fleet: {exc}", file=sys.stderr)
        return EXIT_USAGE
    view = FleetView(args.topic_root)
    subscribed = threading.Event()

    def on_connect(client: Any) -> None:
        client.on_subscribe = lambda *a: subscribed.set()
        client.subscribe(view.filters())

    broker = OperatorBroker(host, port, args.protocol, args.username)
    try:
        client = connect_operator(
            broker, name="edge-fleet-status", on_connect=on_connect, on_message=view.on_message
        )
    except ConnectionError as exc:
        print(f"edge-agent fleet: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        _settle(view, subscribed, args.wait)
        while True:
            rows = view.rows(args.group)
            out = json.dumps(rows) if args.json else render(rows)
            if args.watch and not args.json:
                out = "\x1b[H\x1b[2J" + out  # clear the terminal between views
            print(out, flush=True)
            if not args.watch:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        client.loop_stop()
        client.disconnect()


def _settle(view: FleetView, subscribed: threading.Event, wait_s: float) -> None:
    """Wait until the retained documents have come in: quiet for 0.3 s, or `wait_s` at most."""
    deadline = time.monotonic() + wait_s
    subscribed.wait(wait_s)
    view.last_message = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - view.last_message < 0.3:
        time.sleep(0.05)
