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
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, Python {m['python']}, "
             f"paddlepaddle {m['paddlepaddle']}, opencv {m['opencv']}, paho-mqtt {m['paho-mqtt']}, {m['broker']}",
             f"settings: {st['frames']} frames 640x480 MJPG, Paddle threads {st['threads']}, target {st['target']}, "
             f"precision {st['precision']}, models in {fmt} format, "
             f"GIL switch interval "
             f"{st['switch_interval_ms'] or 5} ms, environment {m['env'] or '-'}, "
             f"load average at start {m['loadavg_at_start']}", ""]
    for result in doc["models"].values():
        lines += [*model_table(result), ""]
    lines += overlap_table(doc.get("overlap", {}))
    lines += ["", "targets:"]
    for target, met, figures in check_targets(doc):
        lines.append(f"  [{'met' if met else 'MISSED'}] {target}: {figures}")
    return "\n".join(lines)
