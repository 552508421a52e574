"""An isolated plugin's telemetry rows in shared memory: the child's loop writes them, the host's
sync thread reads them, and no pipe, lock or copy by a third thread lies between.

One block per isolated plugin, made and unlinked by the host (agent/engine/isolate.py), outlives
the plugin's children: rows a crashed child wrote are still drained, and its restart attaches to
the same block and goes on from the head and tail it finds there. The block holds a header of two
64-byte lines (the producer's words: head, dropped, capacity, fields; the consumer's: tail and the
wall-clock offset), then an int64 stamp per slot, then a float64 row per slot.

One producer (the child's loop thread), one consumer (the host's sync thread). The producer
writes a row and its stamp into slot `head % capacity`, then advances head; the consumer reads
head, copies the rows up to it, then advances tail. Head moves only once a row is complete, so a
row half-written by a child that died is never read: its slot is overwritten by the next child.
On x86 plain stores are enough (they become visible in program order); elsewhere
`FencedTelemetryRing` puts a fence (agent/engine/isolate_shm.py) before each of those words.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from agent.engine.isolate_shm import STORES_IN_ORDER, PinnedSharedMemory, make_fence
from agent.errors import PluginError
from agent.plugin.channel import OutputChannel

_LINE = 64
"""Producer's and consumer's words on separate cache lines: neither's store evicts the other's."""
_HEAD, _DROPPED, _CAPACITY, _FIELDS = 0, 8, 16, 24
"""Byte offsets of the producer's words (capacity and fields are set once, by the host)."""
_TAIL, _WALL_OFFSET = _LINE, _LINE + 8
"""Byte offsets of the consumer's words."""
_HEADER_BYTES = 2 * _LINE


def ring_bytes(capacity: int, fields: int) -> int:
    """Size of a ring block: header, a stamp per slot, a row per slot."""
    return _HEADER_BYTES + 8 * capacity * (1 + fields)


