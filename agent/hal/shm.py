"""Sensor and actuator buffers in shared memory, between two processes.

Two users: an isolated plugin and its host (the host keeps the real devices, a simulator or MQTT
subscriptions, which need its connections and must survive a child crash; its bridge,
agent/engine/isolate_bridge.py, copies readings in and commands out at the plugin's rate), and
the agent and its simulator process (agent/hal/sim_process.py). One block per plugin holds, per
device, a sequence word, a `fresh` word and the float32 values; `ShmSensor` / `ShmActuator`
present the plain HAL interface on it, so a plugin runs unchanged in either place.

Each buffer is a seqlock with one writer: the writer makes the sequence odd, copies, makes it
even again; a reader copies and keeps the copy only if the sequence was even and unchanged. It
needs no lock and no system call, which both processes' hot paths forbid. On x86 the stores
become visible in program order, so plain stores are enough. A weakly ordered CPU (ARM) may let
another core see the even sequence before the values; there `FencedSeqBuffer` puts a fence
between them: releasing and re-taking a lock no other thread ever waits for (Python has no
fence of its own; a lock's release and acquire are one each, about 0.1 us together).
"""

from __future__ import annotations

import os
import platform
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np
import numpy.typing as npt

from agent.hal.base import Actuator, ActuatorSpec, Buffer, Sensor, SensorSpec

_CLOCK_BYTES = 8
"""One int64 word at the start of the block: the child's latest tick start (perf_counter_ns)."""
_HEADER_BYTES = 16
"""Two int64 words per buffer: the sequence and `fresh` (sensors: the last read succeeded)."""
_READ_TRIES = 4
"""A reader that keeps meeting a write in progress reports a dropout instead of spinning on."""


@dataclass(frozen=True)
class Layout:
    """Where each device's buffer lives in the block; both sides compute it from the specs."""

    sensors: dict[str, tuple[int, tuple[int, ...]]]
    actuators: dict[str, tuple[int, tuple[int, ...]]]
    size: int

    @classmethod
    def of(cls, sensors: Mapping[str, SensorSpec], actuators: Mapping[str, ActuatorSpec]) -> Layout:
        """The clock word, then sensors, then actuators, each header + values, 8-byte aligned."""
        offset = _CLOCK_BYTES

        def place(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, tuple[int, ...]]]:
            nonlocal offset
            table = {}
            for name, shape in shapes.items():
                table[name] = (offset, shape)
                values = int(np.prod(shape, dtype=np.int64)) * 4
                offset += _HEADER_BYTES + (values + 7) // 8 * 8
            return table

        placed_sensors = place({n: tuple(s.shape) for n, s in sensors.items()})
        placed_actuators = place({n: tuple(a.shape) for n, a in actuators.items()})
        return cls(placed_sensors, placed_actuators, max(offset, 8))


STORES_IN_ORDER = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
"""True on x86 (total store order): another core sees this core's stores in program order, so
shared buffers need no fences."""


def make_fence() -> Callable[[], None]:
    """A memory fence for one thread of this process: release, then re-take, a lock that thread
    holds for good (stores before it are visible before stores after it, and loads after it are
    not done before loads before it)."""
    lock = threading.Lock()
    lock.acquire()
    release, acquire = lock.release, lock.acquire

    def fence() -> None:
        release()
        acquire()

    return fence


class SeqBuffer:
    """One seqlocked float32 buffer in the block (one writer process, one reader process)."""

    def __init__(self, buf: memoryview, offset: int, shape: tuple[int, ...]) -> None:
        # The two words through a memoryview: indexing one gives a Python int in ~80 ns, a
        # third of what a numpy scalar costs (this is on both processes' hot paths).
        self.words = buf[offset : offset + _HEADER_BYTES].cast("q")
        self.values: npt.NDArray[np.float32] = np.ndarray(shape, np.float32, buf, offset + 16)

    def write(self, value: Buffer, fresh: bool = True) -> None:
        """Publish `value` (the writer's side)."""
        words = self.words
        seq = words[0] + 1
        words[0] = seq  # odd: a write is in progress
        if fresh:
            np.copyto(self.values, value)
        words[1] = fresh
        words[0] = seq + 1

    def read(self, out: Buffer) -> bool:
        """Copy the last published value into `out`; False if none was fresh or it kept moving."""
        words = self.words
        seq = words[0]
        if not seq & 1:  # the common case, without a loop: no write in progress
            np.copyto(out, self.values)
            fresh = words[1]
            if words[0] == seq:
                return seq > 0 and fresh != 0
        for _ in range(_READ_TRIES):
            seq = words[0]
            if seq & 1:
                continue
            np.copyto(out, self.values)
            fresh = words[1]
            if words[0] == seq:
                return seq > 0 and fresh != 0
        return False

    @property
    def seq(self) -> int:
        """The sequence word: changes with every write."""
        seq: int = self.words[0]
        return seq


