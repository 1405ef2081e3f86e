"""The real Daemon with a hung main loop: the watchdog pings stop, the pipelines do not."""

from __future__ import annotations

from agent.faults.watchdog import abort_dump, hung_loop
from tests.faults.checks import passed


def test_hung_main_loop_stops_watchdog_pings(fault_env):
    result = passed(hung_loop(fault_env, hang_s=2.0))
    assert result.figures["pings while hung"] == 0
    assert result.figures["results published while the loop was hung"] > 0


def test_watchdog_abort_prints_the_python_stacks(fault_env):
    result = passed(abort_dump(fault_env))
    assert "_loop" in result.figures["main loop frame"]
