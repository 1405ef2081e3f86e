"""Turning a scenario's own verdict into a test outcome."""

from __future__ import annotations

import pytest

from agent.faults.report import ScenarioResult, format_table


def passed(result: ScenarioResult) -> ScenarioResult:
    """Skip when the scenario could not run here; fail with its whole figure table when it failed."""
    if result.skipped is not None:
        pytest.skip(result.skipped)
    assert result.problems == [], format_table([result])
    return result
