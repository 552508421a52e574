"""Paired comparisons of evaluation variants: the difference per episode and a bootstrap interval.

Every variant of a `sim eval` runs the same seeded episodes, so variants are compared pair by pair
on those episodes: the episodes are resampled with replacement (10,000 times, seeded), the same
resample for both variants, and the 2.5th and 97.5th percentiles of the metric's difference form
the 95 % interval. An interval that holds 0 reads "no detectable difference"; otherwise it names
the direction. Differences are signed so that positive means the first variant is better, whatever
the metric's direction (a lower comfort violation is better, a higher F1 is better).

The metric is a statistic of a set of episodes: the mean of a per-episode value (success, degree-
hours), or, for the energy F1, the F1 of the pooled alarm counts (`f1_of_counts`), which is what
`results` reports; resampling episodes keeps that statistic as it is.
A percentile bootstrap over few episodes is too narrow (it cannot see what no episode showed):
read intervals from 2 or 3 episodes as a smoke test, not as evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

RESAMPLES = 10_000
BOOTSTRAP_SEED = 20_261_202
#: The comparisons every domain reports: (key, variant, against).
PAIRS = (
    ("int8_tflite_vs_float", "int8_tflite", "float"),
    ("int8_onnx_vs_float", "int8_onnx", "float"),
    ("float_vs_baseline", "float", "baseline"),
)

Index = npt.NDArray[np.intp]
Statistic = Callable[[Index], npt.NDArray[np.float64]]
"""Rows of episode indices, shape (resamples, episodes), to the metric of each row."""


def mean_of(values: Sequence[float] | npt.ArrayLike) -> Statistic:
    """The mean of a per-episode value, over each row of episode indices."""
    x = np.asarray(values, np.float64)
    return lambda idx: x[idx].mean(axis=-1)


def f1_of_counts(
    detected: Sequence[int], false_alarms: Sequence[int], faults: Sequence[int]
) -> Statistic:
    """F1 of the alarm counts summed over each row of episode indices (sim/energy/metrics.py)."""
    d, fa, n = (np.asarray(a, np.float64) for a in (detected, false_alarms, faults))

    def f1(idx: Index) -> npt.NDArray[np.float64]:
        det, false, total = d[idx].sum(axis=-1), fa[idx].sum(axis=-1), n[idx].sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.where(det + false > 0, det / (det + false), 0.0)
            r = np.where(total > 0, det / total, 0.0)
            return np.where(p + r > 0, 2 * p * r / (p + r), 0.0)

    return f1


def paired_difference(
    better: Statistic,
    worse: Statistic,
    episodes: int,
    *,
    higher_is_better: bool,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, tuple[float, float]]:
    """The signed difference of two variants' metric on the same episodes and its 95 % interval."""
    sign = 1.0 if higher_is_better else -1.0
    whole = np.arange(episodes)[None, :]
    point = sign * float(better(whole)[0] - worse(whole)[0])
    idx = np.random.default_rng(seed).integers(0, episodes, size=(resamples, episodes))
    diffs = sign * (better(idx) - worse(idx))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return point, (float(lo), float(hi))


def verdict(name: str, against: str, ci95: tuple[float, float], episodes: int) -> str:
    """What the interval says, in words."""
    if episodes < 2:
        return f"too few episodes ({episodes}) to tell"
    lo, hi = ci95
    if lo > 0.0:
        return f"{name} better than {against}"
    if hi < 0.0:
        return f"{name} worse than {against}"
    return "no detectable difference"


def compare(
    statistics: Mapping[str, Statistic],
    seeds: Mapping[str, Sequence[int]],
    *,
    metric: str,
    higher_is_better: bool,
) -> dict[str, dict[str, Any]]:
    """Every pair of PAIRS whose variants ran: mean_diff, ci95 and verdict (positive = better)."""
    out: dict[str, dict[str, Any]] = {}
    for key, name, against in PAIRS:
        if name not in statistics or against not in statistics:
            continue
        if list(seeds[name]) != list(seeds[against]):
            raise ValueError(f"{name} and {against} ran different episodes: no paired comparison")
        n = len(seeds[name])
        diff, (lo, hi) = paired_difference(
            statistics[name], statistics[against], n, higher_is_better=higher_is_better
        )
        out[key] = {
            "metric": metric,
            "mean_diff": _tidy(diff),
            "ci95": [_tidy(lo), _tidy(hi)],
            "verdict": verdict(name, against, (lo, hi), n),
            "episodes": n,
        }
    return out


def _tidy(x: float) -> float:
    """Six decimals, and no negative zero (a sign the data never had)."""
    return round(x, 6) + 0.0
