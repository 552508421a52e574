"""`edge-agent bench`: the agent's tick and jitter as ratios against baselines from the same run.

Phases, in one process, one after the other:
1. the agent as `edge-agent run` starts it, every configured plugin ticking, for `duration_s`:
   ready time, RSS, per plugin tick time (the whole tick) and lateness;
   then each plugin once more with its devices, model slot and outputs timed (`stages_us`,
   agent/bench/breakdown.py);
2. per plugin with a model, the same model file through the runtime's plain API: in a tight
   loop (`bare_us`), and paced at the plugin's rate with the same sleep/spin policy
   (`bare_paced_us`: what the plain call costs when it runs only every period, as ticks do);
3. per plugin, an empty loop at the same rate and wait policy, alone (`floor_lateness_us`);
4. the RSS each imported library package adds, in the agent's import order (`import_rss_mb`,
   agent/bench/imports.py);
5. a bare Python subprocess importing the same libraries (every standard-library and
   site-packages module the agent process had imported) and loading the same model files with
   the plain APIs (`floor_rss_mb`): the difference is the agent's own code and data.
Targets are reported, never asserted: the machine is noisy and only ratios compare.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.bench.bare import bare_call, time_tight
from agent.bench.breakdown import breakdown
from agent.bench.imports import import_breakdown
from agent.bench.isolation import compare_isolated, with_isolation
from agent.bench.synced import synced_agent
from agent.config.sections import AgentConfig
from agent.engine.gc_slack import SlackCollector
from agent.engine.histogram import Histogram, HistogramSnapshot
from agent.engine.loop import Loop
from agent.engine.process import RealtimeMode
from agent.engine.report import process_age_s, rss_mb
from agent.errors import EdgeAgentError
from agent.plugin.registry import PluginRegistry
from agent.service.app import AgentApp

ModelRef = tuple[str, str, str]
"""(model name, backend, file path)."""


Progress = Callable[[str], None]


def bench_engine(
    config: AgentConfig,
    *,
    duration_s: float,
    floor_s: float | None = None,
    registry: PluginRegistry | None = None,
    progress: Progress | None = None,
    isolate: list[str] | None = None,
    isolate_rounds: int = 1,
    sync_to: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """Run every phase and return the report (shape documented in the issue, plus extras);
    `progress` hears one line as each phase starts (the whole run takes a while). The plugins
    named in `isolate` run in process in the agent phase, then in a child process with
    everything else as before (`isolate_rounds` times, alternating; agent/bench/isolation.py):
    `isolated` in their reports. With `sync_to` (host, port) the agent runs as `run` starts it,
    syncing to that broker (agent/bench/synced.py)."""
    floor_s = floor_s if floor_s is not None else min(duration_s, 10.0)
    say = progress if progress is not None else _silent
    isolate = isolate or []
    # Per plugin: ~1 s tight, floor_s / 2 paced, floor_s empty; then ~2 s for the RSS floor.
    phases = 2 * isolate_rounds if isolate else 1
    total = duration_s * phases + len(config.plugins) * (1.0 + 1.5 * floor_s) + 2
    say(f"about {total:.0f} s in all: the agent first, then baselines per plugin")
    say(f"agent: every plugin ticking for {duration_s:g} s")
    run = _agent_phase(with_isolation(config, isolate, False), duration_s, registry, sync_to)
    isolated = compare_isolated(
        config,
        isolate,
        first=run,
        rounds=isolate_rounds,
        run=lambda cfg: _agent_phase(cfg, duration_s, registry, sync_to, stages=False),
        say=say,
    )
    mode = RealtimeMode(config.engine)
    plugin_configs = {pc.name: pc for pc in config.plugins}
    plugins = []
    for name, stats in run["stats"].items():
        pc = plugin_configs[name]
        # The same wait policy, CPU set and priority as the plugin's own loop.
        policy = LoopPolicy(
            float(stats["rate_hz"]),
            config.engine.spin_us,
            pc.cpu_affinity,
            pc.realtime_priority,
            pc.wait,
        )
        model = run["models"].get(name) or run["isolated_models"].get(name)
        if model:
            say(f"{name}: {model[0]} alone, tight ~1 s then paced at {policy.rate_hz:g} Hz")
        say(f"{name}: empty loop at {policy.rate_hz:g} Hz for {floor_s:g} s (the floor)")
        with mode:
            bare = _bare_phase(model, policy, floor_s, config) if model else None
            floor = _loop_phase(policy, floor_s, mode.collector, None).late_hist
        report = _plugin_report(name, stats, model, bare, floor.snapshot())
        report["wait"] = policy.wait
        report["cpu_affinity"] = policy.cpu_affinity
        report["stages_us"] = run["stages"].get(name)
        report["accelerator"] = run["accelerators"].get(name)
        if name in isolated:
            report["isolated"] = isolated[name]
        if name in run["child_rss_mb"]:  # isolate = true in the config: its own process
            report["child_rss_mb"] = run["child_rss_mb"][name]
        plugins.append(report)
    say("memory floor: the same libraries and models in a bare process")
    floor_rss = floor_rss_mb(run["modules"], list(run["models"].values()), config.runtime.threads)
    imports = import_breakdown(run["modules"])
    return {
        "rss_mb": round(run["rss_mb"], 1),
        "floor_rss_mb": round(floor_rss, 1),
        "rss_ratio": round(run["rss_mb"] / floor_rss, 3) if floor_rss else None,
        "import_rss_mb": imports,
        "ready_ms": round(run["ready_ms"], 1),
        "agent_sync": run["sync"],
        "duration_s": duration_s,
        "floor_s": floor_s,
        "plugins": plugins,
    }


@dataclass(frozen=True)
class LoopPolicy:
    """How a plugin's loop waits and is scheduled; the baselines copy it."""

    rate_hz: float
    spin_us: int
    cpu_affinity: list[int] | None
    realtime_priority: int | None
    wait: str = "sleep"


