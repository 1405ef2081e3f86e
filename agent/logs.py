"""Structured logging: one event per line, ``event key=value ...`` or JSON.

Quiet by default (WARNING); ``--verbose`` gives INFO, ``--debug`` DEBUG.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Mapping, TextIO

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _fmt_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, separators=(",", ":"))
    if text == "" or any(c in text for c in ' "=\n'):
        return json.dumps(text)
    return text


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields a record carries."""
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"ts={ts}Z", f"level={record.levelname.lower()}", f"logger={record.name}",
                 f"event={_fmt_value(record.getMessage())}"]
        parts += [f"{k}={_fmt_value(v)}" for k, v in fields_of(record).items()]
        if record.exc_info:
            parts.append(f"exc={_fmt_value(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"ts": record.created, "level": record.levelname.lower(),
                               "logger": record.name, "event": record.getMessage()}
        doc.update(fields_of(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(level: int = logging.WARNING, fmt: str = "kv", stream: TextIO | None = None) -> None:
    """Configure the root logger once, from the CLI. Library code never calls this."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def event(logger: logging.Logger, level: int, name: str, **fields: Any) -> None:
    """Log one structured event: ``event(log, logging.INFO, "cache.hit", model="m", key="k")``."""
    logger.log(level, name, extra=_safe(fields))


def _safe(fields: Mapping[str, Any]) -> dict[str, Any]:
    # LogRecord attribute names cannot be overwritten by extra=; prefix clashes instead of crashing.
    return {(f"f_{k}" if k in _RESERVED else k): v for k, v in fields.items()}
