"""Receives one model's updates from any transport: a signed manifest, then numbered chunks.

A transport (MQTT, a test, a file) calls `on_manifest(payload)` and `on_chunk(n, data)` and asks
`missing()` what to request again. Chunks go straight to their files in a staging slot on disk
(memory use is one chunk, whatever the bundle size); once all have arrived a worker thread runs
the pipeline (verify, validate, swap, watch, commit; see updater.py) off the transport's thread.

The update's state has one record, `ota.json` (through the updater): every change is persisted
there first and then reported to `on_status` as {"state", "version", "reason", ...} built from
it, in one call (`_record`). A manifest refused before admission (bad signature, replay, busy,
...) changes no state: the refusal is only answered and reported (`_refuse`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from agent.errors import UpdateRejected
from agent.ota.envelope import SignedUpdate, UpdateBody, read_unverified, verify_envelope
from agent.ota.keys import TrustedKeys
from agent.ota.updater import ModelUpdater
from agent.ota.versions import TERMINAL
from agent.sync.lanes import SharedWork, run_task

log = logging.getLogger(__name__)

RETRYABLE = frozenset({"hash_mismatch"})
"""Pipeline refusals after which the same bundle may be sent again."""

StatusCallback = Callable[[dict[str, Any]], None]


class _Transfer:
    """The files of one update being assembled in a staging folder, chunk by chunk."""

    def __init__(self, signed: SignedUpdate, staged: Path, *, resume: bool = False) -> None:
        self.signed = signed
        self.body: UpdateBody = signed.body
        self.staged = staged
        self.have = bytearray(self.body.chunks)
        self.received = 0
        self._files: list[tuple[int, int, int]] = []  # (stream offset, size, fd)
        start = 0
        flags = os.O_RDWR | os.O_CREAT | (0 if resume else os.O_TRUNC)
        try:
            for f in self.body.manifest.files:
                path = staged / f.path
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, flags, 0o644)
                self._files.append((start, f.size, fd))
                os.ftruncate(fd, f.size)
                start += f.size
            if resume:
                self._rescan()
        except BaseException:
            self.close()
            raise

    def _rescan(self) -> None:
        """Mark every chunk already on disk whose bytes match its signed hash (a resume)."""
        for n in range(len(self.have)):
            if self.body.chunk_ok(n, self.read(n)):
                self.have[n] = 1
                self.received += 1

    def read(self, n: int) -> bytes:
        """The bytes of chunk `n` as they are on disk now."""
        lo = n * self.body.chunk_size
        hi = lo + self.body.chunk_length(n)
        parts = []
        for start, size, fd in self._files:
            a, b = max(lo, start), min(hi, start + size)
            if a < b:
                parts.append(os.pread(fd, b - a, a - start))
        return b"".join(parts)

    @property
    def serial(self) -> int:
        """The serial of the update being received."""
        return self.body.serial

    def write(self, n: int, data: bytes) -> None:
        """Write chunk `n` where its bytes belong (it may span several files)."""
        lo = n * self.body.chunk_size
        hi = lo + len(data)
        view = memoryview(data)
        for start, size, fd in self._files:
            a, b = max(lo, start), min(hi, start + size)
            if a < b:
                os.pwrite(fd, view[a - lo : b - lo], a - start)

    def missing(self, limit: int | None) -> list[int]:
        """Chunk numbers not received yet, lowest first, at most `limit`."""
        out: list[int] = []
        i = self.have.find(0)
        while i != -1 and (limit is None or len(out) < limit):
            out.append(i)
            i = self.have.find(0, i + 1)
        return out

    def close(self) -> None:
        """Close the files (their data is fsynced later, by the pipeline)."""
        for _, _, fd in self._files:
            os.close(fd)
        self._files = []


class OtaReceiver:
    """The device side of one model's updates; thread-safe, never blocks on the pipeline."""

    shared: ClassVar[SharedWork | None] = None
    """Runs every receiver's pipeline in this process (sim.lightfleet); None: a thread each."""

    def __init__(
        self,
        updater: ModelUpdater,
        trusted: TrustedKeys,
        *,
        on_status: StatusCallback | None = None,
    ) -> None:
        self.updater = updater
        self.name = updater.name
        self.trusted = trusted
        self.on_status = on_status
        self._lock = threading.RLock()
        self._transfer: _Transfer | None = None
        self._join: Callable[[float], object] | None = None
        """Waits for the pipeline's thread (or shared run) to end."""
        self._worker_serial = 0
        self._running = False
        """A pipeline runs (from the last chunk until its outcome is known)."""
        self._stop = threading.Event()
        self._done = threading.Condition(self._lock)
        self.last_progress = time.monotonic()
        self.chunks_ignored = 0
        """Chunks for no transfer in progress, out of range, or already received."""
        self.chunks_bad = 0
        """Chunks whose bytes did not match their signed sha256 (forged or damaged)."""

    # --- what a transport calls ------------------------------------------------------------------

    def on_manifest(self, payload: bytes) -> dict[str, Any]:
        """Take a signed manifest; return the status it leads to (also sent to on_status)."""
        try:
            signed = verify_envelope(payload, self.trusted)
        except UpdateRejected as exc:
            with self._lock:
                return self._refuse(exc, _best_effort(payload))
        return self.accept(signed)

    def accept(self, signed: SignedUpdate) -> dict[str, Any]:
        """Take a manifest whose signature was verified; the status it leads to."""
        with self._lock:
            serial = signed.body.serial
            if self._running:
                if serial == self._worker_serial:
                    return self._report()
                busy = "busy: another update of this model is being validated"
                return self._refuse(UpdateRejected(busy, code="busy"), signed.body)
            if self._transfer is not None and self._transfer.serial == serial:
                return self._report()  # the same manifest again: resume, nothing to reset
            try:
                admission = self.updater.admit(signed)
            except UpdateRejected as exc:
                return self._refuse(exc, signed.body)
            if not admission.start:
                return self._report_recorded()
            return self._start(signed)

    def on_chunk(self, n: int, data: bytes, *, serial: int | None = None) -> bool:
        """Take chunk `n` (of the update with `serial`, when the transport says which); True if
        it was written. A chunk whose bytes do not match the signed hash is dropped and counted
        (`chunks_bad`): the transfer goes on and the chunk is asked for again."""
        with self._lock:
            t = self._transfer
            if t is None or (serial is not None and serial != t.serial):
                self.chunks_ignored += 1
                return False
            if not 0 <= n < len(t.have) or t.have[n]:
                self.chunks_ignored += 1
                return False
            if not t.body.chunk_ok(n, data):
                self.chunks_bad += 1
                if self.chunks_bad in (1, 10, 100, 1000):
                    log.warning(
                        "ota: %s: dropped chunk %d: not the signed bytes (%d so far)",
                        self.name, n, self.chunks_bad,
                    )  # fmt: skip
                return False
            t.write(n, data)
            t.have[n] = 1
            t.received += 1
            self.last_progress = time.monotonic()
            if t.received == len(t.have):
                self._transfer = None
                t.close()
                self._start_pipeline(t)
            return True

    def missing(self, limit: int | None = None) -> list[int]:
        """Chunks of the transfer in progress not received yet (empty when none is)."""
        with self._lock:
            return self._transfer.missing(limit) if self._transfer is not None else []

    # --- state -----------------------------------------------------------------------------------

    @property
    def receiving(self) -> _Transfer | None:
        """The transfer in progress, if any."""
        return self._transfer

    @property
    def busy(self) -> bool:
        """True while a transfer or its pipeline runs."""
        return self._transfer is not None or self._running

    def status(self) -> dict[str, Any]:
        """The update's state as recorded in `ota.json`, with the transfer's progress."""
        with self._lock:
            status = self.updater.status()
            t = self._transfer
            if status["state"] == "receiving" and t is not None:
                status["chunks"], status["received"] = len(t.have), t.received
            return status

    def wait(self, timeout: float) -> dict[str, Any]:
        """Block until the update in progress ends (or `timeout`); the last status."""
        end = time.monotonic() + timeout
        with self._done:
            while self.busy and time.monotonic() < end:
                self._done.wait(min(0.05, max(0.0, end - time.monotonic())))
            return self.status()

    def abort(self, reason: str, *, retryable: bool = True) -> None:
        """Give up the transfer in progress (a stalled sender); the same bundle may be resent."""
        with self._lock:
            if self._transfer is not None:
                self._fail_transfer(reason, retryable=retryable)

    def close(self, timeout: float = 5.0) -> None:
        """Stop: a pipeline in its health window rolls back; a transfer is dropped."""
        self._stop.set()
        if self._join is not None:
            self._join(timeout)
        with self._lock:
            if self._transfer is not None:
                self._transfer.close()
                self._transfer = None

    # --- internals -------------------------------------------------------------------------------

    def _start(self, signed: SignedUpdate) -> dict[str, Any]:
        if self._transfer is not None:
            old = self._transfer
            self._transfer = None
            old.close()
            superseded = f"superseded by serial {signed.body.serial}"
            self._refuse(UpdateRejected(superseded, code="superseded"), old.body)
        versions = self.updater.versions
        body = signed.body
        resume = self.updater.versions.record().serial == body.serial
        self.updater.begin(signed)
        staged = versions.staging / str(body.serial) / "files"
        if not (resume and staged.is_dir()):
            resume = False
            staged = versions.new_staging(body.serial) / "files"
            staged.mkdir()
        try:
            self._transfer = _Transfer(signed, staged, resume=resume)
        except OSError as exc:  # e.g. a full disk: refuse with a reason, never stay "receiving"
            versions.clear_staging()
            self._record("rejected", f"cannot stage the files: {exc}", code="staging")
            return self.status()
        self.last_progress = time.monotonic()
        if resume:
            log.info("ota: %s: resuming with %d chunks on disk", self.name, self._transfer.received)
        if self._transfer.received == len(self._transfer.have):
            t, self._transfer = self._transfer, None
            t.close()
            self._report()
            self._start_pipeline(t)
            return self.status()
        log.info(
            "ota: %s %s (serial %d): receiving %d bytes in %d chunks",
            self.name, signed.body.version, signed.body.serial, signed.body.size,
            signed.body.chunks,
        )  # fmt: skip
        return self._report()

    def _fail_transfer(self, reason: str, *, retryable: bool) -> None:
        t = self._transfer
        assert t is not None
        self._transfer = None
        t.close()
        if not retryable:  # a retryable transfer keeps its chunks: a resend resumes from them
            self.updater.versions.clear_staging()
        self._record("rejected", reason, retryable=retryable)
        self._done.notify_all()

    def _start_pipeline(self, t: _Transfer) -> None:
        self._worker_serial = t.serial
        self._running = True
        name = f"ota-{self.name}"
        self._join = run_task(self.shared, self._pipeline, t.signed, t.staged, name=name)

    def _pipeline(self, signed: SignedUpdate, staged: Path) -> None:
        body = signed.body
        state, reason, code = "active", "", ""
        try:
            self.updater.finish(signed, staged, self._record, self._stop)
        except UpdateRejected as exc:
            state = "rolled_back" if exc.code == "rolled_back" else "rejected"
            reason, code = exc.reason, exc.code
        except Exception as exc:  # a bug must not leave the update hanging in "validating"
            log.exception("ota: %s %s failed", self.name, body.version)
            state, reason, code = (
                "rejected",
                f"internal error: {type(exc).__name__}: {exc}",
                "internal",
            )
        if state != "active":  # "active" was recorded by the commit itself
            # A whole-file mismatch after every chunk matched its hash means bytes changed on
            # the device's disk: sending the same bundle again may well succeed.
            self.updater.set_state(state, reason, code=code, retryable=code in RETRYABLE)
        self.updater.versions.clear_staging()
        log.log(
            logging.INFO if state == "active" else logging.WARNING,
            "ota: %s %s %s%s", self.name, body.version, state, f": {reason}" if reason else "",
        )  # fmt: skip
        # Not busy any more before anyone hears the outcome: a rollback may follow at once.
        with self._done:
            self._running = False
            self._done.notify_all()
            status = self.status()
        self._announce(status)

    def _record(
        self, state: str, reason: str = "", *, code: str = "", retryable: bool = False
    ) -> None:
        """Persist a state change of the update in progress, then report it."""
        self.updater.set_state(state, reason, code=code, retryable=retryable)
        self._report()

    def _report(self) -> dict[str, Any]:
        """Report (and return) the recorded state."""
        status = self.status()
        self._announce(status)
        return status

    def _report_recorded(self) -> dict[str, Any]:
        """The same bundle again, its update over: report how it ended (a state a restart cut
        short reads as rejected)."""
        status = self.status()
        if status["state"] not in TERMINAL:
            status["state"], status["reason"] = "rejected", status["reason"] or "interrupted"
        self._announce(status)
        return status

    def _refuse(self, exc: UpdateRejected, body: UpdateBody | None) -> dict[str, Any]:
        """Answer and report a refused manifest; the recorded state stays as it was (the status
        carries `refused: true`, so a transport does not publish it as the update's state)."""
        current = self.updater.current_manifest()
        status: dict[str, Any] = {
            "model": self.name,
            "state": "rejected",
            "version": body.version if body is not None else None,
            "reason": exc.reason,
            "serial": body.serial if body is not None else None,
            "active": current.version if current is not None else None,
            "code": exc.code,
            "refused": True,
        }
        self._announce(status)
        return status

    def _announce(self, status: dict[str, Any]) -> None:
        if self.on_status is not None:
            try:
                self.on_status(dict(status))
            except Exception:  # a transport failing to report must not break the update
                log.exception("ota: status callback failed")


def _best_effort(payload: bytes) -> UpdateBody | None:
    """The body of a refused manifest, for the status, if it parses at all."""
    try:
        return read_unverified(payload)
    except UpdateRejected:
        return None
