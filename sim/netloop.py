"""One network thread for many paho clients: paho's external loop driven by epoll.

`MqttLink` runs one `loop_start()` thread per link; a process hosting hundreds of simulated
devices (sim.lightfleet) sets `MqttLink.driver = NetLoop()` and every link's socket is read,
written, kept alive and reconnected here instead. The link's own callbacks (connect,
subscriptions, PUBACKs, messages) run unchanged, on this thread.

Writes: paho queues a packet from whatever thread publishes and, in external-loop mode, calls
`on_socket_register_write` when its queue turns non-empty; that hands the client to this thread
through a deque and an eventfd. paho clears its "registered" flag after the queue drained, so a
packet queued in that instant raises no callback: after every read or write this thread looks at
`want_write()` itself and keeps EPOLLOUT set while data waits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import threading
import time
from collections import deque
from typing import Any

log = logging.getLogger(__name__)

MISC_S = 1.0
"""How often every client's keepalive is checked (paho's own loop does it once a second)."""
RECONNECT_S = (1.0, 3.0)
"""Jittered wait before reconnecting a client the broker dropped or refused."""


class NetLoop:
    """Reads, writes, keeps alive and reconnects attached paho clients on one thread."""

    def __init__(self, name: str = "netloop") -> None:
        self._epoll = select.epoll()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake_fd, select.EPOLLIN)
        self._by_fd: dict[int, Any] = {}
        self._mask: dict[int, int] = {}
        self._clients: set[Any] = set()
        self._attach: deque[Any] = deque()
        self._detach: deque[Any] = deque()
        self._writable: deque[Any] = deque()
        self._reconnect_at: dict[Any, float] = {}
        self._stop = False
        self.connect_errors = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- the NetworkDriver seam (any thread) ----------------------------------------------------

    def attach(self, client: Any) -> None:
        """Take over `client` (connect parameters set by `connect_async`): connect it here."""
        opened = client.on_socket_open

        def on_open(c: Any, userdata: Any, sock: Any) -> None:
            if opened is not None:
                opened(c, userdata, sock)  # the link's TCP_NODELAY
            self._register(c, sock)

        client.on_socket_open = on_open
        client.on_socket_close = self._on_close
        client.on_socket_register_write = self._on_want_write
        self._attach.append(client)
        self._wake()

    def detach(self, client: Any) -> None:
        """Stop driving `client`; it is not reconnected any more."""
        self._detach.append(client)
        self._wake()

    def close(self) -> None:
        """End the thread (clients are left as they are)."""
        self._stop = True
        self._wake()
        self._thread.join(2.0)

    # -- paho callbacks -------------------------------------------------------------------------

    def _on_want_write(self, client: Any, userdata: Any, sock: Any) -> None:
        self._writable.append(client)
        self._wake()

    def _on_close(self, client: Any, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        if self._by_fd.pop(fd, None) is not None:
            self._mask.pop(fd, None)
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)
        if client in self._clients and client not in self._reconnect_at:
            self._reconnect_at[client] = time.monotonic() + random.uniform(*RECONNECT_S)

    def _register(self, client: Any, sock: Any) -> None:
        fd = sock.fileno()
        self._by_fd[fd] = client
        self._mask[fd] = select.EPOLLIN
        self._epoll.register(fd, select.EPOLLIN)

    def _wake(self) -> None:
        # A full counter (BlockingIOError) means the thread is being woken anyway.
        with contextlib.suppress(BlockingIOError):
            os.eventfd_write(self._wake_fd, 1)

    # -- the network thread ---------------------------------------------------------------------

    def _run(self) -> None:
        next_misc = time.monotonic() + MISC_S
        while not self._stop:
            wake_at = min([next_misc, *self._reconnect_at.values()])
            timeout = max(0.0, wake_at - time.monotonic())
            for fd, events in self._epoll.poll(timeout):
                if fd == self._wake_fd:
                    with contextlib.suppress(BlockingIOError):
                        os.eventfd_read(self._wake_fd)
                    continue
                client = self._by_fd.get(fd)
                if client is not None:
                    self._service(client, events)
            self._handoffs()
            now = time.monotonic()
            if now >= next_misc:
                next_misc = now + MISC_S
                for client in list(self._clients):
                    if client.socket() is not None:
                        client.loop_misc()
                        self._settle(client)
            for client, due in list(self._reconnect_at.items()):
                if due <= now:
                    del self._reconnect_at[client]
                    self._connect(client)

    def _handoffs(self) -> None:
        while self._detach:
            client = self._detach.popleft()
            self._clients.discard(client)
            self._reconnect_at.pop(client, None)
        while self._attach:
            client = self._attach.popleft()
            self._clients.add(client)
            self._connect(client)
        while self._writable:
            client = self._writable.popleft()
            if client.socket() is not None:
                client.loop_write()
                self._settle(client)

    def _service(self, client: Any, events: int) -> None:
        try:
            if events & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                client.loop_read()
            if events & select.EPOLLOUT and client.socket() is not None:
                client.loop_write()
        except Exception:
            log.exception("network I/O of %s failed", client)
        self._settle(client)

    def _settle(self, client: Any) -> None:
        """Write what waits; keep EPOLLOUT set while paho still holds unwritten data."""
        sock = client.socket()
        if sock is None:
            return
        if client.want_write():
            client.loop_write()
            sock = client.socket()
            if sock is None:
                return
        fd = sock.fileno()
        mask = select.EPOLLIN | (select.EPOLLOUT if client.want_write() else 0)
        if fd in self._mask and self._mask[fd] != mask:
            self._mask[fd] = mask
            self._epoll.modify(fd, mask)

    def _connect(self, client: Any) -> None:
        if client not in self._clients:
            return
        try:
            client.reconnect()  # a blocking TCP connect: quick on the LAN this simulates
        except OSError as exc:
            self.connect_errors += 1
            log.debug("connect failed: %s", exc)
            self._reconnect_at[client] = time.monotonic() + random.uniform(*RECONNECT_S)
            return
        self._settle(client)
