"""Helpers for the OTA tests: paths of the committed test models, configs, a plugin, feeding.

The crash test's child process (tests/ota/ota_crash_child.py) imports it too.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from agent.config.sections import AgentConfig, OtaConfig, PluginConfig
from agent.engine.host import PluginHost
from agent.errors import ModelError
from agent.ota import (
    Bundle,
    OtaReceiver,
    OtaService,
    RollbackArgs,
    load_private_key,
    pack_bundle,
)
from agent.ota.envelope import UpdateBody
from agent.plugin.base import Plugin, PluginContext, PluginParams
from agent.plugin.registry import PluginRegistry
from agent.runtime.base import Model
from tests.support import acl
from tests.support.paths import OTA_DATA

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
NAME = "waveform_classifier"
SHIPPED = MODELS / NAME
DATA = OTA_DATA
V1_1 = DATA / "v1_1_0"
SLOW = DATA / "slow"
LOOP = DATA / "loop"
CRASH = DATA / "crash"
HOG = DATA / "hog"
W32 = DATA / "w32"
NAN = DATA / "nan"


def make_config(
    tmp: Path, public_keys: list[Path], *, plugins: list[PluginConfig] | None = None, **ota: Any
) -> AgentConfig:
    """A config with its own state_dir, the repo's shipped models and these trusted keys."""
    ota.setdefault("health_window_s", 1.0)
    return AgentConfig(
        state_dir=tmp / "state",
        models_dir=MODELS,
        ota=OtaConfig(trusted_keys=public_keys, **ota),
        plugins=plugins or [],
    )


def pack(
    folder: Path, keys: Path, out: Path, *, serial: int | None = None, **kwargs: Any
) -> UpdateBody:
    """Pack `folder` with the private key in `keys/` into `out`."""
    return pack_bundle(folder, load_private_key(keys / "private.pem"), out, serial=serial, **kwargs)


def wave_host(config: AgentConfig) -> Iterator[PluginHost]:
    """A started engine with WavePlugin registered as `wave` (for `yield from` and `for`)."""
    host = PluginHost(config, registry=PluginRegistry(extra={"wave": WavePlugin}))
    host.start()
    try:
        assert host.wait_ready(30.0)
        yield host
    finally:
        host.stop()


def install(svc: OtaService, bundle: Path, wait_s: float = 60.0) -> dict[str, Any]:
    """Feed `bundle` to the service's receiver of the waveform model; its final status."""
    rx = svc.receiver(NAME)
    feed(rx, bundle)
    return rx.wait(wait_s)


def set_in_health_window(svc: OtaService, host: PluginHost, params: dict[str, Any]) -> None:
    """Have the `wave` plugin take `params` as soon as an update's health window opens (a model
    that misbehaves only on live data: its golden vectors pass)."""

    def listener(status: dict[str, Any]) -> None:
        if status["state"] == "validating" and status["reason"] == "health window":
            host.set_params("wave", params)

    svc.add_listener(listener)


def feed(
    rx: OtaReceiver,
    bundle: Path,
    *,
    mutate: Callable[[int, bytes], bytes] | None = None,
    skip: set[int] | None = None,
    manifest: bytes | None = None,
) -> dict[str, Any]:
    """Send a bundle's manifest and chunks to a receiver the way a transport would."""
    with Bundle(bundle) as b:
        status = rx.on_manifest(manifest if manifest is not None else b.envelope)
        if status["state"] != "receiving":
            return status
        for n in range(b.body.chunks):
            if skip and n in skip:
                continue
            data = b.chunk(n)
            rx.on_chunk(n, mutate(n, data) if mutate else data)
    return rx.status()


def variant(src: Path, dst: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of model folder `src` at `dst` with its manifest edited by `edit`."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("eval", "__pycache__"))
    path = dst / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest, indent=1))
    return dst


def shipped_golden() -> list[Any]:
    """The golden vectors of the shipped 1.0.0 model."""
    golden: list[Any] = json.loads((SHIPPED / "manifest.json").read_text())["golden"]
    return golden


