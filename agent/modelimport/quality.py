"""What the imported model costs and keeps: errors against float, task metrics, latency.

Everything runs through the agent's own runtime classes, so the latency is that of the fast path
a plugin calls (`Model.fast_path().run()`), measured tight (back to back) and paced at the
plugin's rate, because a call after a sleep runs several times slower on a small CPU.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from agent.modelimport.calibration import Calibration
from agent.runtime.base import Model

MAX_EVAL = 1000  # samples compared; enough for a stable error and top-1 figure
TIGHT_RUNS = 2000
WARMUP_RUNS = 200
Task = Literal["classification", "regression"]
Outputs = list[npt.NDArray[np.float32]]


@dataclass
class OutputError:
    """Int8 against float on one output over the calibration samples."""

    name: str
    max_abs: float | None
    mean_abs: float | None
    tolerance: float


@dataclass
class Latency:
    """p50/p99 of one fast-path run, in microseconds, tight and paced."""

    label: str
    tight_p50: float
    tight_p99: float
    paced_p50: float
    paced_p99: float


@dataclass
class Quality:
    """The quality block of an import."""

    task: Task
    samples: int
    outputs: list[OutputError] = field(default_factory=list)
    top1_agreement: float | None = None
    metric: str | None = None
    metric_float: float | None = None
    metric_model: float | None = None
    latency: list[Latency] = field(default_factory=list)


def open_model(path: Path, fmt: str, name: str, shapes: tuple[list[Any], list[Any]]) -> Model:
    """Load one file with the agent's runtime class for its format, on CPU."""
    if fmt == "tflite":
        from agent.runtime.tflite import TfliteModel

        return TfliteModel(path, name=name, version="0.0.0", threads=1)
    from agent.runtime.onnx import OnnxModel

    return OnnxModel(path, name=name, version="0.0.0", threads=1, shape_hints=shapes)


def run_all(model: Model, calib: Calibration) -> Outputs:
    """The model's float outputs on every evaluated sample, stacked along a new first axis."""
    n = min(calib.count, MAX_EVAL)
    rows = [model.infer(*calib.sample(i)) for i in range(n)]
    return [np.stack([r[j] for r in rows]) for j in range(len(model.outputs))]


def guess_task(calib: Calibration, outputs: Outputs) -> Task:
    """Classification when targets are integers, or with no targets when the first output
    has two or more values per sample; regression otherwise."""
    if calib.targets is not None:
        return "classification" if calib.targets.dtype.kind in "iu" else "regression"
    return "classification" if outputs[0][0].size >= 2 else "regression"


def measure(
    model_out: Outputs, float_out: Outputs | None, names: list[str], calib: Calibration
) -> Quality:
    """Errors, tolerances, top-1 agreement and the task metric (latency is added separately)."""
    task = guess_task(calib, model_out)
    quality = Quality(task, int(model_out[0].shape[0]))
    for j, name in enumerate(names):
        got = model_out[j]
        scale = 1.0 + float(np.abs(got).max())
        if float_out is None:
            # No float network to compare with: allow runtime and kernel differences only.
            quality.outputs.append(OutputError(name, None, None, 1e-3 * scale))
            continue
        diff = np.abs(got - float_out[j])
        max_abs = float(diff.max())
        # Another file of the model, or another runtime build, may differ from these outputs by
        # up to what quantization itself changed, plus a step of rounding on top.
        tolerance = max(1.5 * max_abs, 1e-4 * scale)
        quality.outputs.append(OutputError(name, max_abs, float(diff.mean()), tolerance))
    first = _rows(model_out[0])
    if task == "classification" and first.shape[1] >= 2 and float_out is not None:
        ref = _rows(float_out[0]).argmax(axis=1)
        quality.top1_agreement = float((first.argmax(axis=1) == ref).mean())
    if calib.targets is not None:
        _metric(quality, first, None if float_out is None else _rows(float_out[0]), calib)
    return quality


def _metric(quality: Quality, first: Any, ref: Any, calib: Calibration) -> None:
    y = np.asarray(calib.targets)[: first.shape[0]]
    classes = quality.task == "classification"
    quality.metric = "accuracy" if classes else "mae"
    target: Any = y.reshape(-1) if classes else y.reshape(y.shape[0], -1).astype(np.float32)

    def score(out: Any) -> float:
        if classes:
            return float((out.argmax(axis=1) == target).mean())
        return float(np.abs(out[:, : target.shape[1]] - target).mean())

    quality.metric_model = score(first)
    quality.metric_float = None if ref is None else score(ref)


def _rows(a: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return a.reshape(a.shape[0], -1)


def latency(model: Model, sample: list[npt.NDArray[np.float32]], label: str, rate_hz: float,
            paced_runs: int) -> Latency:  # fmt: skip
    """p50/p99 of `FastPath.run` in us: back to back, then once per period at `rate_hz`."""
    fast = model.fast_path()
    for buf, value in zip(fast.inputs, sample, strict=True):
        buf[...] = value.reshape(buf.shape)
    run = fast.run
    clock = time.perf_counter_ns
    for _ in range(WARMUP_RUNS):
        run()
    tight = np.zeros(TIGHT_RUNS, np.int64)
    paced = np.zeros(paced_runs, np.int64)
    period = int(1e9 / rate_hz)
    gc.collect()
    gc.disable()
    try:
        for i in range(TIGHT_RUNS):
            t0 = clock()
            run()
            tight[i] = clock() - t0
        deadline = clock()
        for i in range(paced_runs):
            deadline += period
            wait = deadline - clock()
            if wait > 0:
                time.sleep(wait / 1e9)
            t0 = clock()
            run()
            paced[i] = clock() - t0
    finally:
        gc.enable()
    p = np.percentile
    return Latency(
        label,
        float(p(tight, 50)) / 1e3,
        float(p(tight, 99)) / 1e3,
        float(p(paced, 50)) / 1e3,
        float(p(paced, 99)) / 1e3,
    )


def paced_runs_for(rate_hz: float) -> int:
    """Paced samples: about two seconds' worth, between 20 and 200."""
    return int(min(200, max(20, rate_hz * 2)))
