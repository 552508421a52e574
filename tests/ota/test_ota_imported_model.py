"""A model that came in through `edge-agent models import` travels by OTA like a shipped one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli.main import main
from agent.runtime.manifest import load_manifest
from tests.support.ota import NAME, V1_1, Agent, agent_config
from tests.support.waiting import until


@pytest.fixture
def agent(tmp_path: Path, broker: Any, keys: Path, unique_id: str) -> Iterator[Agent]:
    device = Agent(agent_config(tmp_path, broker.port, unique_id, "g", [keys / "public.pem"]))
    yield device
    device.stop()


def test_an_imported_model_is_packed_published_and_swapped_in(
    tmp_path: Path,
    broker: Any,
    keys: Path,
    agent: Agent,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The 1.1.0 network as a user would bring it: one int8 TFLite file, no manifest of ours.
    # (The device runs the .tflite file today, and OTA keeps the format a plugin runs.)
    argv = ["models", "import", str(V1_1 / "model.tflite"), "--name", NAME, "--version", "1.1.0"]
    assert main([*argv, "--out", str(tmp_path / "imported"), "--rate-hz", "1000"]) == 0
    folder = tmp_path / "imported" / NAME
    assert load_manifest(folder).version == "1.1.0"
    bundle = tmp_path / "b.tar"
    key = str(keys / "private.pem")
    assert main(["ota", "pack", str(folder), "--key", key, "--out", str(bundle)]) == 0
    assert until(lambda: agent.sync.link.connected, 20), "agent did not connect"
    capsys.readouterr()
    broker_arg = ["--broker", f"127.0.0.1:{broker.port}", "--device", agent.config.device.id]
    code = main(["ota", "publish", str(bundle), *broker_arg, "--timeout", "60"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert agent.version == "1.1.0"
    assert "active" in out
