"""Log lines come out plain or as JSON, as the config says."""

from __future__ import annotations

import io
import json
import logging

from agent.config.sections import LoggingConfig
from agent.service.logs import setup_logging


def test_json_lines_carry_extra_fields() -> None:
    buf = io.StringIO()
    setup_logging(LoggingConfig(format="json", level="INFO"), stream=buf)
    logging.getLogger("agent.test").info("tick summary", extra={"plugin": "robot", "p99_us": 12.5})
    doc = json.loads(buf.getvalue().splitlines()[-1])
    assert doc["msg"] == "tick summary" and doc["plugin"] == "robot" and doc["p99_us"] == 12.5
    assert doc["level"] == "INFO" and doc["logger"] == "agent.test"


def test_plain_lines_and_level_filter() -> None:
    buf = io.StringIO()
    setup_logging(LoggingConfig(format="plain", level="WARNING"), stream=buf)
    logging.getLogger("agent.test").info("hidden")
    logging.getLogger("agent.test").warning("shown")
    assert buf.getvalue() == "WARNING agent.test: shown\n"
