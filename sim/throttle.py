"""A bandwidth-limited TCP relay on a free loopback port, for slow-link fault injection.

    with Throttle("127.0.0.1", broker.port) as link:
        agent connects to link.host:link.port
        link.set_rate(5_000)      # bytes per second, per direction
        link.pause()              # hold every byte; the TCP connections stay up
        link.resume()
        link.set_rate(None)       # unlimited again

One selectors thread relays every connection. Each direction (client to upstream, upstream to
client) has one token bucket shared by all connections, so the cap models one link, not one
socket. The relay reads a connection only while that direction's buffer has room (`BUFFER`), so
a capped or paused direction pushes back on the sender through TCP itself, as a slow cellular
uplink or a stalled broker does; nothing errors, the peer just stops reading.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from types import TracebackType

from sim.broker import free_port

BUFFER = 64 * 1024
"""Bytes the relay holds per direction of one connection before it stops reading."""
BURST_S = 0.05
"""A bucket holds at most this many seconds of its rate, so an idle link cannot burst far."""
MIN_BURST = 1024
"""The smallest bucket, so a very low rate still moves whole small packets."""
QUANTUM_S = 0.01
"""A waiting direction wakes when this much of its rate has accrued (bounds wake-ups per second)."""


class TokenBucket:
    """A byte-rate cap: `rate` bytes/s refilled continuously, at most `burst` saved up."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.tokens = 0.0
        self._last = time.monotonic()

    @property
    def burst(self) -> float:
        """Most tokens the bucket holds at its current rate."""
        return max(MIN_BURST, (self.rate or 0.0) * BURST_S)

    def set_rate(self, rate: float | None) -> None:
        """Change the rate; tokens saved at the old rate are kept only up to the new burst."""
        self.refill()
        self.rate = rate
        self.tokens = min(self.tokens, self.burst)

    def empty(self) -> None:
        """Drop every saved token (as if it had just sent a burst)."""
        self.tokens = 0.0
        self._last = time.monotonic()

    def refill(self) -> None:
        """Add what accrued since the last refill."""
        now = time.monotonic()
        if self.rate is not None:
            self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = now

    def allowance(self, want: int) -> int:
        """Bytes that may be sent now, of `want` (all of them when unlimited)."""
        if self.rate is None:
            return want
        return min(want, int(self.tokens))

    def spend(self, n: int) -> None:
        """Take `n` sent bytes out of the bucket."""
        if self.rate is not None:
            self.tokens -= n

    def wait_s(self, want: int) -> float:
        """Seconds until a useful amount of `want` bytes may be sent (0 when it may now)."""
        if self.rate is None or want <= 0:
            return 0.0
        quantum = min(want, max(1.0, self.rate * QUANTUM_S), self.burst)
        return max(0.0, (quantum - self.tokens) / self.rate)


class _Pipe:
    """One direction of one connection: bytes read from `src`, waiting to go to `dst`."""

    def __init__(self, src: socket.socket, dst: socket.socket, bucket: TokenBucket) -> None:
        self.src = src
        self.dst = dst
        self.bucket = bucket
        self.buf = bytearray()
        self.eof = False  # src will send nothing more
        self.shut = False  # dst told (SHUT_WR) after the buffer drained

    @property
    def done(self) -> bool:
        """Everything src sent was delivered and dst saw the end."""
        return self.shut


class _Conn:
    """A relayed connection: a client and the upstream socket opened for it."""

    def __init__(self, client: socket.socket, upstream: socket.socket, throttle: Throttle) -> None:
        self.client = client
        self.upstream = upstream
        self.up = _Pipe(client, upstream, throttle.up)
        self.down = _Pipe(upstream, client, throttle.down)
        self.interest = {client: 0, upstream: 0}

    def pipes(self) -> tuple[_Pipe, _Pipe]:
        """Both directions."""
        return self.up, self.down


