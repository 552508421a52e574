"""Docs that run: every command and payload example of README.md and docs/*.md, on a live agent.

The examples are read from the Markdown (tests/docs/doc_examples.py says what counts). One private
Mosquitto and one `edge-agent run` process (device `kitchen-1` in group `lab`, as docs/mqtt.md
writes; smart_home, energy and the waveform model runner on an MQTT topic; a one-second schedule;
metrics every second) serve every example of the module.

How an example is run, the only rewriting rules:
1. `mosquitto_pub`/`_sub`/`_rr` get `-h 127.0.0.1 -p PORT` (the private broker); a subscriber gets
   `-C 1 -W 3` and passes when it subscribed (exit 0: a message came; 27: none within 3 s);
   `mosquitto_rr` gets `-W 10` (a shorter `-W` too: this machine may be loaded) and its reply
   must say `"ok": true`.
2. Device ids of the docs (DOC_DEVICES) in topics become `kitchen-1`, the live agent's.
3. `edge-agent` is this interpreter's, run in a scratch folder that links `models`,
   `firmware-configs` and `docs` of the repository, with `EDGE_AGENT__MQTT__HOST`/`__PORT` set to
   the private broker and `EDGE_AGENT__STATE_DIR` to a scratch folder; `run` gets `--duration 3`.
   It must exit 0.
4. A published command (`mosquitto_pub -t .../cmd/NAME`) must get a reply with `"ok": true` on
   `edge/kitchen-1/reply/NAME`.
A synopsis (a command with placeholders) is checked against the real parser instead: its
sub-commands exist and each `--option` it names is one of theirs.

Payloads: every JSON example parses; a request validates against the request model and its
command's argument model (agent/sync/commands.py, agent/sync/builtins.py) and, when complete, is
sent to the live agent, which must answer `ok`; a message the agent publishes (SCHEMAS: the section
it is documented in and its topic) has every key the doc shows, recursively, in the live message.

What cannot run here is in ALLOWED, with the reason and where it is covered; an ALLOWED entry that
matches no example fails, so the list stays current. Runs of a second agent and the 16 s signal
feed are marked slow (`make test-slow`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sim.agentproc import AgentProcess
from sim.broker import Broker, free_port
from tests.docs.doc_examples import REPO, Example, all_examples, is_synopsis, program

DEVICE = "kitchen-1"
GROUP = "lab"
DOC_DEVICES = ("edge-dev-1", "waveform-demo")
SUB_TIMEOUT_S = 3

#: The one allow-list: (file, a piece of the example's text) -> why it does not run here.
ALLOWED: dict[tuple[str, str], str] = {
    ("README.md", "make demo"): "runs until stopped; it is `edge-agent run --config "
    "firmware-configs/generic-x86.toml`, run by tests/cli/test_run_cmd.py and the slow run here",
    ("README.md", "make test"): "the test suite itself (.ci/run calls it)",
    ("README.md", "python3 -m venv /opt/edge-agent"): "board install as root; "
    "tests/systemd (make systemd-test) runs these in a systemd container",
    ("README.md", "/opt/edge-agent/bin/pip install"): "board install of a built wheel; "
    "tests/systemd and tests/deploy/test_wheel.py install it",
    ("README.md", "/opt/edge-agent/bin/edge-agent service install"): "writes /etc and "
    "/opt; tests/systemd runs it, tests/service covers --prefix and --dry-run",
    ("README.md", "systemctl daemon-reload"): "needs systemd as PID 1; tests/systemd",
    ("README.md", "edge-agent models import net.onnx"): "needs the `import` extra and an "
    "exported model; tests/modelimport imports sklearn and torch exports the same way",
    ("docs/deploy.md", "pip wheel --no-deps -w dist ."): "builds the wheel (about 20 s); "
    "tests/deploy/test_wheel.py (slow) builds, installs and runs it",
    ("docs/deploy.md", "python3 -m venv /opt/edge-agent"): "board install as root; tests/systemd",
    ("docs/deploy.md", "/opt/edge-agent/bin/pip install"): "board install; tests/systemd",
    ("docs/deploy.md", "/opt/edge-agent/bin/edge-agent service install"): "writes /etc and "
    "/opt; tests/systemd",
    ("docs/deploy.md", "systemctl"): "needs systemd as PID 1; tests/systemd",
    ("docs/deploy.md", "--config /etc/edge-agent/agent.toml"): "the unit's ExecStart, on a "
    "board; tests/systemd starts the service",
    ("docs/deploy.md", "edge-agent service uninstall"): "removes /etc and /opt files; "
    "tests/systemd and tests/service",
    ("docs/plugins.md", "pip install -e docs/examples/edge-agent-squarewatch"): "installs a "
    "package into the environment; tests/testing/test_example_plugin_package.py imports it "
    "from its folder, tests/systemd pip-installs its wheel",
    ("docs/plugins.md", "cd docs/examples/edge-agent-squarewatch"): "a shell step of the next",
    ("docs/plugins.md", "python -m pytest -q tests"): "the example package's own suite, "
    "run by tests/testing/test_example_plugin_package.py",
    ("docs/realtime.md", "--duration 10 --repeat 3 --json"): "three whole benches (3-4 min); "
    "the single bench at the top of that page runs in the slow suite and "
    "tests/bench/test_bench_cmd.py runs --repeat",
    ("docs/realtime.md", "valgrind --tool=callgrind"): "minutes under valgrind; "
    "tests/sim/test_tickcount.py runs the same module with a few calls",
    ("docs/mqtt.md", '{"state": "offline"}'): "the last will: published by the broker when the "
    "agent dies; tests/sync cover it (the live agent here must stay up)",
    ("docs/mqtt.md", '"reason": "shutdown"'): "published as the agent stops; tests/sync",
}

#: Where a message the agent publishes is documented: (file, heading) -> topic under edge/<id>/.
SCHEMAS: dict[tuple[str, str], str] = {
    ("docs/mqtt.md", "Status (retained, and the last will)"): "status",
    ("docs/mqtt.md", "State (retained)"): "state",
    ("docs/mqtt.md", "Telemetry"): "telemetry/energy",
    ("docs/mqtt.md", "Events (QoS 1, through the outbox)"): "events/+",
    ("docs/mqtt.md", "Metrics"): "metrics",
    ("docs/mqtt.md", "Commands"): "reply/+",
    ("docs/mqtt.md", "Home Assistant discovery"): "",  # the block names its topic
    ("docs/schedules.md", "Runs, logs and events"): "events/schedule",
}

EXAMPLES = all_examples()


def allowed(e: Example) -> str | None:
    """Why `e` does not run here, or None."""
    return next(
        (why for (f, piece), why in ALLOWED.items() if f == e.path and piece in e.text), None
    )


def _slow(e: Example) -> bool:
    """A run of a second agent, a whole bench (a minute), or the 16 s signal feed (a synopsis
    only reads `--help`)."""
    if e.kind != "command" or is_synopsis(e.text):
        return False
    return re.search(r"\bedge-agent (run|bench)\b", e.text) is not None or "<<" in e.text


def _params(kind: str) -> list[Any]:
    return [
        pytest.param(e, id=e.where, marks=[pytest.mark.slow] if _slow(e) else [])
        for e in EXAMPLES
        if e.kind == kind and not allowed(e)
    ]


AGENT_CONFIG = """\
state_dir = "{state}"
models_dir = "{repo}/models"

