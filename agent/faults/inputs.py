"""Hostile inputs at run time: a camera that hangs, a model that raises on some frames."""

from __future__ import annotations

import time
from typing import Any, Dict

from agent.faults.harness import wait_until
from agent.faults.models import export_fixed_size_classifier, write_mixed_sizes
from agent.faults.report import ScenarioResult
from agent.faults.rig import FaultEnv, rig


def _pipeline_health(doc: Dict[str, Any], name: str) -> Dict[str, Any]:
    return dict(doc.get("pipelines", {}).get(name, {}))


def hung_source(env: FaultEnv, watch_s: float = 6.0) -> ScenarioResult:
    """A camera that accepts the connection and never sends: reported, the rest keeps running.

    The other camera's results must keep flowing, the hung one must be reported (stalls,
    reconnects), and SIGTERM must still stop the agent."""
    result = ScenarioResult("hung-source")
    with rig(env, "hung-source") as r:
        stuck_options = {"stall_timeout_s": 1.0, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0}
        r.box.write_config()
        r.box.write_manifest([r.camera_pipeline(), r.camera_pipeline("stuck", "hang.mjpg", **stuck_options)])
        agent = r.agent().start()
        agent.wait_event("agent.running", 180)
        wait_until(lambda: r.counter.count() >= 10, 60)
        window = time.monotonic()
        time.sleep(watch_s)
        results = r.counter.count("camera", since=window)
        health = r.counter.health(since=window)
        stuck = _pipeline_health(health[-1], "stuck") if health else {}
        source = dict(stuck.get("source_stats", {}))
        stopping = time.monotonic()
        code = agent.stop()
        stop_s = time.monotonic() - stopping
        r.counter.wait_quiet(1.0, 30)
        tally = r.counter.tally()
    result.figures.update({
        "watched s": watch_s,
        "camera results meanwhile (fps)": f"{results} ({results / watch_s:.1f})",
        "health messages meanwhile": len(health),
        "hung source state / quality": f"{source.get('state')} / {source.get('connection_quality')}",
        "hung source stalls / reconnects": f"{source.get('stalls_total')} / {source.get('reconnects_total')}",
        "hung pipeline results": r.counter.count("stuck"),
        "SIGTERM to exit s": round(stop_s, 2),
        "results lost": len(tally.missing),
    })
    result.expect(results >= watch_s * 10, f"only {results} camera results in {watch_s}s next to the hung source")
    result.expect(len(health) >= watch_s, f"only {len(health)} health messages in {watch_s}s")
    result.expect(int(source.get("stalls_total") or 0) + int(source.get("reconnects_total") or 0) >= 2,
                  f"the hung source was not reported: {source}")
    result.expect(code == 0, f"exit code {code} after SIGTERM")
    result.expect(not tally.missing, f"lost results (seq): {tally.missing[:20]}")
    return result


def raising_model(env: FaultEnv, watch_s: float = 4.0) -> ScenarioResult:
    """A model whose ``run()`` raises on every other frame: counted, logged once, pipeline keeps running.

    The failing frames have a size its classifier layer does not fit."""
    result = ScenarioResult("model-raises")
    with rig(env, "model-raises") as r:
        program, params = export_fixed_size_classifier(r.box.root / "fixed")
        write_mixed_sizes(r.box.root / "mixed")
        # No declared input shapes and no resize: the frames keep their size, and the build's warm-up
        # frame is one the model fits.
        model = r.box.model("fixed", model=str(program), params=str(params), inputs=[],
                            preprocess={"color": "rgb", "scale": 1 / 255.0}, gate=False)
        pipeline = {"name": "mixed", "source": str(r.box.root / "mixed"), "model": "fixed",
                    "options": {"loop": True}, "publish": {"qos": 1}}
        r.box.write_config()
        r.box.write_manifest([pipeline], [model])
        agent = r.agent().start()
        agent.wait_event("agent.running", 180)
        wait_until(lambda: r.counter.count() >= 10, 60)
        time.sleep(watch_s)
        doc = r.counter.last_health()
        mixed = _pipeline_health(doc, "mixed")
        alive = agent.alive()
        code = agent.stop()
        r.counter.wait_quiet(1.0, 30)
        tally = r.counter.tally()
        logged = len(agent.events("pipeline.frame_failed"))
    errors, published = int(mixed.get("errors") or 0), int(mixed.get("frames_published") or 0)
    result.figures.update({
        "frames published / failed": f"{published} / {errors}",
        "pipeline state": mixed.get("state"),
        "last error": str(mixed.get("last_error"))[:90],
        "error log lines": logged,
        "agent alive throughout": alive,
        "results lost": len(tally.missing),
    })
    result.expect(errors > 0 and published > 0, f"expected both results and failures: {published} / {errors}")
    result.expect(mixed.get("state") == "running", f"pipeline state {mixed.get('state')}")
    result.expect(logged == 1, f"{logged} error log lines (one per stage expected, not one per frame)")
    result.expect(alive and code == 0, f"alive={alive}, exit code {code}")
    result.expect(not tally.missing, f"lost results (seq): {tally.missing[:20]}")
    return result
