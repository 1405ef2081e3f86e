"""A camera that hangs and a model that raises, in the real agent process."""

from __future__ import annotations

from agent.faults.inputs import hung_source, raising_model
from tests.faults.checks import passed


def test_hung_source_is_reported_and_does_not_stall_the_rest(fault_env):
    result = passed(hung_source(fault_env, watch_s=4.0))
    assert result.figures["hung pipeline results"] == 0
    assert result.figures["results lost"] == 0


def test_model_raising_on_some_frames_keeps_the_pipeline_running(fault_env):
    result = passed(raising_model(fault_env, watch_s=3.0))
    assert result.figures["pipeline state"] == "running"
    assert result.figures["error log lines"] == 1
