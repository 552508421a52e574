"""The one multiprocessing context every child process of the agent starts from.

An isolated plugin (agent/engine/isolate_child.py) and the simulator process
(agent/hal/sim_child.py) fork from the same small server, so whichever starts first starts it
with both modules preloaded: a child then forks in milliseconds instead of importing numpy and
a runtime again.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import sys
from typing import Any

PRELOAD = ["agent.engine.isolate_child", "agent.hal.sim_child"]
"""Imported once by the fork server; every child inherits them."""


def child_context() -> Any:
    """forkserver where there is one (a child forks from a small, clean server process in
    milliseconds); spawn elsewhere. Never plain fork: the agent has threads."""
    if sys.platform.startswith("linux"):
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return mp.get_context("spawn")


def describe_exit(code: int | None) -> str:
    """How a child ended, from its exit code (-N: killed by signal N)."""
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"
