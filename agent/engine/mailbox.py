"""A single-slot mailbox: how other threads hand a change to a loop, applied between two ticks.

The loop's side is one attribute read per tick (`slot.pending is None`), no lock. Senders are
serialized by their own lock and wait for the loop to deliver; a sender that gives up retracts its
mail through a claim token, so a change is either applied exactly once or not at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class Mail:
    """One change: a function run on the loop thread, its result or error, and a done flag."""

    __slots__ = ("_claim", "done", "error", "fn", "result")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        # Whoever acquires the claim (the loop delivering or the sender retracting) owns the mail.
        self._claim = threading.Lock()

    def claim(self) -> bool:
        """Take ownership; False if the other side already did."""
        return self._claim.acquire(blocking=False)

    def deliver(self) -> None:
        """Run the change (already claimed) and wake the sender."""
        try:
            self.result = self.fn()
        except Exception as exc:  # handed back to the sender, never kills the loop
            self.error = exc
        finally:
            self.done.set()


class Mailbox:
    """The slot between senders (any thread) and one loop (the only one that clears it)."""

    __slots__ = ("_send_lock", "pending")

    def __init__(self) -> None:
        self.pending: Mail | None = None
        self._send_lock = threading.Lock()

    def take(self) -> None:
        """Deliver the pending mail, if any: called by the loop between ticks."""
        mail = self.pending
        if mail is not None:
            self.pending = None
            if mail.claim():
                mail.deliver()

    def send(self, fn: Callable[[], Any], *, alive: Callable[[], bool], timeout: float) -> Any:
        """Run `fn` on the loop thread between two ticks and return its result.

        When the loop is not (or no longer) running, `fn` runs on the caller's thread instead:
        nothing else touches the plugin then. TimeoutError when the loop did not get to it.
        """
        with self._send_lock:
            mail = Mail(fn)
            if not alive():
                return self._run_here(mail)
            self.pending = mail
            give_up = time.monotonic() + timeout
            while not mail.done.wait(0.02):
                if not alive():
                    # The loop ended without delivering: nothing races us for the slot now.
                    if self.pending is mail:
                        self.pending = None
                    if mail.claim():
                        return self._run_here(mail, claimed=True)
                    mail.done.wait()
                    break
                if time.monotonic() >= give_up:
                    if mail.claim():
                        self.pending = None
                        raise TimeoutError(f"loop did not apply the change within {timeout} s")
                    mail.done.wait()  # the loop claimed it just now: it is being applied
                    break
            return self._result(mail)

    def _run_here(self, mail: Mail, *, claimed: bool = False) -> Any:
        if not claimed:
            mail.claim()
        mail.deliver()
        return self._result(mail)

    @staticmethod
    def _result(mail: Mail) -> Any:
        if mail.error is not None:
            raise mail.error
        return mail.result
