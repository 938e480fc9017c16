"""The scoreboard: what each prefork worker tells its supervisor, through shared memory.

Theory of operation: the supervisor creates one anonymous shared mapping before it forks
anything; every worker inherits it and owns one fixed-size slot. A slot holds the worker's pid,
its state (starting, idle, busy, draining), its running and total request counts, and three
timestamps on the system-wide monotonic clock (heartbeat, start, last change of the counts).

Writers never contend: the supervisor writes a slot only while no live process owns it (before
the fork, after the reap), and a worker writes only its own slot. Each field is one aligned
machine word, so the reader sees either the old or the new value of a field; a reader can see
the fields of one slot from two different moments, which is harmless for what it decides
(spawn a spare, stop an idle worker, kill a silent one).

After the slots come the pool totals and one request-detail record per slot, for the status
page (:mod:`fcgi_async.status`): what workers that are gone had served (folded in when their
slot is reset), the pool's start time, and the maxima sampled by the workers (racy
read-compare-write across processes: a maximum can lose a sample written at the same instant).
A reader can see a reaped worker's requests twice for the instant between the fold and the
reset.

The mapping is ``mmap(-1, ...)``, which POSIX shares across ``fork``. A Windows hand-over
would use :mod:`multiprocessing.shared_memory` instead; only :class:`Scoreboard`'s constructor
would change.
"""

from __future__ import annotations

import enum
import mmap
import struct
import time
from dataclasses import dataclass

#: One slot: pid, state, running requests, total requests, heartbeat, start, last change.
_SLOT = struct.Struct("=qIIQddd")
_PID = struct.Struct("=q")
_STATE = struct.Struct("=I")
_COUNTS = struct.Struct("=IQ")  # running, total: adjacent in the slot
_TIME = struct.Struct("=d")
_OFF_PID = 0
_OFF_STATE = 8
_OFF_ACTIVE = 12
_OFF_HEARTBEAT = 24
_OFF_STARTED = 32
_OFF_CHANGED = 40
#: Pool totals: start (wall clock), requests and slow requests of reaped workers, and the
#: sampled maxima: active processes, times max children was reached, listen queue.
_POOL = struct.Struct("=dQQQQQ")
_POOL_FIELDS = (
    "start_time",
    "retired_requests",
    "retired_slow_requests",
    "max_active_processes",
    "max_children_reached",
    "max_listen_queue",
)
#: Per slot, the current or last request: start (monotonic), duration (s; -1 while running),
#: content length, slow requests so far, method, URI (truncated).
_DETAIL = struct.Struct("=ddQQ16s232s")
_OFF_DETAIL_SLOW = 24
_SLOW = struct.Struct("=Q")
#: The largest value of an unsigned 64-bit field (``Q``).
_U64_MAX = 2**64 - 1


class WorkerState(enum.IntEnum):
    """Where a worker is in its life, as its slot says."""

    FREE = 0  #: no worker owns the slot
    STARTING = 1  #: forked, loading the app or running its startup
    IDLE = 2  #: listening, no request running
    BUSY = 3  #: at least one request running
    DRAINING = 4  #: stopped listening; finishing its requests, then it exits


@dataclass(frozen=True, slots=True)
class SlotInfo:
    """A copy of one slot, read at one moment."""

    pid: int
    state: WorkerState
    active_requests: int
    total_requests: int
    heartbeat: float
    started_at: float
    last_change: float


@dataclass(frozen=True, slots=True)
class PoolInfo:
    """The pool totals, read at one moment (see the module docstring)."""

    start_time: float
    retired_requests: int
    retired_slow_requests: int
    max_active_processes: int
    max_children_reached: int
    max_listen_queue: int


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """A copy of one slot's request detail: its current request, or its last one."""

    started_at: float
    duration: float
    content_length: int
    slow_requests: int
    method: str
    uri: str


