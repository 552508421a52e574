"""Updates into an isolated plugin (`isolate = true`): its model lives in its own process, which is
handed the new version's folder, loads and checks it there and swaps it in between two ticks."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config.sections import AgentConfig, PluginConfig
from agent.engine.host import PluginHost
from agent.errors import PluginError
from agent.ota import OtaService
from tests.support.ota import (
    NAME,
    V1_1,
    W32,
    install,
    make_config,
    pack,
    set_in_health_window,
    wave_host,
)


def _config(tmp_path: Path, keys: Path, **params: Any) -> AgentConfig:
    plugin = PluginConfig(name="wave", model=NAME, rate_hz=100.0, params=params, isolate=True)
    return make_config(tmp_path, [keys / "public.pem"], plugins=[plugin])


@pytest.fixture
def host(tmp_path: Path, keys: Path) -> Iterator[PluginHost]:
    """A running engine with the isolated plugin on the shipped model (health window 1 s)."""
    yield from wave_host(_config(tmp_path, keys))


def _row(host: PluginHost) -> dict[str, Any]:
    return next(p for p in host.plugins() if p["name"] == "wave")


def test_an_update_reaches_an_isolated_plugin_without_restarting_it(
    tmp_path: Path, keys: Path, host: PluginHost
) -> None:
    before = _row(host)
    assert (before["isolated"], before["model_version"]) == (True, "1.0.0")
    svc = OtaService(host.config, engine=host)
    pack(V1_1, keys, tmp_path / "b.tar")
    final = install(svc, tmp_path / "b.tar")
    assert final["state"] == "active", final
    after = _row(host)
    # The same child process runs the new version: swapped between two ticks, not restarted.
    assert after["model_version"] == "1.1.0"
    assert (after["pid"], after["restarts"], after["state"]) == (before["pid"], 0, "running")
    assert host.tick_counters()["wave"] > before["ticks"]
    svc.close()


def test_the_rollback_command_swaps_an_isolated_plugin_back(
    tmp_path: Path, keys: Path, host: PluginHost
) -> None:
    pid = _row(host)["pid"]
    svc = OtaService(host.config, engine=host)
    pack(V1_1, keys, tmp_path / "b.tar")
    assert install(svc, tmp_path / "b.tar")["state"] == "active"
    assert svc.rollback(NAME)["to"] == "1.0.0"
    row = _row(host)
    assert (row["model_version"], row["pid"], row["restarts"]) == ("1.0.0", pid, 0)
    svc.close()


def test_the_plugin_check_in_the_child_refuses_and_the_old_model_runs_on(
    tmp_path: Path, keys: Path
) -> None:
    config = _config(tmp_path, keys, classes=5)
    for host in wave_host(config):
        pid = _row(host)["pid"]
        svc = OtaService(config, engine=host)
        pack(V1_1, keys, tmp_path / "b.tar")
        final = install(svc, tmp_path / "b.tar")
        assert (final["state"], final["code"]) == ("rejected", "incompatible"), final
        assert "child refused the model" in final["reason"]
        assert "plugin expects 5" in final["reason"]
        # A different shape never reaches the child: refused against the active version.
        pack(W32, keys, tmp_path / "w.tar")
        final = install(svc, tmp_path / "w.tar")
        assert (final["state"], final["code"]) == ("rejected", "incompatible"), final
        assert "active version" in final["reason"]
        row = _row(host)
        assert (row["model_version"], row["pid"], row["restarts"]) == ("1.0.0", pid, 0)
        assert svc.status(NAME)["active"] == "1.0.0"
        svc.close()


def test_a_crash_in_the_health_window_rolls_back_and_the_restart_loads_the_active_version(
    tmp_path: Path, keys: Path, host: PluginHost
) -> None:
    svc = OtaService(host.config, engine=host)

    set_in_health_window(svc, host, {"crash": True})
    pack(V1_1, keys, tmp_path / "b.tar")
    final = install(svc, tmp_path / "b.tar")
    assert final["state"] == "rolled_back", final
    assert "failed with the new model" in final["reason"]
    assert svc.status(NAME)["active"] == "1.0.0"
    host.set_params("wave", {"crash": False})
    end = time.monotonic() + 30.0
    while _row(host)["state"] != "running" and time.monotonic() < end:
        time.sleep(0.05)
    assert (_row(host)["state"], _row(host)["model_version"]) == ("running", "1.0.0")
    svc.close()


def test_a_folder_that_does_not_load_is_refused_and_the_child_ticks_on(
    tmp_path: Path, host: PluginHost
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{ not json")
    pid = _row(host)["pid"]
    with pytest.raises(PluginError, match=r"child refused the model: .*manifest"):
        host.swap_model_folder("wave", broken)
    row = _row(host)
    assert (row["model_version"], row["pid"], row["restarts"]) == ("1.0.0", pid, 0)


def test_a_load_that_hangs_keeps_the_loop_ticking_then_costs_the_child_a_restart(
    tmp_path: Path, host: PluginHost
) -> None:
    # A manifest that is a FIFO with no writer: open() blocks, as on a hung network mount.
    hung = tmp_path / "hung"
    hung.mkdir()
    os.mkfifo(hung / "manifest.json")
    pid = _row(host)["pid"]
    seen: list[int] = []

    def sample_ticks() -> None:
        for _ in range(3):
            seen.append(host.tick_counters()["wave"])
            time.sleep(0.4)

    sampler = threading.Thread(target=sample_ticks)
    sampler.start()
    with pytest.raises(PluginError, match=r"no answer within 1\.5 s; child process killed"):
        host.swap_model_folder("wave", hung, timeout=1.5)
    sampler.join()
    assert seen == sorted(seen) and seen[-1] > seen[0]  # ticks went on while it loaded
    end = time.monotonic() + 30.0
    while (_row(host)["state"], _row(host)["restarts"]) != ("running", 1):
        assert time.monotonic() < end, _row(host)
        time.sleep(0.05)
    row = _row(host)
    assert row["pid"] != pid and row["model_version"] == "1.0.0"
    assert "loaded a model for over 1.5 s" in (row["last_error"] or "")