class WaveParams(PluginParams):
    """Params of WavePlugin."""

    classes: int = Field(4, ge=1, description="check_model refuses models with other outputs")
    poison: bool = Field(False, description="Overwrite the first output with NaN after each run")
    crash: bool = Field(False, description="Raise in every tick (a model that breaks the loop)")


class WavePlugin(Plugin):
    """Classifies a rotating set of sine windows with its model every tick (no HAL devices).

    `poison` stands in for a model that emits NaN only on live data (its golden vectors pass):
    the health window must see it in the slot's output buffer.
    """

    Params = WaveParams
    default_model: ClassVar[str | None] = NAME
    default_rate_hz: ClassVar[float] = 100.0

    def setup(self, ctx: PluginContext) -> None:
        """Precompute the windows; keep the slot."""
        assert ctx.model is not None
        self.slot = ctx.model
        self.params: WaveParams = ctx.params  # type: ignore[assignment]
        k = np.arange(16, dtype=np.float32)
        phases = np.linspace(0, 1, 32, endpoint=False, dtype=np.float32)[:, None]
        self.windows = np.sin(2 * np.pi * (k / 16 * 1.5 + phases)).astype(np.float32)
        self.n = 0

    def tick(self, now_ns: int) -> None:
        """Feed the next window and run the model."""
        np.copyto(self.slot.inputs[0][0], self.windows[self.n & 31])
        self.slot.run()
        if self.params.poison:
            self.slot.outputs[0][0, 0] = np.nan
        if self.params.crash:
            raise RuntimeError("the tick failed on purpose")
        self.n += 1

    def apply_params(self, params: PluginParams) -> None:
        """Take new params between ticks."""
        self.params = params  # type: ignore[assignment]

    def check_model(self, model: Model) -> None:
        """Refuse a model whose output is not one score per class."""
        got = model.outputs[0].shape[-1]
        if got != self.params.classes:
            raise ModelError(f"model has {got} classes, plugin expects {self.params.classes}")


class Agent:
    """A whole device for the MQTT tests: engine (one wave plugin), sync service, OTA over MQTT."""

    def __init__(self, config: AgentConfig, *, limits: Any = None, give_up_s: float = 60.0) -> None:
        from agent.engine.host import PluginHost
        from agent.ota import OtaMqttAdapter, OtaService, recover
        from agent.plugin.registry import PluginRegistry
        from agent.sync.service import SyncService

        self.config = config
        recover(config.state_dir)
        self.host = PluginHost(config, registry=PluginRegistry(extra={"wave": WavePlugin}))
        self.host.start()
        self.sync = SyncService(config, self.host)
        self.ota = OtaService(config, engine=self.host, limits=limits)
        self.sync.register_command(
            "model.rollback", self.ota.rollback_command, RollbackArgs, description="OTA rollback"
        )
        self.adapter = OtaMqttAdapter(self.sync, self.ota, stall_s=0.5, give_up_s=give_up_s)
        self.adapter.start()
        self.sync.start()

    @property
    def version(self) -> str:
        """The version of the model the plugin runs now."""
        return str(self.host.model_slots()["wave"].model.version)

    def stop(self) -> None:
        """Stop everything, OTA first."""
        self.adapter.stop()
        self.ota.close()
        self.sync.stop(1.0)
        self.host.stop()


def agent_config(
    tmp: Path, port: int, device_id: str, group: str, public_keys: list[Path], **ota: Any
) -> AgentConfig:
    """The config of one MQTT test agent: its own state_dir, the test broker, a wave plugin."""
    ota.setdefault("health_window_s", 1.0)
    return AgentConfig.model_validate(
        {
            "device": {"id": device_id, "group": group},
            "mqtt": {
                "host": "127.0.0.1",
                "port": port,
                "reconnect_min_s": 0.05,
                "reconnect_max_s": 0.5,
                "keepalive": 5,
                "home_assistant": False,
                **acl.login(port, device_id, group),
            },
            "state_dir": str(tmp / device_id),
            "models_dir": str(MODELS),
            "plugins": [{"name": "wave", "model": NAME, "rate_hz": 100.0}],
            "ota": {"trusted_keys": [str(k) for k in public_keys], **ota},
        }
    )
