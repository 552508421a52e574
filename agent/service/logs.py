"""Logging set-up suited to journald: plain lines (journald adds time and unit) or JSON."""

from __future__ import annotations

import json
import logging
import sys

from agent.config.sections import LoggingConfig

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: level, logger, message, plus any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as a JSON line."""
        doc: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(cfg: LoggingConfig, *, stream: object = None) -> None:
    """Configure the root logger once, from the `logging` config section."""
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    if cfg.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        # No timestamp: journald stamps every line itself; a terminal user has the live view.
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.level)