[device]
id = "{device}"
group = "{group}"
board = "generic-x86"

[runtime]
accelerator = "cpu"

[mqtt]
host = "127.0.0.1"
port = {port}

[hal]
backend = "sim"
sim_seed = 0

[hal.devices."model_runner.signal"]
backend = "mqtt"
topic = "lab/signal"
field = "value"
stale_after_s = 1.0

[scheduler]
metrics_s = 1.0
telemetry_flush_s = 0.5

[[schedule]]
name = "docs_setback"
every_s = 1
command = "plugin.set"
args = {{ name = "smart_home", params = {{ comfort_low = 20.0 }} }}

[[plugins]]
name = "smart_home"
rate_hz = 10
model = "smart_home_comfort"

[[plugins]]
name = "energy"
rate_hz = 50
model = "energy_anomaly"

[[plugins]]
name = "model_runner"
model = "waveform_classifier"
rate_hz = 50

[plugins.params]
window = 16
every_n_ticks = 4

[[plugins.params.channels]]
sensor = "signal"

[[plugins.params.outputs]]
name = "shape"
labels = ["sine", "square", "triangle", "sawtooth"]
"""


class Live:
    """The broker, the agent and a probe that sees everything under edge/ and homeassistant/."""

    def __init__(self, broker: Broker, probe: Any, scratch: Path) -> None:
        self.broker = broker
        self.probe = probe
        self.scratch = scratch

    def env(self) -> dict[str, str]:
        """The environment of an `edge-agent` example (rule 3)."""
        return {
            **os.environ,
            "EDGE_AGENT__MQTT__HOST": "127.0.0.1",
            "EDGE_AGENT__MQTT__PORT": str(self.broker.port),
            "EDGE_AGENT__STATE_DIR": str(self.scratch / "state"),
        }


@pytest.fixture(scope="module")
def live(
    mosquitto_bin: str, tmp_path_factory: pytest.TempPathFactory, probe_class: Any
) -> Iterator[Live]:
    """One broker and one agent for every example of the module."""
    work = tmp_path_factory.mktemp("docs")
    broker = Broker(binary=mosquitto_bin, workdir=work, port=free_port())
    broker.start()
    scratch = tmp_path_factory.mktemp("docs-scratch")
    for name in ("models", "firmware-configs", "docs"):
        (scratch / name).symlink_to(REPO / name)
    config = work / "agent.toml"
    config.write_text(
        AGENT_CONFIG.format(
            state=work / "state", repo=REPO, device=DEVICE, group=GROUP, port=broker.port
        )
    )
    agent = AgentProcess(config, log_path=work / "agent.log")
    probe = probe_class(broker.host, broker.port)
    try:
        probe.subscribe("edge/#")
        probe.subscribe("homeassistant/#")
        agent.start()
        agent.wait_ready()
        yield Live(broker, probe, scratch)
    finally:
        probe.close()
        agent.stop()
        broker.kill()


# ---- commands -----------------------------------------------------------------------------


def test_the_docs_have_examples_of_every_kind() -> None:
    kinds = {e.kind for e in EXAMPLES}
    assert kinds >= {"command", "json", "request", "args"}, kinds


def test_every_allow_list_entry_still_matches_an_example() -> None:
    stale = [
        f"{f}: {piece!r}"
        for f, piece in ALLOWED
        if not any(e.path == f and piece in e.text for e in EXAMPLES)
    ]
    assert not stale, "ALLOWED entries that match no example any more (remove them):\n" + "\n".join(
        stale
    )


@pytest.mark.parametrize("example", _params("command"))
def test_command_example(example: Example, live: Live) -> None:
    prog = program(example.text)
    if is_synopsis(example.text) or _alternatives(example.text):
        _check_synopsis(example)
    elif prog.startswith("mosquitto_") or "| mosquitto_pub" in example.text:
        _run_mosquitto(example, live)
    elif prog == "edge-agent":
        _run_edge_agent(example, live)
    else:
        pytest.fail(
            f"{example.where}: no rule runs `{prog}` ({example.text!r}); make it runnable or "
            "add it to ALLOWED in tests/docs/test_doc_examples.py with the reason"
        )


def _alternatives(command: str) -> bool:
    """`edge-agent ota keygen/pack/publish`: sub-commands written as alternatives."""
    return program(command) == "edge-agent" and any(
        "/" in t and not t.startswith("-") and "." not in t for t in _words(command)[1:3]
    )


def _words(command: str) -> list[str]:
    return shlex.split(command.split("\n", 1)[0], comments=True)


def _check_synopsis(example: Example) -> None:
    from agent.cli.main import build_parser

    words = [w for w in _words(example.text) if not re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", w)]
    if words[0] != "edge-agent":
        pytest.fail(f"{example.where}: a synopsis of `{words[0]}` cannot be checked: write it out")
    parsers: list[Any] = [build_parser()]
    for word in words[1:]:
        if word.startswith("-") or not re.fullmatch(r"[a-z][a-z-]*(/[a-z][a-z-]*)*", word):
            break
        subs = [_subparsers(p) for p in parsers]
        if not any(subs):
            break
        found = []
        for alt in word.split("/"):
            match = [s[alt] for s in subs if alt in s]
            assert match, f"{example.where}: `{alt}` is no sub-command in {example.text!r}"
            found.extend(match)
        parsers = found
    options = {o for p in parsers for a in p._actions for o in a.option_strings}
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", example.text))
    unknown = sorted(named - options)
    assert not unknown, f"{example.where}: no option {unknown} in {example.text!r}"


def _subparsers(parser: Any) -> dict[str, Any]:
    import argparse

    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def _rewrite_topics(text: str) -> str:
    for doc_id in DOC_DEVICES:
        text = text.replace(f"/{doc_id}/", f"/{DEVICE}/")
    return text


def _run_mosquitto(example: Example, live: Live) -> None:
    cmd = _rewrite_topics(example.text)
    where = f"-h 127.0.0.1 -p {live.broker.port}"
    cmd = re.sub(r"\b(mosquitto_(?:pub|rr))\b", rf"\1 {where}", cmd)
    cmd = re.sub(r"\bmosquitto_sub\b", f"mosquitto_sub {where} -C 1 -W {SUB_TIMEOUT_S}", cmd)
    if "mosquitto_rr" in cmd:  # at least 10 s: this machine may be loaded
        cmd = re.sub(r"\s-W\s+\d+", "", cmd).replace("mosquitto_rr", "mosquitto_rr -W 10", 1)
    topic = re.search(r"-t\s+'?([^\s']+)", cmd)
    cmd_name = topic.group(1).rsplit("/cmd/", 1)[1] if topic and "/cmd/" in topic.group(1) else None
    before = len(live.probe.payloads(f"edge/{DEVICE}/reply/#"))
    proc = _run(["bash", "-c", cmd], example, cwd=live.scratch, env=dict(os.environ), timeout=60)
    ok_codes = (0, 27) if program(cmd) == "mosquitto_sub" else (0,)
    assert proc.returncode in ok_codes, _failed(example, proc, cmd)
    if program(cmd) == "mosquitto_rr":
        reply = json.loads(proc.stdout.splitlines()[0])
        assert reply.get("ok") is True, f"{example.where}: {example.text!r} answered {reply}"
    elif program(cmd) == "mosquitto_pub" and cmd_name:
        reply = _next_reply(live, cmd_name, before)
        assert reply.get("ok") is True, f"{example.where}: {example.text!r} answered {reply}"


def _next_reply(live: Live, name: str, before: int) -> dict[str, Any]:
    topic = f"edge/{DEVICE}/reply/#"
    ok = live.probe.wait_for(lambda: len(live.probe.payloads(topic)) > before, 15)
    assert ok, f"no reply to {name} on {topic}"
    reply: dict[str, Any] = live.probe.payloads(topic)[before]
    return reply


def _run_edge_agent(example: Example, live: Live) -> None:
    words = [w for w in _words(example.text) if not re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", w)]
    cli = Path(sys.executable).with_name("edge-agent")
    exe = str(cli) if cli.exists() else f"{sys.executable} -m agent.cli.main"
    cmd = re.sub(r"(^|\s)edge-agent\b", rf"\1{exe}", example.text, count=1)
    if len(words) > 1 and words[1] == "run" and "--duration" not in cmd:
        cmd += " --duration 3"
    proc = _run(["bash", "-c", cmd], example, cwd=live.scratch, env=live.env(), timeout=120)
    assert proc.returncode == 0, _failed(example, proc, cmd)


def _run(
    argv: list[str], e: Example, *, timeout: float, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run in a session of its own, so a timeout ends the whole pipeline, not only bash."""
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        **kwargs,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{e.where}: {e.text!r} still running after {timeout} s")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _failed(e: Example, proc: subprocess.CompletedProcess[str], cmd: str) -> str:
    return (
        f"{e.where}: {e.text!r} exited {proc.returncode}\n  ran: {cmd}\n"
        f"  stdout: {proc.stdout[-1500:]}\n  stderr: {proc.stderr[-1500:]}"
    )


