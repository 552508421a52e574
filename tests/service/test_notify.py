"""sd_notify messages reach a unix datagram socket posing as systemd."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.service.notify import Notifier
from agent.service.watchdog import Watchdog, loops_ticking


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    yield sock, path
    sock.close()


def test_ready_status_stopping_reach_the_socket(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.ready("3 loops ticking")
    assert sock.recv(4096) == b"READY=1\nSTATUS=3 loops ticking"
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"


def test_a_listener_that_stops_reading_never_blocks_the_sender(
    notify_socket: tuple[socket.socket, str],
) -> None:
    # Nobody reads: the socket's queue fills; sends then fail at once instead of hanging the
    # watchdog thread (or a shutdown sending STOPPING=1).
    _, path = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    results = [n.status("x" * 512) for _ in range(5000)]
    assert results[0] and not results[-1]
    assert not n.stopping()


def test_without_systemd_notifier_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.ready()
    assert n.watchdog_s is None


def test_watchdog_period_comes_from_systemd_env(notify_socket: tuple[socket.socket, str]) -> None:
    _, path = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
    assert n.watchdog_s == 4.0
    other = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_s is None  # the watchdog belongs to another process


def test_stuck_loop_withholds_the_ping(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    counters = {"fast": 0, "stuck": 0}

    def tick() -> dict[str, int]:
        return dict(counters)

    dog = Watchdog(Notifier({"NOTIFY_SOCKET": path}), [loops_ticking(tick)], period_s=1.0)
    assert dog.check_once() is None  # first look: nothing to compare with yet
    assert sock.recv(4096) == b"WATCHDOG=1"
    counters["fast"] += 5
    counters["stuck"] += 5
    assert dog.check_once() is None
    assert sock.recv(4096) == b"WATCHDOG=1"
    counters["fast"] += 5
    reason = dog.check_once()
    assert reason == "loops not ticking: stuck"
    assert sock.recv(4096).startswith(b"STATUS=unhealthy: loops not ticking: stuck")
    assert dog.pings == 2
