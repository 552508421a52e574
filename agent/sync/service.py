"""The sync service: the agent's MQTT side, composed of one small part per job.

- `Uplink`: the broker link as the `Transport` seam (HAL, OTA), presence, PUBACK routing;
- `CommandHost`: command topics in, one worker running them in order, replies out;
- `Periodic`: the interval jobs (telemetry flush, metrics, state, compaction) as monotonic
  deadlines checked on the sync thread;
- `Documents`: the state, metrics, counters and status documents;
- `HomeAssistantPublisher`: discovery configs on connect and on HA's birth;
- `OutboxLifecycle`: the outbox opened, fed, pumped, compacted and finished.

Threads (none of them a plugin loop):
- the sync thread, the only consumer of the output channels and the only user of the outbox:
  every `TICK_S` it runs the jobs that are due and the tasks handed to it, persists events and
  pumps the outbox to the broker;
- paho's network thread (`loop_start()`): connection, PUBACKs, incoming messages;
- the command worker, running remote commands one at a time.
A process hosting many devices (sim.lightfleet) sets `shared` (agent/sync/lanes.py): the sync
thread's turns and the command worker then run on a few threads shared by every device.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from agent.config.sections import AgentConfig
from agent.engine.api import EngineControl
from agent.plugin.channel import OutputChannel
from agent.sync.builtins import register_builtins
from agent.sync.command_host import CommandHost, Reply
from agent.sync.commands import CommandRegistry, Handler, NoArgs
from agent.sync.documents import Documents
from agent.sync.ha import HomeAssistantPublisher
from agent.sync.infer import ModelCache
from agent.sync.lanes import Lane, LaneWake, SharedWork
from agent.sync.lifecycle import OutboxLifecycle
from agent.sync.payloads import clean, to_json
from agent.sync.periodic import Periodic
from agent.sync.reload import apply_reload, in_force
from agent.sync.uplink import Uplink
from agent.transport.base import MessageHandler, Qos
from agent.transport.topics import Topics

log = logging.getLogger(__name__)

TICK_S = 0.005
"""How often the sync thread looks for events: bounds their added latency, costs ~0.5 % CPU."""


class SyncService:
    """MQTT sync and remote control for one agent; implements the `Transport` seam."""

    tick_s: ClassVar[float] = TICK_S
    """The sync thread's idle wake-up (sim.lightfleet, hosting many devices, raises it)."""
    shared: ClassVar[SharedWork | None] = None
    """Runs every sync service's turns in this process (sim.lightfleet: no sync thread per
    device; a `Lane` of one pending turn, woken by the same events and a `tick_s` timer)."""

    def __init__(
        self, config: AgentConfig, control: EngineControl, *, config_path: Path | None = None
    ) -> None:
        self._config = config
        self._control = control
        self._config_path = config_path
        self._extra_channels: list[OutputChannel] = []
        self._wake = threading.Event() if self.shared is None else LaneWake()
        self.topics = Topics(config.mqtt.topic_root, config.device.id, config.device.group)
        self.uplink = Uplink(config, self.topics, self._wake)
        self.link = self.uplink.link
        self.commands = CommandRegistry(
            device_id=config.device.id, allowed=lambda: self._config.mqtt.commands
        )
        self.command_host = CommandHost(
            self.commands,
            self.link,
            self.topics,
            max_bytes=lambda: self._config.mqtt.max_payload_bytes,
            device_id=config.device.id,
            reply_prefix=lambda: self._config.mqtt.reply_prefix,
        )
        self._models = ModelCache(config)
        register_builtins(self.commands, self)
        self.outbox = OutboxLifecycle(config, self.uplink)
        self.discovery = HomeAssistantPublisher(
            self.link,
            self.topics,
            config=lambda: self._config,
            channels=self._plugin_channels,  # entities are the plugins', not the agent's own
            wake=self._wake,
        )
        self.periodic = Periodic()
        self._add_jobs()
        self.documents = Documents(
            config=lambda: self._config,
            control=control,
            channels=self._channels,
            uplink=self.uplink,
            outbox=self.outbox,
            commands=self.command_host,
            periodic=self.periodic,
        )
        self._tasks: deque[Callable[[], None]] = deque()
        self._stopping = False
        self._finish_by = 0.0
        self._thread: threading.Thread | None = None
        self._lane: Lane | None = None
        self._cancel_tick: Callable[[], None] | None = None
        self._started = False

    def _add_jobs(self) -> None:
        s = self._config.scheduler
        self.periodic.add("telemetry_flush", s.telemetry_flush_s, self._flush_telemetry)
        self.periodic.add("metrics", s.metrics_s, self.publish_metrics)
        self.periodic.add("state", s.state_s, self.publish_state)
        self.periodic.add("outbox_compaction", s.outbox_compaction_s, self.outbox.compact)
        if self._config.mqtt.resubscribe_s > 0:
            # Only the agent's own filters: nothing retained lives there to be sent again.
            root = f"{self._config.mqtt.topic_root}/"
            renew = functools.partial(self.link.renew_subscriptions, under=root)
            self.periodic.add("resubscribe", self._config.mqtt.resubscribe_s, renew)

    # -- what commands and other parts see ----------------------------------------------------

    @property
    def config(self) -> AgentConfig:
        """The configuration in force (replaced by `config.reload`)."""
        return self._config

    @property
    def control(self) -> EngineControl:
        """The engine."""
        return self._control

    @property
    def config_path(self) -> Path | None:
        """The config file `config.reload` re-reads."""
        return self._config_path

    @property
    def models(self) -> ModelCache:
        """Models loaded for the `infer` command."""
        return self._models

    def add_channel(self, channel: OutputChannel) -> None:
        """Drain `channel` too (e.g. the agent's own `schedule` events): its events go through
        the durable outbox like a plugin's. Call before `start`."""
        if self._started:
            raise RuntimeError("add_channel() after start(): the sync thread owns the channels")
        self._extra_channels.append(channel)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Open the outbox, start connecting, draining and the jobs; returns at once.

        Raises OutboxInUse (another agent has the state_dir) or ConfigError (password, TLS
        files) with nothing left running. An outbox that cannot be opened now (a full disk) is
        retried by the sync thread (see `OutboxLifecycle`). A service is started once.
        """
        if self._started or not self._config.mqtt.enabled:
            return
        self.link.on_connected = self._on_connected
        self.outbox.open(first=True)
        try:
            self.link.start()  # reads the password and TLS files: fails here, not later
        except BaseException:
            self.outbox.close()
            raise
        self._stopping = False
        self.periodic.restart()
        name = f"sync-{self._config.device.id}"
        if self.shared is not None and isinstance(self._wake, LaneWake):
            self._lane = self._wake.lane = Lane(self.shared, self._turn, capacity=1, name=name)
            self._cancel_tick = self.shared.every(self.tick_s, self._wake.set)
        else:
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()
        self.command_host.start()
        self._started = True
        ob = self.outbox.outbox
        held = f"{ob.depth} messages" if ob else "not open yet"
        log.info("sync started: broker %s, outbox %s", self.link.broker, held)

    def stop(self, timeout: float = 2.0) -> None:
        """Persist what is pending, deliver what can be, publish offline, disconnect."""
        if not self._started:
            return
        deadline = time.monotonic() + timeout
        # The last deliveries get 60 % of the budget; offline status and disconnect the rest.
        self._finish_by = time.monotonic() + 0.6 * timeout
        self.command_host.stop(timeout=min(0.5, timeout / 4))
        self._stopping = True
        if self._cancel_tick is not None:
            self._cancel_tick()
        self._wake.set()
        finishing = max(0.1, deadline - time.monotonic() - 0.2)
        if self._lane is not None and not self._lane.stop(finishing):
            log.warning("sync turn still busy at stop; closing anyway")
        if self._thread is not None:
            self._thread.join(finishing)
            if self._thread.is_alive():
                log.warning("sync thread still busy at stop; closing anyway")
        self.uplink.announce_offline(max(0.05, min(0.5, deadline - time.monotonic())))
        self.link.stop(timeout=max(0.05, min(0.5, deadline - time.monotonic())))
        self.outbox.close()
        self._models.close()
        self._started = False
        log.info("sync stopped")

    # -- the Transport seam (HAL, OTA) and commands -------------------------------------------

    def subscribe(self, topic_filter: str, handler: MessageHandler, *, qos: Qos = 1) -> None:
        """Deliver messages on `topic_filter` to `handler` (on the network thread: be quick)."""
        self.uplink.subscribe(topic_filter, handler, qos=qos)

    def unsubscribe(self, topic_filter: str, handler: MessageHandler) -> None:
        """Stop delivering `topic_filter` to `handler`."""
        self.uplink.unsubscribe(topic_filter, handler)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: Qos = 0,
        retain: bool = False,
        durable: bool | None = None,
    ) -> None:
        """Publish; durable messages (default: QoS 1) go through the outbox (see `Uplink`)."""
        self.uplink.publish(topic, payload, qos=qos, retain=retain, durable=durable)

    def register_command(
        self,
        name: str,
        handler: Handler,
        args: type[BaseModel] = NoArgs,
        *,
        description: str = "",
    ) -> None:
        """Add a remote command (e.g. OTA's `model.rollback`); allowed unless mqtt.commands
        lists the allowed ones and it is not among them."""
        self.commands.register(name, handler, args, description=description)

    def submit_command(self, name: str, payload: bytes, reply: Reply) -> bool:
        """Run a command on the command worker, as if it came over MQTT (the user scheduler
        does); False when the worker's queue is full."""
        return self.command_host.submit(name, payload, reply)

    # -- state and documents ------------------------------------------------------------------

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the sync thread (the owner of the channels and the outbox)."""
        self._tasks.append(fn)
        self._wake.set()

    def state_changed(self) -> None:
        """Republish the retained state (plugins or models changed)."""
        self.call_soon(self.publish_state)

    def publish_state(self) -> None:
        """Publish the retained state: version, accelerator, plugins, active models."""
        if self.link.connected:
            payload = to_json(clean(self.documents.state()))
            self.uplink.publish(self.topics.state, payload, qos=1, retain=True, durable=False)

    def publish_metrics(self) -> None:
        """Publish loop statistics and sync counters."""
        if self.link.connected:
            payload = to_json(clean(self.documents.metrics()))
            self.uplink.publish(self.topics.metrics, payload, qos=0)

    def state(self) -> dict[str, Any]:
        """The retained state document."""
        return self.documents.state()

    def counters(self) -> dict[str, float]:
        """Flat numbers for a watchdog or Prometheus (see `Documents.counters`)."""
        return self.documents.counters()

    def status(self) -> dict[str, Any]:
        """The status document (see `Documents.status`)."""
        return self.documents.status()

    def uptime_s(self) -> float:
        """Seconds since the service was built."""
        return self.documents.uptime_s()

    def apply_config(self, config: AgentConfig) -> dict[str, Any]:
        """Apply a reloaded config: the engine first (an error leaves everything as it was)."""
        result = apply_reload(self._control, self._config, config)
        old = self._config
        config = in_force(old, config)  # what waits for a restart is not described as served
        self._config = config
        self.outbox.set_config(config)
        if old.runtime != config.runtime or old.models_dir != config.models_dir:
            self._models.close()  # loaded for the old runtime settings: load again on next use
        self._models.config = config
        self.state_changed()
        return result

    def wait_drained(self, timeout: float) -> bool:
        """Wait until every event drained so far is stored and acknowledged (tests, benches)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox.drained(self._channels()):
                return True
            time.sleep(0.01)
        return False

    # -- the sync thread ----------------------------------------------------------------------

    def _on_connected(self) -> None:
        self.uplink.announce_online(self._config)
        self.state_changed()
        self.discovery.request()

    def _plugin_channels(self) -> list[OutputChannel]:
        try:
            return list(self._control.channels())
        except Exception:
            log.exception("engine channels() failed")
            return []

    def _channels(self) -> list[OutputChannel]:
        """The plugins' channels and the agent's own (`add_channel`): all drained alike."""
        return [*self._plugin_channels(), *self._extra_channels]

    def _flush_telemetry(self) -> None:
        self.outbox.flush_telemetry(self._channels())

    def _run(self) -> None:
        while True:
            self._wake.wait(self.tick_s)
            if self._turn():
                return

    def _turn(self, _: object = None) -> bool:
        """One wake-up: tasks, due jobs, the outbox; True once finished (stopping)."""
        self._wake.clear()
        stopping = self._stopping
        try:
            busy = self._step()
        except Exception:
            log.exception("sync step failed")
            busy = False
            time.sleep(0.1)
        if stopping:
            self.outbox.finish(self._channels(), self._finish_by)
            return True
        if busy:
            self._wake.set()
        return False

    def _step(self) -> bool:
        while self._tasks:
            task = self._tasks.popleft()
            try:
                task()
            except Exception:
                log.exception("sync task failed")
        self.periodic.run_due()
        self.discovery.run_if_requested()
        return self.outbox.step(self._channels())