# ---- payloads -----------------------------------------------------------------------------


def parse_payloads(e: Example) -> tuple[str | None, list[Any]]:
    """The topic a block names (`topic: T` first line) and its JSON values (one or one a line)."""
    text = e.text.strip()
    topic = None
    if text.startswith("topic:"):
        first, _, text = text.partition("\n")
        topic = first.split(":", 1)[1].strip()
    try:
        return topic, [json.loads(text)]
    except json.JSONDecodeError:
        pass
    values, buf = [], ""
    for line in text.splitlines():
        buf += line + "\n"
        try:
            values.append(json.loads(buf))
            buf = ""
        except json.JSONDecodeError:
            continue
    assert values and not buf.strip(), f"{e.where}: not JSON (nor JSON lines): {text[:200]!r}"
    return topic, values


@pytest.mark.parametrize("example", _params("json"))
def test_json_example(example: Example, live: Live) -> None:
    topic, values = parse_payloads(example)
    schema = SCHEMAS.get((example.path, example.heading))
    assert schema is not None, (
        f"{example.where}: a JSON example under '{example.heading}' that no check knows: add its "
        "topic to SCHEMAS (or the example to ALLOWED) in tests/docs/test_doc_examples.py"
    )
    for value in values:
        if isinstance(value, dict) and "args" in value and "ok" not in value:
            _check_request(example, value, commands=())
            continue
        where = _rewrite_topics(topic) if topic else f"edge/{DEVICE}/{schema}"
        if schema == "reply/+":
            _provoke_replies(live)
        live_msg = _live_message(live, where, value)
        assert live_msg is not None, (
            f"{example.where}: no live message on {where} like {json.dumps(value)[:200]}"
        )
        missing = _missing_keys(value, live_msg)
        assert not missing, (
            f"{example.where}: keys the doc shows that the live message on {where} lacks: "
            f"{missing}\n  live: {json.dumps(live_msg)[:800]}"
        )


