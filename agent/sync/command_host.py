"""The command host: command topics in, one worker thread running them in order, replies out.

A request whose MQTT 5 response topic points where a reply would do harm (see
`Topics.response_topic_refusal`) is not run: it is answered `bad_response_topic` on the
default reply topic. Commands that change what runs are logged with who asked, as far as MQTT
can say: the broker does not tell a subscriber the publisher's client id, so the log gives the
`requester` user property the operator tools set (a claim, marked as such), the response topic
and the correlation data (see docs/security.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from agent.sync.commands import CommandRegistry, CommandWorker
from agent.sync.payloads import clean, to_json
from agent.transport.base import InboundMessage
from agent.transport.link import MqttLink
from agent.transport.topics import Topics

log = logging.getLogger(__name__)

Reply = Callable[[dict[str, Any]], None]
"""Receives the reply of one command (on the worker thread)."""
AUDITED = frozenset(
    {
        "plugin.start",
        "plugin.stop",
        "plugin.restart",
        "plugin.set",
        "config.reload",
        "model.rollback",
    }
)
"""Commands that change what runs: each one is logged with the requester it claims."""
REQUESTER_PROPERTY = "requester"
"""The MQTT 5 user property operator tools set to say who they are (a claim)."""
_REFUSAL_LOG_EVERY_S = 60.0


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
        reply_prefix: Callable[[], str] = lambda: "replies",
    ) -> None:
        self.registry = registry
        self.busy = 0
        """Requests answered `busy` because the worker's queue was full."""
        self._link = link
        self._topics = topics
        self._max_bytes = max_bytes
        self._device_id = device_id
        self._reply_prefix = reply_prefix
        self.refused_response_topics = 0
        """Requests not run because their response topic pointed somewhere harmful."""
        self._refusal_logged_at = -_REFUSAL_LOG_EVERY_S
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
        rt = msg.response_topic
        why = self._topics.response_topic_refusal(rt, self._reply_prefix()) if rt else ""
        if why:
            self._refuse(name, msg, why)
            return

        def done(reply: dict[str, Any]) -> None:
            if name in AUDITED:
                error = reply.get("error") or {}
                outcome = "ok" if reply.get("ok") else f"refused ({error.get('code')})"
                log.warning("command %s from %s: %s", name, requester(msg), outcome)
            self._reply(name, msg, reply)

        if not self.submit(name, msg.payload, done):
            self.busy += 1
            error = {"code": "busy", "message": "too many commands pending; retry later"}
            self._reply(
                name, msg, {"id": None, "device": self._device_id, "ok": False, "error": error}
            )

    def _refuse(self, name: str, msg: InboundMessage, why: str) -> None:
        self.refused_response_topics += 1
        now = time.monotonic()
        if now - self._refusal_logged_at >= _REFUSAL_LOG_EVERY_S:  # a flood logs one line
            self._refusal_logged_at = now
            log.warning(
                "command %s refused (%d so far): response topic %r: %s; from %s",
                name,
                self.refused_response_topics,
                msg.response_topic,
                why,
                requester(msg),
            )
        error = {"code": "bad_response_topic", "message": why}
        reply = {"id": None, "device": self._device_id, "ok": False, "error": error}
        safe = InboundMessage(msg.topic, msg.payload, correlation_data=msg.correlation_data)
        self._reply(name, safe, reply)

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


def requester(msg: InboundMessage) -> str:
    """Who sent a request, as far as MQTT tells: the claimed requester, reply topic, correlation."""
    claimed = next((v for k, v in msg.user_properties if k == REQUESTER_PROPERTY), None)
    who = f"requester {claimed[:64]!r} (claimed)" if claimed else "an unnamed requester"
    corr = msg.correlation_data.hex()[:32] if msg.correlation_data else "-"
    return f"{who}, response topic {msg.response_topic!r}, correlation {corr}"
