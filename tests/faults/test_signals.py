"""SIGHUP storms against the real agent process."""

from __future__ import annotations

from agent.faults.signals import sighup_storm
from tests.faults.checks import passed


def test_sighup_storm_coalesces_and_loses_nothing(fault_env):
    result = passed(sighup_storm(fault_env, bursts=4, per_burst=20))
    assert result.figures["results lost"] == 0