class Scoreboard:
    """A fixed number of worker slots in memory shared with every forked child.

    Args:
        slots: how many workers can be alive at once (old and new generation together).
    """

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"a scoreboard needs at least one slot, got {slots}")
        self.slots = slots
        self._pool_base = slots * _SLOT.size
        self._detail_base = self._pool_base + _POOL.size
        self._mem = mmap.mmap(-1, self._detail_base + slots * _DETAIL.size)
        _POOL.pack_into(self._mem, self._pool_base, time.time(), 0, 0, 0, 0, 0)

    def _base(self, slot: int) -> int:
        if not 0 <= slot < self.slots:
            raise IndexError(f"scoreboard slot {slot} out of range 0..{self.slots - 1}")
        return slot * _SLOT.size

    def reset(self, slot: int, *, now: float, state: WorkerState = WorkerState.FREE) -> None:
        """Clear a slot; with ``STARTING`` it is ready for a worker about to be forked.

        What the slot's worker had served is added to the pool totals first.
        """
        base = self._base(slot)
        total = _COUNTS.unpack_from(self._mem, base + _OFF_ACTIVE)[1]
        detail = self._detail_base + slot * _DETAIL.size
        slow = _SLOW.unpack_from(self._mem, detail + _OFF_DETAIL_SLOW)[0]
        if total or slow:
            pool = list(_POOL.unpack_from(self._mem, self._pool_base))
            pool[1] += total
            pool[2] += slow
            _POOL.pack_into(self._mem, self._pool_base, *pool)
        _SLOT.pack_into(self._mem, base, 0, state, 0, 0, now, now, now)
        _DETAIL.pack_into(self._mem, detail, 0.0, 0.0, 0, 0, b"", b"")

    def set_pid(self, slot: int, pid: int) -> None:
        """Record the pid that owns the slot."""
        _PID.pack_into(self._mem, self._base(slot) + _OFF_PID, pid)

    def set_state(self, slot: int, state: WorkerState) -> None:
        """Worker side: announce a state change."""
        _STATE.pack_into(self._mem, self._base(slot) + _OFF_STATE, state)

    def state(self, slot: int) -> WorkerState:
        """The slot's current state."""
        return WorkerState(_STATE.unpack_from(self._mem, self._base(slot) + _OFF_STATE)[0])

    def heartbeat(self, slot: int, now: float) -> None:
        """Worker side: say "my event loop still runs" (the supervisor kills silent workers)."""
        _TIME.pack_into(self._mem, self._base(slot) + _OFF_HEARTBEAT, now)

    def report(self, slot: int, active: int, total: int, now: float) -> None:
        """Worker side: publish the request counts; idle/busy follows unless draining."""
        base = self._base(slot)
        _COUNTS.pack_into(self._mem, base + _OFF_ACTIVE, active, total)
        _TIME.pack_into(self._mem, base + _OFF_CHANGED, now)
        if self.state(slot) in (WorkerState.IDLE, WorkerState.BUSY):
            busy = WorkerState.BUSY if active else WorkerState.IDLE
            _STATE.pack_into(self._mem, base + _OFF_STATE, busy)

    def read(self, slot: int) -> SlotInfo:
        """Copy one slot."""
        pid, state, active, total, heartbeat, started, changed = _SLOT.unpack_from(
            self._mem, self._base(slot)
        )
        return SlotInfo(pid, WorkerState(state), active, total, heartbeat, started, changed)

    def pool(self) -> PoolInfo:
        """Copy the pool totals."""
        return PoolInfo(*_POOL.unpack_from(self._mem, self._pool_base))

    def raise_pool_max(self, name: str, value: int) -> None:
        """Raise the pool maximum ``name`` (a :class:`PoolInfo` ``max_*`` field) to ``value``."""
        index = _POOL_FIELDS.index(name)
        offset = self._pool_base + 8 * index
        if value > _SLOW.unpack_from(self._mem, offset)[0]:
            _SLOW.pack_into(self._mem, offset, value)

    def count_max_children_reached(self) -> None:
        """Supervisor side: the process manager wanted a worker above its limit."""
        offset = self._pool_base + 8 * _POOL_FIELDS.index("max_children_reached")
        _SLOW.pack_into(self._mem, offset, _SLOW.unpack_from(self._mem, offset)[0] + 1)

    def set_request(
        self,
        slot: int,
        *,
        started_at: float,
        duration: float,
        content_length: int,
        slow_requests: int,
        method: bytes,
        uri: bytes,
    ) -> None:
        """Worker side: publish the current (``duration`` -1) or last request of ``slot``.

        Never fails a request over a value that does not fit its field: the counts are clamped
        to 0..2**64-1 (``method`` and ``uri`` are cut to their fields by ``struct``).
        """
        self._base(slot)
        if not 0 <= content_length <= _U64_MAX:
            content_length = min(max(content_length, 0), _U64_MAX)
        if not 0 <= slow_requests <= _U64_MAX:
            slow_requests = min(max(slow_requests, 0), _U64_MAX)
        _DETAIL.pack_into(
            self._mem,
            self._detail_base + slot * _DETAIL.size,
            started_at,
            duration,
            content_length,
            slow_requests,
            method,
            uri,
        )

    def request(self, slot: int) -> RequestInfo:
        """Copy one slot's request detail."""
        self._base(slot)
        started, duration, length, slow, method, uri = _DETAIL.unpack_from(
            self._mem, self._detail_base + slot * _DETAIL.size
        )
        return RequestInfo(
            started,
            duration,
            length,
            slow,
            method.rstrip(b"\0").decode("latin-1"),
            uri.rstrip(b"\0").decode("utf-8", "replace"),
        )

    def close(self) -> None:
        """Unmap the memory (the supervisor, once every worker is gone)."""
        self._mem.close()
