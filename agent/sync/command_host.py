"""The command host: command topics in, one worker thread running them in order, replies out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.sync.commands import CommandRegistry, CommandWorker
from agent.sync.payloads import clean, to_json
from agent.transport.base import InboundMessage
from agent.transport.link import MqttLink
from agent.transport.topics import Topics

Reply = Callable[[dict[str, Any]], None]
"""Receives the reply of one command (on the worker thread)."""


class CommandHost:
    """Runs commands from MQTT (and from the agent itself) one at a time on one worker."""

    def __init__(
        self,
        registry: CommandRegistry,
        link: MqttLink,
        topics: Topics,
        *,
        max_bytes: Callable[[], int],
        device_id: str,
    ) -> None:
        self.registry = registry
        self.busy = 0
        """Requests answered `busy` because the worker's queue was full."""
        self._link = link
        self._topics = topics
        self._max_bytes = max_bytes
        self._device_id = device_id
        self._worker = CommandWorker(self._run, name=f"sync-cmd-{device_id}")
        for topic_filter in topics.command_filters():
            link.subscribe(topic_filter, self._on_command, qos=1)

    def start(self) -> None:
        """Start the worker."""
        self._worker.start()

    def stop(self, timeout: float) -> None:
        """Finish the queued commands within `timeout` and end the worker."""
        self._worker.stop(timeout=timeout)

    def submit(self, name: str, payload: bytes, reply: Reply) -> bool:
        """Queue a command for the worker, as if it came over MQTT; False (and nothing runs)
        when the queue is full. `reply` gets the reply dict on the worker thread."""
        return self._worker.submit((name, payload, reply))

    def _on_command(self, msg: InboundMessage) -> None:
        name = self._topics.command_name(msg.topic)
        if name is None:
            return
        if not self.submit(name, msg.payload, lambda reply: self._reply(name, msg, reply)):
            self.busy += 1
            error = {"code": "busy", "message": "too many commands pending; retry later"}
            self._reply(
                name, msg, {"id": None, "device": self._device_id, "ok": False, "error": error}
            )

    def _run(self, item: tuple[str, bytes, Reply]) -> None:
        name, payload, reply = item
        reply(self.registry.dispatch(name, payload, max_bytes=self._max_bytes()))

    def _reply(self, name: str, msg: InboundMessage, reply: dict[str, Any]) -> None:
        topic = self._topics.reply(name)
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
        self._link.publish(topic, payload, qos=1, correlation_data=msg.correlation_data)
