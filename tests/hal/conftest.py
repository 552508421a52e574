"""The `harness` fixture: every HAL backend registered in tests.support.hal.HARNESSES in turn."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.hal import HARNESSES, HalHarness


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest) -> Iterator[HalHarness]:
    """Each registered backend in turn."""
    made = HARNESSES[request.param](request)
    try:
        yield made
    finally:
        made.close()