def _agent_phase(
    config: AgentConfig,
    duration_s: float,
    registry: PluginRegistry | None,
    sync_to: tuple[str, int] | None,
    *,
    stages: bool = True,
) -> dict[str, Any]:
    with synced_agent(config, registry, sync_to) as app:
        return _measure(app, duration_s, stages)


def _measure(app: AgentApp, duration_s: float, stages: bool) -> dict[str, Any]:
    app.start()
    try:
        if not app.wait_ready(10.0):
            raise EdgeAgentError("bench: not every plugin loop ticked within 10 s of start")
        ready_ms = process_age_s() * 1e3
        time.sleep(duration_s)
        stats = app.host.stats()
        breakdowns = {  # an isolated plugin's tick runs in another process: nothing to proxy
            name: breakdown(app.host.runner(name), min(duration_s, 5.0))
            for name in stats
            if stages and stats[name]["state"] == "running" and not stats[name].get("isolated")
        }
        children = {  # isolated plugins: the RSS of their own processes
            str(p["name"]): round(rss_mb(p["pid"]), 1) for p in app.host.plugins() if p.get("pid")
        }
        # With --sync: proof that the agent synced while it was measured.
        sync = (
            {k: app.sync.counters()[k] for k in ("connected", "telemetry_batches", "outbox_sent")}
            if app.sync is not None
            else None
        )
        slots = app.host.model_slots()
        models = {
            name: (slot.model.name, slot.model.backend, slot.model.path)
            for name, slot in slots.items()
        }
        # Both before the isolated plugins' models load here for their baselines: a runtime
        # only they use must count in neither the agent's memory nor its floor's imports.
        rss, modules = rss_mb(), library_modules()
        return {
            "ready_ms": ready_ms,
            "rss_mb": rss,
            "isolated_models": _isolated_models(app, stats),
            "child_rss_mb": children,
            "modules": modules,
            "stats": stats,
            "sync": sync,
            "stages": breakdowns,
            "models": models,
            "accelerators": {name: slot.model.accelerator for name, slot in slots.items()},
        }
    finally:
        app.stop(timeout=2.0)


def _isolated_models(app: AgentApp, stats: dict[str, Any]) -> dict[str, ModelRef]:
    """The model of each isolated plugin (loaded in its child, not here), for its baselines; not
    part of the memory floor, which holds what the agent's own process holds."""
    from agent.engine.models import store_loader

    found: dict[str, ModelRef] = {}
    for name, plugin_stats in stats.items():
        model_name = app.host.runner(name).res.model_name if plugin_stats.get("isolated") else None
        if model_name:
            model = store_loader(app.config)(model_name)
            found[name] = (model.name, model.backend, model.path)
            model.close()
    return found


def _bare_phase(
    model: ModelRef, policy: LoopPolicy, floor_s: float, config: AgentConfig
) -> dict[str, HistogramSnapshot]:
    _, backend, path = model
    call, close = bare_call(backend, path, threads=config.runtime.threads)
    try:
        tight = time_tight(call, max_s=min(1.0, floor_s)).snapshot()
        paced = _loop_phase(policy, floor_s / 2, None, call).tick_hist.snapshot()
    finally:
        close()
    return {"tight": tight, "paced": paced}


