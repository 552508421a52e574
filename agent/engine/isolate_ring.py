"""An isolated plugin's telemetry rows in shared memory: the child's loop writes them, the host's
sync thread reads them, and no pipe, lock or copy by a third thread lies between.

One block per isolated plugin, made and unlinked by the host (agent/engine/isolate.py), outlives
the plugin's children: rows a crashed child wrote are still drained, and its restart attaches to
the same block and goes on from the head and tail it finds there. The block holds a header of two
64-byte lines (the producer's words: head, dropped, capacity, fields; the consumer's: tail), then
an int64 stamp (perf_counter_ns, one clock for every process on Linux) per slot, then a float64
row per slot.

One producer (the child's loop thread), one consumer (the host's sync thread). The producer
writes a row and its stamp into slot `head % capacity`, then advances head; the consumer reads
head, copies the rows up to it, then advances tail. Head moves only once a row is complete, so a
row half-written by a child that died is never read: its slot is overwritten by the next child.
On x86 plain stores are enough (they become visible in program order); elsewhere
`FencedTelemetryRing` puts a fence (agent/hal/shm.py) before each of those words.
"""

from __future__ import annotations

import logging
import struct
from typing import Literal

import numpy as np
import numpy.typing as npt

from agent.errors import PluginError
from agent.hal.shm import STORES_IN_ORDER, PinnedSharedMemory, make_fence
from agent.plugin.channel import OutputChannel

log = logging.getLogger(__name__)

_LINE = 64
"""Producer's and consumer's words on separate cache lines: neither's store evicts the other's."""
_HEAD, _DROPPED, _CAPACITY, _FIELDS = 0, 8, 16, 24
"""Byte offsets of the producer's words (capacity and fields are set once, by the host)."""
_TAIL = _LINE
"""Byte offset of the consumer's word."""
_HEADER_BYTES = 2 * _LINE
_WORD: Literal["l", "q"] = "l" if struct.calcsize("l") == 8 else "q"
"""The memoryview format of an int64 word: C long where it is 64 bits, because CPython packs a
`long` in a plain loop and a `long long` through a byte array (callgrind: about 2x the
instructions per store)."""


def ring_bytes(capacity: int, fields: int) -> int:
    """Size of a ring block: header, a stamp per slot, a row per slot."""
    return _HEADER_BYTES + 8 * capacity * (1 + fields)


class TelemetryRing:
    """Telemetry rows in a shared buffer: one producer process, one consumer process."""

    def __init__(self, buf: memoryview) -> None:
        def word(offset: int) -> memoryview:
            # One int64 word as its own view: indexing it with a literal 0 gives or takes a
            # Python int for fewer instructions than a numpy scalar costs (this is the hot path).
            return buf[offset : offset + 8].cast(_WORD)

        self._head_word = word(_HEAD)
        self._tail_word = word(_TAIL)
        self._dropped_word = word(_DROPPED)
        self.capacity: int = word(_CAPACITY)[0]
        self.fields: int = word(_FIELDS)[0]
        capacity = self.capacity
        self.stamps: npt.NDArray[np.int64] = np.ndarray((capacity,), np.int64, buf, _HEADER_BYTES)
        # The same stamps as words: the producer stores one int per row, cheaper this way; the
        # consumer copies many at once, through numpy.
        self._stamp_words = buf[_HEADER_BYTES : _HEADER_BYTES + 8 * capacity].cast(_WORD)
        self.rows: npt.NDArray[np.float64] = np.ndarray(
            (capacity, self.fields), np.float64, buf, _HEADER_BYTES + 8 * capacity
        )
        # The producer's own view: where it writes next (a restarted child goes on where the
        # dead one stopped) and how far it may go before it must read the consumer's tail again
        # (a stale tail only ever means less room, never a slot still in use).
        self._head: int = self._head_word[0]
        self._limit: int = self._tail_word[0] + capacity
        self.resets = 0
        """Times the consumer found words no producer could have written and emptied the ring."""

    def put(self, now_ns: int, values: npt.ArrayLike) -> bool:
        """Queue one row (the producer's side); False, and counted, if the ring was full."""
        head = self._head
        if head >= self._limit and not self._has_room(head):
            return False
        slot = head % self.capacity
        self.rows[slot] = values
        self._stamp_words[slot] = now_ns
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
        """Every queued row, oldest first, as copies: (perf_counter_ns per row, rows); the
        consumer's side."""
        tail, head = self._tail_word[0], self._head_word[0]
        slots, head = self._slots(tail, head)
        out = (self.stamps[slots], self.rows[slots])  # indexing by an array copies
        self._tail_word[0] = head
        return out

    def _slots(self, tail: int, head: int) -> tuple[npt.NDArray[np.int64], int]:
        """The slots of the rows from tail to head, and the head to move the tail to. Words no
        producer could have written (a child that scribbled on the block before it died, which
        is what isolation is for) give no rows and an empty ring, never a huge copy."""
        if 0 <= head - tail <= self.capacity:
            return np.arange(tail, head) % self.capacity, head
        log.warning(
            "telemetry ring: head %d and tail %d cannot be (capacity %d); its rows are dropped "
            "and it starts again empty",
            head, tail, self.capacity,
        )  # fmt: skip
        self.resets += 1
        self._head_word[0] = 0  # the producer is broken: the consumer takes over its word
        return np.zeros(0, np.int64), 0

    @property
    def pending(self) -> int:
        """Rows waiting to be taken."""
        queued: int = self._head_word[0] - self._tail_word[0]
        if not 0 <= queued <= self.capacity:
            return self.capacity  # impossible words: a drain resets the ring (`_slots`)
        return queued

    @property
    def dropped(self) -> int:
        """Rows refused because the ring was full, by every producer so far."""
        dropped: int = self._dropped_word[0]
        return dropped


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
        self._stamp_words[slot] = now_ns
        self._fence()  # the row's stores are visible before the head's
        self._head = head + 1
        self._head_word[0] = head + 1
        return True

    def _has_room(self, head: int) -> bool:
        room = super()._has_room(head)
        self._fence()  # the tail is read before the freed slot is written
        return room

    def take(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Every queued row, oldest first, as copies: (perf_counter_ns per row, rows); the
        consumer's side."""
        head = self._head_word[0]
        self._fence()  # the rows are read after the head that covers them
        tail = self._tail_word[0]
        slots, head = self._slots(tail, head)
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
        header = buf[:_HEADER_BYTES].cast(_WORD)
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
    Rows are stamped on the wall clock as in process, by the channel that drains them: with the
    offset in force since its previous drain, which is the one an in-process row written in the
    meantime would carry. The producer adds nothing: no shared word to read per row.
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

    def drain_telemetry(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Take every queued row from the ring: (wall-clock ns per row, rows), as copies."""
        stamps, rows = self.ring.take()
        stamps += self._wall_offset_ns
        self._refresh_wall_offset()
        return stamps, rows

    @property
    def telemetry_dropped(self) -> int:
        """Rows the ring refused because it was full (in whichever process wrote them)."""
        return self.ring.dropped

    @property
    def pending(self) -> tuple[int, int]:
        """(telemetry rows in the ring, events) waiting to be drained."""
        return (self.ring.pending, self._e_head - self._e_tail)
