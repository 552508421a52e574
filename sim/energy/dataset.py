"""Model windows and labels from simulator recordings (training and tests; numpy only).

The layout must match what plugins/energy builds tick by tick, which a test checks:
- fine: the last FINE samples of mains power (1 s each), oldest first;
- coarse: the minimum of each of the last COARSE completed BLOCK-second blocks, oldest first;
- a missing or NaN reading holds the last good value; before enough history exists, both parts
  are padded with the first reading.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from sim.energy.schedule import FAULT_KINDS, Fault

FINE = 256
COARSE = 128
BLOCK = 60
INPUT_SIZE = FINE + COARSE
CLASSES = ("normal", *FAULT_KINDS)
"""Model output order: probability of each class for the window ending now."""

SPIKE_LABEL_S = 60
"""A spike stays labelled this long after it ends (the model needs a few samples after it)."""
CREEP_VISIBLE = 0.7
"""Share of a standby creep's ramp before its windows count as positive (ambiguous before)."""
CREEP_SHOWN_S = 1800
"""A creep stays labelled this long after its ramp; later the window shows only a high floor."""


def forward_fill(mains: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Hold the last finite reading over NaN gaps (leading gaps take the first finite value)."""
    good = np.isfinite(mains)
    if not good.any():
        raise ValueError("no finite reading to hold")
    idx = np.where(good, np.arange(len(mains)), 0)
    np.maximum.accumulate(idx, out=idx)
    out = mains[idx]
    out[: int(np.argmax(good))] = mains[int(np.argmax(good))]
    return out.astype(np.float32)


def windows(
    filled: npt.NDArray[np.float32], ends: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """Model inputs (len(ends), INPUT_SIZE) for windows ending at sample indices `ends`."""
    x0 = filled[0]
    fine_src = np.concatenate([np.full(FINE - 1, x0, np.float32), filled])
    fine = np.lib.stride_tricks.sliding_window_view(fine_src, FINE)[ends]
    nb = len(filled) // BLOCK
    blocks = filled[: nb * BLOCK].reshape(nb, BLOCK).min(axis=1)
    coarse_src = np.concatenate([np.full(COARSE, x0, np.float32), blocks])
    done = (ends + 1) // BLOCK  # completed blocks when the window ends
    coarse = np.lib.stride_tricks.sliding_window_view(coarse_src, COARSE)[done]
    return np.concatenate([fine, coarse], axis=1).astype(np.float32)


def labels(faults: list[Fault], n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Class index and training weight of the window ending at each of `n` samples.

    Weight 0 marks windows that are honestly ambiguous (a creep just starting or long since
    levelled off, a fault that has ended but is still in view), so the model is neither
    rewarded nor punished there.
    """
    y = np.zeros(n, np.int64)
    w = np.ones(n, np.float32)
    for f in faults:
        s, e = int(f.start), int(np.ceil(f.end))
        cls = CLASSES.index(f.kind)
        if f.kind == "spike":
            pos_end, quiet_end = e + SPIKE_LABEL_S, e + FINE
        elif f.kind == "compressor_failure":
            pos_end, quiet_end = e + 30, e + FINE
        else:
            visible = s + int(CREEP_VISIBLE * f.rise_s)
            w[s:visible] = 0.0
            pos_end = min(e, s + int(f.rise_s) + CREEP_SHOWN_S)
            s, quiet_end = visible, e + 5 * BLOCK
        y[s:pos_end] = cls
        w[pos_end:quiet_end] = 0.0
    return y, w
