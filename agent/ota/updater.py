"""One model's update policy and pipeline: admit a signed manifest, then verify, validate, swap,
watch and commit the received files, or refuse and roll back; and the `model.rollback` command."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config.sections import AgentConfig
from agent.engine.api import EngineControl
from agent.errors import ModelError, OtaError, UpdateRejected
from agent.ota.activation import Activation, isolated_using, plugins_using
from agent.ota.envelope import SignedUpdate
from agent.ota.fsio import atomic_write_bytes, atomic_write_json, fsync_dir, fsync_file
from agent.ota.health import HealthWindow
from agent.ota.sandbox import SandboxLimits, check_candidate
from agent.ota.validate import check_shapes
from agent.ota.versions import ENVELOPE, SHIPPED, TERMINAL, ModelVersions, version_dir_name
from agent.runtime.folders import ModelStore, check_file, check_folder, manifest_or_none
from agent.runtime.manifest import MANIFEST_FILE, Manifest

log = logging.getLogger(__name__)

StateCallback = Callable[[str, str], None]
"""Told (state, reason) as the pipeline moves on."""


def _vtuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a verified manifest starts a transfer (`start`) or repeats a known one."""

    start: bool


class ModelUpdater:
    """Everything about updating one model that does not depend on how the bytes arrive."""

    def __init__(
        self,
        name: str,
        config: AgentConfig,
        engine: EngineControl | None,
        *,
        limits: SandboxLimits | None = None,
    ) -> None:
        self.name = name
        self.limits = limits or SandboxLimits()
        """What checking a candidate in its child process may cost (see sandbox.py)."""
        self.config = config
        self.engine = engine
        self.versions = ModelVersions(config.state_dir, name)
        self.store = ModelStore(config.models_dir, config.state_dir)
        self.lock = threading.RLock()
        """Held while a pipeline or a rollback changes the model (never by a loop)."""

    # --- what is active --------------------------------------------------------------------------

    def current_folder(self) -> Path | None:
        """The folder of the active version (OTA-installed or shipped), None if there is none."""
        try:
            return self.store.resolve(self.name)
        except ModelError:
            return None

    def current_manifest(self) -> Manifest | None:
        """The manifest of the active version, if any."""
        folder = self.current_folder()
        return manifest_or_none(folder) if folder is not None else None

    def status(self) -> dict[str, Any]:
        """The last update's state as published: state, version, reason, serial, active (and
        code, when the update was refused); `ota.json` is the one record of it."""
        rec = self.versions.record()
        current = self.current_manifest()
        status: dict[str, Any] = {
            "model": self.name,
            "state": rec.state,
            "version": rec.version,
            "reason": rec.reason,
            "serial": rec.serial,
            "active": current.version if current is not None else None,
        }
        if rec.code:
            status["code"] = rec.code
        return status

    # --- admission -------------------------------------------------------------------------------

    def admit(self, signed: SignedUpdate) -> Admission:
        """Replay, downgrade and size policy for a verified manifest; UpdateRejected if refused."""
        body = signed.body
        if body.model != self.name:
            raise UpdateRejected(
                f"manifest is for model {body.model}, not {self.name}", code="wrong_model"
            )
        limit = self.config.ota.max_bundle_bytes
        if body.size > limit:
            raise UpdateRejected(
                f"bundle of {body.size} bytes exceeds ota.max_bundle_bytes ({limit})",
                code="too_large",
            )
        rec = self.versions.record()
        if body.serial < rec.serial:
            raise UpdateRejected(
                f"replayed manifest: serial {body.serial} is older than {rec.serial}, already seen",
                code="replay",
            )
        if body.serial == rec.serial:
            if signed.digest != rec.digest:
                raise UpdateRejected(
                    f"replayed serial {body.serial} with different content", code="replay"
                )
            # The same bundle again: resume a cut transfer, else just repeat how it ended.
            return Admission(start=rec.state in TERMINAL and rec.retryable)
        current = self.current_manifest()
        newer = current is None or _vtuple(body.version) > _vtuple(current.version)
        if not newer and not body.allow_downgrade:
            assert current is not None
            raise UpdateRejected(
                f"version {body.version} is not newer than the active {current.version} "
                "(pack with --allow-downgrade to install it anyway)",
                code="downgrade",
            )
        return Admission(start=True)

    def begin(self, signed: SignedUpdate) -> None:
        """Record the accepted manifest (the replay guard moves forward now)."""
        with self.lock:
            rec = self.versions.record()
            rec.serial, rec.digest = signed.body.serial, signed.digest
            rec.version = signed.body.version
            rec.state, rec.reason, rec.code, rec.retryable = "receiving", "", "", False
            self.versions.save_record(rec)

    def set_state(
        self, state: str, reason: str = "", *, code: str = "", retryable: bool = False
    ) -> None:
        """Persist the state of the update in progress."""
        with self.lock:
            rec = self.versions.record()
            rec.state, rec.reason, rec.code, rec.retryable = state, reason, code, retryable
            self.versions.save_record(rec)

    # --- the pipeline ----------------------------------------------------------------------------

    def finish(
        self, signed: SignedUpdate, staged: Path, on_state: StateCallback, stop: threading.Event
    ) -> None:
        """Verify, install, validate, swap, watch and commit; UpdateRejected if refused.

        `staged` holds the received files; `on_state` records each step (the receiver persists
        it with `set_state` and reports it). A refusal before the swap leaves everything as it
        was; one in the health window swaps the previous model back first. Either way the
        version folder is deleted and the caller records why.
        """
        with self.lock:
            on_state("verifying", "")
            folder = self._install(signed, staged)
            dir_name = folder.name
            act: Activation | None = None
            try:
                on_state("validating", "")
                self._check_isolated(folder, stop)
                act = self._validate_and_swap(folder, signed.body.manifest, on_state, stop)
                self._commit(dir_name)
            except BaseException:
                if act is not None:
                    act.revert()  # the pointer did not move: the engine must not either
                self.versions.remove(dir_name)
                raise
            if act is not None:
                act.commit()

    def _install(self, signed: SignedUpdate, staged: Path) -> Path:
        for f in signed.body.manifest.files:
            try:
                path = check_file(staged, f)
            except ModelError as exc:
                raise UpdateRejected(
                    f"{f.path}: {exc.reason}: the bundle is corrupt or was altered",
                    code="hash_mismatch",
                ) from None
            fsync_file(path)
        atomic_write_json(staged / MANIFEST_FILE, signed.manifest_json)
        atomic_write_bytes(staged / ENVELOPE, signed.raw)
        for sub in {(staged / f.path).parent for f in signed.body.manifest.files}:
            fsync_dir(sub)
        return self.versions.install(
            staged, version_dir_name(signed.body.version, signed.body.serial)
        )

    def _validate_and_swap(
        self, folder: Path, manifest: Manifest, on_state: StateCallback, stop: threading.Event
    ) -> Activation | None:
        """Check the version and, when plugins run the model, swap it in and watch it; the
        Activation to commit (None: nothing runs the model)."""
        engine = self.engine
        if engine is None or not (
            plugins_using(engine, self.name) or isolated_using(engine, self.name)
        ):
            return None  # nothing runs it: the isolated check was the whole validation
        act = Activation(engine, self.name, self.config.runtime)
        act.prepare(folder, manifest)
        try:
            window = self.config.ota.health_window_s
            act.measure_baseline(self.current_folder(), window, stop)
            act.swap_in(timeout=2.0)
            on_state("validating", "health window")
            health = HealthWindow(
                engine,
                act.watched(),
                isolated=act.isolated_swapped,
                window_s=window,
                latency_regression=self.config.ota.latency_regression,
            )
            report = health.run(stop)
        except BaseException:
            act.revert()
            raise
        if report.reason is not None:
            act.revert()
            log.warning("ota: %s rolled back: %s (%s)", self.name, report.reason, report.figures)
            raise UpdateRejected(report.reason, code="rolled_back")
        log.info("ota: %s healthy: %s", self.name, report.figures)
        return act

    def _check_isolated(self, folder: Path, stop: threading.Event) -> None:
        """Load, golden-check and time every file in a child process first (a crash or a hang
        there is a refusal); with no plugin running the model, check it fits the active version
        (a running one is checked against its plugin's slot when it is prepared)."""
        probe = check_candidate(folder, self.config.runtime, self.limits, stop)
        log.info("ota: %s candidate checked apart: %s", self.name, probe)
        current = self.current_manifest()
        running = self.engine is not None and plugins_using(self.engine, self.name)
        if current is not None and not running:  # a running slot is checked in prepare()
            check_shapes(
                probe,
                [t.shape for t in current.inputs],
                [t.shape for t in current.outputs],
                f"the active version {current.version}",
            )

    def _commit(self, dir_name: str) -> None:
        self.versions.set_active(dir_name)  # the commit point: from here on, a restart runs it
        rec = self.versions.record()
        rec.history = [h for h in rec.history if h != dir_name] + [dir_name]
        rec.state, rec.reason, rec.code, rec.retryable = "active", "", "", False
        self.versions.save_record(rec)
        self.versions.prune(self.config.ota.keep_versions)

    # --- model.rollback --------------------------------------------------------------------------

    def rollback(self) -> dict[str, Any]:
        """Go back to the previous kept version (or the shipped one); OtaError if none."""
        if not self.lock.acquire(timeout=0.1):
            raise OtaError(f"an update of {self.name} is in progress", code="busy")
        try:
            return self._rollback()
        finally:
            self.lock.release()

    def _rollback(self) -> dict[str, Any]:
        active = self.versions.active_name()
        if active is None:
            raise OtaError(f"{self.name}: the shipped version is active", code="no_previous")
        rec = self.versions.record()
        older = [h for h in rec.history if h != active]
        target = self._usable_previous(older)
        folder = self.versions.path(target) if target != SHIPPED else self.store.shipped(self.name)
        assert folder is not None  # _usable_previous returns SHIPPED only when it exists
        try:
            self._swap_everywhere(folder)
        except UpdateRejected as exc:
            raise OtaError(exc.reason, code="rollback_failed") from None
        from_version = active.split("+", 1)[0]
        self.versions.set_active(target)
        rec = self.versions.record()
        rec.history = [h for h in rec.history if h != active]
        rec.state, rec.version, rec.code, rec.retryable = "rolled_back", from_version, "", False
        target_manifest = manifest_or_none(folder)
        to_version = target_manifest.version if target_manifest is not None else target
        rec.reason = f"rolled back by command to {to_version}"
        self.versions.save_record(rec)
        self.versions.remove(active)
        return {"model": self.name, "from": from_version, "to": to_version, "state": "rolled_back"}

    def _usable_previous(self, older: list[str]) -> str:
        for dir_name in reversed(older):
            try:
                check_folder(self.versions.path(dir_name))
            except ModelError as exc:
                log.warning("ota: %s: kept version %s unusable: %s", self.name, dir_name, exc)
                continue
            return dir_name
        if self.store.shipped(self.name) is not None:
            return SHIPPED
        raise OtaError(f"{self.name}: no usable previous version is kept", code="no_previous")

    def _swap_everywhere(self, folder: Path) -> None:
        """Load `folder` for every plugin running the model and swap it in (no health window:
        it ran before); all or nothing."""
        engine = self.engine
        if engine is None:
            return
        manifest = manifest_or_none(folder)
        if manifest is None:
            raise UpdateRejected(f"{folder} has no valid manifest", code="load_failed")
        act = Activation(engine, self.name, self.config.runtime)
        act.prepare(folder, manifest)
        try:
            act.swap_in(timeout=2.0)
        except BaseException:
            act.revert()
            raise
        act.commit()