class FencedSeqBuffer(SeqBuffer):
    """A `SeqBuffer` with fences around the copy, for CPUs that reorder stores (ARM)."""

    def __init__(self, buf: memoryview, offset: int, shape: tuple[int, ...]) -> None:
        super().__init__(buf, offset, shape)
        self._fence = make_fence()

    def write(self, value: Buffer, fresh: bool = True) -> None:
        """Publish `value` (the writer's side)."""
        words = self.words
        seq = words[0] + 1
        words[0] = seq
        self._fence()
        if fresh:
            np.copyto(self.values, value)
        words[1] = fresh
        self._fence()
        words[0] = seq + 1

    def read(self, out: Buffer) -> bool:
        """Copy the last published value into `out`; False if none was fresh or it kept moving."""
        words = self.words
        for _ in range(_READ_TRIES):
            seq = words[0]
            if seq & 1:
                continue
            self._fence()
            np.copyto(out, self.values)
            fresh = words[1]
            self._fence()
            if words[0] == seq:
                return seq > 0 and fresh != 0
        return False


BUFFER_TYPE: type[SeqBuffer] = SeqBuffer if STORES_IN_ORDER else FencedSeqBuffer
"""Plain stores on x86 (total store order), fenced ones elsewhere."""


class DeviceBlock:
    """The shared-memory block of one isolated plugin's devices."""

    def __init__(self, shm: shared_memory.SharedMemory, layout: Layout, *, owner: bool) -> None:
        self.shm = shm
        self.layout = layout
        self._owner = owner
        buf = shm.buf
        assert buf is not None
        self.clock = buf[:_CLOCK_BYTES].cast("q")
        """Word 0: the start of the child's latest tick (perf_counter_ns; 0 before the first)."""
        self.sensors = {n: BUFFER_TYPE(buf, o, s) for n, (o, s) in layout.sensors.items()}
        self.actuators = {n: BUFFER_TYPE(buf, o, s) for n, (o, s) in layout.actuators.items()}

    @classmethod
    def create(cls, layout: Layout) -> DeviceBlock:
        """A fresh, zeroed block (the host's side, which owns and unlinks it)."""
        shm = PinnedSharedMemory(create=True, size=layout.size)
        buf = shm.buf
        assert buf is not None
        buf[: layout.size] = bytes(layout.size)
        return cls(shm, layout, owner=True)

    @classmethod
    def attach(cls, name: str, layout: Layout) -> DeviceBlock:
        """The host's block, opened by name (the child's side)."""
        # Attaching registers the name with the resource tracker again: harmless, because a
        # child started by multiprocessing shares the host's tracker, and the host unlinks.
        return cls(PinnedSharedMemory(name=name), layout, owner=False)

    @property
    def name(self) -> str:
        """The block's system-wide name."""
        return self.shm.name

    def close(self) -> None:
        """Forget the buffers; the owner also removes the block's name (the memory goes with the
        last array on it)."""
        self.sensors.clear()
        self.actuators.clear()
        if self._owner:
            self.shm.unlink()  # the name goes now; the memory with its last mapping
        self.shm.close()


class PinnedSharedMemory(shared_memory.SharedMemory):
    """A block that is never unmapped by hand, only when the last array on it goes.

    A numpy array on a buffer keeps a reference to it but no buffer export, so the base class's
    `close` (also run from `__del__`) would unmap the memory under a live array: a plugin or a
    bridge thread touching it next would segfault the process. Closing only closes the file
    descriptor; the mapping stays valid without it.
    """

    def close(self) -> None:
        """Close the descriptor (the mapping goes with its last user)."""
        fd = getattr(self, "_fd", -1)
        if fd >= 0:
            os.close(fd)
            self._fd = -1


class ShmSensor(Sensor):
    """A sensor the child reads from the block (the host's bridge fills it)."""

    def __init__(self, buffer: SeqBuffer, spec: SensorSpec) -> None:
        self.spec = spec
        self.read_into = buffer.read  # type: ignore[method-assign]  # one call less per read

    def read_into(self, out: Buffer) -> bool:
        """Copy the latest reading the host bridged; False on a dropout."""
        raise NotImplementedError  # replaced per instance in __init__


class ShmActuator(Actuator):
    """An actuator the child writes to the block (the host's bridge applies it)."""

    def __init__(self, buffer: SeqBuffer, spec: ActuatorSpec) -> None:
        self.spec = spec
        self.write = buffer.write  # type: ignore[method-assign]

    def write(self, value: Buffer) -> None:
        """Publish a command for the host to apply."""
        raise NotImplementedError  # replaced per instance in __init__


class CommandFeed:
    """The reader's side of a block's actuator buffers: every command written since the last
    pass, each handed to `apply(name, value)` once. `since_now` skips what is already there."""

    def __init__(self, actuators: Mapping[str, SeqBuffer], *, since_now: bool = False) -> None:
        self._buffers = [
            (name, shared, np.zeros(shared.values.shape, np.float32))
            for name, shared in actuators.items()
        ]
        self._seen = [shared.seq if since_now else 0 for _, shared, _ in self._buffers]

    def __bool__(self) -> bool:
        return bool(self._buffers)

    def pass_on(self, apply: Callable[[str, Buffer], None]) -> None:
        """Hand every new command to `apply`."""
        for i, (name, shared, buf) in enumerate(self._buffers):
            seq = shared.seq
            if seq != self._seen[i] and shared.read(buf):
                self._seen[i] = seq
                apply(name, buf)
