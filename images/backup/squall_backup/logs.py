"""Structured logs: one JSON object per line on stdout.

Each line has ``ts`` (UTC, ISO 8601), ``level``, ``event`` (a dotted name such as ``backup.done``) and
the event's fields. Secret values registered with ``JsonFormatter.redact`` are replaced by ``***`` in
every line, as a last guard; the code itself never passes credentials or key material to the log.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

LOGGER_NAME = "squall_backup"


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__()
        self._secrets = [s for s in (secrets or []) if s and len(s) >= 4]

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", None) or record.name,
        }
        msg = record.getMessage()
        if msg and msg != line["event"]:
            line["msg"] = msg
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line["error"] = f"{type(exc).__name__}: {exc}"
        text = json.dumps(line, default=str, ensure_ascii=False)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def setup_logging(level: str = "INFO", secrets: list[str] | None = None) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(secrets))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger(LOGGER_NAME).setLevel(level)


def log(level: int, event: str, **fields: object) -> None:
    logging.getLogger(LOGGER_NAME).log(level, event, extra={"event": event, "fields": fields})


def info(event: str, **fields: object) -> None:
    log(logging.INFO, event, **fields)


def warning(event: str, **fields: object) -> None:
    log(logging.WARNING, event, **fields)


def error(event: str, **fields: object) -> None:
    log(logging.ERROR, event, **fields)


def debug(event: str, **fields: object) -> None:
    log(logging.DEBUG, event, **fields)
