"""A small in-test engine (EngineControl double) with real output channels, and an agent process.

Run as a script it is an agent process for kill -9 tests:
    python -m tests.support.sync CONFIG.json [--events N] [--rate HZ]
It starts a SyncService against a FakeEngine whose plugin `gen` raises N events at HZ, prints
`READY` once started, and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.config.sections import AgentConfig
from agent.errors import ConfigError, PluginError
from agent.plugin.channel import OutputChannel
from agent.runtime.slot import ModelSlot
from tests.support import acl


class GenParams(BaseModel):
    """Params of the fake plugins."""

    model_config = ConfigDict(extra="forbid", strict=True)
    gain: float = Field(1.0, ge=0.0, le=10.0, description="Output gain")
    enabled_alarm: bool = False


class FakeEngine:
    """EngineControl double: plugins with state and params, real OutputChannels, a producer."""

    def __init__(
        self,
        names: tuple[str, ...] = ("gen",),
        *,
        fields: tuple[str, ...] = ("temperature", "power"),
    ) -> None:
        self._lock = threading.Lock()
        self._plugins: dict[str, dict[str, Any]] = {
            n: {
                "name": n,
                "state": "running",
                "rate_hz": 100.0,
                "model": None,
                "model_version": None,
                "ticks": 0,
                "overruns": 0,
                "restarts": 0,
                "last_error": None,
            }
            for n in names
        }
        self._params: dict[str, GenParams] = {n: GenParams() for n in names}
        self._channels = {
            n: OutputChannel(n, fields, capacity=1 << 14, events=1 << 14) for n in names
        }
        self.slots: dict[str, ModelSlot] = {}
        self.reloaded: list[AgentConfig] = []
        self.reload_error: Exception | None = None
        self._producers: list[threading.Thread] = []
        self._stop = threading.Event()

    def channel(self, name: str = "gen") -> OutputChannel:
        """The output channel of plugin `name`."""
        return self._channels[name]

    def _get(self, name: str) -> dict[str, Any]:
        try:
            return self._plugins[name]
        except KeyError:
            raise PluginError(f"no plugin {name!r}") from None

    # EngineControl
    def plugins(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(p) for p in self._plugins.values()]

    def start_plugin(self, name: str) -> None:
        with self._lock:
            self._get(name)["state"] = "running"

    def stop_plugin(self, name: str) -> None:
        with self._lock:
            self._get(name)["state"] = "stopped"

    def restart_plugin(self, name: str) -> None:
        with self._lock:
            p = self._get(name)
            p["state"] = "running"
            p["restarts"] += 1

    def params(self, name: str) -> Any:
        with self._lock:
            self._get(name)
            return self._params[name]

    def set_params(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._get(name)
            merged = {**self._params[name].model_dump(), **params}
            try:
                self._params[name] = GenParams.model_validate(merged)
            except ValidationError as exc:
                errs = [
                    (
                        f"plugins[{name}].params." + ".".join(map(str, e["loc"])),
                        e["msg"],
                        e.get("input"),
                    )
                    for e in exc.errors()
                ]
                raise ConfigError(errs) from None
            return self._params[name].model_dump()

    def stats(self) -> dict[str, dict[str, Any]]:
        return {
            n: {
                "tick_us": {"p50": 3.0, "p99": 9.0, "p999": 20.0, "max": 40.0},
                "lateness_us": {"p50": 50.0, "p99": 800.0, "p999": 1500.0, "max": 3000.0},
                "ticks": 1000,
                "overruns": 0,
                "skipped": 0,
            }
            for n in self._plugins
        }

    def channels(self) -> list[OutputChannel]:
        return list(self._channels.values())

    def model_slots(self) -> dict[str, ModelSlot]:
        return dict(self.slots)

    def swap_model(self, name: str, model: Any, *, timeout: float = 2.0) -> Any:
        slot = self.slots.get(name)
        if slot is None:
            raise PluginError(f"plugin {name!r} has no model")
        return slot.activate(model, slot.prepare(model))

    def swap_model_folder(self, name: str, folder: Path | None, *, timeout: float = 30.0) -> str:
        raise PluginError(f"plugin {name!r} is not isolated")

    def reload(self, config: AgentConfig) -> dict[str, Any]:
        if self.reload_error is not None:
            raise self.reload_error
        self.reloaded.append(config)
        return {"added": [], "removed": [], "changed": [p.name for p in config.plugins]}

    def tick_counters(self) -> dict[str, int]:
        return {n: 1000 for n in self._plugins}

    # test helpers
    def produce(self, count: int, rate_hz: float, name: str = "gen") -> threading.Thread:
        """Raise `count` events on `name` at `rate_hz` from a thread (the single producer)."""
        ch = self._channels[name]

        def run() -> None:
            period = 1.0 / rate_hz
            start = time.perf_counter()
            for i in range(count):
                if self._stop.is_set():
                    return
                while not ch.event(time.perf_counter_ns(), "tick", 1.0, i=i):
                    time.sleep(0.001)  # ring full: the fake producer waits, a real loop drops
                target = start + (i + 1) * period
                delay = target - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)  # the producer's rate

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self._producers.append(t)
        return t

    def close(self) -> None:
        """Stop producers."""
        self._stop.set()
        for t in self._producers:
            t.join(2)


def agent_config(port: int, device_id: str, state_dir: Path, **sections: Any) -> AgentConfig:
    """A config for one test agent: fast reconnects, short jobs, its own state_dir (and its
    account, when the suite runs through the shipped ACL)."""
    device = {"id": device_id, "group": "lab", **sections.pop("device", {})}
    hal = sections.get("hal", {}).get("devices", {}).values()
    # Topics outside the agent's own that a locked-down broker must let this device use.
    topics = (*sections.pop("acl_topics", ()), *(d["topic"] for d in hal if "topic" in d))
    mqtt = {
        "host": "127.0.0.1",
        "port": port,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
        "keepalive": 5,
        **acl.login(port, device_id, device["group"], tuple(topics)),
        **sections.pop("mqtt", {}),
    }
    scheduler = {
        "telemetry_flush_s": 0.2,
        "metrics_s": 0.5,
        "state_s": 5.0,
        "outbox_compaction_s": 5.0,
        **sections.pop("scheduler", {}),
    }
    return AgentConfig.model_validate(
        {
            "device": device,
            "mqtt": mqtt,
            "scheduler": scheduler,
            "state_dir": str(state_dir),
            "models_dir": str(sections.pop("models_dir", Path("models").resolve())),
            **sections,
        }
    )


def main(argv: list[str]) -> int:
    """An agent process: SyncService + FakeEngine producing events."""
    from agent.sync.service import SyncService

    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--events", type=int, default=0)
    ap.add_argument("--rate", type=float, default=1000.0)
    args = ap.parse_args(argv)
    config = AgentConfig.model_validate(json.loads(Path(args.config).read_text()))
    engine = FakeEngine()
    service = SyncService(config, engine)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    service.start()
    if args.events:
        engine.produce(args.events, args.rate)
    print("READY", flush=True)
    done.wait()
    engine.close()
    service.stop(2.0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
