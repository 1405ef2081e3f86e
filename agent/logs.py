"""Structured logging: one event per line, ``event key=value ...`` or JSON.

Quiet by default (WARNING); ``--verbose`` gives INFO, ``--debug`` DEBUG.
"""

from __future__ import annotations

import json
import logging
import os
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


class JournalPriority(logging.Formatter):
    """Prefix each line with its syslog priority (sd-daemon(3)) so ``journalctl -p warning`` works."""

    _PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        priority = next((p for lvl, p in self._PRIORITY if record.levelno >= lvl), 7)
        return f"<{priority}>{self.inner.format(record)}"


def setup_logging(level: int = logging.WARNING, fmt: str = "kv", stream: TextIO | None = None,
                  journal: bool | None = None) -> None:
    """Configure the root logger once, from the CLI. Library code never calls this.

    ``journal`` (default: stderr is journald's stream, per ``$JOURNAL_STREAM``) adds priorities."""
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else KeyValueFormatter()
    if journal is None:
        journal = stream is None and _stderr_is_journal()
    handler.setFormatter(JournalPriority(formatter) if journal else formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _stderr_is_journal() -> bool:
    # systemd sets JOURNAL_STREAM=<device>:<inode> of the stream it connected; compare with stderr's.
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def event(logger: logging.Logger, level: int, name: str, /, **fields: Any) -> None:
    """Log one structured event: ``event(log, logging.INFO, "cache.hit", model="m", key="k")``."""
    logger.log(level, name, extra=_safe(fields))


def _safe(fields: Mapping[str, Any]) -> dict[str, Any]:
    # LogRecord attribute names cannot be overwritten by extra=; prefix clashes instead of crashing.
    return {(f"f_{k}" if k in _RESERVED else k): v for k, v in fields.items()}