def _provoke_replies(live: Live) -> None:
    """A reply of each kind: ok and not_found."""
    # No response topic: the replies go to edge/<id>/reply/<name>, where the docs show them.
    live.probe.publish(f"edge/{DEVICE}/cmd/ping", json.dumps({"id": "docs-ok"}))
    bad = json.dumps({"id": "docs-bad", "args": {"name": "energi"}})
    live.probe.publish(f"edge/{DEVICE}/cmd/plugin.start", bad)


def _live_message(live: Live, topic: str, doc: Any) -> Any:
    """The newest live JSON on `topic` that agrees with `doc` on `state`, `ok` and `plugin`."""

    def agrees(p: Any) -> bool:
        if not isinstance(p, dict):
            return False
        keys = ("state", "ok") + (("plugin",) if doc.get("plugin") == "schedule" else ())
        return all(p.get(k) == doc[k] for k in keys if k in doc and isinstance(doc, dict))

    found: list[Any] = []

    def check() -> bool:
        found[:] = [p for p in live.probe.payloads(topic) if agrees(p)]
        return bool(found)

    live.probe.wait_for(check, 15)
    return found[-1] if found else None


def _missing_keys(doc: Any, real: Any, path: str = "") -> list[str]:
    """Keys of `doc` (recursively; `"..."` keys stand for any) that `real` lacks."""
    if isinstance(doc, dict) and isinstance(real, dict):
        if "..." in doc:
            return []
        out = []
        for k, v in doc.items():
            if k == "data" and doc.get("kind") != real.get("kind"):
                continue  # an event's data: its keys depend on its kind
            if k not in real:
                if isinstance(real, dict) and path.endswith(("plugins", "models")):
                    continue  # keyed by plugin name: the live agent runs others
                out.append(f"{path}.{k}".lstrip("."))
            else:
                out += _missing_keys(v, real[k], f"{path}.{k}")
        return out
    lists = isinstance(doc, list) and isinstance(real, list) and bool(doc) and bool(real)
    if lists and isinstance(doc[0], dict) and isinstance(real[0], dict):
        return _missing_keys(doc[0], real[0], f"{path}[0]")
    return []


