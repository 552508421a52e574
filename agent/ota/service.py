"""The device's OTA service: a receiver per model, the `model.rollback` command, status fan-out."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent.config.sections import AgentConfig
from agent.engine.api import EngineControl
from agent.errors import OtaError, UpdateRejected
from agent.ota.envelope import read_unverified, verify_envelope
from agent.ota.keys import TrustedKeys
from agent.ota.receiver import OtaReceiver
from agent.ota.sandbox import SandboxLimits
from agent.ota.updater import ModelUpdater
from agent.ota.versions import TERMINAL

_MODEL_NAME = re.compile(r"^[a-z0-9_]+$")
StatusListener = Callable[[dict[str, Any]], None]
MAX_RECEIVERS = 8
"""Updates of different models received at the same time; more are refused as `busy`."""


class RollbackArgs(BaseModel):
    """Arguments of `model.rollback`."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(pattern=r"^[a-z0-9_]+$", description="Model name to roll back")


class OtaService:
    """Over-the-air updates on the device, independent of the transport that carries them.

    Call `agent.ota.recover(state_dir)` before the engine loads its models; then build this with
    the running engine (None: install and validate without swapping, e.g. a stopped agent).

    A receiver exists only while an update of its model runs: it is made by a manifest whose
    signature verifies (`offer`), at most MAX_RECEIVERS at once, and dropped when the update
    reaches a final state. Everything else (status, rollback) reads the model's record on disk.
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        engine: EngineControl | None = None,
        trusted: TrustedKeys | None = None,
        limits: SandboxLimits | None = None,
    ) -> None:
        self.config = config
        self.limits = limits or SandboxLimits()
        self.engine = engine
        self.trusted = (
            trusted if trusted is not None else TrustedKeys.from_files(config.ota.trusted_keys)
        )
        self._receivers: dict[str, OtaReceiver] = {}
        self._listeners: list[StatusListener] = []
        self._lock = threading.Lock()

    def add_listener(self, listener: StatusListener) -> None:
        """Be told every status change of every model (from transport or worker threads)."""
        self._listeners.append(listener)

    def offer(self, model: str, payload: bytes) -> dict[str, Any]:
        """A manifest arrived on `model`'s topic: verify it, then hand it to the model's receiver
        (made now if needed); the status it leads to. A refusal has `refused: true`."""
        try:
            signed = verify_envelope(payload, self.trusted)
            if signed.body.model != model:
                raise UpdateRejected(
                    f"manifest is for model {signed.body.model}, sent on {model}'s topic",
                    code="wrong_model",
                )
            rx = self.receiver(model)
        except UpdateRejected as exc:
            status = self._refusal(model, exc, payload)
            self._fan_out(status)
            return status
        status = rx.accept(signed)
        self._release(rx)
        return status

    def receiver(self, model: str) -> OtaReceiver:
        """The receiver of `model`'s updates (made if needed); OtaError if misnamed, or
        UpdateRejected (`busy`) when MAX_RECEIVERS other updates run."""
        if not _MODEL_NAME.match(model):
            raise OtaError(f"invalid model name {model!r}", code="invalid_args")
        with self._lock:
            rx = self._receivers.get(model)
            if rx is None:
                if len(self._receivers) >= MAX_RECEIVERS:
                    raise UpdateRejected(
                        f"{MAX_RECEIVERS} updates of other models are in progress", code="busy"
                    )
                rx = OtaReceiver(self._updater(model), self.trusted, on_status=self._fan_out)
                self._receivers[model] = rx
            return rx

    def knows(self, model: str) -> bool:
        """True if `model` is shipped, was ever updated here, or is being updated."""
        if not _MODEL_NAME.match(model):
            return False
        state_models = self.config.state_dir / "models"
        return (
            self.existing(model) is not None
            or (self.config.models_dir / model).is_dir()
            or (state_models / model).is_dir()
        )

    def existing(self, model: str) -> OtaReceiver | None:
        """The receiver of an update of `model` in progress, if there is one."""
        with self._lock:
            return self._receivers.get(model)

    def _updater(self, model: str) -> ModelUpdater:
        return ModelUpdater(model, self.config, self.engine, limits=self.limits)

    def _release(self, rx: OtaReceiver) -> None:
        """Drop a receiver whose update is over (its record stays on disk)."""
        with self._lock:
            if not rx.busy and self._receivers.get(rx.name) is rx:
                del self._receivers[rx.name]

    def _refusal(self, model: str, exc: UpdateRejected, payload: bytes) -> dict[str, Any]:
        serial = version = None
        try:
            body = read_unverified(payload)
            serial, version = body.serial, body.version
        except UpdateRejected:
            pass
        return {
            "model": model,
            "state": "rejected",
            "version": version,
            "reason": exc.reason,
            "serial": serial,
            "code": exc.code,
            "refused": True,
        }

    def receivers(self) -> list[OtaReceiver]:
        """Every receiver created so far."""
        with self._lock:
            return list(self._receivers.values())

    def rollback(self, name: str) -> dict[str, Any]:
        """`model.rollback`: back to the previous kept version (or the shipped one)."""
        if not _MODEL_NAME.match(name):
            raise OtaError(f"invalid model name {name!r}", code="invalid_args")
        rx = self.existing(name)
        if rx is not None and rx.busy:
            raise OtaError(f"an update of {name} is in progress", code="busy")
        updater = rx.updater if rx is not None else self._updater(name)
        result = updater.rollback()
        self._fan_out(updater.status())
        return result

    def rollback_command(self, args: RollbackArgs) -> dict[str, Any]:
        """The handler to register as `model.rollback` with the sync command registry."""
        return self.rollback(args.model)

    def status(self, name: str) -> dict[str, Any]:
        """The last update's status of `name`, as on disk (with progress while receiving)."""
        if not _MODEL_NAME.match(name):
            raise OtaError(f"invalid model name {name!r}", code="invalid_args")
        rx = self.existing(name)
        return rx.status() if rx is not None else self._updater(name).status()

    def close(self, timeout: float = 5.0) -> None:
        """Stop every receiver (a model in its health window is rolled back)."""
        for rx in self.receivers():
            rx.close(timeout)

    def _fan_out(self, status: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            listener(status)
        if status.get("state") in TERMINAL and not status.get("refused"):
            rx = self.existing(str(status.get("model")))
            if rx is not None:
                self._release(rx)
