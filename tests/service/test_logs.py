"""Structured log lines: key=value, JSON, and journald priorities."""

from __future__ import annotations

import io
import json
import logging
from typing import Iterator

import pytest

from agent.logs import event, setup_logging


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    """setup_logging() configures the root logger; later tests must find it as it was."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def emit(**kwargs: object) -> str:
    stream = io.StringIO()
    setup_logging(logging.INFO, stream=stream, **kwargs)  # type: ignore[arg-type]
    log = logging.getLogger("t")
    event(log, logging.WARNING, "cache.miss", model="m", key="a b", n=3)
    event(log, logging.INFO, "pipeline.started", pipeline="p")
    event(log, logging.DEBUG, "hidden")
    return stream.getvalue()


def test_key_value_lines_are_one_event_each() -> None:
    lines = emit().splitlines()
    assert len(lines) == 2
    assert "level=warning" in lines[0] and "event=cache.miss" in lines[0]
    assert 'model=m key="a b" n=3' in lines[0]


def test_json_lines_parse() -> None:
    docs = [json.loads(line) for line in emit(fmt="json").splitlines()]
    assert docs[0]["event"] == "cache.miss" and docs[0]["key"] == "a b" and docs[1]["level"] == "info"


def test_journal_priorities_prefix_each_line() -> None:
    lines = emit(journal=True).splitlines()
    assert lines[0].startswith("<4>ts=") and lines[1].startswith("<6>ts=")


def test_reserved_record_names_do_not_crash() -> None:
    stream = io.StringIO()
    setup_logging(logging.INFO, stream=stream)
    event(logging.getLogger("t"), logging.INFO, "x", name="clash", msg="also")
    assert "f_name=clash" in stream.getvalue()