class TelemetryRing:
    """Telemetry rows in a shared buffer: one producer process, one consumer process."""

    def __init__(self, buf: memoryview) -> None:
        def word(offset: int) -> memoryview:
            # One int64 word as its own view: indexing it with a literal 0 gives or takes a
            # Python int in about 30 ns, cheaper than a numpy scalar (this is the hot path).
            return buf[offset : offset + 8].cast("q")

        self._head_word, self._tail_word = word(_HEAD), word(_TAIL)
        self._dropped_word, self._offset_word = word(_DROPPED), word(_WALL_OFFSET)
        self.capacity: int = word(_CAPACITY)[0]
        self.fields: int = word(_FIELDS)[0]
        capacity = self.capacity
        self.stamps: npt.NDArray[np.int64] = np.ndarray((capacity,), np.int64, buf, _HEADER_BYTES)
        self.rows: npt.NDArray[np.float64] = np.ndarray(
            (capacity, self.fields), np.float64, buf, _HEADER_BYTES + 8 * capacity
        )
        # The producer's own view: where it writes next (a restarted child goes on where the
        # dead one stopped) and how far it may go before it must read the consumer's tail again
        # (a stale tail only ever means less room, never a slot still in use).
        self._head: int = self._head_word[0]
        self._limit: int = self._tail_word[0] + capacity

    def put(self, now_ns: int, values: npt.ArrayLike) -> bool:
        """Queue one row (the producer's side); False, and counted, if the ring was full."""
        head = self._head
        if head >= self._limit and not self._has_room(head):
            return False
        slot = head % self.capacity
        self.rows[slot] = values
        self.stamps[slot] = now_ns + self._offset_word[0]
        self._head = head + 1
        self._head_word[0] = head + 1  # last: the consumer never sees a row before it is whole
        return True

    def _has_room(self, head: int) -> bool:
        self._limit = self._tail_word[0] + self.capacity
        if head < self._limit:
            return True
        self._dropped_word[0] += 1
        return False

    def take(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Every queued row, oldest first, as copies: (wall-clock ns per row, rows); the consumer's
        side."""
        tail, head = self._tail_word[0], self._head_word[0]
        slots = np.arange(tail, head) % self.capacity
        out = (self.stamps[slots], self.rows[slots])  # indexing by an array copies
        self._tail_word[0] = head
        return out

    @property
    def pending(self) -> int:
        """Rows waiting to be taken."""
        queued: int = self._head_word[0] - self._tail_word[0]
        return queued

    @property
    def dropped(self) -> int:
        """Rows refused because the ring was full, by every producer so far."""
        dropped: int = self._dropped_word[0]
        return dropped

    @property
    def wall_offset_ns(self) -> int:
        """perf_counter_ns -> wall-clock ns, added to each stamp as it is written."""
        offset: int = self._offset_word[0]
        return offset

    @wall_offset_ns.setter
    def wall_offset_ns(self, offset: int) -> None:
        # The consumer's word: one aligned int64 store, which the producer reads whole.
        self._offset_word[0] = offset


class FencedTelemetryRing(TelemetryRing):
    """A `TelemetryRing` with fences before head and tail move, for CPUs that reorder (ARM)."""

    def __init__(self, buf: memoryview) -> None:
        super().__init__(buf)
        self._fence = make_fence()

    def put(self, now_ns: int, values: npt.ArrayLike) -> bool:
        """Queue one row (the producer's side); False, and counted, if the ring was full."""
        head = self._head
        if head >= self._limit and not self._has_room(head):
            return False
        slot = head % self.capacity
        self.rows[slot] = values
        self.stamps[slot] = now_ns + self._offset_word[0]
        self._fence()  # the row's stores are visible before the head's
        self._head = head + 1
        self._head_word[0] = head + 1
        return True

    def _has_room(self, head: int) -> bool:
        room = super()._has_room(head)
        self._fence()  # the tail is read before the freed slot is written
        return room

    def take(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Every queued row, oldest first, as copies: (wall-clock ns per row, rows); the consumer's
        side."""
        head = self._head_word[0]
        self._fence()  # the rows are read after the head that covers them
        tail = self._tail_word[0]
        slots = np.arange(tail, head) % self.capacity
        out = (self.stamps[slots], self.rows[slots])
        self._fence()  # the copies are done before the tail hands their slots back
        self._tail_word[0] = head
        return out


RING_TYPE: type[TelemetryRing] = TelemetryRing if STORES_IN_ORDER else FencedTelemetryRing
"""Plain stores on x86 (total store order), fenced ones elsewhere."""


class RowsBlock:
    """The shared-memory block of one isolated plugin's telemetry ring."""

    def __init__(
        self, shm: PinnedSharedMemory, *, owner: bool, kind: type[TelemetryRing] = RING_TYPE
    ) -> None:
        self.shm = shm
        self._owner = owner
        buf = shm.buf
        assert buf is not None
        self.ring = kind(buf)

    @classmethod
    def create(
        cls, capacity: int, fields: int, *, kind: type[TelemetryRing] = RING_TYPE
    ) -> RowsBlock:
        """A fresh, empty ring of `capacity` rows of `fields` values (the host's side, which owns
        and unlinks it)."""
        size = ring_bytes(capacity, fields)
        shm = PinnedSharedMemory(create=True, size=size)
        buf = shm.buf
        assert buf is not None
        buf[:size] = bytes(size)
        header = buf[:_HEADER_BYTES].cast("q")
        header[_CAPACITY // 8], header[_FIELDS // 8] = capacity, fields
        return cls(shm, owner=True, kind=kind)

    @classmethod
    def attach(cls, name: str, *, kind: type[TelemetryRing] = RING_TYPE) -> RowsBlock:
        """The host's ring, opened by name (the child's side); sizes come from its header."""
        return cls(PinnedSharedMemory(name=name), owner=False, kind=kind)

    @property
    def name(self) -> str:
        """The block's system-wide name."""
        return self.shm.name

    def close(self) -> None:
        """The owner removes the block's name; rows still queued stay readable through `ring`
        (the memory goes with the last array on it)."""
        if self._owner:
            self.shm.unlink()
        self.shm.close()


class SharedTelemetryChannel(OutputChannel):
    """An output channel whose telemetry rows go into a `TelemetryRing`; events stay in-process.

    The child's channel and the host's are two of these over the same ring: in the child,
    `telemetry` is the ring's `put` itself (nothing between the plugin and shared memory); in the
    host, the sync thread drains, counts and reads `pending` from the ring as from any channel.
    Stamps are wall-clock like in process: the host's channel, which follows the wall clock,
    writes its offset into the ring at every drain and the child adds it to each stamp; the
    child's channel has a pinned offset and leaves the ring's alone.
    """

    def __init__(
        self,
        plugin: str,
        fields: tuple[str, ...],
        ring: TelemetryRing,
        *,
        events: int = 1024,
        wall_offset_ns: int | None = None,
    ) -> None:
        if ring.fields != len(fields):
            raise PluginError(
                f"plugin {plugin!r}: {len(fields)} telemetry fields, the ring holds {ring.fields}"
            )
        # The base's own telemetry ring stays empty (capacity 0): rows go to `ring`.
        super().__init__(plugin, fields, capacity=0, events=events, wall_offset_ns=wall_offset_ns)
        self.ring = ring
        self.telemetry = ring.put  # type: ignore[method-assign]  # one call less per row
        self._publish_wall_offset()

    def _publish_wall_offset(self) -> None:
        if self._follow_wall:
            self.ring.wall_offset_ns = self._wall_offset_ns

    def _refresh_wall_offset(self) -> None:
        super()._refresh_wall_offset()
        self._publish_wall_offset()

    def drain_telemetry(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Take every queued row from the ring: (wall-clock ns per row, rows), as copies."""
        out = self.ring.take()
        self._refresh_wall_offset()
        return out

    @property
    def telemetry_dropped(self) -> int:
        """Rows the ring refused because it was full (in whichever process wrote them)."""
        return self.ring.dropped

    @property
    def pending(self) -> tuple[int, int]:
        """(telemetry rows in the ring, events) waiting to be drained."""
        return (self.ring.pending, self._e_head - self._e_tail)
