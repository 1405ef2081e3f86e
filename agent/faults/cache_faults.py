"""Corrupted, truncated and wrong-version cache files: every one detected, rebuilt, and the model runs.

One manifest holds one copy of the demo model per damage (each its own cache entry) and a
finite pipeline over the sample images for each. ``edge-agent run --once`` builds them all;
the scenario damages every entry in its own way; a second ``run --once`` must find each
damage, rebuild, and publish every result. On this CPU-only machine the backend's file in an
entry is Paddle's build record (``paddle-build.json``, the "plan" of the Paddle backend);
TensorRT ``.plan`` files go through the same checksum and the same unloadable-entry rebuild.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from agent.engines.cache import sealed_meta_text
from agent.faults.harness import cache_state
from agent.faults.report import ScenarioResult
from agent.faults.rig import FaultEnv, rig

META = "meta.json"
PLAN = "paddle-build.json"


def _rewrite_json(path: Path, change: Callable[[Dict[str, object]], None]) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=1, sort_keys=True))


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _plan_from_another_version(entry: Path) -> None:
    """A build record written by a different agent version, re-listed in meta.json with its true hash and
    size and meta.json sealed again: the checksums pass, only the backend's loader can refuse it."""
    plan = entry / PLAN
    _rewrite_json(plan, lambda doc: doc.update(format_version=99))
    data = plan.read_bytes()

    meta = json.loads((entry / META).read_text())
    meta["files"][PLAN] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (entry / META).write_text(sealed_meta_text(meta))


Damage = Callable[[Path], object]

# damage name -> (what it does to an entry, how the agent reports it: a cache.corrupt kind, or unloadable)
DAMAGES: Dict[str, Tuple[Damage, str]] = {
    "meta-garbage": (lambda e: (e / META).write_bytes(b"\x00\xff garbage \x13" * 8), "meta-invalid"),
    "meta-truncated": (lambda e: _truncate(e / META), "meta-invalid"),
    "meta-empty": (lambda e: (e / META).write_bytes(b""), "meta-invalid"),
    "meta-missing": (lambda e: (e / META).unlink(), "meta-missing"),
    "meta-other-schema": (lambda e: _rewrite_json(e / META, lambda d: d.update(schema=2)), "schema"),
    "meta-other-key": (lambda e: _rewrite_json(e / META, lambda d: d.update(key="other-key")), "meta-invalid"),
    "plan-bit-flip": (lambda e: _flip_byte(e / PLAN), "checksum"),
    "plan-truncated": (lambda e: _truncate(e / PLAN), "size"),
    "plan-missing": (lambda e: (e / PLAN).unlink(), "missing-file"),
    "plan-other-version": (_plan_from_another_version, "unloadable"),
}


def _model_name(damage: str) -> str:
    return "m_" + damage.replace("-", "_")


def damaged_cache(env: FaultEnv) -> ScenarioResult:
    """Ten kinds of damaged cache entries (meta.json, backend file): each detected and rebuilt."""
    result = ScenarioResult("damaged-cache")
    with rig(env, "damaged-cache") as r:
        names = {damage: _model_name(damage) for damage in DAMAGES}
        models = [r.box.model(name) for name in names.values()]
        pipelines = [{"name": f"p{i}", "source": str(env.assets.images), "model": name, "publish": {"qos": 1}}
                     for i, name in enumerate(names.values())]
        r.box.write_config()
        r.box.write_manifest(pipelines, models)
        first = r.agent("first", command=["run", "--once"]).start()
        code_first = first.wait(300)
        keys = {e["model"]: e["key"] for e in first.events("cache.built")}
        if not result.expect(code_first == 0 and len(keys) == len(DAMAGES),
                             f"the first run exited {code_first} and built {len(keys)} of {len(DAMAGES)} models"):
            return result
        for damage, (apply, _) in DAMAGES.items():
            apply(r.box.engines_dir / keys[names[damage]])
        second = r.agent("second", command=["run", "--once"]).start()
        code_second = second.wait(300)
        corrupt = {e["key"]: e["kind"] for e in second.events("cache.corrupt")}
        unloadable = {e["key"] for e in second.events("cache.unloadable")}
        rebuilt = {e["key"] for e in second.events("cache.built")}
        r.counter.wait_quiet(1.0, 30)
        tally = r.counter.tally()
        final = cache_state(r.box.engines_dir)
    images = len([p for p in env.assets.images.iterdir() if p.suffix == ".png"])
    missed: List[str] = []
    for damage, (_, expected) in DAMAGES.items():
        key = keys[names[damage]]
        seen = "unloadable" if key in unloadable else corrupt.get(key, "not detected")
        verdict = f"{seen} -> {'rebuilt' if key in rebuilt else 'NOT rebuilt'}"
        result.figures[damage] = verdict
        if seen != expected or key not in rebuilt:
            missed.append(f"{damage}: {verdict} (expected {expected} -> rebuilt)")
    result.figures.update({
        "runs exit codes": f"{code_first}, {code_second}",
        "results published (both runs)": tally.unique,
        "results lost": len(tally.missing),
        "final entries / errors / stale": f"{len(final.entries)} / {len(final.errors)} / {final.stale_tmp}",
    })
    result.problems += missed
    result.expect(code_second == 0, f"the run over the damaged cache exited {code_second}")
    result.expect(tally.unique == 2 * images * len(DAMAGES) and not tally.missing,
                  f"published {tally.unique} results, expected {2 * images * len(DAMAGES)}; lost {tally.missing[:10]}")
    result.expect(len(final.entries) == len(DAMAGES) and final.consistent, f"final cache: {final}")
    return result
