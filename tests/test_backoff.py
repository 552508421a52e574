"""The one back-off policy: reconnects, plugin restarts, failing outbox writes and opens."""

from __future__ import annotations

import random

from agent.backoff import Backoff


def test_delays_double_up_to_the_maximum_and_reset_starts_over() -> None:
    b = Backoff(0.5, 3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert b.attempt == 5
    b.reset()
    assert b.next() == 0.5


def test_jittered_delays_lie_between_half_and_the_whole_of_each_step() -> None:
    b = Backoff(0.5, 4.0, jitter=True, rng=random.Random(1))
    delays = [b.next() for _ in range(8)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len({round(d, 6) for d in delays[3:]}) > 1  # jitter: not all the same
    b.reset()
    assert b.next() <= 0.5


def test_a_long_failure_stays_at_the_maximum_without_overflow() -> None:
    b = Backoff(0.05, 1.0)
    for _ in range(10_000):
        delay = b.next()
    assert delay == 1.0


def test_a_maximum_below_the_initial_delay_is_the_initial_delay() -> None:
    assert Backoff(2.0, 1.0).next() == 2.0
