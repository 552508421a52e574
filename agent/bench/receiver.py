"""The sync benchmark's subscriber: its own process (a consumer is never inside the agent, and
sharing the GIL with it would slow both sides), and the parent's handle on it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np


def nodelay(client: Any, userdata: Any, sock: Any) -> None:
    """paho on_socket_open: TCP_NODELAY, as the agent sets it (see shared/MEASURED.md)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def percentiles(values_ms: list[float]) -> dict[str, float | None]:
    """p50 and p99 of `values_ms` (None when empty)."""
    if not values_ms:
        return {"p50": None, "p99": None}
    arr = np.asarray(values_ms, dtype=np.float64)
    return {
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p99": round(float(np.percentile(arr, 99)), 3),
    }


def _stamp_of(payload: bytes) -> int:
    """The send time carried by a payload: bare digits, or an event's data.t."""
    if payload[:1] == b"{":
        return int(json.loads(payload)["data"]["t"])
    return int(payload.strip())


def receiver_main(host: str, port: int, filters: list[str]) -> None:
    """Subscriber process: `END <topic> <n> <lat>` on stdin -> one JSON line of results."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: dict[str, list[tuple[int, bytes]]] = {}
    lock = threading.Lock()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        now = time.monotonic_ns()
        with lock:
            got.setdefault(msg.topic, []).append((now, msg.payload))

    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.on_socket_open = nodelay
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe([(f, 1) for f in filters])
    client.connect(host, port)
    client.loop_start()
    subscribed.wait(10)
    print("READY", flush=True)
    for line in sys.stdin:
        _, topic, n, lat = line.split()
        msgs = _wait(got, lock, topic, int(n))
        result: dict[str, Any] = {"count": len(msgs)}
        if msgs:
            result["first_ns"], result["last_ns"] = msgs[0][0], msgs[-1][0]
        if lat == "1":
            delays = [(recv - _stamp_of(p)) / 1e6 for recv, p in msgs]
            result["latency_ms"] = percentiles(delays)
        with lock:
            got.pop(topic, None)
        print(json.dumps(result), flush=True)
    client.disconnect()
    client.loop_stop()


def _wait(
    got: dict[str, list[tuple[int, bytes]]], lock: threading.Lock, topic: str, n: int
) -> list[tuple[int, bytes]]:
    """Wait for `n` messages on `topic`, or until none arrived for 1 s (QoS 0 may be lost)."""
    seen, since = -1, time.monotonic()
    deadline = since + 60.0
    while time.monotonic() < deadline:
        with lock:
            count = len(got.get(topic, ()))
        if count >= n:
            break
        if count != seen:
            seen, since = count, time.monotonic()
        elif time.monotonic() - since > 1.0:
            break
        time.sleep(0.005)
    with lock:
        return list(got.get(topic, ()))


class Receiver:
    """The parent's handle on the subscriber process."""

    def __init__(self, host: str, port: int, filters: list[str]) -> None:
        code = (
            "import sys, json; from agent.bench.receiver import receiver_main; "
            "receiver_main(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]))"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, host, str(port), json.dumps(filters)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "READY":
            raise RuntimeError(f"bench subscriber could not subscribe at {host}:{port}")

    def result(self, topic: str, n: int, *, latency: bool = False) -> dict[str, Any]:
        """Wait for the subscriber to have `n` messages on `topic`; what it measured."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"END {topic} {n} {int(latency)}\n")
        self.proc.stdin.flush()
        out: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return out

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