def _loop_phase(
    policy: LoopPolicy, seconds: float, collector: SlackCollector | None, call: Any
) -> Loop:
    def tick(now_ns: int) -> None:
        if call is not None:
            call()

    loop = Loop(
        "bench",
        tick,
        rate_hz=policy.rate_hz,
        spin_us=policy.spin_us,
        collector=collector,
        cpu_affinity=policy.cpu_affinity,
        realtime_priority=policy.realtime_priority,
        wait=policy.wait,
        tick_hist=Histogram(),
        late_hist=Histogram(),
    )
    loop.start()
    time.sleep(seconds)
    loop.stop()
    loop.join(2.0)
    return loop


def _plugin_report(
    name: str,
    stats: dict[str, Any],
    model: ModelRef | None,
    bare: dict[str, HistogramSnapshot] | None,
    floor: HistogramSnapshot,
) -> dict[str, Any]:
    tick = stats["tick_us"]
    late = stats["lateness_us"]
    floor_us = floor.summary_us()
    report: dict[str, Any] = {
        "plugin": name,
        "model": model[0] if model else None,
        "backend": model[1] if model else None,
        "rate_hz": stats["rate_hz"],
        "bare_us": None,
        "tick_us": {"p50": tick["p50"], "p99": tick["p99"]},
        "ratio_p50": None,
        "lateness_us": {"p50": late["p50"], "p99": late["p99"], "max": late["max"]},
        "floor_lateness_us": {k: floor_us[k] for k in ("p50", "p99", "max")},
        "ticks": stats["ticks"],
        "overruns": stats["overruns"],
        "overrun_pct": round(100.0 * stats["overruns"] / max(stats["ticks"], 1), 3),
        "lateness_p99_vs_floor": _ratio(late["p99"], floor_us["p99"]),
    }
    if bare is not None:
        tight, paced = bare["tight"].summary_us(), bare["paced"].summary_us()
        report["bare_us"] = {"p50": tight["p50"], "p99": tight["p99"]}
        report["ratio_p50"] = _ratio(tick["p50"], tight["p50"])
        report["bare_paced_us"] = {"p50": paced["p50"], "p99": paced["p99"]}
        report["ratio_p50_paced"] = _ratio(tick["p50"], paced["p50"])
    return report


def _silent(line: str) -> None:
    """No progress wanted."""


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b > 0 else None


def library_modules() -> list[str]:
    """Every module imported so far from the standard library or site-packages: everything but
    the agent's own code (agent, plugins, sim, ...). Submodules too: pydantic, for one, is lazy,
    and `import pydantic` alone loads a fraction of what a model definition needs."""
    paths = sysconfig.get_paths()
    roots = tuple({paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")})
    sites = tuple({paths[k] for k in ("purelib", "platlib")})
    names = []
    for name, module in list(sys.modules.items()):
        path = str(getattr(module, "__file__", None) or "")
        # site-packages sits inside the stdlib folder of a plain install: check it first.
        if path.startswith(sites) or (path.startswith(roots) and "site-packages" not in path):
            names.append(name)
    return sorted(names)


_FLOOR_SCRIPT = """
import importlib, json, sys
spec = json.loads(sys.argv[1])
for name in spec["modules"]:
    try:
        importlib.import_module(name)
    except Exception:
        pass
keep = []
for backend, path in spec["models"]:
    if backend == "onnx":
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = spec["threads"]
        keep.append(ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"]))
    else:
        from ai_edge_litert.interpreter import Interpreter
        interp = Interpreter(model_path=path, num_threads=spec["threads"])
        interp.allocate_tensors()
        keep.append(interp)
with open("/proc/self/status") as f:
    for line in f:
        if line.startswith("VmRSS:"):
            print(int(line.split()[1]) / 1024.0)
"""


def floor_rss_mb(modules: list[str], models: list[ModelRef], threads: int) -> float:
    """RSS of a bare Python process importing `modules` and loading the same model files."""
    spec = json.dumps(
        {"modules": modules, "models": [[b, p] for _, b, p in models], "threads": threads}
    )
    out = subprocess.run(
        [sys.executable, "-c", _FLOOR_SCRIPT, spec],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=str(Path(sys.executable).parent),
    )
    return float(out.stdout.strip().splitlines()[-1])
