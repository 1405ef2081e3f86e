"""``edge-agent cache list|verify|prune``: the operator's view of the engine cache."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

from agent.errors import EX_DATAERR, AgentError
from agent.service.wiring import Wiring


def referenced_keys(wiring: Wiring) -> Set[str]:
    """Keys of every model/precision the manifest could use: those ``prune`` keeps."""
    keys: Set[str] = set()
    for spec in wiring.loaded.manifest.models:
        for precision in spec.precision_chain():
            try:
                keys.add(wiring.preparer.fingerprint(spec, precision).key)
            except AgentError:
                continue  # an unresolvable model (e.g. missing calibration images) references nothing
    return keys


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def run_cache_command(config: Path, manifest: Optional[Path], action: str, as_json: bool = False,
                      dry_run: bool = False) -> int:
    wiring = Wiring.from_files(config, manifest)
    cache = wiring.cache
    if action == "list":
        referenced = referenced_keys(wiring)
        rows: List[Dict[str, Any]] = [
            {"model": e.model, "key": e.key, "precision": e.precision, "backend": e.backend, "size": e.size,
             "created": e.created, "last_used": e.last_used, "referenced": e.key in referenced,
             "gate": e.report.get("gate"), "placement": e.report.get("placement")}
            for e in sorted(cache.entries(), key=lambda e: (e.model, e.created))
        ]
        if as_json:
            print(json.dumps(rows, indent=1))
            return 0
        print(f"{'MODEL':<16} {'KEY':<64} {'SIZE':>10} {'CREATED':<19} {'LAST USED':<19} GATE")
        for r in rows:
            gate = r["gate"]
            verdict = "-" if not gate else f"{'pass' if gate.get('passed') else 'FAIL'} {gate.get('metric')}="
            verdict += "" if not gate else f"{gate.get('value', 0):.4g}"
            mark = "" if r["referenced"] else "  (unreferenced)"
            print(f"{r['model']:<16} {r['key']:<64} {r['size']:>10} {_when(r['created']):<19} "
                  f"{_when(r['last_used']):<19} {verdict}{mark}")
        return 0
    if action == "verify":
        problems = cache.verify(quarantine=False)
        errors = [p for p in problems if p.severity == "error"]
        for p in problems:
            line = {"key": p.key, "kind": p.kind, "severity": p.severity, "message": p.message}
            print(json.dumps(line) if as_json else f"{p.severity}: {p.key}: {p.message}",
                  file=sys.stdout if as_json else sys.stderr)
        if not as_json:
            print(f"{len(cache.entries())} entries verified, {len(errors)} corrupt")
        return EX_DATAERR if errors else 0
    removed = cache.prune(referenced_keys(wiring), dry_run=dry_run)
    for name in removed:
        print(f"{'would remove' if dry_run else 'removed'} {name}")
    if not removed:
        print("nothing to prune")
    return 0
