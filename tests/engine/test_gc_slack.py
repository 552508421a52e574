"""GC in idle slack: a collection runs only when it fits before the next deadline."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator

import pytest

from agent.engine.gc_slack import MIN_SLACK_NS, SlackCollector


@pytest.fixture
def gc_off() -> Iterator[None]:
    was = gc.isenabled()
    gc.collect()  # every generation's count back to zero: the tests count from there
    gc.disable()
    yield
    if was:
        gc.enable()


def _garbage(n: int) -> None:
    for _ in range(n):
        a: list[object] = []
        a.append(a)


def test_a_collection_is_declined_without_slack_and_its_estimate_fades(gc_off: None) -> None:
    collector = SlackCollector()
    _garbage(collector.threshold0 + 10)
    assert collector.due()
    before = collector.cost_ns[0]
    assert not collector.collect_if_slack(time.perf_counter_ns() + MIN_SLACK_NS // 2)
    assert collector.cost_ns[0] < before and collector.declined == 1
    assert collector.due()  # nothing was collected


def test_a_collection_runs_with_enough_slack(gc_off: None) -> None:
    collector = SlackCollector()
    _garbage(collector.threshold0 + 10)
    assert collector.collect_if_slack(time.perf_counter_ns() + 50_000_000)
    assert not collector.due()
    assert collector.collections[0] == 1 and collector.cost_ns[0] > 0


def test_older_generations_are_collected_when_cpython_would(gc_off: None) -> None:
    collector = SlackCollector()
    far = 10_000_000_000
    # Gen 1 is due after threshold1 young collections, gen 2 after threshold2 of those.
    for _ in range(2 * (collector.threshold1 + 1) * (collector.threshold2 + 1)):
        _garbage(collector.threshold0 + 1)
        collector.collect_if_slack(time.perf_counter_ns() + far)
    assert collector.collections[1] >= 1
    assert collector.collections[2] >= 1
