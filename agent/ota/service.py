"""The device's OTA service: a receiver per model, the `model.rollback` command, status fan-out."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent.config.sections import AgentConfig
from agent.engine.api import EngineControl
from agent.errors import OtaError
from agent.ota.keys import TrustedKeys
from agent.ota.receiver import OtaReceiver
from agent.ota.updater import ModelUpdater

_MODEL_NAME = re.compile(r"^[a-z0-9_]+$")
StatusListener = Callable[[dict[str, Any]], None]


class RollbackArgs(BaseModel):
    """Arguments of `model.rollback`."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(pattern=r"^[a-z0-9_]+$", description="Model name to roll back")


class OtaService:
    """Over-the-air updates on the device, independent of the transport that carries them.

    Call `agent.ota.recover(state_dir)` before the engine loads its models; then build this with
    the running engine (None: install and validate without swapping, e.g. a stopped agent).
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        engine: EngineControl | None = None,
        trusted: TrustedKeys | None = None,
    ) -> None:
        self.config = config
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

    def receiver(self, model: str) -> OtaReceiver:
        """The receiver of `model`'s updates (created on first use); OtaError if misnamed."""
        if not _MODEL_NAME.match(model):
            raise OtaError(f"invalid model name {model!r}", code="invalid_args")
        with self._lock:
            rx = self._receivers.get(model)
            if rx is None:
                rx = OtaReceiver(
                    ModelUpdater(model, self.config, self.engine),
                    self.trusted,
                    on_status=self._fan_out,
                )
                self._receivers[model] = rx
            return rx

    def receivers(self) -> list[OtaReceiver]:
        """Every receiver created so far."""
        with self._lock:
            return list(self._receivers.values())

    def rollback(self, name: str) -> dict[str, Any]:
        """`model.rollback`: back to the previous kept version (or the shipped one)."""
        rx = self.receiver(name)
        if rx.busy:
            raise OtaError(f"an update of {name} is in progress", code="busy")
        result = rx.updater.rollback()
        self._fan_out(rx.updater.status())
        return result

    def rollback_command(self, args: RollbackArgs) -> dict[str, Any]:
        """The handler to register as `model.rollback` with the sync command registry."""
        return self.rollback(args.model)

    def status(self, name: str) -> dict[str, Any]:
        """The last update's status of `name`, as on disk."""
        return self.receiver(name).updater.status()

    def close(self, timeout: float = 5.0) -> None:
        """Stop every receiver (a model in its health window is rolled back)."""
        for rx in self.receivers():
            rx.close(timeout)

    def _fan_out(self, status: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            listener(status)