class Throttle:
    """A TCP relay from a free loopback port to `upstream_host:upstream_port` with a byte-rate cap
    per direction, settable while running, and pause/resume.

    `bytes_up` / `bytes_down` count bytes delivered to the upstream / to clients.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        rate: float | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive bytes per second or None (got {rate!r})")
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = port or free_port()
        self.up = TokenBucket(rate)
        self.down = TokenBucket(rate)
        self.bytes_up = 0
        self.bytes_down = 0
        self.accepted = 0
        self.refused = 0
        """Clients closed at once because the upstream did not accept a connection."""
        self._paused = False
        self._closing = False
        self._lock = threading.Lock()  # settings from other threads vs the relay thread
        self._conns: list[_Conn] = []
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._listener = socket.create_server((host, self.port), reuse_port=False)
        self._listener.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name=f"throttle-{self.port}", daemon=True)
        self._thread.start()

    # -- control (any thread) -----------------------------------------------------------------

    @property
    def rate(self) -> float | None:
        """The cap in bytes per second per direction; None when unlimited."""
        return self.up.rate

    @property
    def paused(self) -> bool:
        """True while every byte is held."""
        return self._paused

    @property
    def connections(self) -> int:
        """Connections being relayed now."""
        return len(self._conns)

    def set_rate(self, bytes_per_s: float | None) -> None:
        """Cap each direction at `bytes_per_s` (None: unlimited); takes effect at once."""
        if bytes_per_s is not None and bytes_per_s <= 0:
            raise ValueError(
                f"rate must be positive bytes per second or None (got {bytes_per_s!r})"
            )
        with self._lock:
            self.up.set_rate(bytes_per_s)
            self.down.set_rate(bytes_per_s)
        self._wake()

    def pause(self) -> None:
        """Hold all bytes in both directions; connections stay open and nothing errors."""
        with self._lock:
            self._paused = True
        self._wake()

    def resume(self) -> None:
        """Relay again after `pause` (at the current rate)."""
        with self._lock:
            self._paused = False
            # Time spent paused does not turn into a saved-up burst.
            self.up.empty()
            self.down.empty()
        self._wake()

    def close(self, timeout: float = 2.0) -> None:
        """Stop relaying and close every socket (clients see the connection closed)."""
        if self._closing:
            return
        self._closing = True
        self._wake()
        self._thread.join(timeout)
        self._sel.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    def __enter__(self) -> Throttle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    # -- the relay thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closing:
                timeout = self._arm()
                for key, mask in self._sel.select(timeout):
                    sock = key.fileobj
                    if sock is self._wake_r:
                        with contextlib.suppress(BlockingIOError, OSError):
                            self._wake_r.recv(4096)
                    elif sock is self._listener:
                        self._accept()
                    else:
                        conn = key.data
                        assert isinstance(conn, _Conn) and isinstance(sock, socket.socket)
                        self._service(conn, sock, mask)
                self._flush_all()
        finally:
            for conn in list(self._conns):
                self._drop(conn)

    def _arm(self) -> float | None:
        """Set each socket's interest from the buffers and buckets; the select timeout."""
        with self._lock:
            paused = self._paused
            self.up.refill()
            self.down.refill()
        timeout: float | None = None
        for conn in self._conns:
            want = {conn.client: 0, conn.upstream: 0}
            for pipe in conn.pipes():
                if paused:
                    continue
                if not pipe.eof and len(pipe.buf) < BUFFER:
                    want[pipe.src] |= selectors.EVENT_READ
                if pipe.buf:
                    wait = pipe.bucket.wait_s(len(pipe.buf))
                    if wait <= 0:
                        want[pipe.dst] |= selectors.EVENT_WRITE
                    else:
                        timeout = wait if timeout is None else min(timeout, wait)
            for sock, events in want.items():
                if events != conn.interest[sock]:
                    if conn.interest[sock] == 0:
                        self._sel.register(sock, events, conn)
                    elif events == 0:
                        self._sel.unregister(sock)
                    else:
                        self._sel.modify(sock, events, conn)
                    conn.interest[sock] = events
        return timeout

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, OSError):
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=2.0)
        except OSError:
            # The broker is down: the client sees a closed connection, as with no relay at all.
            self.refused += 1
            client.close()
            return
        for sock in (client, upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._conns.append(_Conn(client, upstream, self))
        self.accepted += 1

    def _service(self, conn: _Conn, sock: socket.socket, mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ:
                pipe = conn.up if sock is conn.client else conn.down
                data = sock.recv(BUFFER - len(pipe.buf))
                if data:
                    pipe.buf += data
                else:
                    pipe.eof = True
            if mask & selectors.EVENT_WRITE:
                self._flush(conn.down if sock is conn.client else conn.up)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(conn)  # reset by a peer: the other side sees its connection end too
            return
        if all(p.done for p in conn.pipes()):
            self._drop(conn)

    def _flush_all(self) -> None:
        if self._paused:
            return
        for conn in list(self._conns):
            try:
                for pipe in conn.pipes():
                    self._flush(pipe)
            except OSError:
                self._drop(conn)
                continue
            if all(p.done for p in conn.pipes()):
                self._drop(conn)

    def _flush(self, pipe: _Pipe) -> None:
        """Send what the bucket allows of `pipe`'s buffer; pass the end on once it is empty."""
        if self._paused:
            return
        with self._lock:
            n = pipe.bucket.allowance(len(pipe.buf))
        if n > 0:
            try:
                sent = pipe.dst.send(memoryview(pipe.buf)[:n])
            except (BlockingIOError, InterruptedError):
                sent = 0
            if sent:
                del pipe.buf[:sent]
                with self._lock:
                    pipe.bucket.spend(sent)
                    if pipe.bucket is self.up:
                        self.bytes_up += sent
                    else:
                        self.bytes_down += sent
        if pipe.eof and not pipe.buf and not pipe.shut:
            with contextlib.suppress(OSError):
                pipe.dst.shutdown(socket.SHUT_WR)
            pipe.shut = True

    def _drop(self, conn: _Conn) -> None:
        for sock in (conn.client, conn.upstream):
            if conn.interest[sock]:
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(sock)
                conn.interest[sock] = 0
            sock.close()
        if conn in self._conns:
            self._conns.remove(conn)
