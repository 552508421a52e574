"""The bandwidth-limited relay: bytes get through unchanged, the cap holds, pause holds bytes."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sim.broker import free_port
from sim.throttle import Throttle
from tests.support.waiting import unchanged, until


class EchoServer:
    """A TCP server on a free loopback port that echoes every byte and counts what it read."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received = 0
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._conns.append(conn)
            t = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _echo(self, conn: socket.socket) -> None:
        try:
            while data := conn.recv(65536):
                self.received += len(data)
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._listener.close()
        for conn in self._conns:
            conn.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def relay(echo: EchoServer) -> Iterator[Throttle]:
    with Throttle("127.0.0.1", echo.port) as t:
        yield t


def connect(t: Throttle) -> socket.socket:
    sock = socket.create_connection((t.host, t.port), timeout=5.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"closed after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the other end closed (an orderly end or a reset), within 5 s."""
    sock.settimeout(5.0)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_bytes_get_through_unchanged_both_ways(relay: Throttle, until: Callable[..., bool]) -> None:
    data = os.urandom(1 << 20)
    with connect(relay) as sock:
        sender = threading.Thread(target=sock.sendall, args=(data,))
        sender.start()
        assert recv_exactly(sock, len(data)) == data
        sender.join()
    # The relay counts a chunk after its send returns: the client may have it a moment earlier.
    assert until(lambda: relay.bytes_up == relay.bytes_down == len(data), 5.0)
    assert relay.accepted == 1


def _flood(sock: socket.socket, stop: threading.Event) -> None:
    """Send as fast as the relay takes, and read the echoes back so they never hold it up."""

    def drain() -> None:
        try:
            while not stop.is_set() and sock.recv(65536):
                pass
        except OSError:
            pass  # closed at the end of the test

    threading.Thread(target=drain, daemon=True).start()
    block = b"x" * 16384
    try:
        while not stop.is_set():
            sock.sendall(block)
    except OSError:
        pass


def _rate(relay: Throttle, seconds: float) -> float:
    """Bytes per second delivered upstream over the next `seconds`."""
    n0, t0 = relay.bytes_up, time.monotonic()
    time.sleep(seconds)  # the measurement window
    return (relay.bytes_up - n0) / (time.monotonic() - t0)


def _flowing(relay: Throttle, nbytes: float) -> bool:
    """Wait until `nbytes` more have gone upstream (the flood runs at the current rate)."""
    mark = relay.bytes_up
    return until(lambda: relay.bytes_up >= mark + nbytes, 10.0, 0.005)


def test_the_cap_holds_and_follows_set_rate(echo: EchoServer) -> None:
    slow, fast = 100_000.0, 400_000.0
    with Throttle("127.0.0.1", echo.port, rate=slow) as relay, connect(relay) as sock:
        # Measured: the upstream direction, as bytes delivered to the server.
        stop = threading.Event()
        threading.Thread(target=_flood, args=(sock, stop), daemon=True).start()
        assert _flowing(relay, slow * 0.2)
        at_slow = _rate(relay, 0.8)
        relay.set_rate(fast)
        assert _flowing(relay, fast * 0.1)  # the new rate has taken over
        at_fast = _rate(relay, 0.8)
        stop.set()
    # A token bucket cannot exceed its rate by more than its burst; a loaded machine can only
    # make the relay slower, hence the generous lower bound.
    assert 0.5 < at_slow / slow < 1.15, at_slow
    assert 0.5 < at_fast / fast < 1.15, at_fast
    assert at_fast / at_slow > 2.0, (at_slow, at_fast)


def test_pause_holds_every_byte_and_keeps_the_connection(relay: Throttle, echo: EchoServer) -> None:
    with connect(relay) as sock:
        sock.sendall(b"before")
        assert recv_exactly(sock, 6) == b"before"
        relay.pause()
        assert relay.paused
        held = os.urandom(50_000)
        sock.sendall(held)
        sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            sock.recv(1)  # nothing comes back...
        assert echo.received == 6  # ...because nothing went through
        assert relay.connections == 1  # and nobody was disconnected
        relay.resume()
        sock.settimeout(5.0)
        assert recv_exactly(sock, len(held)) == held
    assert echo.received == 6 + len(held)


def test_resume_after_pause_respects_the_rate(echo: EchoServer) -> None:
    rate = 50_000.0
    with Throttle("127.0.0.1", echo.port, rate=rate) as relay, connect(relay) as sock:
        stop = threading.Event()
        threading.Thread(target=_flood, args=(sock, stop), daemon=True).start()
        assert _flowing(relay, rate * 0.1)
        relay.pause()
        # What was in flight has landed: nothing more goes upstream.
        assert until(lambda: unchanged(lambda: relay.bytes_up, 0.1), 5.0, 0.0)
        held = relay.bytes_up
        time.sleep(0.2)  # the scenario: paused for a while, and nothing moves
        assert relay.bytes_up == held
        relay.resume()
        after = _rate(relay, 0.6)
        stop.set()
    # Time spent paused is not saved up as a burst.
    assert 0.5 < after / rate < 1.15, after


def test_close_ends_every_connection(echo: EchoServer) -> None:
    relay = Throttle("127.0.0.1", echo.port)
    sock = connect(relay)
    sock.sendall(b"hi")
    assert recv_exactly(sock, 2) == b"hi"
    relay.close()
    assert closed_by_peer(sock)
    sock.close()
    assert relay.connections == 0


def test_an_unreachable_upstream_closes_the_client() -> None:
    with Throttle("127.0.0.1", free_port()) as relay, connect(relay) as sock:
        assert closed_by_peer(sock)
    assert relay.refused == 1


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"rate must be positive bytes per second.*got 0"):
        Throttle("127.0.0.1", free_port(), rate=0)
    with Throttle("127.0.0.1", free_port()) as relay, pytest.raises(ValueError, match="-5"):
        relay.set_rate(-5)


def test_mqtt_through_the_relay(broker: Any, probe_class: Any) -> None:
    with Throttle(broker.host, broker.port, rate=20_000) as relay:
        probe = probe_class(relay.host, relay.port)
        try:
            probe.subscribe("throttle/test")
            probe.publish("throttle/test", b'{"n": 1}')
            assert probe.wait_payload("throttle/test") == {"n": 1}
        finally:
            probe.close()
        assert relay.bytes_up > 0 and relay.bytes_down > 0
