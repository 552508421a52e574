"""Every remote command and its error cases, against a real Mosquitto, plus a payload fuzz."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.runtime.manifest import load_manifest
from agent.sync.builtins import BUILTIN_COMMANDS
from agent.sync.commands import NoArgs
from agent.sync.service import SyncService
from tests.support.sync import FakeEngine, agent_config

MODELS = Path(__file__).resolve().parents[2] / "models"
MODEL = "waveform_classifier"


def write_config(path: Path, port: int, device: str, state: Path, *, port_value: str = "") -> None:
    """A TOML config for config.reload; `port_value` replaces the port to make it invalid."""
    path.write_text(
        f'state_dir = "{state}"\nmodels_dir = "{MODELS}"\n'
        f'[device]\nid = "{device}"\ngroup = "lab"\n'
        f"[mqtt]\nport = {port_value or port}\nmax_payload_bytes = 2048\n"
        '[[plugins]]\nname = "gen"\nrate_hz = 20.0\n'
    )


class Agent:
    """A running SyncService + FakeEngine and a probe talking to it."""

    def __init__(self, service: SyncService, engine: FakeEngine, probe: Any, cfg_file: Path):
        self.service = service
        self.engine = engine
        self.probe = probe
        self.cfg_file = cfg_file
        self.base = service.topics.base

    def cmd(self, name: str, args: dict[str, Any] | None = None, **kw: Any) -> Any:
        return self.probe.command(self.base, name, args, **kw)


@pytest.fixture(scope="module")
def agent(
    shared_broker: Any, tmp_path_factory: pytest.TempPathFactory, probe_class: Any
) -> Iterator[Agent]:
    tmp = tmp_path_factory.mktemp("cmd")
    device = f"cmd-{uuid.uuid4().hex[:8]}"
    cfg = agent_config(
        shared_broker.port,
        device,
        tmp / "state",
        models_dir=MODELS,
        mqtt={"max_payload_bytes": 2048},
    )
    cfg_file = tmp / "agent.toml"
    write_config(cfg_file, shared_broker.port, device, tmp / "state")
    engine = FakeEngine()
    service = SyncService(cfg, engine, config_path=cfg_file)
    service.start()
    probe = probe_class(shared_broker.host, shared_broker.port)
    probe.subscribe(f"edge/{device}/status")
    probe.wait_payload(f"edge/{device}/status", lambda p: p["state"] == "online")
    yield Agent(service, engine, probe, cfg_file)
    probe.close()
    service.stop(1.0)
    engine.close()


def ok(reply: dict[str, Any]) -> Any:
    assert reply["ok"] is True, reply
    return reply["result"]


def error(reply: dict[str, Any], code: str) -> str:
    assert reply["ok"] is False, reply
    assert reply["error"]["code"] == code, reply
    message: str = reply["error"]["message"]
    return message


# -- replies and addressing ----------------------------------------------------------------------


def test_ping_replies_on_the_response_topic_with_correlation_data(agent: Agent) -> None:
    reply = agent.cmd("ping")
    assert ok(reply)["pong"] is True
    assert reply["device"] == agent.service.config.device.id
    assert reply["id"]  # the request id echoed (the probe uses its correlation as id)


def test_without_response_topic_the_reply_goes_to_the_reply_topic(agent: Agent) -> None:
    topic = f"{agent.base}/reply/ping"
    agent.probe.subscribe(topic)
    agent.probe.publish(f"{agent.base}/cmd/ping", json.dumps({"id": "r-1"}))
    reply = agent.probe.wait_payload(topic, lambda p: p["id"] == "r-1")
    assert ok(reply)["pong"]


@pytest.mark.parametrize("base", ["edge/group/lab", "edge/all"])
def test_group_and_fleet_addressing(agent: Agent, base: str) -> None:
    reply = agent.probe.command(base, "ping")
    assert ok(reply)["pong"]
    assert reply["device"] == agent.service.config.device.id


def test_another_group_is_not_answered(agent: Agent) -> None:
    topic = f"{agent.base}/reply/ping"
    agent.probe.subscribe(topic)
    agent.probe.publish("edge/group/elsewhere/cmd/ping", json.dumps({"id": "other-group"}))
    agent.probe.publish(f"{agent.base}/cmd/ping", json.dumps({"id": "after"}))
    agent.probe.wait_payload(topic, lambda p: p["id"] == "after")
    assert not [p for p in agent.probe.payloads(topic) if p["id"] == "other-group"]


# -- the commands ----------------------------------------------------------------------------------


def test_status_lists_connection_outbox_and_jobs(agent: Agent) -> None:
    status = ok(agent.cmd("status"))
    assert status["connected"] is True
    assert status["counters"]["connected"] == 1.0
    assert "event_rows" in status["outbox"]
    assert {j["id"] for j in status["jobs"]} == {
        "telemetry_flush",
        "metrics",
        "state",
        "outbox_compaction",
        "resubscribe",
    }
    assert [p["name"] for p in status["plugins"]] == ["gen"]
    assert set(status["commands"]) == set(BUILTIN_COMMANDS)


def test_plugins_list_start_stop_restart(agent: Agent) -> None:
    assert [p["name"] for p in ok(agent.cmd("plugins.list"))] == ["gen"]
    gain = ok(agent.cmd("plugins.list"))[0]["params"]["gain"]
    assert {k: gain[k] for k in ("type", "minimum", "maximum", "description")} == {
        "type": "number",
        "minimum": 0.0,
        "maximum": 10.0,
        "description": "Output gain",
    }
    assert ok(agent.cmd("plugin.stop", {"name": "gen"}))["state"] == "stopped"
    assert ok(agent.cmd("plugin.start", {"name": "gen"}))["state"] == "running"
    before = agent.engine.plugins()[0]["restarts"]
    assert ok(agent.cmd("plugin.restart", {"name": "gen"}))["restarts"] == before + 1


@pytest.mark.parametrize("name", ["plugin.start", "plugin.stop", "plugin.restart", "plugin.params"])
def test_plugin_commands_name_their_errors(agent: Agent, name: str) -> None:
    assert "nope" in error(agent.cmd(name, {"name": "nope"}), "not_found")
    assert "args.name" in error(agent.cmd(name, {}), "invalid_args")
    assert "args.name" in error(agent.cmd(name, {"name": 12}), "invalid_args")
    assert "args.extra" in error(agent.cmd(name, {"name": "gen", "extra": 1}), "invalid_args")


def test_plugin_set_validates_with_the_plugins_params_model(agent: Agent) -> None:
    result = ok(agent.cmd("plugin.set", {"name": "gen", "params": {"gain": 2.5}}))
    assert result == {"name": "gen", "params": {"gain": 2.5, "enabled_alarm": False}}
    reply = agent.cmd("plugin.set", {"name": "gen", "params": {"gain": "loud"}})
    assert "plugins[gen].params.gain" in error(reply, "invalid_config")
    assert reply["error"]["details"][0]["key"] == "plugins[gen].params.gain"
    reply = agent.cmd("plugin.set", {"name": "gen", "params": {"volume": 1}})
    assert "plugins[gen].params.volume" in error(reply, "invalid_config")
    # An empty update is the identity: it succeeds, changes nothing and says what is in force.
    assert ok(agent.cmd("plugin.set", {"name": "gen", "params": {}})) == result
    assert "args.params" in error(
        agent.cmd("plugin.set", {"name": "gen", "params": []}), "invalid_args"
    )
    assert "nope" in error(
        agent.cmd("plugin.set", {"name": "nope", "params": {"gain": 1.0}}), "not_found"
    )


def test_plugin_params_lists_values_and_schema(agent: Agent) -> None:
    before = ok(agent.cmd("plugin.params", {"name": "gen"}))["params"]["gain"]["value"]
    ok(agent.cmd("plugin.set", {"name": "gen", "params": {"gain": before + 1.0}}))
    described = ok(agent.cmd("plugin.params", {"name": "gen"}))
    assert described["name"] == "gen"
    assert described["params"]["gain"]["value"] == before + 1.0
    assert described["params"]["enabled_alarm"] == {
        "value": False,
        "type": "boolean",
        "default": False,
        "title": "Enabled Alarm",
    }
    assert "nope" in error(agent.cmd("plugin.params", {"name": "nope"}), "not_found")


def test_stats_all_one_and_unknown(agent: Agent) -> None:
    assert set(ok(agent.cmd("stats"))) == {"gen"}
    assert ok(agent.cmd("stats", {"plugin": "gen"}))["gen"]["tick_us"]["p99"] == 9.0
    error(agent.cmd("stats", {"plugin": "nope"}), "not_found")


def test_models_list_reads_the_store(agent: Agent) -> None:
    models = {m["name"]: m for m in ok(agent.cmd("models.list"))}
    assert MODEL in models
    assert models[MODEL]["version"] == load_manifest(MODELS / MODEL).version


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_infer_runs_a_named_model(agent: Agent, fmt: str) -> None:
    man = load_manifest(MODELS / MODEL)
    golden = man.golden[0]
    result = ok(agent.cmd("infer", {"model": MODEL, "inputs": golden.inputs, "format": fmt}))
    assert result["model"] == MODEL and result["backend"] == fmt
    got = result["outputs"][0]
    want = golden.outputs[0]
    flat_got = [v for row in got for v in row] if isinstance(got[0], list) else got
    flat_want = [v for row in want for v in row] if isinstance(want[0], list) else want
    assert max(abs(a - b) for a, b in zip(flat_got, flat_want, strict=True)) <= golden.tolerance


def test_infer_errors_name_the_problem(agent: Agent) -> None:
    shape = load_manifest(MODELS / MODEL).inputs[0].shape
    msg = error(agent.cmd("infer", {"model": MODEL, "inputs": [[1.0, 2.0, 3.0]]}), "invalid_args")
    assert "expects" in msg and str(shape) in msg.replace(" ", "").replace(",", ", ")
    assert "takes 1 input" in error(
        agent.cmd("infer", {"model": MODEL, "inputs": [[0.0], [0.0]]}), "invalid_args"
    )
    assert "not numeric" in error(
        agent.cmd("infer", {"model": MODEL, "inputs": [["a", "b"]]}), "invalid_args"
    )
    error(agent.cmd("infer", {"model": "missing_model", "inputs": [[0.0]]}), "not_found")
    assert "args.model" in error(
        agent.cmd("infer", {"model": "../../etc", "inputs": [[0]]}), "invalid_args"
    )


def test_config_reload_applies_a_good_file_and_keeps_the_old_on_a_bad_one(
    agent: Agent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.sync.builtins")
    result = ok(agent.cmd("config.reload"))
    assert result["changed"]["changed"] == ["gen"]
    # The file's scheduler and reconnect settings differ from the running ones: reported, as
    # they only take effect after a restart.
    assert result["restart_required"] == ["scheduler", "mqtt"]
    count = len(agent.engine.reloaded)
    good = agent.cfg_file.read_text()
    write_config(
        agent.cfg_file, 0, agent.service.config.device.id, Path("/tmp"), port_value='"not-a-port"'
    )
    try:
        reply = agent.cmd("config.reload")
        error(reply, "invalid_config")
        assert any(d["key"] == "mqtt.port" for d in reply["error"]["details"])
        assert len(agent.engine.reloaded) == count  # nothing applied
        # The journal says so too, naming the key, not only the reply.
        assert any(
            "config reload (remote) failed, config unchanged" in r.getMessage()
            and "mqtt.port" in r.getMessage()
            for r in caplog.records
        )
        agent.cfg_file.write_text("this is [not toml")
        error(agent.cmd("config.reload"), "invalid_config")
    finally:
        agent.cfg_file.write_text(good)
    assert ok(agent.cmd("ping"))["pong"]


def test_engine_refusing_a_reload_is_an_error_reply(agent: Agent) -> None:
    from agent.errors import PluginError

    agent.engine.reload_error = PluginError("plugin 'gen' cannot be re-rated now")
    try:
        assert "re-rated" in error(agent.cmd("config.reload"), "plugin_error")
    finally:
        agent.engine.reload_error = None


# -- malformed requests ----------------------------------------------------------------------------


def test_unknown_command(agent: Agent) -> None:
    assert "self.destruct" in error(agent.cmd("self.destruct"), "unknown_command")


@pytest.mark.parametrize(
    ("raw", "code", "needle"),
    [
        (b"{not json", "bad_json", "not JSON"),
        (b"\xff\xfe", "bad_json", "not JSON"),
        (b"[1, 2]", "bad_request", "JSON object"),
        (b'{"args": {}}', "bad_request", "id"),
        (b'{"id": 1.5}', "bad_request", "id"),
        (b'{"id": "x", "args": [1]}', "bad_request", "args"),
        (b'{"id": "x", "argz": {}}', "bad_request", "argz"),
    ],
)
def test_malformed_requests_are_answered(agent: Agent, raw: bytes, code: str, needle: str) -> None:
    assert needle in error(agent.cmd("ping", raw=raw), code)


def test_oversized_payload(agent: Agent) -> None:
    raw = json.dumps({"id": "big", "args": {"pad": "x" * 4000}}).encode()
    assert "2048" in error(agent.cmd("ping", raw=raw), "payload_too_large")


def test_wrong_argument_types(agent: Agent) -> None:
    assert "args.plugin" in error(agent.cmd("stats", {"plugin": ["gen"]}), "invalid_args")
    assert "args.inputs" in error(
        agent.cmd("infer", {"model": MODEL, "inputs": "x"}), "invalid_args"
    )
    assert "args.surprise" in error(agent.cmd("ping", {"surprise": True}), "invalid_args")


# -- allow-list, extra commands, no config file ----------------------------------------------------


def test_allow_list_and_registered_commands(
    shared_broker: Any,
    make_config: Callable[..., Any],
    start_service: Any,
    probe_factory: Any,
) -> None:
    cfg = make_config(shared_broker, mqtt={"commands": ["ping", "model.rollback"]})
    service, _ = start_service(cfg)
    service.register_command(
        "model.rollback", lambda args: {"rolled_back": True}, NoArgs, description="test"
    )
    service.register_command("secret", lambda args: "no", NoArgs)
    probe = probe_factory(shared_broker)
    base = service.topics.base
    # Sent before the agent subscribed, the request would be lost: wait for it to be online.
    probe.subscribe(service.topics.status)
    probe.wait_payload(service.topics.status, lambda p: p["state"] == "online")
    assert ok(probe.command(base, "ping"))["pong"]
    assert ok(probe.command(base, "model.rollback")) == {"rolled_back": True}
    assert "mqtt.commands" in error(probe.command(base, "status"), "not_allowed")
    error(probe.command(base, "secret"), "not_allowed")
    with pytest.raises(ValueError, match="already registered"):
        service.register_command("ping", lambda args: None)


def test_reload_without_a_config_file(
    shared_broker: Any,
    make_config: Callable[..., Any],
    start_service: Any,
    probe_factory: Any,
) -> None:
    service, _ = start_service(make_config(shared_broker))
    probe = probe_factory(shared_broker)
    # Sent before the agent subscribed, the request would be lost: wait for it to be online.
    probe.subscribe(service.topics.status)
    probe.wait_payload(service.topics.status, lambda p: p["state"] == "online")
    error(probe.command(service.topics.base, "config.reload"), "no_config_file")


# -- fuzz ------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
names = st.sampled_from([*BUILTIN_COMMANDS, "nope", "x.y"])
arg_keys = st.sampled_from(["name", "params", "plugin", "model", "inputs", "format", "zzz"])
requests = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"id": st.one_of(st.text(max_size=10), st.integers(), json_values)},
        optional={
            "args": st.one_of(json_values, st.dictionaries(arg_keys, json_values, max_size=3))
        },
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(name=names, raw=requests)
def test_fuzzed_payloads_are_all_answered(agent: Agent, name: str, raw: bytes) -> None:
    reply = agent.cmd(name, raw=raw, timeout=20.0)
    assert isinstance(reply["ok"], bool)
    if not reply["ok"]:
        assert reply["error"]["code"] in {
            "bad_json",
            "bad_request",
            "unknown_command",
            "invalid_args",
            "not_found",
            "invalid_config",
            "plugin_error",
            "model_error",
            "payload_too_large",
            "failed",
        }
        assert reply["error"]["message"]


def test_agent_alive_after_fuzz(agent: Agent) -> None:
    assert ok(agent.cmd("ping"))["pong"]
    assert agent.service.counters()["commands_handled"] > 50
