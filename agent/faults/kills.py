"""``kill -9`` of the agent at the worst moments, then a restart: the cache never loads a partial
entry, the last good manifest comes back, spooled results are delivered.

Kill points are found by watching the cache directory and the agent's log, not by timing:
mid-build is "the accuracy gate has started" (the backend has written its files into
``.tmp/``); the cache-write points are held open by strace delaying rename(2) (see
``cache_write``), so the kill lands exactly while meta.json is being put in place, and
between meta.json and the rename that publishes the entry.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from agent.demo.assets import write_images
from agent.faults.harness import AgentProcess, cache_state, spool_depth, wait_until
from agent.faults.report import ScenarioResult
from agent.faults.rig import FaultEnv, Rig, rig
from agent.fleet.envelope import build_envelope
from agent.fleet.publish import BrokerTarget, publish_retained
from agent.manifest.store import ManifestStore
from agent.mqtt.topics import Topics

# strace holds every rename(2) of the agent this long: the window the kill lands in.
RENAME_DELAY_US = 1_500_000
RENAMES = "?rename,?renameat,?renameat2"  # '?': a name this architecture lacks (aarch64: rename) is skipped


def slow_validation(root: Path, count: int) -> Dict[str, Any]:
    """An accuracy gate over ``count`` images: a build that lasts long enough to be killed inside."""
    images = root / "golden"
    if len(list(images.glob("*.png"))) < count:
        write_images(images, n=count, seed=11)
    return {"inputs": str(images), "metric": "top1", "count": count}


def kill_when(agent: AgentProcess, ready: Callable[[], bool], past: Callable[[], bool], timeout: float) -> bool:
    """SIGKILL the agent as soon as ``ready()``. False when the moment never came: ``past()`` says it is over
    (e.g. the build finished), the agent exited, or ``timeout``; the agent is killed anyway."""
    wait_until(lambda: ready() or past() or not agent.alive(), timeout, 0.005)
    came = ready() and agent.alive()
    agent.kill()
    return came


def logged(agent: AgentProcess, *names: str) -> Callable[[], bool]:
    return lambda: any(agent.events(name) for name in names)


def gate_started(agent: AgentProcess, after: int = 0) -> Callable[[], bool]:
    return lambda: len([e for e in agent.events("build.progress") if e.get("phase") == "gate"]) > after


def _restart_and_check(r: Rig, result: ScenarioResult, name: str) -> Dict[str, Any]:
    """Start a fresh agent after the kill, let results flow, stop it; what it did."""
    agent = r.agent(name).start()
    started = time.monotonic()
    agent.wait_event("agent.running", 180)
    flowing = wait_until(lambda: r.counter.count(since=started) >= 10, 60)
    result.expect(flowing, f"{name}: no results after the restart")
    first_result = r.counter.arrivals(since=started)[:1]
    built = agent.events("cache.built")
    code = agent.stop()
    result.expect(code == 0, f"{name}: exit code {code} after SIGTERM")
    return {"swept": len(agent.events("cache.stale_tmp")), "rebuilt": len(built),
            "first_result_s": round(first_result[0].mono - started, 2) if first_result else None}


def build(env: FaultEnv, gate_images: int = 300) -> ScenarioResult:
    """kill -9 while the engine is being built (inside its accuracy gate), then restart."""
    result = ScenarioResult("kill-during-build")
    with rig(env, "kill-during-build") as r:
        r.box.write_config()
        r.box.write_manifest([r.camera_pipeline()], [r.box.model(validation=slow_validation(r.box.root,
                                                                                             gate_images))])
        agent = r.agent("killed").start()
        hit = kill_when(agent, gate_started(agent), logged(agent, "cache.built", "agent.running"), 180)
        if not result.expect(hit, "the build was never seen in its accuracy gate (the agent exited first?)"):
            return result
        leftovers = [p.name for d in r.box.cache_tmp() for p in d.iterdir()]
        after_kill = cache_state(r.box.engines_dir)
        restart = _restart_and_check(r, result, "restarted")
        final = cache_state(r.box.engines_dir)
    result.figures.update({
        "files in the killed build's .tmp": ", ".join(sorted(leftovers)) or "(none)",
        "sealed entries after kill": len(after_kill.entries),
        "stale .tmp after kill": after_kill.stale_tmp,
        "restart: stale .tmp swept": restart["swept"],
        "restart: rebuilt": restart["rebuilt"],
        "restart: first result s": restart["first_result_s"],
        "final entries / errors / stale": f"{len(final.entries)} / {len(final.errors)} / {final.stale_tmp}",
    })
    result.expect(not after_kill.entries and after_kill.consistent,
                  f"a killed build left an entry: {after_kill}")
    result.expect(restart["rebuilt"] == 1, "the restart did not rebuild the engine")
    result.expect(len(final.entries) == 1 and final.consistent and final.stale_tmp == 0,
                  f"cache after the restart: {final}")
    return result


def strace_usable() -> Optional[str]:
    """None when strace can trace and delay a child here; else why not."""
    if shutil.which("strace") is None:
        return "strace is not installed (apt-get install strace)"
    probe = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={RENAMES}",
                            "-e", f"inject={RENAMES}:delay_enter=1", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"strace cannot trace here: {probe.stderr.decode(errors='replace').strip()[:200]}"
    return None


def cache_write(env: FaultEnv) -> ScenarioResult:
    """kill -9 while the cache writes an entry (strace holds each rename), then restart.

    Two kill points: (A) meta.json written to its temporary name, not yet renamed; (B) meta.json in
    place, the entry directory not yet renamed to its key. Then a restart without strace."""
    result = ScenarioResult("kill-during-cache-write")
    why = strace_usable()
    if why is not None:
        result.skipped = why
        return result
    delay = ["strace", "-f", "-qq", "--seccomp-bpf", "-o", "/dev/null", "-e", f"trace={RENAMES}",
             "-e", f"inject={RENAMES}:delay_enter={RENAME_DELAY_US}", "--"]
    # (A) relies on agent/fsutil.atomic_write naming its temporary file ".<name>.*" next to the target
    points: Dict[str, Callable[[Path], bool]] = {
        "A: meta.json being renamed into place": lambda d: bool(list(d.glob(".meta.json.*"))),
        "B: entry being renamed to its key": lambda d: (d / "meta.json").exists(),
    }
    states: List[str] = []
    with rig(env, "kill-during-cache-write") as r:
        r.box.write_config()
        r.box.write_manifest([r.camera_pipeline()])
        for label, seen in points.items():
            agent = r.agent("killed", wrapper=delay).start()
            hit = kill_when(agent, partial(_any_build, r, seen), logged(agent, "cache.built", "agent.running"), 180)
            state = cache_state(r.box.engines_dir)
            states.append(f"{len(state.entries)} sealed, {len(state.unsealed)} unsealed, {state.stale_tmp} stale")
            result.expect(hit, f"{label}: the moment was never seen")
            result.expect(not state.entries and state.consistent, f"{label}: the kill left an entry: {state}")
        restart = _restart_and_check(r, result, "restarted")
        final = cache_state(r.box.engines_dir)
    for (label, _), text in zip(points.items(), states):
        result.figures[f"after kill {label}"] = text
    result.figures.update({
        "restart: stale .tmp swept": restart["swept"],
        "restart: rebuilt": restart["rebuilt"],
        "final entries / errors / stale": f"{len(final.entries)} / {len(final.errors)} / {final.stale_tmp}",
    })
    result.expect(restart["rebuilt"] == 1, "the restart did not rebuild the engine")
    result.expect(len(final.entries) == 1 and final.consistent and final.stale_tmp == 0,
                  f"cache after the restart: {final}")
    return result


def manifest_swap(env: FaultEnv, gate_images: int = 300) -> ScenarioResult:
    """kill -9 while a fleet update builds next to the running manifest; restart on the last good one.

    The update (v2, unsigned: require_signature false) is being built next to the running v1.
    After the restart v1 must run at once from its cached engine; the retained desired v2 is then applied."""
    result = ScenarioResult("kill-during-swap")
    with rig(env, "kill-during-swap") as r:
        assets_root = env.assets.model.parent.parent
        r.box.write_config(fleet={"require_signature": False, "grace_period_s": 0.5,
                                  "allowed_model_dirs": [str(assets_root), str(r.box.root)]})
        r.box.write_manifest([r.camera_pipeline()])
        agent = r.agent("killed").start()
        agent.wait_event("agent.running", 180)
        wait_until(lambda: r.counter.count() >= 10, 60)
        v2 = r.box.manifest_text([r.camera_pipeline()], version=2, models=[
            r.box.model(precision="fp32", validation=slow_validation(r.box.root, gate_images))])
        envelope = build_envelope(v2.encode(), 2, None)
        gates_before = len([e for e in agent.events("build.progress") if e.get("phase") == "gate"])
        publish_retained(envelope.to_json(), Topics("edge", r.box.device_id).manifest_desired,
                         BrokerTarget(port=r.box.port))
        hit = kill_when(agent, gate_started(agent, gates_before), logged(agent, "swap.applied", "swap.rolled_back"),
                        180)
        if not result.expect(hit, "the v2 build was never seen in its accuracy gate"):
            return result
        current = ManifestStore(r.box.state_dir).current()
        after_kill = cache_state(r.box.engines_dir)
        # The operator's file still says v1: a restart must come back on v1, then take the fleet's v2 again.
        again = r.agent("restarted").start()
        started = time.monotonic()
        running = again.wait_event("agent.running", 180)
        running_v1 = not [e for e in again.events("cache.built") if e["ts"] <= running["ts"]]
        wait_until(lambda: _health_version(r, started) is not None, 30)
        first_version = _health_version(r, started)
        applied = again.wait_event("swap.applied", 180)
        applied_s = float(applied["ts"]) - again.started
        wait_until(lambda: _health_version(r, started, last=True) == 2, 30)
        code = again.stop()
        final = cache_state(r.box.engines_dir)
        tally = r.counter.tally()
    result.figures.update({
        "current.json after kill": f"v{current.version}" if current else "none",
        "sealed entries after kill": len(after_kill.entries),
        "restart: first manifest running": f"v{first_version}",
        "restart: v1 from cache (no rebuild)": running_v1,
        "restart: retained v2 applied after s": round(applied_s, 1),
        "final entries / errors / stale": f"{len(final.entries)} / {len(final.errors)} / {final.stale_tmp}",
        "results lost": len(tally.missing),
    })
    result.expect(current is not None and current.version == 1, f"current.json after the kill: {current}")
    result.expect(len(after_kill.entries) == 1 and after_kill.consistent, f"cache after the kill: {after_kill}")
    result.expect(first_version == 1 and running_v1, f"the restart ran v{first_version} first, not v1 from cache")
    result.expect(len(final.entries) == 2 and final.consistent and final.stale_tmp == 0, f"final cache: {final}")
    result.expect(not tally.missing, f"lost results (seq): {tally.missing[:20]}")
    result.expect(code == 0, f"exit code {code} after SIGTERM")
    return result


def _any_build(r: Rig, seen: Callable[[Path], bool]) -> bool:
    return any(seen(d) for d in r.box.cache_tmp())


def _health_version(r: Rig, since: float, last: bool = False) -> Optional[int]:
    docs = [d for d in r.counter.health(since) if "manifest" in d]
    if not docs:
        return None
    return int(docs[-1 if last else 0]["manifest"]["version"])


def spooled(env: FaultEnv, outage_s: float = 2.0) -> ScenarioResult:
    """Broker down, results spooled, kill -9, broker up, restart: every spooled result arrives."""
    result = ScenarioResult("kill-while-spooled")
    with rig(env, "kill-while-spooled") as r:
        r.box.write_config()
        r.box.write_manifest([r.camera_pipeline()])
        agent = r.agent("killed").start()
        agent.wait_event("agent.running", 180)
        wait_until(lambda: r.counter.count() >= 10, 60)
        r.broker.stop()
        time.sleep(outage_s)
        agent.kill()
        in_spool = spool_depth(r.box.spool_path)
        received_before = r.counter.tally().max_seq
        r.broker.start()
        r.counter.wait_subscribed(10)
        again = r.agent("restarted").start()
        target = received_before + in_spool
        delivered = wait_until(lambda: r.counter.tally().max_seq >= target, 180)
        # from the restarted agent's connection: its start-up (imports, engine load) is not delivery time
        delivered_s = time.time() - float(again.wait_event("mqtt.connected", 10)["ts"])
        code = again.stop()
        r.counter.wait_quiet(1.0, 30)
        tally = r.counter.tally()
        left = spool_depth(r.box.spool_path)
    result.figures.update({
        "outage before kill s": outage_s,
        "results in the spool at kill -9": in_spool,
        "delivered within s of reconnecting": round(delivered_s, 2),
        "results lost": len(tally.missing),
        "duplicates": tally.duplicates,
        "spool left after stop": left,
    })
    result.expect(in_spool > 0, "nothing was spooled during the outage")
    result.expect(delivered, f"spooled results up to seq {target} did not all arrive")
    result.expect(not tally.missing, f"lost results (seq): {tally.missing[:20]}")
    result.expect(code == 0 and left == 0, f"exit code {code}, {left} results left in the spool")
    return result
