"""The one way a test waits for something to happen: poll a condition, never sleep a guess."""

from __future__ import annotations

import time
from collections.abc import Callable


def until(predicate: Callable[[], object], timeout: float = 10.0, step: float = 0.02) -> bool:
    """Poll `predicate` until it holds or `timeout` passes; False on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def unchanged(read: Callable[[], object], span: float) -> bool:
    """True when `read()` gives the same value at both ends of `span` seconds: something has
    stopped moving. For `until(lambda: unchanged(...))`, never as a guess on its own."""
    before = read()
    time.sleep(span)  # the window in which nothing may move
    return read() == before
