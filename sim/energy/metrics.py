"""Scoring anomaly alarms against injected faults: precision, recall, F1, detection delay."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from sim.energy.schedule import Fault

GRACE_S = 120.0
"""An alarm up to this long after a fault ends is not a false alarm."""
DEADLINE_S = {"spike": 60.0, "compressor_failure": 900.0, "standby_creep": 1800.0}
"""How long after a fault shows (a spike ends, a creep levels off) an alarm still detects it."""


def detect_by(f: Fault) -> float:
    """The latest time an alarm counts as detecting `f`: later ones are late (not false)."""
    shown = f.start + f.rise_s if f.kind == "standby_creep" else f.start
    if f.kind == "spike":
        shown = f.end
    return shown + DEADLINE_S[f.kind]


@dataclass
class Score:
    """Alarm counts of one or more episodes; ratios are derived, so scores add up."""

    alarms: int = 0
    false_alarms: int = 0
    faults: int = 0
    detected: int = 0
    delays_s: list[float] = field(default_factory=list)
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [faults, detected]

    def __iadd__(self, other: Score) -> Score:
        self.alarms += other.alarms
        self.false_alarms += other.false_alarms
        self.faults += other.faults
        self.detected += other.detected
        self.delays_s.extend(other.delays_s)
        for kind, (n, d) in other.by_kind.items():
            mine = self.by_kind.setdefault(kind, [0, 0])
            mine[0] += n
            mine[1] += d
        return self

    @property
    def precision(self) -> float:
        """Detections over detections plus false alarms (repeats during a fault are neither)."""
        judged = self.detected + self.false_alarms
        return self.detected / judged if judged else 0.0

    @property
    def recall(self) -> float:
        """Share of faults with at least one alarm."""
        return self.detected / self.faults if self.faults else 0.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall (the main metric)."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def summary(self) -> dict[str, object]:
        """Plain figures for JSON output."""
        delays = np.asarray(self.delays_s) if self.delays_s else np.zeros(1)
        return {
            "f1": round(self.f1, 4),
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "alarms": self.alarms,
            "false_alarms": self.false_alarms,
            "faults": self.faults,
            "detected": self.detected,
            "delay_s_median": round(float(np.median(delays)), 1),
            "delay_s_mean": round(float(np.mean(delays)), 1),
            "recall_by_kind": {
                k: round(d / n, 4) if n else 0.0 for k, (n, d) in sorted(self.by_kind.items())
            },
        }


def score_alarms(
    alarm_times_s: Sequence[float], faults: Sequence[Fault], *, scored_until: float | None = None
) -> Score:
    """Match alarm times (simulated s) to faults.

    A fault is detected by its first alarm in [start, detect_by(fault)]. An alarm outside every
    fault (from its start to GRACE_S after its end) is false; further alarms during a fault are
    neither, so a detector gains nothing by repeating itself. Faults starting at or after
    `scored_until` (too close to the end of a run to be caught) are left out, and so are alarms
    that fall only on them.
    """
    limit = np.inf if scored_until is None else scored_until
    times = np.sort(np.asarray(alarm_times_s, float))
    during = np.zeros(len(times), bool)
    unscored = np.zeros(len(times), bool)
    score = Score()
    for f in faults:
        inside = (times >= f.start) & (times < max(f.end + GRACE_S, detect_by(f)))
        if f.start >= limit:
            unscored |= inside
            continue
        during |= inside
        score.faults += 1
        counts = score.by_kind.setdefault(f.kind, [0, 0])
        counts[0] += 1
        in_time = (times >= f.start) & (times <= detect_by(f))
        if in_time.any():
            score.detected += 1
            counts[1] += 1
            score.delays_s.append(float(times[np.argmax(in_time)] - f.start))
    score.false_alarms = int((~during & ~unscored).sum())
    score.alarms = int((during | ~unscored).sum())
    return score


def alarms_from_scores(
    scores: npt.NDArray[np.float32],
    valid: npt.NDArray[np.bool_],
    *,
    threshold: float,
    release: float,
    confirm: int,
    rearm: int,
) -> list[int]:
    """Sample indices where an alarm fires: the batch twin of the plugin's alarm logic.

    An alarm fires after `confirm` consecutive scores >= `threshold` and re-arms after `rearm`
    consecutive scores < `release`; samples with `valid` False (no fresh reading) are skipped.
    """
    fired: list[int] = []
    above = below = 0
    active = False
    for i in np.flatnonzero(valid):
        s = float(scores[i])
        above = above + 1 if s >= threshold else 0
        if not active:
            if above >= confirm:
                fired.append(int(i))
                active = True
                below = 0
        else:
            below = below + 1 if s < release else 0
            if below >= rearm:
                active = False
    return fired
