"""A candidate model is loaded, golden-checked and timed in a child process before the agent
touches it: a model file that segfaults the runtime, loops for minutes or eats memory costs the
child, and the update is refused with code `crashed`, `timeout` or `memory`.

The child comes from a fork server (multiprocessing's "forkserver" start method), not `fork` and
not `spawn`: `fork` would copy the multi-threaded agent mid-flight (a lock held by a paho, logging
or runtime thread at that instant stays locked in the child forever); `spawn` starts a fresh
interpreter and imports numpy, pydantic and the agent's config again for every check (about half
a second here). The fork server is spawned once, imports this module once, and forks a
single-threaded copy of itself per check (tens of milliseconds). Only the runtime the bundle
names is imported in the child, never in the server, so the server stays small.

The time limit is the child's CPU time (RLIMIT_CPU), so a loaded machine does not turn a slow
but honest check into a refusal; a wall-clock deadline of three times that catches a child that
hangs without using CPU. The memory limit is an address-space limit (RLIMIT_AS) set in the child
on top of what it has mapped already; runtimes map more than they touch, so it is generous.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import resource
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from agent.config.sections import RuntimeConfig
from agent.errors import UpdateRejected


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """What a candidate model may cost while it is checked."""

    timeout_s: float = 30.0
    """CPU seconds for load, golden check and timing together (wall clock: 3 times that)."""
    memory_mb: int = 1024
    """Address space the child may map beyond what it starts with."""


@dataclass(frozen=True, slots=True)
class Probe:
    """What the child learnt about the candidate (per format it ships)."""

    inputs: list[list[int]]
    outputs: list[list[int]]
    golden: int
    infer_us: float
    """Median of a few single-sample inferences on zeros, in the child (a rough figure)."""


_context: Any = None
_context_lock = threading.Lock()
MAX_CHILDREN = 2
"""Checks running at once per process (a fleet simulator runs many devices in one process;
each child maps a runtime, so they queue instead of all loading at once)."""
_children = threading.BoundedSemaphore(MAX_CHILDREN)
WALL_FACTOR = 3.0
"""The wall-clock deadline is this many times the CPU-time limit."""


def _forkserver() -> Any:
    global _context
    with _context_lock:
        if _context is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["agent.ota.sandbox"])
            _context = ctx
        return _context


def check_candidate(
    folder: Path, runtime: RuntimeConfig, limits: SandboxLimits, stop: threading.Event
) -> Probe:
    """Check the model in `folder` in a child process; UpdateRejected when it fails or kills
    the child (`crashed`, `timeout`, `memory`, or the check's own code), or when `stop` is set."""
    while not _children.acquire(timeout=0.1):
        if stop.is_set():
            raise UpdateRejected("the agent is stopping", code="interrupted")
    try:
        return _run_child(folder, runtime, limits, stop)
    finally:
        _children.release()


def _run_child(
    folder: Path, runtime: RuntimeConfig, limits: SandboxLimits, stop: threading.Event
) -> Probe:
    ctx = _forkserver()
    ours, theirs = ctx.Pipe(duplex=False)
    child = ctx.Process(
        target=_child,
        args=(theirs, str(folder), runtime, limits.memory_mb, limits.timeout_s),
        name="ota-sandbox",
        daemon=True,
    )
    child.start()
    theirs.close()
    try:
        return _await(child, ours, limits, stop)
    finally:
        if child.is_alive():
            child.kill()
        child.join(5.0)
        ours.close()


def _await(child: Any, conn: Connection, limits: SandboxLimits, stop: threading.Event) -> Probe:
    # The child's own CPU limit is the verdict that does not depend on the machine's load; this
    # wall-clock deadline only catches a child stuck without using CPU.
    deadline = time.monotonic() + limits.timeout_s * WALL_FACTOR
    while True:
        if conn.poll(0.05):
            try:
                result: dict[str, Any] = conn.recv()
            except EOFError:
                break  # the child died mid-check: its exit code says how
            if not result.get("ok"):
                raise UpdateRejected(str(result["reason"]), code=str(result["code"]))
            return Probe(result["inputs"], result["outputs"], result["golden"], result["infer_us"])
        if not child.is_alive() and not conn.poll(0):
            break  # dead, and its verdict (if it sent one) has been read above
        if stop.is_set():
            raise UpdateRejected("the agent is stopping", code="interrupted")
        if time.monotonic() > deadline:
            raise UpdateRejected(
                f"model check did not finish within {limits.timeout_s * WALL_FACTOR:g} s (killed)",
                code="timeout",
            )
    child.join(2.0)
    code = child.exitcode
    if code == -signal.SIGXCPU:
        raise UpdateRejected(
            f"model check used more than {limits.timeout_s:g} s of CPU (stopped)", code="timeout"
        )
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        raise UpdateRejected(
            f"the model crashed the runtime ({name}) while checked", code="crashed"
        )
    raise UpdateRejected(
        f"the model check exited with code {code} without a verdict", code="crashed"
    )


def _child(
    conn: Connection, folder: str, runtime: RuntimeConfig, memory_mb: int, cpu_s: float
) -> None:
    """In the child: limit memory, load every format the manifest ships, check, time, report."""
    with contextlib.suppress(ValueError, OSError):
        mapped = _mapped_bytes()
        resource.setrlimit(resource.RLIMIT_AS, (mapped + memory_mb * 1024 * 1024, -1))
    with contextlib.suppress(ValueError, OSError):
        cpu = math.ceil(cpu_s)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 2))  # SIGXCPU, then SIGKILL
    try:
        conn.send(_check(Path(folder), runtime))
    except UpdateRejected as exc:
        code = "memory" if _out_of_memory(exc.reason) else exc.code
        conn.send({"ok": False, "reason": exc.reason, "code": code})
    except MemoryError:
        reason = f"model needs more than {memory_mb} MB"
        conn.send({"ok": False, "reason": reason, "code": "memory"})
    except Exception as exc:  # the verdict must reach the parent whatever the runtime raised
        reason = f"{type(exc).__name__}: {exc}"
        code = "memory" if _out_of_memory(reason) else "load_failed"
        conn.send({"ok": False, "reason": reason, "code": code})
    finally:
        conn.close()


