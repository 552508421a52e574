"""docs/examples/edge-agent-squarewatch, the plugin docs/plugins.md builds, keeps the contract."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "edge-agent-squarewatch"


def test_the_example_plugin_passes_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_MODELS", str(REPO / "models"))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(EXAMPLE / "tests"))
    for name in [m for m in sys.modules if m.startswith(("squarewatch", "test_squarewatch"))]:
        monkeypatch.delitem(sys.modules, name)
    import test_squarewatch

    check = test_squarewatch.TestSquareWatch()
    check.test_tick_allocates_nothing_after_warm_up()
    check.test_params_apply_between_ticks()
    check.test_a_wrong_shape_model_is_refused_at_setup()
    check.test_a_wrong_shape_model_is_refused_at_swap()
    for fault in ("nan", "inf", "missing"):
        check.test_bad_readings_give_sensor_dropout(fault)
    check.test_declared_telemetry_fields_are_the_fields_sent()
    check.test_teardown_releases()
