"""The printed report: one table per model, the targets, and the threads-vs-processes figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping

from bench.runner import CLEAN_OTHER_CORES, PHASE_ORDER, check_targets

# stage rows: (label, peer stage, agent stage); "-" where a phase has no such stage
_STAGES = (
    ("decode", "decode", "decode"),
    ("decode, capture thread CPU time (agent)", "-", "decode_cpu"),
    ("pre-process", "pre", "pre"),
    ("inference", "infer", "infer"),
    ("post-process", "post", "post"),
    ("publish (peer: until PUBACK; agent: spool append)", "publish", "spool"),
    ("capture -> post done (agent, incl. queues)", "-", "capture_to_post"),
)


def _pct(stage: Mapping[str, float]) -> str:
    if not stage:
        return "-"
    return f"{stage['p50']:.2f} / {stage['p95']:.2f} / {stage['p99']:.2f}"


def model_table(result: Mapping[str, Any]) -> List[str]:
    s = result["summary"]
    m = result["model"]
    rounds = len(result["rounds"])
    lines = [f"== {m['name']} ({m['key']}, {Path(m['program']).name}, input {m['input'][0]}x{m['input'][1]}), "
             f"{rounds} round(s): fps of the best round (and the CPU other processes used meanwhile) and the median; "
             "CPU and RSS medians",
             f"{'phase':<8} {'fps best':>9} {'(others)':>9} {'median':>9} {'cpu cores':>10} {'cpu ms/frame':>13} "
             f"{'peak RSS MB':>12}"]
    for phase in PHASE_ORDER:
        p = s[phase]
        lines.append(f"{phase:<8} {p['fps']:>9.1f} {p['other_cores']:>9.2f} {p['fps_median']:>9.1f} "
                     f"{p['cpu_cores']:>10.2f} {p['cpu_ms_per_frame']:>13.2f} {p['peak_rss_mb']:>12.1f}")
    clean = ", ".join(f"{phase} {n}" for phase, n in s["clean_rounds"].items())
    lines.append(f"rounds that other processes left alone (<= {CLEAN_OTHER_CORES} cores): {clean}")
    lines.append(f"agent/limit {s['agent_vs_limit']:.3f} (median of rounds {s['agent_vs_limit_median']:.3f})   "
                 f"agent/peer {s['agent_vs_peer']:.3f} (median of rounds {s['agent_vs_peer_median']:.3f})")
    rss = s["rss_mb"]
    lines.append(f"agent RSS overhead {s['agent_rss_overhead_mb']:+.1f} MB (RSS checkpoints: limit {rss['limit']}, "
                 f"agent {rss['agent']});   agent predictor alone {s['agent_predictor_only_fps']:.1f} fps")
    lines.append(f"{'stage, ms p50 / p95 / p99 (best round)':<52} {'limit':>24} {'peer':>24} {'agent':>24}")
    stages = s["stages_ms"]
    for label, peer_key, agent_key in _STAGES:
        limit = _pct(stages["limit"].get("infer", {})) if peer_key == "infer" else "-"
        lines.append(f"{label:<52} {limit:>24} {_pct(stages['peer'].get(peer_key, {})):>24} "
                     f"{_pct(stages['agent'].get(agent_key, {})):>24}")
    lines.append(f"{'end to end: capture -> result at subscriber':<52} {'-':>24} {_pct(s['e2e_ms']['peer']):>24} "
                 f"{_pct(s['e2e_ms']['agent']):>24}")
    threads = s.get("agent_thread_cpu_ms_per_frame", {})
    if threads:
        lines.append("agent CPU ms per frame by thread (best round): "
                     + ", ".join(f"{name} {ms:.2f}" for name, ms in threads.items() if ms >= 0.005))
        lines.append(f"agent result path (post + MQTT drain + paho threads): {s['result_path_cpu_ms']:.3f} ms CPU "
                     "per result")
    return lines


def fast_tables(doc: Mapping[str, Any]) -> List[str]:
    capacity, drain, first = doc.get("capacity"), doc.get("drain"), doc.get("first_frame")
    lines: List[str] = []
    if capacity:
        alone = ", ".join(f"{ms} ms: {took:.3f}" for ms, took in capacity["stand_in_alone"].items())
        lines += [f"== fast inference: a STAND-IN predictor (fixed wait, GIL released) with real decode, "
                  f"pre-processing (224x224), post-processing and publishing; {capacity['frames']} frames per "
                  f"pipeline, best of {capacity['points'][0]['rounds']} rounds; the stand-in alone takes (ms per call) "
                  f"{alone}",
                  f"{'pipelines':>9} {'infer ms':>9} {'fps best':>9} {'median':>9} {'ideal':>9} {'fps/ideal':>10} "
                  f"{'CPU bound':>10} {'cpu ms/frame':>13} {'result path ms':>15} {'others':>7}"]
        for p in capacity["points"]:
            lines.append(f"{p['pipelines']:>9} {p['infer_ms']:>9g} {p['fps']:>9.1f} {p['fps_median']:>9.1f} "
                         f"{p['ideal_fps']:>9.0f} "
                         f"{p['fps_vs_ideal']:>10.3f} {p['cpu_bound_fps']:>10.0f} {p['cpu_ms_per_frame']:>13.3f} "
                         f"{p['result_path_cpu_ms']:>15.3f} {p['other_cores']:>7.2f}")
        for p in capacity["points"]:
            lines.append(f"  {p['pipelines']} x {p['infer_ms']:g} ms, CPU ms per frame by thread: "
                         + ", ".join(f"{n} {ms:.3f}" for n, ms in p["thread_cpu_ms_per_frame"].items() if ms >= 0.005))
    if drain:
        lines.append(f"== backlog drain: {drain['results']:,} results at QoS 1 to the local Mosquitto in "
                     f"{drain['drain_s']:.1f} s = {drain['drain_per_s']:,.0f} results/s, "
                     f"{drain['drain_cpu_ms_per_result']:.3f} ms CPU per result (others used "
                     f"{drain['other_cores']:.2f} cores); spooled beforehand at {drain['spool_fill_per_s']:,.0f} "
                     f"results/s in batches of 64 ({drain['spool_fill_cpu_ms_per_result']:.3f} ms CPU each)")
        enc = drain["encode_us"]
        lines.append(f"== one result payload encoded: {enc['stdlib_json']} us with the agent's stdlib json, "
                     f"{enc['orjson']} us with orjson")
    if first and "skipped" in first:
        lines.append(f"== first frame: skipped ({first['skipped']})")
    elif first:
        warm, cold = first["warm"], first["cold"]
        lines.append(f"== first frame after build (PP-OCRv4 det 640x640, inputs not declared), median of "
                     f"{len(warm['rounds'])} rounds (each: {warm['rounds']} warm, {cold['rounds']} cold): inference of "
                     f"frame 0 / steady (median from frame 5): {warm['first_vs_steady']:.2f} x with the warm start "
                     f"({warm['first_ms']:.1f} / {warm['steady_ms']:.1f} ms; start to READY "
                     f"{warm['start_to_ready_s']:.2f} s), {cold['first_vs_steady']:.2f} x without "
                     f"({cold['first_ms']:.1f} / {cold['steady_ms']:.1f} ms)")
    return lines


def overlap_table(overlap: Mapping[str, Any]) -> List[str]:
    if not overlap:
        return []
    g, sc, h = overlap["gil"], overlap["scaling"], overlap["handoff"]
    lines = [
        f"== threads vs processes (GIL, scaling, hand-off: {overlap['model']}; other processes used "
        f"{overlap['other_cores']:.2f} cores meanwhile)",
        f"GIL probe: a Python counter keeps {g['counter_ratio']:.0%} of its rate while another thread runs "
        f"predictor.run() ({g['runs_meanwhile']} runs meanwhile)",
        f"1 predictor, 1 Paddle thread: {sc['one_thread_fps']:.1f} fps; 2 threads (clone): {sc['two_threads_fps']:.1f} "
        f"fps; 2 processes: {sc['two_processes_fps']:.1f} fps; 1 predictor, 2 Paddle threads: "
        f"{sc['one_predictor_two_paddle_threads_fps']:.1f} fps",
        f"frame hand-off (640x480x3): thread queue {h['thread_queue_us_per_frame']:.0f} us, "
        f"process queue {h['process_queue_us_per_frame']:.0f} us",
    ]
    for so in overlap["stage_overlap"]:
        lines.append(f"{so['model']}: decode+pre then infer, {so['frames']} frames: one after the other "
                     f"{so['sequential_fps']:.1f} fps, producer thread {so['thread_fps']:.1f} fps, producer process "
                     f"(shared memory) {so['process_fps']:.1f} fps")
    return lines


def render(doc: Dict[str, Any]) -> str:
    m = doc["machine"]
    st = doc["settings"]
    fmt = "legacy .pdmodel" if st["legacy"] else "Paddle's default"
    agent = st.get("agent_threads")
    threads = str(st["threads"]) if agent is None else f"{st['threads']} (agent {agent})"
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, Python {m['python']}, "
             f"paddlepaddle {m['paddlepaddle']}, opencv {m['opencv']}, paho-mqtt {m['paho-mqtt']}, {m['broker']}",
             f"settings: {st['frames']} frames 640x480 MJPG, Paddle threads {threads}, target {st['target']}, "
             f"precision {st['precision']}, models in {fmt} format, "
             f"GIL switch interval "
             f"{st['switch_interval_ms'] or 5} ms, environment {m['env'] or '-'}, "
             f"load average at start {m['loadavg_at_start']}, at end {m.get('loadavg_at_end', '-')}", ""]
    for result in doc["models"].values():
        lines += [*model_table(result), ""]
    lines += overlap_table(doc.get("overlap", {}))
    lines += ["", *fast_tables(doc)]
    lines += ["", "targets:"]
    for target, met, figures in check_targets(doc):
        lines.append(f"  [{'met' if met else 'MISSED'}] {target}: {figures}")
    return "\n".join(lines)
