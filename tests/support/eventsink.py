"""An MQTT subscriber in its own process, writing every message it gets to a file.

Run as `python -m tests.support.eventsink HOST PORT FILTER...` by `EventSink`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from sim.broker import Broker
from tests.support.paths import child_env
from tests.support.waiting import until


class EventSink:
    """Every message on some topics, as `topic payload` lines in a file, from another process.

    An in-process client would share the agent's GIL and heap: receiving 20,000 events it
    tripled the RSS figure and halved the robot's tick ratio while the backlog drained.
    """

    def __init__(self, broker: Broker, filters: list[str], out: Path) -> None:
        self.out = out
        self._file = out.open("wb")
        args = [sys.executable, "-m", __name__, broker.host, str(broker.port), *filters]
        self.proc = subprocess.Popen(
            args, stdout=self._file, stderr=subprocess.PIPE, env=child_env()
        )

    def wait_subscribed(self, timeout: float = 15.0) -> None:
        """Return once the subscriptions are acknowledged (the first line says READY)."""

        def ready() -> bool:
            return self.out.read_bytes().startswith(b"READY\n")

        # Stop early when the process died: it will never say READY.
        until(lambda: ready() or self.proc.poll() is not None, timeout, 0.05)
        if not ready():
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise AssertionError(f"event sink did not subscribe: {err}")

    def count(self) -> int:
        """Messages received so far."""
        return self.out.read_bytes().count(b"\n") - 1

    def payloads(self) -> list[Any]:
        """JSON payloads received so far, in arrival order."""
        lines = self.out.read_bytes().split(b"\n")[1:]
        return [json.loads(line.split(b" ", 1)[1]) for line in lines if line]

    def close(self) -> None:
        """Stop the process."""
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()
        self._file.close()


def main(argv: list[str]) -> int:
    """The sink process: subscribe (QoS 1) to argv[2:] on argv[0]:argv[1], print every message."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    host, port, filters = argv[0], int(argv[1]), argv[2:]
    out = sys.stdout.buffer
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        c.subscribe([(f, 1) for f in filters])

    def on_subscribe(c: Any, userdata: Any, mid: Any, reasons: Any, props: Any) -> None:
        out.write(b"READY\n")
        out.flush()

    def on_message(c: Any, userdata: Any, msg: Any) -> None:
        out.write(msg.topic.encode() + b" " + msg.payload + b"\n")
        out.flush()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, port, 30)
    signal.signal(signal.SIGTERM, lambda *a: client.disconnect())
    client.loop_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
