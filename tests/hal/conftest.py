"""The `harness` fixture: every HAL backend registered in hal_harness.HARNESSES in turn."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

for _dir in (Path(__file__).resolve().parent, Path(__file__).resolve().parents[1] / "engine"):
    if str(_dir) not in sys.path:
        sys.path.insert(0, str(_dir))

from hal_harness import HARNESSES, HalHarness  # noqa: E402


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest) -> Iterator[HalHarness]:
    """Each registered backend in turn."""
    made = HARNESSES[request.param](request)
    try:
        yield made
    finally:
        made.close()
