"""Fuzzed config values (issue 13, defect 7): every value either loads as a finite, bounded number
or is refused with the key path and the value, never a crash later in `run`."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import load_config
from agent.errors import ConfigError

NUMERIC_KEYS = {
    "SCHEDULER__METRICS_S": ("scheduler", "metrics_s"),
    "SCHEDULER__STATE_S": ("scheduler", "state_s"),
    "SCHEDULER__TELEMETRY_FLUSH_S": ("scheduler", "telemetry_flush_s"),
    "SCHEDULER__OUTBOX_COMPACTION_S": ("scheduler", "outbox_compaction_s"),
    "MQTT__RECONNECT_MIN_S": ("mqtt", "reconnect_min_s"),
    "MQTT__KEEPALIVE": ("mqtt", "keepalive"),
    "ENGINE__RESTART_BACKOFF_S": ("engine", "restart_backoff_s"),
    "OTA__HEALTH_WINDOW_S": ("ota", "health_window_s"),
    "OUTBOX__TELEMETRY_SHARE": ("outbox", "telemetry_share"),
    "HAL__SIM_SPEED": ("hal", "sim_speed"),
}
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["inf", "-inf", "nan", "1e308", "1e-300", "1e-9", "0", "-0.0", "", " ", "x"]),
)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(sorted(NUMERIC_KEYS)), raw=numbers)
def test_a_numeric_value_is_finite_and_bounded_or_refused_by_key(key: str, raw: str) -> None:
    env = {f"EDGE_AGENT__{key}": raw, "EDGE_AGENT__STATE_DIR": "/tmp/fuzz-state"}
    section, field = NUMERIC_KEYS[key]
    try:
        cfg = load_config(None, env=env, check_files=False)
    except ConfigError as exc:
        text = str(exc)
        assert section in text and field in text, text  # cross-field errors name both
        assert f"EDGE_AGENT__{key}" in text, text
        return
    value = getattr(getattr(cfg, section), field)
    assert math.isfinite(value)
    assert 0 < value <= 7 * 86400


@settings(max_examples=100, deadline=None)
@given(rate=numbers)
def test_a_plugin_rate_is_between_a_hundredth_of_a_hertz_and_20_khz_or_refused(rate: str) -> None:
    from pydantic import ValidationError

    from agent.config.sections import AgentConfig

    try:
        cfg = AgentConfig.model_validate(
            {"plugins": [{"name": "robot", "rate_hz": rate}], "state_dir": "/tmp/fuzz-state"}
        )
    except ValidationError as exc:
        assert exc.errors()[0]["loc"][:3] == ("plugins", 0, "rate_hz")
        return
    assert 0.01 <= cfg.plugins[0].rate_hz <= 20000


def test_an_empty_state_dir_is_refused_not_the_working_directory() -> None:
    try:
        load_config(None, env={"EDGE_AGENT__STATE_DIR": ""}, check_files=False)
    except ConfigError as exc:
        assert "state_dir" in str(exc) and "working directory" in str(exc)
    else:
        raise AssertionError("an empty state_dir was accepted")
