"""Occupant day schedules: where each person is (and whether asleep) over one day."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LIVING, KITCHEN, BEDROOM, OFFICE = 0, 1, 2, 3
AWAY = -1
MAX_SEGMENTS = 40
"""Segments per person-day, padded; the bounded loops below never need more."""


@dataclass(frozen=True, slots=True)
class Profile:
    """One person's habits, drawn once per household: the means that each day scatters around."""

    wake_h: float
    bed_h: float
    return_h: float
    commutes: bool
    wfh_p: float
    outing_p: float

    @staticmethod
    def draw(rng: np.random.Generator) -> Profile:
        """A plausible adult: early or late riser, commuter or home worker."""
        return Profile(
            wake_h=float(rng.uniform(5.75, 8.0)),
            bed_h=float(rng.uniform(21.5, 23.5)),
            return_h=float(rng.uniform(15.5, 19.0)),
            commutes=bool(rng.random() < 0.75),
            wfh_p=float(rng.uniform(0.0, 0.4)),
            outing_p=float(rng.uniform(0.3, 0.8)),
        )


class _Day:
    """Builds the segment list of one day, keeping start times increasing."""

    def __init__(self) -> None:
        self.starts: list[float] = [0.0]
        self.rooms: list[int] = [BEDROOM]
        self.asleep: list[bool] = [True]

    def go(self, hour: float, room: int, asleep: bool = False) -> None:
        # Five minutes minimum per segment keeps one pointer advance per simulator step enough.
        hour = max(hour, self.starts[-1] + 5 / 60)
        if hour >= 24.0:
            return
        self.starts.append(hour)
        self.rooms.append(room)
        self.asleep.append(asleep)

    @property
    def now(self) -> float:
        return self.starts[-1]


def person_day(
    rng: np.random.Generator, p: Profile, weekend: bool
) -> tuple[list[float], list[int], list[bool]]:
    """One day of one person: (start hours, rooms with -1 = away, asleep flags), from 00:00."""
    d = _Day()
    late = 1.0 if weekend else 0.0
    wake = p.wake_h + late + rng.normal(0.0, 0.3)
    bed = min(p.bed_h + 0.5 * late + rng.normal(0.0, 0.4), 23.9)
    d.go(wake, BEDROOM)
    d.go(wake + rng.uniform(0.1, 0.25), KITCHEN)
    breakfast_end = d.now + rng.uniform(0.3, 0.6)
    sick = rng.random() < 0.04
    if not weekend and p.commutes and not sick and rng.random() >= p.wfh_p:
        d.go(breakfast_end, AWAY)
        d.go(p.return_h + rng.normal(0.0, 0.75), LIVING)
    elif not weekend and not sick:
        _home_office(rng, d, breakfast_end)
    else:
        _home_day(rng, d, breakfast_end, p.outing_p)
    _evening(rng, d, bed)
    d.go(bed, BEDROOM)
    d.go(d.now + rng.uniform(0.1, 0.3), BEDROOM, asleep=True)
    return d.starts, d.rooms, d.asleep


def _home_office(rng: np.random.Generator, d: _Day, t: float) -> None:
    d.go(t, LIVING)
    d.go(max(d.now + 0.2, rng.uniform(8.3, 9.5)), OFFICE)
    d.go(rng.uniform(12.0, 13.0), KITCHEN)
    d.go(d.now + rng.uniform(0.5, 0.9), OFFICE)
    if rng.random() < 0.5:
        d.go(rng.uniform(14.5, 15.5), KITCHEN)
        d.go(d.now + rng.uniform(0.15, 0.3), OFFICE)
    d.go(rng.uniform(16.5, 18.5), LIVING)


def _home_day(rng: np.random.Generator, d: _Day, t: float, outing_p: float) -> None:
    d.go(t, LIVING)
    outing = rng.uniform(10.0, 16.0) if rng.random() < outing_p else 99.0
    for _ in range(12):
        if d.now >= 17.0:
            break
        if d.now >= outing:
            d.go(d.now, AWAY)
            d.go(d.now + rng.uniform(1.0, 4.0), LIVING)
            outing = 99.0
            continue
        room = int(rng.choice((LIVING, LIVING, KITCHEN, OFFICE)))
        d.go(d.now + rng.uniform(0.4, 1.8), room)


def _evening(rng: np.random.Generator, d: _Day, bed: float) -> None:
    cook = max(d.now + 0.2, rng.uniform(17.8, 19.2))
    if cook < bed - 1.0:
        d.go(cook, KITCHEN)
        d.go(d.now + rng.uniform(0.6, 1.2), LIVING)
    for _ in range(8):
        if d.now >= bed - 1.0:
            break
        if rng.random() < 0.3:
            d.go(d.now + rng.uniform(0.5, 1.5), KITCHEN)
            d.go(d.now + rng.uniform(0.1, 0.25), LIVING)
        else:
            d.go(d.now + rng.uniform(0.5, 1.5), OFFICE if rng.random() < 0.15 else LIVING)
