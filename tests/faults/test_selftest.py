"""``edge-agent selftest``'s own logic (the scenarios themselves run in the other tests of this folder)."""

from __future__ import annotations

import argparse
import io

import pytest

from agent.cli.selftest import configure_selftest_parser, run_selftest
from agent.errors import AgentError
from agent.faults.catalog import SCENARIOS, run_scenario
from agent.faults.report import ScenarioResult, format_table
from agent.faults.rig import FaultEnv


def test_list_names_every_scenario_with_its_summary():
    out = io.StringIO()
    assert run_selftest(None, True, None, out) == 0
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == list(SCENARIOS)
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)


def test_unknown_scenario_is_a_usage_error():
    with pytest.raises(AgentError, match=r"unknown scenario.*nope.*--list"):
        run_selftest(["nope"], False, None, io.StringIO())


def test_parser_options():
    parser = argparse.ArgumentParser()
    configure_selftest_parser(parser)
    args = parser.parse_args(["--only", "watchdog", "--only", "hung-source", "--workdir", "/tmp/x"])
    assert args.only == ["watchdog", "hung-source"] and str(args.workdir) == "/tmp/x" and not args.list
    assert args.func.__name__ == "run_selftest_command"


def test_a_crashing_scenario_is_reported_not_raised(tmp_path, monkeypatch):
    def broken(env):
        raise RuntimeError("boom")

    monkeypatch.setitem(SCENARIOS, "broken", broken)
    result = run_scenario("broken", FaultEnv(tmp_path, None))  # type: ignore[arg-type]
    assert result.verdict == "FAILED" and result.problems == ["crashed: RuntimeError: boom"]
    assert any("boom" in note for note in result.notes)


def test_table_shows_verdicts_figures_and_problems():
    ok = ScenarioResult("a", figures={"results lost": 0, "ratio": 0.12345}, seconds=1.0)
    bad = ScenarioResult("b", problems=["lost 3"], notes=["why"])
    skipped = ScenarioResult("c", skipped="no strace")
    text = format_table([ok, bad, skipped])
    assert "a" in text and "passed" in text and "results lost = 0" in text and "ratio        = 0.123" in text
    assert "FAILED" in text and "PROBLEM: lost 3" in text and "note: why" in text
    assert "skipped: no strace" in text