# ---- requests and arguments ---------------------------------------------------------------


def _complete(text: str) -> tuple[Any, bool]:
    """The JSON of an example and whether it is whole (`...` elides values, checked not run)."""
    if "..." not in text:
        return json.loads(text), True
    text = re.sub(r",\s*\.\.\.", "", text).replace("[...]", "[]")
    text = re.sub(r":\s*\.\.\.", ": {}", text)
    return json.loads(text), False


@pytest.mark.parametrize("example", _params("request") + _params("args"))
def test_request_example(example: Example, live: Live) -> None:
    value, whole = _complete(example.text)
    request = value if example.kind == "request" else {"id": "docs", "args": value}
    _check_request(example, request, commands=example.commands)
    if whole and len(example.commands) == 1:
        reply = live.probe.command(f"edge/{DEVICE}", example.commands[0], request["args"])
        assert reply.get("ok") is True, (
            f"{example.where}: `{example.commands[0]}` with {json.dumps(request['args'])} "
            f"answered {reply}"
        )


def _check_request(e: Example, request: dict[str, Any], *, commands: tuple[str, ...]) -> None:
    from pydantic import ValidationError

    from agent.sync.builtins import builtin_command_args
    from agent.sync.commands import Request

    Request.model_validate(request)
    models = builtin_command_args()
    named = [c for c in commands if c in models] or list(models)
    unknown = [c for c in commands if c not in models and c != "model.rollback"]
    assert not unknown, f"{e.where}: no built-in command {unknown}"
    errors = []
    for name in named:
        try:
            models[name].model_validate(request["args"])
            if not commands:
                return  # a generic request: some command takes these arguments
        except ValidationError as exc:
            errors.append(f"{name}: {exc.errors()[0]['msg']}")
    assert not errors, f"{e.where}: {json.dumps(request['args'])} refused by " + "; ".join(errors)
