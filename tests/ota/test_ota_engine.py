"""Updates into a running engine: the real plugin host, its loops ticking, models swapped live."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config.sections import AgentConfig, PluginConfig
from agent.engine.host import PluginHost
from agent.errors import OtaError
from agent.ota import OtaService
from agent.runtime.base import Model
from tests.support.ota import (
    NAME,
    SLOW,
    V1_1,
    W32,
    install,
    make_config,
    pack,
    set_in_health_window,
    wave_host,
)


class SwapCounter:
    """The host as EngineControl, noting the loop's overruns around every swap it makes."""

    def __init__(self, host: PluginHost) -> None:
        self.host = host
        self.swaps: list[tuple[str, str, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.host, name)

    def swap_model(self, name: str, model: Model, *, timeout: float = 2.0) -> Model:
        before = self.host.stats()[name]["overruns"]
        old = self.host.swap_model(name, model, timeout=timeout)
        self.swaps.append((name, model.version, self.host.stats()[name]["overruns"] - before))
        return old


def _plugin(rate_hz: float = 100.0, **params: Any) -> PluginConfig:
    # SCHED_FIFO, as a board runs its loops (the loop warns and goes on where not permitted):
    # at normal priority other processes on this 2-core machine delay a 100 Hz tick past its
    # deadline several times a second, swap or no swap.
    return PluginConfig(
        name="wave", model=NAME, rate_hz=rate_hz, params=params, realtime_priority=10
    )


def _config(tmp_path: Path, keys: Path, rate_hz: float = 100.0, **ota: Any) -> AgentConfig:
    plugin = _plugin(rate_hz)
    return make_config(tmp_path, [keys / "public.pem"], plugins=[plugin], **ota)


@pytest.fixture
def host(tmp_path: Path, keys: Path) -> Iterator[PluginHost]:
    """A running engine with one plugin on the shipped model (health window 1 s)."""
    yield from wave_host(_config(tmp_path, keys))


def _version(host: PluginHost) -> str:
    return str(host.model_slots()["wave"].model.version)


def test_a_valid_update_swaps_in_without_an_overrun(
    tmp_path: Path, keys: Path, host: PluginHost
) -> None:
    engine = SwapCounter(host)
    svc = OtaService(host.config, engine=engine)
    ticks = host.tick_counters()["wave"]
    pack(V1_1, keys, tmp_path / "b.tar")
    final = install(svc, tmp_path / "b.tar")
    assert final["state"] == "active", final
    assert _version(host) == "1.1.0"
    # Swapped in between two ticks, and no tick overran meanwhile. (100 Hz x 1 s is too few
    # runs to judge latency: no baseline instance ran first.)
    assert [(v, n) for _, v, n in engine.swaps] == [("1.1.0", 0)]
    assert host.tick_counters()["wave"] > ticks
    assert host.plugins()[0]["restarts"] == 0
    svc.close()


def test_a_10x_slower_model_is_rolled_back_in_the_health_window(tmp_path: Path, keys: Path) -> None:
    # 1 kHz: caches stay warm, so run times reflect the work done, and p99s have samples.
    config = _config(tmp_path, keys, 1000.0, health_window_s=2.0, latency_regression=3.0)
    for host in wave_host(config):
        svc = OtaService(config, engine=SwapCounter(host))
        pack(SLOW, keys, tmp_path / "b.tar")
        final = install(svc, tmp_path / "b.tar")
        assert final["state"] == "rolled_back", final
        assert "p99 run time" in final["reason"] and "previous model's" in final["reason"]
        assert _version(host) == "1.0.0"
        assert svc.status(NAME)["active"] == "1.0.0"
        assert not any((config.state_dir / "models" / NAME / "versions").iterdir())
        svc.close()


def test_nan_outputs_in_the_loop_roll_back(tmp_path: Path, keys: Path, host: PluginHost) -> None:
    svc = OtaService(host.config, engine=host)

    set_in_health_window(svc, host, {"poison": True})
    pack(V1_1, keys, tmp_path / "b.tar")
    final = install(svc, tmp_path / "b.tar")
    assert final["state"] == "rolled_back"
    assert "NaN or inf" in final["reason"]
    assert _version(host) == "1.0.0"
    svc.close()


def test_the_plugin_check_and_the_slot_shape_refuse_before_any_swap(
    tmp_path: Path, keys: Path
) -> None:
    plugin = _plugin(classes=5)
    config = make_config(tmp_path, [keys / "public.pem"], plugins=[plugin])
    for host in wave_host(config):
        engine = SwapCounter(host)
        svc = OtaService(config, engine=engine)
        pack(W32, keys, tmp_path / "w.tar")
        final = install(svc, tmp_path / "w.tar")
        assert (final["state"], final["code"]) == ("rejected", "incompatible")
        assert "slot" in final["reason"]
        assert engine.swaps == []
        pack(V1_1, keys, tmp_path / "b.tar")
        final = install(svc, tmp_path / "b.tar")
        assert final["state"] == "rejected"
        assert "plugin expects 5" in final["reason"]
        assert _version(host) == "1.0.0"
        svc.close()


def test_rollback_command_swaps_the_previous_version_back(
    tmp_path: Path, keys: Path, host: PluginHost
) -> None:
    engine = SwapCounter(host)
    svc = OtaService(host.config, engine=engine)
    pack(V1_1, keys, tmp_path / "b.tar")
    assert install(svc, tmp_path / "b.tar")["state"] == "active"
    assert svc.rollback(NAME) == {
        "model": NAME,
        "from": "1.1.0",
        "to": "1.0.0",
        "state": "rolled_back",
    }
    assert _version(host) == "1.0.0"
    assert engine.swaps[-1][1:] == ("1.0.0", 0)
    with pytest.raises(OtaError):
        svc.rollback(NAME)
    svc.close()


def test_a_model_as_fast_as_the_previous_one_passes_the_latency_check(
    tmp_path: Path, keys: Path
) -> None:
    config = _config(tmp_path, keys, 1000.0, health_window_s=2.0, latency_regression=3.0)
    for host in wave_host(config):
        engine = SwapCounter(host)
        svc = OtaService(config, engine=engine)
        pack(V1_1, keys, tmp_path / "b.tar")
        final = install(svc, tmp_path / "b.tar")
        assert final["state"] == "active", final
        # Judged this time: a timed 1.0.0 instance ran first, as the latency baseline.
        assert [v for _, v, _ in engine.swaps] == ["1.0.0", "1.1.0"]
        svc.close()
