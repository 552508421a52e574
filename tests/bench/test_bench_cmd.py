"""`edge-agent bench --json` in a subprocess: one JSON object of the documented shape.

Figures are checked for shape and sanity only: targets are reported by the bench, never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import engine as kit
from tests.support.paths import child_env

EDGE_AGENT = str(Path(sys.executable).parent / "edge-agent")


def _bench(tmp_path: Path, *args: str, plugin: str = "") -> subprocess.CompletedProcess[str]:
    """`edge-agent bench` on one 200 Hz test plugin (no MQTT), with `args`; `plugin` adds lines
    to its [[plugins]] table."""
    site = kit.write_entry_points(tmp_path / "site")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\nmodels_dir = "{kit.MODELS}"\n'
        '[mqtt]\nenabled = false\n[[plugins]]\nname = "wave"\nrate_hz = 200\n' + plugin
    )
    cmd = [EDGE_AGENT, "bench", "--config", str(config), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=child_env(site))


def test_bench_prints_one_json_object_with_every_figure(tmp_path: Path) -> None:
    out = _bench(tmp_path, "--duration", "2", "--floor-duration", "0.5", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)  # exactly one JSON document on stdout
    for key in ("rss_mb", "floor_rss_mb", "ready_ms"):
        assert report[key] > 0, key
    (wave,) = report["plugins"]
    assert wave["plugin"] == "wave" and wave["model"] == kit.WAVE_MODEL
    assert wave["backend"] == "tflite" and wave["rate_hz"] == 200.0
    for key in ("bare_us", "tick_us"):
        assert 0 < wave[key]["p50"] <= wave[key]["p99"], key
    for key in ("lateness_us", "floor_lateness_us"):
        assert 0 <= wave[key]["p50"] <= wave[key]["p99"] <= wave[key]["max"], key
    assert wave["ratio_p50"] == round(wave["tick_us"]["p50"] / wave["bare_us"]["p50"], 2)
    paced = wave["ratio_p50_paced"]
    assert paced == round(wave["tick_us"]["p50"] / wave["bare_paced_us"]["p50"], 2)
    assert wave["accelerator"] == "cpu"
    assert wave["ticks"] > 200 and 0 <= wave["overruns"] <= wave["ticks"]
    assert wave["wait"] == "sleep"
    stages = wave["stages_us"]
    assert set(stages) >= {"sensors", "model", "actuators", "outputs", "plugin", "tick_us"}
    assert stages["ticks"] > 0 and stages["model"]["p50"] > 0
    # Means add up across stages: the stages account for the whole proxied tick.
    total = sum(stages[k]["mean"] for k in ("sensors", "model", "actuators", "outputs", "plugin"))
    assert total == pytest.approx(stages["tick_us"]["mean"], abs=0.1)
    imports = report["import_rss_mb"]
    assert imports["python"] > 0 and "numpy" in imports
    # Progress went to stderr, one line per phase, beginning with the expected total time.
    progress = [line for line in out.stderr.splitlines() if line.startswith("bench: ")]
    assert progress[0].startswith("bench: about ") and " s in all" in progress[0]
    assert any("wave: empty loop at 200 Hz" in line for line in progress)


def test_bench_table_has_units_both_ratios_and_the_accelerator(tmp_path: Path) -> None:
    out = _bench(tmp_path, "--duration", "1", "--floor-duration", "0.3", "-q")
    assert out.returncode == 0, out.stderr
    assert "bench: " not in out.stderr  # -q: no progress
    lines = out.stdout.splitlines()
    assert " MB (floor " in lines[0] and " ms after process start" in lines[0]
    head, row = lines[1].split(), lines[2].split()
    for unit in ("Hz", "us"):
        assert unit in head
    assert lines[1].count("p50 us") == 3 and "x tight" in lines[1] and "x paced" in lines[1]
    assert row[:3] == ["wave", kit.WAVE_MODEL, "cpu"]
    assert "x tight / x paced:" in lines[3]


def test_bench_isolate_reports_the_isolated_tick_beside_the_in_process_one(
    tmp_path: Path,
) -> None:
    args = ["--duration", "1", "--floor-duration", "0.3", "--isolate", "wave"]
    out = _bench(tmp_path, *args, "--isolate-rounds", "2", "--json")
    assert out.returncode == 0, out.stderr
    (wave,) = json.loads(out.stdout)["plugins"]
    assert wave["stages_us"]["ticks"] > 0  # the agent phase ran it in process
    iso = wave["isolated"]
    assert iso["rounds"] == 2 and len(iso["per_round_p50_us"]) == 2
    assert iso["per_round_p50_us"][0][0] == wave["tick_us"]["p50"]  # round 1: the agent phase
    assert 0 < iso["tick_us"]["p50"] <= iso["tick_us"]["p99"] and iso["ticks"] > 200
    assert iso["ratio_p50"] == round(iso["tick_us"]["p50"] / iso["in_process_tick_us"]["p50"], 2)
    assert iso["child_rss_mb"] > 0 and iso["host_rss_mb"] > 0
    progress = out.stderr.splitlines()
    assert any("round 2 of 2: the agent again, wave in a child process" in s for s in progress)


def test_bench_of_a_plugin_isolated_by_its_config_has_baselines_and_child_memory(
    tmp_path: Path,
) -> None:
    out = _bench(tmp_path, "--duration", "1", "--floor-duration", "0.3", "--json",
                 plugin="isolate = true\n")  # fmt: skip
    assert out.returncode == 0, out.stderr
    (wave,) = json.loads(out.stdout)["plugins"]
    assert wave["model"] == kit.WAVE_MODEL and wave["child_rss_mb"] > 0
    assert wave["bare_paced_us"]["p50"] > 0 and wave["ratio_p50_paced"] > 0
    assert wave["stages_us"] is None  # its tick runs in the child: nothing to proxy here


@pytest.mark.slow
def test_bench_sync_runs_the_agent_synced_and_adds_publish_and_outbox_figures(
    tmp_path: Path,
) -> None:
    site = kit.write_entry_points(tmp_path / "site")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\nmodels_dir = "{kit.MODELS}"\n'
        '[mqtt]\nenabled = false\n[[plugins]]\nname = "wave"\nrate_hz = 100\n'
    )
    env = child_env(site)
    args = ["--config", str(config), "--duration", "1", "--floor-duration", "0.5", "--sync"]
    out = subprocess.run(
        [EDGE_AGENT, "bench", *args, "--json"], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    # The loops were measured beside a syncing agent (the config's [mqtt] said no).
    synced = report["agent_sync"]
    assert synced["connected"] == 1.0 and synced["telemetry_batches"] > 0
    sync = report["sync"]
    assert sync["outbox"]["events_persisted_and_drained_per_s"] > 0
    assert sync["agent_vs_bare_throughput"]["qos1"] > 0


def test_bench_repeat_reports_each_ratio_as_median_and_spread_over_the_runs(
    tmp_path: Path,
) -> None:
    out = _bench(tmp_path, "--duration", "1", "--floor-duration", "0.3", "--repeat", "2", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    repeat = report["repeat"]
    assert repeat["runs"] == 2 and len(repeat["rss_ratio"]["values"]) == 2
    wave = repeat["plugins"]["wave"]
    for key in ("ratio_p50", "ratio_p50_paced", "lateness_p99_vs_floor", "overrun_pct"):
        values = [v for v in wave[key]["values"] if v is not None]
        assert len(values) == 2, key
        assert wave[key]["min"] <= wave[key]["median"] <= wave[key]["max"], key
    # The other figures are the last run's, so the report keeps its documented shape.
    assert report["plugins"][0]["ratio_p50"] == wave["ratio_p50"]["values"][-1]
    assert "run 2 of 2" in out.stderr
    assert report["ready_ms"] < 60_000  # the first run's start-up, not the second run's age
    refused = _bench(tmp_path, "--repeat", "0")
    assert refused.returncode == 2 and "--repeat must be at least 1" in refused.stderr
