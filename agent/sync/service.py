"""The sync service: the agent's MQTT side, composed of the link, the outbox and the commands.

Threads (none of them a plugin loop):
- the sync thread, the only consumer of the plugins' output channels and the only user of the
  outbox: drains events every `TICK_S`, persists them, flushes telemetry when the scheduler asks,
  and pumps the outbox to the broker;
- paho's network thread (`loop_start()`): connection, PUBACKs, incoming messages;
- the command worker, running remote commands one at a time;
- the scheduler's worker, running the periodic jobs (those that touch channels or the outbox
  post a task to the sync thread instead).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent import __version__
from agent.config.sections import AgentConfig
from agent.engine.api import EngineControl
from agent.sync.base import InboundMessage, MessageHandler, Qos
from agent.sync.builtins import register_builtins
from agent.sync.commands import CommandRegistry, CommandWorker, Handler, NoArgs
from agent.sync.discovery import PluginEntities, declared_entities, discovery_messages
from agent.sync.events import EventPersister
from agent.sync.infer import ModelCache
from agent.sync.link import MqttLink
from agent.sync.outbox import Message, MessageClass, Outbox, OutboxError, OutboxInUse
from agent.sync.payloads import clean, telemetry_payloads, to_json
from agent.sync.sender import OutboxSender
from agent.sync.topics import Topics

log = logging.getLogger(__name__)

TICK_S = 0.005
"""How often the sync thread looks for events: bounds their added latency, costs ~0.5 % CPU."""
OUTBOX_FILE = "outbox.db"
OPEN_RETRY_MIN_S = 1.0
OPEN_RETRY_MAX_S = 30.0
"""An outbox that could not be opened (full disk) is retried after 1 s, doubling up to 30 s."""
_RELOADABLE_MQTT = {"commands", "telemetry_qos", "max_payload_bytes", "home_assistant"}


class SyncService:
    """MQTT sync and remote control for one agent; implements the `Transport` seam."""

    def __init__(
        self, config: AgentConfig, control: EngineControl, *, config_path: Path | None = None
    ) -> None:
        self._config = config
        self._control = control
        self._config_path = config_path
        self.topics = Topics(config.mqtt.topic_root, config.device.id, config.device.group)
        will = (self.topics.status, to_json({"state": "offline"}))
        self.link = MqttLink(config, will=will)
        self.commands = CommandRegistry(
            device_id=config.device.id, allowed=lambda: self._config.mqtt.commands
        )
        self._models = ModelCache(config)
        register_builtins(self.commands, self)
        self._worker = CommandWorker(self._run_command, name=f"sync-cmd-{config.device.id}")
        from agent.scheduler import JobScheduler

        self.scheduler = JobScheduler(name=f"sync-{config.device.id}")
        self._add_jobs()
        for topic_filter in self.topics.command_filters():
            self.link.subscribe(topic_filter, self._on_command, qos=1)
        if config.mqtt.home_assistant:
            self.link.subscribe(self.topics.ha_status, self._on_ha_status, qos=1)
        self._wake = threading.Event()
        self._tasks: deque[Callable[[], None]] = deque()
        self._durable: deque[Message] = deque()
        self._stopping = False
        self._finish_by = 0.0
        self._thread: threading.Thread | None = None
        self._outbox: Outbox | None = None
        self._open_error = ""
        self._open_retry_at = 0.0
        self._open_backoff_s = OPEN_RETRY_MIN_S
        self._sender: OutboxSender | None = None
        self._events: EventPersister | None = None
        self._offline_mid: int | None = None
        self._offline_acked = threading.Event()
        self._recent_acks: deque[int] = deque(maxlen=64)
        self._started = False
        self.telemetry_batches = 0
        self.telemetry_offline_dropped = 0
        self.telemetry_error_dropped = 0
        """QoS 1 telemetry rows dropped because the outbox could not be written (disk full)."""
        self.commands_busy = 0
        self.last_direct_publish_ts = 0.0

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

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Open the outbox, start connecting, draining and the jobs; returns at once.

        Raises OutboxInUse (another agent has the state_dir) or ConfigError (password, TLS
        files) with nothing left running. A state_dir that cannot hold the outbox now (a full
        disk, an I/O error) does not stop the agent: the loops must keep running, so the sync
        thread retries the outbox with back-off while events wait unnumbered in the plugin rings
        (their overflow counted) and the error shows in status and the systemd STATUS line.
        Seqs are only given as events are stored, so none is reused. A service is started once.
        """
        if self._started or not self._config.mqtt.enabled:
            return
        cfg = self._config
        self.link.on_ack = self._on_ack
        self.link.on_connected = self._on_connected
        self._open_outbox()
        try:
            self.link.start()  # reads the password and TLS files: fails here, not later
        except BaseException:
            if self._outbox is not None:
                self._outbox.close()
            self._outbox = self._sender = self._events = None
            raise
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"sync-{cfg.device.id}", daemon=True)
        self._thread.start()
        self._worker.start()
        self.scheduler.start()
        self._started = True
        held = f"{self._outbox.depth} messages" if self._outbox else "not open yet"
        log.info("sync started: broker %s, outbox %s", self.link.broker, held)

    def _open_outbox(self) -> None:
        """Open the outbox; on failure (other than OutboxInUse at start) schedule a retry."""
        cfg = self._config
        try:
            outbox = Outbox(
                cfg.state_dir / OUTBOX_FILE,
                max_bytes=cfg.outbox.max_bytes,
                telemetry_share=cfg.outbox.telemetry_share,
            )
        except OutboxError as exc:
            if isinstance(exc, OutboxInUse) and not self._started:
                raise
            if not self._open_error:
                log.error(
                    "%s; the loops keep running, their events wait in the plugin rings "
                    "(overflow counted); retrying with back-off",
                    exc,
                )
            self._open_error = str(exc)
            self._open_retry_at = time.monotonic() + self._open_backoff_s
            self._open_backoff_s = min(self._open_backoff_s * 2.0, OPEN_RETRY_MAX_S)
            return
        if self._open_error:
            log.warning("outbox open after all (%d messages): events flow again", outbox.depth)
        self._open_error = ""
        self._sender = OutboxSender(outbox, self.link, wake=self._wake.set)
        self._events = EventPersister(outbox, self.topics.events)
        self._outbox = outbox  # last: other threads take a non-None outbox as ready

    def stop(self, timeout: float = 2.0) -> None:
        """Persist what is pending, deliver what can be, publish offline, disconnect."""
        if not self._started:
            return
        deadline = time.monotonic() + timeout
        # The last deliveries get 60 % of the budget; offline status and disconnect the rest.
        self._finish_by = time.monotonic() + 0.6 * timeout
        self.scheduler.stop()
        self._worker.stop(timeout=min(0.5, timeout / 4))
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.1, deadline - time.monotonic() - 0.2))
            if self._thread.is_alive():
                log.warning("sync thread still busy at stop; closing anyway")
        self._publish_offline(max(0.05, min(0.5, deadline - time.monotonic())))
        self.link.stop(timeout=max(0.05, min(0.5, deadline - time.monotonic())))
        if self._outbox is not None:
            self._outbox.close()
        self._models.close()
        self._started = False
        log.info("sync stopped")

    def _publish_offline(self, timeout: float) -> None:
        if not self.link.connected:
            return
        self._offline_acked.clear()
        payload = to_json({"state": "offline", "ts": round(time.time(), 3), "reason": "shutdown"})
        mid = self.link.publish(self.topics.status, payload, qos=1, retain=True)
        self._offline_mid = mid
        # The PUBACK may have come before `publish` returned: then it is among the recent acks.
        if mid is not None and mid not in self._recent_acks:
            self._offline_acked.wait(timeout)

    def _add_jobs(self) -> None:
        s = self._config.scheduler
        self.scheduler.add("telemetry_flush", s.telemetry_flush_s, self.request_telemetry_flush)
        self.scheduler.add("metrics", s.metrics_s, self.publish_metrics)
        self.scheduler.add("state", s.state_s, self.publish_state)
        self.scheduler.add("outbox_compaction", s.outbox_compaction_s, self._request_compaction)

    # -- the Transport seam (HAL, OTA) --------------------------------------------------------

    def subscribe(self, topic_filter: str, handler: MessageHandler, *, qos: Qos = 1) -> None:
        """Deliver messages on `topic_filter` to `handler` (on the network thread: be quick)."""
        self.link.subscribe(topic_filter, handler, qos=qos)

    def unsubscribe(self, topic_filter: str, handler: MessageHandler) -> None:
        """Stop delivering `topic_filter` to `handler`."""
        self.link.unsubscribe(topic_filter, handler)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: Qos = 0,
        retain: bool = False,
        durable: bool | None = None,
    ) -> None:
        """Publish; durable messages (default: QoS 1) go through the outbox and survive crashes.

        A durable message is stored by the sync thread within a few milliseconds; it is never
        dropped for lack of room (it waits in memory, reported as outbox `full`).
        """
        data = payload.encode() if isinstance(payload, str) else payload
        if durable is None:
            durable = qos == 1
        if durable:
            self._durable.append(Message(MessageClass.OTHER, topic, data, 1, retain))
            self._wake.set()
            return
        if self.link.publish(topic, data, qos=qos, retain=retain) is not None:
            self.last_direct_publish_ts = time.time()

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

    # -- jobs and state -----------------------------------------------------------------------

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the sync thread (the owner of the channels and the outbox)."""
        self._tasks.append(fn)
        self._wake.set()

    def request_telemetry_flush(self) -> None:
        """Ask the sync thread to publish the batched telemetry now."""
        self.call_soon(self._flush_telemetry)

    def _request_compaction(self) -> None:
        self.call_soon(self._compact)

    def state_changed(self) -> None:
        """Republish the retained state (plugins or models changed)."""
        self.call_soon(self.publish_state)

    def publish_state(self) -> None:
        """Publish the retained state: version, accelerator, plugins, active models."""
        if self.link.connected:
            self.publish(
                self.topics.state, to_json(clean(self.state())), qos=1, retain=True, durable=False
            )

    def publish_metrics(self) -> None:
        """Publish loop statistics and sync counters."""
        if self.link.connected:
            payload = {
                "ts": round(time.time(), 3),
                "plugins": self._control.stats(),
                "sync": self.counters(),
            }
            self.publish(self.topics.metrics, to_json(clean(payload)), qos=0)

    def state(self) -> dict[str, Any]:
        """The retained state document."""
        cfg = self._config
        models = {}
        for plugin, slot in self._control.model_slots().items():
            m = slot.model
            models[plugin] = {
                "name": m.name,
                "version": m.version,
                "backend": m.backend,
                "accelerator": m.accelerator,
            }
        plugins = [
            {k: p.get(k) for k in ("name", "state", "rate_hz", "model", "model_version")}
            for p in self._control.plugins()
        ]
        return {
            "ts": round(time.time(), 3),
            "version": __version__,
            "device": cfg.device.id,
            "board": cfg.device.board,
            "group": cfg.device.group,
            "accelerator": cfg.runtime.accelerator,
            "plugins": plugins,
            "models": models,
        }

    def apply_config(self, config: AgentConfig) -> dict[str, Any]:
        """Apply a reloaded config: the engine first (an error leaves everything as it was)."""
        changed = self._control.reload(config)
        old = self._config
        restart = [
            name
            for name in ("device", "outbox", "scheduler", "state_dir")
            if getattr(old, name) != getattr(config, name)
        ]
        mqtt_old = old.mqtt.model_dump(exclude=_RELOADABLE_MQTT)
        if mqtt_old != config.mqtt.model_dump(exclude=_RELOADABLE_MQTT):
            restart.append("mqtt")
        self._config = config
        if old.runtime != config.runtime or old.models_dir != config.models_dir:
            self._models.close()  # loaded for the old runtime settings: load again on next use
        self._models.config = config
        self.state_changed()
        return {"changed": changed, "restart_required": restart}

    # -- status ---------------------------------------------------------------------------------

    def counters(self) -> dict[str, float]:
        """Flat numbers for a watchdog or Prometheus: connection, publishing, outbox, drops."""
        ob, snd, ev = self._outbox, self._sender, self._events
        channels = self._channels()
        return {
            "connected": float(self.link.connected),
            "connects": float(self.link.connects),
            "disconnects": float(self.link.disconnects),
            "last_publish_ts": max(
                snd.last_publish_ts if snd else 0.0, self.last_direct_publish_ts
            ),
            "outbox_depth": float(ob.depth if ob else 0),
            "outbox_bytes": float(ob.total_bytes if ob else 0),
            "outbox_full": float(bool(ob and ob.full)),
            "outbox_inflight": float(snd.inflight if snd else 0),
            "outbox_inflight_bytes": float(snd.inflight_bytes if snd else 0),
            "outbox_window_bytes": float(snd.window_bytes if snd else 0),
            "uplink_bytes_per_s": float(round(snd.rate, 1) if snd else 0.0),
            "qos0_dropped": float(self.link.qos0_dropped),
            "outbox_sent": float(snd.sent if snd else 0),
            "outbox_acked": float(snd.acked if snd else 0),
            "outbox_rejected": float(snd.rejected if snd else 0),
            "outbox_telemetry_dropped": float(ob.telemetry_dropped if ob else 0),
            "outbox_errors": float(ob.errors if ob else 0),
            "outbox_failing": float(bool(ob and ob.last_error) or bool(self._open_error)),
            "events_persisted": float(ev.persisted if ev else 0),
            "events_backlog": float(ev.backlog if ev else 0),
            "durable_backlog": float(len(self._durable)),
            "channel_events_dropped": float(sum(c.events_dropped for c in channels)),
            "channel_telemetry_dropped": float(sum(c.telemetry_dropped for c in channels)),
            "telemetry_batches": float(self.telemetry_batches),
            "telemetry_offline_dropped": float(self.telemetry_offline_dropped),
            "telemetry_error_dropped": float(self.telemetry_error_dropped),
            "commands_handled": float(self.commands.handled),
            "commands_failed": float(self.commands.failed),
            "commands_busy": float(self.commands_busy),
        }

    def status(self) -> dict[str, Any]:
        """Connection, outbox and jobs, for the `status` command and the service's status."""
        m = self._config.mqtt
        ob = self._outbox
        return {
            "enabled": m.enabled,
            "connected": self.link.connected,
            "broker": self.link.broker,
            "protocol": m.protocol,
            "tls": m.tls is not None,
            "client_id": self.link.client_id,
            "last_connect_ts": self.link.last_connect_ts or None,
            "last_error": self.link.last_error or None,
            "outbox": {
                "path": str(ob.path) if ob else None,
                "max_bytes": ob.max_bytes if ob else None,
                **(ob.counts() if ob else {}),
                "last_error": (ob.last_error if ob else self._open_error) or None,
                "error_since": ob.failing_since if ob else None,
            },
            "counters": self.counters(),
            "jobs": self.scheduler.jobs(),
            "commands": self.commands.names(),
        }

    def wait_drained(self, timeout: float) -> bool:
        """Wait until every event drained so far is stored and acknowledged (tests, benches)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ob, ev = self._outbox, self._events
            pending = any(c.pending[1] for c in self._channels())
            if ob and ev and not pending and not ev.backlog and not self._durable and not ob.depth:
                return True
            time.sleep(0.01)
        return False

    # -- callbacks ------------------------------------------------------------------------------

    def _on_ack(self, mid: int, ok: bool) -> None:
        self._recent_acks.append(mid)
        if mid == self._offline_mid:
            self._offline_acked.set()
        if self._sender is not None:
            self._sender.on_ack(mid, ok)

    def _on_connected(self) -> None:
        payload = {
            "state": "online",
            "ts": round(time.time(), 3),
            "version": __version__,
            "device": self._config.device.id,
            "group": self._config.device.group,
            "client_id": self.link.client_id,
            "pid": os.getpid(),
        }
        self.link.publish(self.topics.status, to_json(payload), qos=1, retain=True)
        self.state_changed()
        if self._config.mqtt.home_assistant:
            self.call_soon(self.publish_discovery)

    def _on_ha_status(self, msg: InboundMessage) -> None:
        if msg.payload.strip().lower() == b"online":
            self.call_soon(self.publish_discovery)

    def publish_discovery(self) -> None:
        """Publish the retained Home Assistant discovery configs."""
        plugins = [
            PluginEntities(c.plugin, tuple(c.fields), declared_entities(c.plugin))
            for c in self._channels()
        ]
        for topic, payload in discovery_messages(self.topics, self._config, plugins):
            self.link.publish(topic, payload, qos=1, retain=True)

    def _on_command(self, msg: InboundMessage) -> None:
        name = self.topics.command_name(msg.topic)
        if name is None:
            return
        if not self._worker.submit((name, msg)):
            self.commands_busy += 1
            error = {"code": "busy", "message": "too many commands pending; retry later"}
            self._reply(
                name,
                msg,
                {"id": None, "device": self._config.device.id, "ok": False, "error": error},
            )

    def _run_command(self, item: tuple[str, InboundMessage]) -> None:
        name, msg = item
        reply = self.commands.dispatch(
            name, msg.payload, max_bytes=self._config.mqtt.max_payload_bytes
        )
        self._reply(name, msg, reply)

    def _reply(self, name: str, msg: InboundMessage, reply: dict[str, Any]) -> None:
        topic = self.topics.reply(name)
        rt = msg.response_topic
        if rt and "+" not in rt and "#" not in rt:
            topic = rt
        try:
            payload = to_json(clean(reply))
        except (TypeError, ValueError) as exc:
            payload = to_json(
                {
                    "id": clean(reply.get("id")),
                    "ok": False,
                    "error": {"code": "internal", "message": f"reply: {exc}"},
                }
            )
        self.link.publish(topic, payload, qos=1, correlation_data=msg.correlation_data)

    # -- the sync thread ----------------------------------------------------------------------

    def _channels(self) -> list[Any]:
        try:
            return list(self._control.channels())
        except Exception:
            log.exception("engine channels() failed")
            return []

    def _run(self) -> None:
        while True:
            self._wake.wait(TICK_S)
            self._wake.clear()
            stopping = self._stopping
            try:
                busy = self._step()
            except Exception:
                log.exception("sync step failed")
                busy = False
                time.sleep(0.1)
            if stopping:
                self._finish()
                return
            if busy:
                self._wake.set()

    def _step(self) -> bool:
        while self._tasks:
            task = self._tasks.popleft()
            try:
                task()
            except Exception:
                log.exception("sync task failed")
        if self._outbox is None and time.monotonic() >= self._open_retry_at:
            self._open_outbox()
        if self._sender is None or self._events is None:
            return False  # no outbox yet: the rings hold the events (their overflow counted)
        acked = self._sender.take_acks()
        stored = self._events.collect(self._channels(), acked)
        self._store_durable()
        sent = self._sender.pump()
        return sent >= 500 or (stored > 0 and self._events.backlog > 0)

    def _store_durable(self) -> None:
        if self._outbox is None or not self._durable:
            return
        if not self._outbox.retry_due():
            return
        batch = list(self._durable)
        try:
            n = self._outbox.add(batch)
        except OutboxError:
            return  # counted and logged (rate-limited) by the outbox; kept in memory
        for _ in range(n):
            self._durable.popleft()

    def _flush_telemetry(self) -> None:
        qos = self._config.mqtt.telemetry_qos
        connected = self.link.connected
        stored: list[Message] = []
        stored_rows = 0
        for ch in self._channels():
            if not ch.pending[0]:
                continue
            ts, rows = ch.drain_telemetry()
            topic = self.topics.telemetry(ch.plugin)
            payloads = telemetry_payloads(ch.fields, ts, rows, dropped=ch.telemetry_dropped)
            if qos == 1:
                stored.extend(Message(MessageClass.TELEMETRY, topic, p) for p in payloads)
                stored_rows += len(ts)
            elif connected:
                for p in payloads:
                    self.link.publish(topic, p, qos=0)
                self.last_direct_publish_ts = time.time()
            else:
                self.telemetry_offline_dropped += len(ts)
                continue
            self.telemetry_batches += len(payloads)
        if stored:
            # Telemetry is not kept in memory while writes fail: dropped and counted (the
            # failure itself is logged, rate-limited, by the outbox).
            if self._outbox is None or not self._outbox.retry_due():
                self.telemetry_error_dropped += stored_rows
                return
            try:
                self._outbox.add(stored)
            except OutboxError:
                self.telemetry_error_dropped += stored_rows

    def _compact(self) -> None:
        if self._outbox is not None:
            with contextlib.suppress(OutboxError):  # counted and logged by the outbox
                self._outbox.compact()

    def _finish(self) -> None:
        """Last round on stop: store every pending event, flush telemetry, deliver briefly."""
        if self._sender is None or self._events is None:
            self._report_unstored()  # the outbox never opened
            return
        try:
            if self._outbox is not None:
                self._outbox.retry_now()  # the last chance: no back-off
            for _ in range(50):
                self._events.collect(self._channels())
                if not self._events.backlog:
                    break
            self._store_durable()
            self._flush_telemetry()
            self._report_unstored()
            while self.link.connected and time.monotonic() < self._finish_by:
                self._sender.process_acks()
                self._sender.pump()
                if not self._sender.inflight and not self._outbox_pending():
                    break
                time.sleep(0.005)
            self._sender.process_acks()
        except OutboxError:
            pass  # counted and logged by the outbox; undeleted rows are sent again next start
        except Exception:
            log.exception("sync shutdown step failed")

    def _report_unstored(self) -> None:
        """Say what a failing outbox makes the shutdown lose (events and messages in memory)."""
        events = self._events.backlog if self._events else 0
        events += sum(c.pending[1] for c in self._channels())
        if events or self._durable:
            ob = self._outbox
            reason = ob.last_error if ob else self._open_error
            if not reason:
                reason = "outbox at its size bound" if ob and ob.full else "not stored in time"
            log.error(
                "stopping with %d events and %d durable messages not stored: lost (%s)",
                events,
                len(self._durable),
                reason,
            )

    def _outbox_pending(self) -> bool:
        return bool(self._outbox and self._outbox.depth)
