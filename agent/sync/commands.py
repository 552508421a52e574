"""Remote commands: a registry of named handlers with pydantic argument models, and the dispatch
that turns any request, however malformed, into exactly one reply.

Request `{"id": "...", "args": {...}}` on `<root>/<device>/cmd/<name>` (or the group / all forms).
Reply `{"id", "ok": true, "result"}` or `{"id", "ok": false, "error": {"code", "message"}}`.
Handlers run on one worker thread, in arrival order, never on the network thread or a loop.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from agent.errors import CommandError, ConfigError, EdgeAgentError, ModelError, PluginError
from agent.sync.lanes import Lane, SharedWork

log = logging.getLogger(__name__)

MAX_PENDING = 64
"""Commands queued for the worker; beyond this a request is answered `busy` at once."""
MAX_DEPTH = 32
"""Deepest nesting of arrays and objects a request may have (no command needs more)."""


class CommandFailed(CommandError):
    """A command error with structured details (e.g. every config error) for the reply."""

    def __init__(self, code: str, message: str, details: list[dict[str, Any]]) -> None:
        super().__init__(code, message)
        self.details = details


class NoArgs(BaseModel):
    """Arguments of a command that takes none."""

    model_config = ConfigDict(extra="forbid")


class Request(BaseModel):
    """The envelope of every command."""

    model_config = ConfigDict(extra="forbid")

    id: StrictStr | StrictInt = Field(description="Echoed in the reply")
    args: dict[str, Any] = Field(default_factory=dict, description="Command arguments")


Handler = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A registered command: its handler, its argument model and a one-line description."""

    name: str
    handler: Handler
    args: type[BaseModel]
    description: str = ""


class CommandRegistry:
    """Named commands; `dispatch` validates and runs one and always returns a reply dict."""

    def __init__(self, *, device_id: str, allowed: Callable[[], list[str] | None]) -> None:
        self._device_id = device_id
        self._allowed = allowed
        self._specs: dict[str, CommandSpec] = {}
        self.handled = 0
        self.failed = 0

    def register(
        self,
        name: str,
        handler: Handler,
        args: type[BaseModel] = NoArgs,
        *,
        description: str = "",
    ) -> None:
        """Add a command (`handler(validated_args) -> JSON-able result`); names are unique."""
        if name in self._specs:
            raise ValueError(f"command {name!r} already registered")
        self._specs[name] = CommandSpec(name, handler, args, description)

    def names(self) -> list[str]:
        """Registered commands that the allow-list permits."""
        allowed = self._allowed()
        return sorted(n for n in self._specs if allowed is None or n in allowed)

    def dispatch(self, name: str, payload: bytes, *, max_bytes: int) -> dict[str, Any]:
        """Parse, check and run one request; the reply, success or error, naming the problem."""
        self.handled += 1
        req_id: str | int | None = None
        try:
            req_id, args = self._parse(payload, max_bytes)
            spec = self._spec(name)
            try:
                parsed = spec.args.model_validate(args)
            except ValidationError as exc:
                raise CommandError("invalid_args", _describe(exc, "args")) from None
            result = spec.handler(parsed)
            return {"id": req_id, "device": self._device_id, "ok": True, "result": result}
        except Exception as exc:
            self.failed += 1
            return {"id": req_id, "device": self._device_id, "ok": False, "error": _error(exc)}

    def _parse(self, payload: bytes, max_bytes: int) -> tuple[str | int, dict[str, Any]]:
        if len(payload) > max_bytes:
            raise CommandError(
                "payload_too_large", f"payload is {len(payload)} bytes, the limit is {max_bytes}"
            )
        try:
            raw = json.loads(payload)
        except (UnicodeDecodeError, ValueError) as exc:
            raise CommandError("bad_json", f"payload is not JSON: {exc}") from None
        except RecursionError:
            # The parser recurses per level: thousands of `[` exhaust Python's stack.
            raise CommandError(
                "bad_json", f"payload is nested too deeply (the limit is {MAX_DEPTH})"
            ) from None
        if _depth(raw) > MAX_DEPTH:
            raise CommandError(
                "bad_json", f"payload is nested too deeply (the limit is {MAX_DEPTH})"
            )
        if not isinstance(raw, dict):
            raise CommandError(
                "bad_request", f"payload must be a JSON object, got {type(raw).__name__}"
            )
        try:
            req = Request.model_validate(raw)
        except ValidationError as exc:
            raise CommandError("bad_request", _describe(exc, "")) from None
        return req.id, req.args

    def _spec(self, name: str) -> CommandSpec:
        spec = self._specs.get(name)
        if spec is None:
            known = ", ".join(sorted(self._specs))
            raise CommandError("unknown_command", f"no command {name!r} (known: {known})")
        allowed = self._allowed()
        if allowed is not None and name not in allowed:
            raise CommandError("not_allowed", f"command {name!r} is not in mqtt.commands")
        return spec


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (a scalar is 0)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            level += 1
            if level > MAX_DEPTH:
                return level
            deepest = max(deepest, level)
            stack.extend((child, level) for child in item)
    return deepest


def _describe(exc: ValidationError, prefix: str) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        parts.append(f"{loc or 'payload'}: {err['msg']}")
    return "; ".join(parts)


def _error(exc: Exception) -> dict[str, Any]:
    """The reply's error object for any exception a command may raise."""
    if isinstance(exc, CommandFailed):
        return {"code": exc.code, "message": exc.message, "details": exc.details}
    if isinstance(exc, CommandError):
        return {"code": exc.code, "message": exc.message}
    if isinstance(exc, ConfigError):
        details = [{"key": k, "message": m, "value": repr(v)} for k, m, v in exc.errors]
        return {"code": "invalid_config", "message": str(exc), "details": details}
    code = getattr(exc, "code", None)
    if isinstance(exc, EdgeAgentError) and isinstance(code, str) and code:
        # A domain's own error (OTA's, ...) names its reply code: the domain never needs to
        # know the command layer's error type.
        return {"code": code, "message": str(exc)}
    if isinstance(exc, PluginError):
        return {"code": "plugin_error", "message": str(exc)}
    if isinstance(exc, ModelError):
        return {"code": "model_error", "message": str(exc)}
    if isinstance(exc, EdgeAgentError):
        return {"code": "failed", "message": str(exc)}
    log.exception("command failed unexpectedly")
    return {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}


class CommandWorker:
    """One thread running commands in arrival order; a full queue answers `busy` at once.

    With `shared` set (a process hosting many devices, sim.lightfleet) there is no thread: the
    commands run in the same order on a `Lane` of the shared threads."""

    shared: ClassVar[SharedWork | None] = None
    """Runs every worker's commands in this process; None: a thread per worker (the agent)."""

    def __init__(self, run: Callable[[Any], None], *, name: str) -> None:
        self._run = run
        self._lane = (
            Lane(self.shared, run, capacity=MAX_PENDING, name=name) if self.shared else None
        )
        self._queue: queue.Queue[Any] = queue.Queue(MAX_PENDING)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        """Start the worker thread (none on a shared lane)."""
        if self._lane is None:
            self._thread.start()

    def submit(self, item: Any) -> bool:
        """Queue `item`; False when the queue is full."""
        if self._lane is not None:
            return self._lane.submit(item)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            return False
        return True

    def stop(self, timeout: float = 1.0) -> None:
        """Finish the queued commands (within `timeout`) and end the thread."""
        if self._lane is not None:
            self._lane.stop(timeout)
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._run(item)
            except Exception:
                log.exception("command worker error")
