"""The real agent under a 30 fps camera while its broker is killed (-9) and restarted."""

from __future__ import annotations

from agent.faults.broker_outage import broker_restarts
from tests.faults.checks import passed


def test_broker_restarts_lose_nothing(fault_env):
    result = passed(broker_restarts(fault_env, restarts=3, down_s=0.5, up_s=1.5))
    assert result.figures["results lost"] == 0
    assert result.figures["results delivered (unique)"] > 30
    assert result.figures["spool left after stop"] == 0