OUT_OF_MEMORY = ("failed to allocate memory", "bad_alloc", "cannot allocate memory", "memoryerror")
"""How the runtimes word an allocation refused under the child's address-space limit (ONNX
Runtime's arena, a C++ std::bad_alloc, mmap's ENOMEM): they surface as a failed load or inference,
but the honest verdict is that the model needs more memory than the board gives it."""


def _out_of_memory(reason: str) -> bool:
    lowered = reason.lower()
    return any(sign in lowered for sign in OUT_OF_MEMORY)


def _check(folder: Path, runtime: RuntimeConfig) -> dict[str, Any]:
    import numpy as np

    from agent.ota.validate import load_candidate, validate_golden
    from agent.runtime.manifest import load_manifest

    manifest = load_manifest(folder)
    result: dict[str, Any] = {"ok": True}
    for fmt in sorted({f.format for f in manifest.files}):
        model = load_candidate(folder, runtime, fmt=fmt)
        try:
            golden = validate_golden(model, manifest)
            zeros = [np.zeros(s.shape, np.float32) for s in model.inputs]
            times = []
            for _ in range(9):
                t0 = time.perf_counter_ns()
                model.infer(*zeros)
                times.append(time.perf_counter_ns() - t0)
            result.update(
                inputs=[list(s.shape) for s in model.inputs],
                outputs=[list(s.shape) for s in model.outputs],
                golden=golden,
                infer_us=sorted(times)[len(times) // 2] / 1000.0,
            )
        finally:
            model.close()
    return result


def _mapped_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
