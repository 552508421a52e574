"""The built-in command table, its argument models as a seam, and how errors become reply codes."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from agent.errors import CommandError, EdgeAgentError, PluginError, UpdateRejected
from agent.sync.builtins import BUILTIN_COMMANDS, builtin_command_args, describe_params
from agent.sync.commands import CommandRegistry


def test_every_builtin_command_names_its_args_model() -> None:
    args = builtin_command_args()
    assert tuple(args) == BUILTIN_COMMANDS
    assert all(issubclass(model, BaseModel) for model in args.values())
    # The models validate what a schedule would pass, and refuse what a remote command would.
    args["plugin.set"].model_validate({"name": "smart_home", "params": {"comfort_low": 18.0}})
    args["plugin.set"].model_validate({"name": "smart_home", "params": {}})  # a no-op, not an error
    with pytest.raises(ValidationError, match="params"):
        args["plugin.set"].model_validate({"name": "smart_home", "params": [1]})
    with pytest.raises(ValidationError, match="extra"):
        args["ping"].model_validate({"surprise": 1})


def test_builtin_command_args_imports_neither_paho_nor_the_service() -> None:
    code = (
        "import sys\n"
        "from agent.sync.builtins import builtin_command_args\n"
        "assert builtin_command_args()\n"
        "print(','.join(m for m in ('paho', 'agent.sync.service', 'apscheduler')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


class DomainError(EdgeAgentError):
    """A domain's own error type carrying a reply code (as OTA's will)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def dispatch(exc: Exception) -> dict[str, Any]:
    def fail(_: Any) -> None:
        raise exc

    registry = CommandRegistry(device_id="dev-1", allowed=lambda: None)
    registry.register("fail", fail)
    reply = registry.dispatch("fail", json.dumps({"id": 1}).encode(), max_bytes=1024)
    assert reply["ok"] is False and registry.failed == 1
    error: dict[str, Any] = reply["error"]
    return error


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (DomainError("busy", "an update is in progress"), "busy", "an update is in progress"),
        (UpdateRejected("bad signature", code="bad_signature"), "bad_signature", "bad signature"),
        (CommandError("not_found", "no plugin 'x'"), "not_found", "no plugin 'x'"),
        (PluginError("setup failed"), "plugin_error", "setup failed"),
        (EdgeAgentError("something"), "failed", "something"),
        (RuntimeError("bug"), "internal", "RuntimeError: bug"),
    ],
)
def test_domain_errors_map_to_reply_codes_in_the_command_layer(
    exc: Exception, code: str, message: str
) -> None:
    assert dispatch(exc) == {"code": code, "message": message}


def test_describe_params_gives_value_type_bounds_and_description_of_each() -> None:
    from plugins.smart_home.config import Params

    described = describe_params(Params(comfort_low=20.5))
    assert described["comfort_low"] == {
        "value": 20.5,
        "type": "number",
        "minimum": 10.0,
        "maximum": 28.0,
        "default": 20.0,
        "description": "Comfort band floor (degC)",
        "title": "Comfort Low",
    }
    assert described["control"]["enum"] == ["model", "schedule"]
    assert described["control"]["value"] == "model"
    # A nested model is inlined, so the entry reads without chasing "$defs".
    room = described["schedule"]["additionalProperties"]
    assert "$ref" not in json.dumps(described)
    assert room["properties"]["weekday"]["description"] == "Monday to Friday periods"
    assert described["schedule"]["value"]["office"]["weekday"] == [[8.5, 17.5]]
    json.dumps(described)  # what the reply carries must be JSON


def test_a_recursive_params_model_keeps_its_inner_reference() -> None:
    from agent.plugin.base import PluginParams

    class Node(PluginParams):
        child: Node | None = None

    class Tree(PluginParams):
        root: Node = Node()

    described = describe_params(Tree())
    assert "$ref" in json.dumps(described["root"])  # expanded once, then left as a reference
