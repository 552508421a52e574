"""Calibration samples from an .npz: one array per model input (samples first), optional `y`.

Keys are the model's input names; a model with one input may call it `x` instead. Each array
holds N samples of that input's shape without its batch axis (or with a batch axis of 1).
`y`, when present, holds N targets: integer class labels or float values of the first output.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from agent.modelimport.inspection import IoSpec

TARGETS_KEY = "y"
SINGLE_INPUT_KEY = "x"
GOLDEN_COUNT = 8
SEEDED_COUNT = 64


@dataclass(frozen=True)
class Calibration:
    """N samples per input (each shaped as the input, batch 1), and targets when given."""

    inputs: list[npt.NDArray[np.float32]]
    targets: npt.NDArray[np.generic] | None
    seeded: bool

    @property
    def count(self) -> int:
        """How many samples there are."""
        return int(self.inputs[0].shape[0])

    def sample(self, i: int) -> list[npt.NDArray[np.float32]]:
        """Sample `i` as one array per input, each with the input's full shape."""
        return [x[i] for x in self.inputs]


def load_calibration(path: Path, inputs: list[IoSpec]) -> tuple[Calibration | None, list[str]]:
    """Read and check `path` against the model's inputs; (None, problems) when it is unusable."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        return None, [f"calibration: {path}: no such file"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        return None, [f"calibration: {path}: not a readable .npz ({exc})"]
    problems: list[str] = []
    names = [s.name for s in inputs]
    if len(inputs) == 1 and SINGLE_INPUT_KEY in arrays and names[0] not in arrays:
        arrays[names[0]] = arrays.pop(SINGLE_INPUT_KEY)
    missing = [n for n in names if n not in arrays]
    unknown = sorted(set(arrays) - set(names) - {TARGETS_KEY})
    if missing:
        alias = f" (or {SINGLE_INPUT_KEY!r})" if len(names) == 1 else ""
        problems.append(f"calibration: missing key(s) {missing}{alias}; the model's inputs")
    if unknown:
        problems.append(
            f"calibration: unknown key(s) {unknown}; expected the input names {names} "
            f"and optionally {TARGETS_KEY!r}"
        )
    samples = [_check_input(arrays[s.name], s, problems) for s in inputs if s.name in arrays]
    counts = {int(x.shape[0]) for x in samples if x is not None}
    if len(counts) > 1:
        problems.append(f"calibration: inputs hold different sample counts {sorted(counts)}")
    targets = arrays.get(TARGETS_KEY)
    if targets is not None and len(counts) == 1:
        targets = _check_targets(targets, counts.pop(), problems)
    if problems:
        return None, problems
    ready = [x for x in samples if x is not None]
    return Calibration(ready, targets, seeded=False), []


def _check_input(
    raw: npt.NDArray[np.generic], spec: IoSpec, problems: list[str]
) -> npt.NDArray[np.float32] | None:
    where = f"calibration[{spec.name!r}]"
    if raw.dtype.kind not in "fiu":
        problems.append(f"{where}: dtype {raw.dtype} is not numeric")
        return None
    per_sample = tuple(spec.shape[1:])
    if raw.ndim == len(spec.shape) + 1 and raw.shape[1] == 1:
        raw = raw.reshape(raw.shape[0], *raw.shape[2:])  # samples given with their batch axis
    if raw.ndim < 1 or tuple(raw.shape[1:]) != per_sample or raw.shape[0] < 1:
        problems.append(
            f"{where}: shape {list(raw.shape)}, expected [N, {', '.join(map(str, per_sample))}] "
            f"(N samples of input shape {list(spec.shape)} without the batch axis)"
        )
        return None
    values = raw.astype(np.float32)
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))
        problems.append(
            f"{where}: {int(bad.sum())} NaN/inf value(s) in {rows.size} sample(s), "
            f"first at sample {int(rows[0])}"
        )
        return None
    return values.reshape(values.shape[0], *spec.shape)


def _check_targets(
    y: npt.NDArray[np.generic], count: int, problems: list[str]
) -> npt.NDArray[np.generic] | None:
    if y.dtype.kind not in "fiu":
        problems.append(f"calibration['y']: dtype {y.dtype} is not numeric")
        return None
    if y.shape[:1] != (count,):
        problems.append(f"calibration['y']: {list(y.shape)} targets for {count} samples")
        return None
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        problems.append("calibration['y']: NaN/inf target(s)")
        return None
    return y


def seeded_calibration(inputs: list[IoSpec], seed: int = 0) -> Calibration:
    """Inputs drawn uniformly in each input's known range (its int8 range, else [-1, 1])."""
    rng = np.random.default_rng(seed)
    arrays = []
    for s in inputs:
        low, high = s.value_range or (-1.0, 1.0)
        arrays.append(rng.uniform(low, high, (SEEDED_COUNT, *s.shape)).astype(np.float32))
    return Calibration(arrays, None, seeded=True)
