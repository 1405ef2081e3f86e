"""Tests use the same broker launcher as the demo."""

from __future__ import annotations

from agent.demo.broker import Broker, free_port

__all__ = ["Broker", "free_port"]
